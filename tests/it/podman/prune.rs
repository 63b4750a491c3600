//! The prune endpoints and `/system/df` on both engines.

use serde_json::{Value, json};

use super::{Probed, find, hex, pair, strings, text};
use crate::util::api::query_value;

fn deleted(v: &Value) -> Vec<String> {
    strings(&Value::Array(
        v["ImagesDeleted"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("Deleted").cloned())
            .collect(),
    ))
}

fn untagged(v: &Value) -> Vec<String> {
    strings(&Value::Array(
        v["ImagesDeleted"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|i| i.get("Untagged").cloned())
            .collect(),
    ))
}

/// `POST /containers/prune`, `POST /images/prune` (dangling or all), `POST /build/prune`,
/// `GET /system/df`.
///
/// Same: the container prune removes created and exited containers, keeps running ones, and
/// answers `ContainersDeleted` and `SpaceReclaimed`; the image prune with
/// `filters={"dangling":["true"]}` removes only untagged images (`ImagesDeleted[].Deleted`:
/// Docker `sha256:<hex>` plus the layer, Podman the bare hex).
///
/// Different, and what the cleaner must expect from Podman 4.3:
/// - **`filters={"dangling":["false"]}` (Docker's "all unused images") answers 500**
///   ("specifying \"dangling\" filter more than once with different values is not supported"):
///   the compatible endpoint always adds `dangling=true`, and ignores `all=true`. Only Podman's
///   own API prunes every unused image (`POST /v4.3.1/libpod/images/prune?all=true`, unversioned
///   404). The cleaner must remove unused images one by one on Podman (as its LRU pass does).
/// - **`POST /build/prune` answers 404** (plain text "Not Found"); Docker 200 with
///   `{"CachesDeleted":null,"SpaceReclaimed":0}`. Skip build-cache pruning on Podman.
/// - `/system/df` answers, but its image entries are unfit: `RepoTags` holds only the tag
///   (`["1"]` for `localhost/keep:1`), `Id` is bare hex, `LayersSize` and `VirtualSize` are 0.
///   Take sizes from `/images/json` (crates.md G3 says the same of bollard's `df` on Docker).
#[test]
fn prunes_and_disk_usage() {
    let Some(p) = pair("prune") else {
        return;
    };
    for (e, engine) in [
        ("docker", &p.docker as &dyn Probed),
        ("podman", &p.podman as &dyn Probed),
    ] {
        let podman = e == "podman";
        let id = |i: &str| {
            if podman {
                hex(i).to_string()
            } else {
                i.to_string()
            }
        };
        let name = |n: &str| {
            if podman {
                format!("localhost/{n}")
            } else {
                n.to_string()
            }
        };
        let keep = engine.image("keep:1", 1);
        let running = engine.running_container("keep:1");
        let old = engine.image("old:1", 1);
        let mut stopped = vec![
            engine.stopped_container("old:1"),
            engine.created_container("old:1"),
        ];
        stopped.sort();
        let dangling = engine.dangling_image(1);
        let unused = engine.image("unused:1", 1);

        let df = engine.api("GET", "/system/df");
        assert_eq!(df.status, 200, "{e}: {}", df.text);
        let df = df.json();
        let entry = find(&df["Images"], "Id", &id(&keep));
        let tags = if podman {
            vec!["1".to_string()]
        } else {
            vec!["keep:1".to_string()]
        };
        assert_eq!(strings(&entry["RepoTags"]), tags, "{e}: {entry}");
        assert_eq!(entry["Containers"].as_i64(), Some(1), "{e}: {entry}");
        let layers = df["LayersSize"].as_i64().unwrap_or(-1);
        assert!(
            if podman {
                layers == 0
            } else {
                layers > 3_000_000
            },
            "{e}: LayersSize {layers}"
        );

        let r = engine.api("POST", "/containers/prune");
        assert_eq!(r.status, 200, "{e}: {}", r.text);
        assert_eq!(strings(&r.json()["ContainersDeleted"]), stopped, "{e}");
        assert!(r.json()["SpaceReclaimed"].is_u64(), "{e}: {}", r.text);
        let left = engine.api("GET", "/containers/json?all=1").json();
        assert_eq!(find(&left, "Id", &running)["State"], "running", "{e}");

        let dangling_only = query_value(r#"{"dangling":["true"]}"#);
        let r = engine.api("POST", &format!("/images/prune?filters={dangling_only}"));
        assert_eq!(r.status, 200, "{e}: {}", r.text);
        let gone = deleted(&r.json());
        assert!(gone.contains(&id(&dangling)), "{e}: {}", r.text);
        assert_eq!(
            gone.len(),
            if podman { 1 } else { 2 },
            "{e}: the image (and Docker's layer): {gone:?}"
        );
        assert!(
            r.json()["SpaceReclaimed"].as_u64().unwrap_or_default() > 1_000_000,
            "{e}: {}",
            r.text
        );

        // `all=true` is a parameter of Podman's own API; neither engine honours it here.
        let r = engine.api("POST", "/images/prune?all=true");
        assert_eq!(r.status, 200, "{e}: {}", r.text);
        assert_eq!(
            r.json()["ImagesDeleted"],
            if podman { json!([]) } else { Value::Null },
            "{e}"
        );

        // Docker's way to prune every unused image.
        let all_unused = query_value(r#"{"dangling":["false"]}"#);
        let r = engine.api("POST", &format!("/images/prune?filters={all_unused}"));
        if podman {
            assert_eq!(r.status, 500, "{e}: {}", r.text);
            assert!(
                r.message().contains("\"dangling\" filter more than once"),
                "{e}: {}",
                r.text
            );
            // Podman's own API can (a path bollard does not offer).
            let r = engine.api("POST", "/v4.3.1/libpod/images/prune?all=true");
            assert_eq!(r.status, 200, "{e}: {}", r.text);
            let mut want = vec![id(&old), id(&unused)];
            want.sort();
            let pruned = strings(&Value::Array(
                r.json()
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| i["Id"].clone())
                    .collect(),
            ));
            assert_eq!(pruned, want, "{e}: {}", r.text);
        } else {
            assert_eq!(r.status, 200, "{e}: {}", r.text);
            assert_eq!(
                untagged(&r.json()),
                [name("old:1"), name("unused:1")],
                "{e}: {}",
                r.text
            );
            assert!(deleted(&r.json()).contains(&old), "{e}: {}", r.text);
        }
        let images = engine.api("GET", "/images/json").json();
        let ids: Vec<&str> = images
            .as_array()
            .into_iter()
            .flatten()
            .map(|i| text(&i["Id"]))
            .collect();
        assert_eq!(ids, [keep.as_str()], "{e}: only the image in use is left");

        let r = engine.api("POST", "/build/prune");
        if podman {
            assert_eq!((r.status, r.text.trim()), (404, "Not Found"), "{e}");
        } else {
            assert_eq!(
                (r.status, r.json()),
                (200, json!({"CachesDeleted": null, "SpaceReclaimed": 0})),
                "{e}"
            );
        }
    }
}
