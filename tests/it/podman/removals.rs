//! `POST /images/{id}/tag` and `DELETE /images/{name}` on both engines.

use std::time::Instant;

use super::{Gen, Probed, hex, pair, strings, text};

/// `POST /images/{id}/tag` and `DELETE /images/{name}`: retagging and removal, and how each
/// engine refuses.
///
/// Same on every engine: tagging answers 201; removing one of two tags answers 200
/// `[{"Untagged": …}]`; removing an image a container uses (stopped or running, by tag or by id)
/// answers 409; a missing image 404; removing the last tag of an unused image untags and deletes
/// it. Podman 4.3 and 5.8 answer alike.
///
/// Different:
/// - removing by id an image with two tags: Docker 409 ("(must be forced) - image is referenced
///   in multiple repositories", both stores), Podman **500** ("by ID with more than one tag").
///   The cleaner must not take that 500 for an engine failure: remove by tag, or treat it as a
///   conflict.
/// - removing by tag an image a stopped container uses: Docker's classic store "unable to
///   remove repository reference \"app:1\" (must force)", the containerd store "unable to
///   delete app:1 (must be forced)"; by id both "(must be forced) - image is being used by
///   stopped container"; a running container's "(cannot be forced)". Podman's 409 says "is in
///   use" (no "conflict", no "must force"): go by the status code.
/// - `Untagged` names: Docker `app:1`, Podman the full `localhost/app:1` or
///   `docker.io/library/probe:2`; `Deleted`: Docker `sha256:<hex>`, then on the classic store
///   each layer (the containerd store lists the image alone); Podman the bare hex, listed
///   before `Untagged`.
/// - a tag made through the API on Podman is `docker.io/library/<repo>:<tag>`.
#[test]
fn tags_and_removals() {
    let Some(p) = pair("removals") else {
        return;
    };
    for engine in [&p.docker as &dyn Probed, &p.podman] {
        let g = engine.generation();
        let e = g.name();
        let t = Instant::now();
        let podman = g.is_podman();
        let full = |name: &str, local: bool| match (podman, local) {
            (false, _) => name.to_string(),
            (true, true) => format!("localhost/{name}"),
            (true, false) => format!("docker.io/library/{name}"),
        };
        let id = engine.image("app:1", 1);
        let tagged = engine.api("POST", &format!("/images/{id}/tag?repo=probe&tag=2"));
        assert_eq!((tagged.status, tagged.text.trim()), (201, ""), "{e}");
        let tags = strings(&engine.api("GET", &format!("/images/{id}/json")).json()["RepoTags"]);
        let mut want = vec![full("app:1", true), full("probe:2", false)];
        want.sort();
        assert_eq!(tags, want, "{e}");

        let by_id = engine.api("DELETE", &format!("/images/{id}"));
        let (status, says) = if podman {
            (500, "by ID with more than one tag")
        } else {
            (
                409,
                "(must be forced) - image is referenced in multiple repositories",
            )
        };
        assert_eq!(by_id.status, status, "{e}: {}", by_id.text);
        assert!(by_id.message().contains(says), "{e}: {}", by_id.text);

        let untag = engine.api("DELETE", "/images/probe:2");
        assert_eq!(untag.status, 200, "{e}: {}", untag.text);
        assert_eq!(
            untag.json(),
            serde_json::json!([{ "Untagged": full("probe:2", false) }]),
            "{e}"
        );

        let stopped = engine.stopped_container("app:1");
        let (tag_says, id_says) = match g {
            Gen::Podman4 | Gen::Podman5 => ("is in use", "is in use"),
            Gen::Docker20 | Gen::Docker28 => (
                "unable to remove repository reference \"app:1\" (must force)",
                "(must be forced) - image is being used by stopped container",
            ),
            Gen::Docker28Containerd => (
                "unable to delete app:1 (must be forced)",
                "(must be forced) - image is being used by stopped container",
            ),
        };
        for (name, says) in [("app:1", tag_says), (id.as_str(), id_says)] {
            let r = engine.api("DELETE", &format!("/images/{name}"));
            assert_eq!(r.status, 409, "{e}: {name}: {}", r.text);
            assert!(r.message().contains(says), "{e}: {}", r.text);
            assert!(
                r.message().contains(&stopped[..12]),
                "{e}: names the container: {}",
                r.text
            );
        }
        let run_id = engine.image("run:1", 1);
        engine.running_container("run:1");
        let r = engine.api("DELETE", &format!("/images/{run_id}"));
        assert_eq!(r.status, 409, "{e}: {}", r.text);
        let running = if podman {
            "is in use"
        } else {
            "cannot be forced"
        };
        assert!(r.message().contains(running), "{e}: {}", r.text);

        let free = engine.image("free:1", 1);
        let gone = engine.api("DELETE", "/images/free:1");
        assert_eq!(gone.status, 200, "{e}: {}", gone.text);
        let items = gone.json();
        let untagged: Vec<&str> = items
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["Untagged"].as_str())
            .collect();
        let deleted: Vec<&str> = items
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i["Deleted"].as_str())
            .collect();
        assert_eq!(untagged, [full("free:1", true)], "{e}: {items}");
        if podman {
            assert_eq!(deleted, [hex(&free)], "{e}: {items}");
            assert!(
                items[0]["Deleted"].is_string(),
                "Podman lists Deleted first: {items}"
            );
        } else {
            // The image, then (classic store) its one layer.
            let entries = if g == Gen::Docker28Containerd { 1 } else { 2 };
            assert_eq!(
                (deleted.len(), deleted[0]),
                (entries, free.as_str()),
                "{e}: {items}"
            );
        }
        let dangling = engine.dangling_image(1);
        let r = engine.api("DELETE", &format!("/images/{dangling}"));
        assert_eq!(r.status, 200, "{e}: {}", r.text);
        assert_eq!(
            r.json()[0]["Deleted"],
            if podman {
                hex(&dangling)
            } else {
                dangling.as_str()
            },
            "{e}: {}",
            r.text
        );
        let entries = match g {
            Gen::Docker20 | Gen::Docker28 => 2,
            _ => 1,
        };
        assert_eq!(
            r.json().as_array().map(Vec::len),
            Some(entries),
            "{e}: {}",
            r.text
        );

        let missing = engine.api("DELETE", "/images/nope:1");
        assert_eq!(missing.status, 404, "{e}: {}", missing.text);
        let left: Vec<String> = engine
            .api("GET", "/images/json")
            .json()
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| text(&i["Id"]).to_string())
            .collect();
        let mut want = vec![id.clone(), run_id.clone()];
        want.sort();
        let mut left = left;
        left.sort();
        assert_eq!(left, want, "{e}: what a refused removal leaves");
        eprintln!("{e}: removals probe {:?}", t.elapsed());
    }
}
