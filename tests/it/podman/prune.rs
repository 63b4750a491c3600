//! The prune endpoints and `/system/df` on both engines.

use serde_json::{Value, json};

use super::{Gen, Probed, find, hex, pair, strings, text};
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
/// Same on every engine: the container prune removes created and exited containers, keeps
/// running ones, and answers `ContainersDeleted` and `SpaceReclaimed`; the image prune with
/// `filters={"dangling":["true"]}` removes only untagged images; `all=true` (a parameter of
/// Podman's own API) is ignored by the compatible endpoint.
///
/// Different, and what the cleaner must expect:
/// - what a prune's `ImagesDeleted` lists: the classic store (Docker 20.10, 28.5) `Deleted`
///   `sha256:<hex>` for the image, then one per layer (an image with one layer counts twice);
///   the containerd store an `Untagged` naming the dangling image's own `sha256:` id, then its
///   `Deleted`, no layers; Podman only `Deleted`, in bare hex (and no `Untagged` for a tagged
///   image it prunes). Count images by matching ids, never by counting entries.
/// - **`filters={"dangling":["false"]}` (Docker's "all unused images")**: Docker prunes every
///   unused image; **Podman 4.3 answers 500** ("specifying \"dangling\" filter more than once
///   with different values is not supported": its compatible endpoint always adds
///   `dangling=true`); **Podman 5.8 does as Docker** (200, bare-hex `Deleted` only). Only
///   Podman's own API prunes every unused image on 4.3 (`POST /v4.3.1/libpod/images/prune?all=true`,
///   unversioned 404). A cleaner that must work on 4.3 removes unused images one by one on
///   Podman (as its LRU pass does).
/// - **`POST /build/prune` answers 404 on Podman** (plain text "Not Found", 4.3 and 5.8); Docker
///   200 with `{"CachesDeleted":null,"SpaceReclaimed":0}` (20.10, 28.5 both stores). Skip
///   build-cache pruning on Podman.
/// - `/system/df`: `BuildCache` is `null` on Docker 20.10, `[]` on Docker 28.5 and on Podman.
///   `LayersSize` is the sum of the images' `Size` on Docker 20.10 and 28.5 classic, and on
///   Podman 5.8; **0 on Podman 4.3**; with the containerd store the images' `Size` (blob and
///   snapshot) plus the containers' snapshots. Podman's image entries are unfit on both
///   versions: `RepoTags` holds only the tag (`["1"]` for `localhost/keep:1`), `Id` is bare hex;
///   their `VirtualSize` is 0 on 4.3 (absent on 5.8, as on Docker 28.5). Take sizes from
///   `/images/json` (crates.md G3 says the same of bollard's `df` on Docker).
/// - a dangling prune's `SpaceReclaimed`: the image's `Size` on the classic store and Podman;
///   with the containerd store only the compressed content blob (the inspect's `Size`), not the
///   snapshot, well under half of what it frees. Measure the filesystem.
#[test]
fn prunes_and_disk_usage() {
    let Some(p) = pair("prune") else {
        return;
    };
    for engine in [&p.docker as &dyn Probed, &p.podman] {
        let g = engine.generation();
        let e = g.name();
        let podman = g.is_podman();
        let id = |i: &str| {
            if podman {
                hex(i).to_string()
            } else {
                i.to_string()
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
        let listed = engine.api("GET", "/images/json").json();
        let size_of = |i: &str| find(&listed, "Id", i)["Size"].as_u64().unwrap_or_default();

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
        let virtual_size = match g {
            Gen::Docker20 => Some(size_of(&keep)),
            Gen::Podman4 => Some(0),
            _ => None,
        };
        assert_eq!(entry["VirtualSize"].as_u64(), virtual_size, "{e}: {entry}");
        let build_cache = if g == Gen::Docker20 {
            Value::Null
        } else {
            json!([])
        };
        assert_eq!(df["BuildCache"], build_cache, "{e}");
        let layers = df["LayersSize"].as_u64().unwrap_or_default();
        let images: u64 = [&keep, &old, &dangling, &unused]
            .iter()
            .map(|i| size_of(i))
            .sum();
        assert!(images > 4 * 3_000_000, "{e}: {images}");
        match g {
            Gen::Podman4 => assert_eq!(layers, 0, "{e}: LayersSize"),
            // The three containers' snapshots: a few blocks each.
            Gen::Docker28Containerd => assert!(
                (images..images + 1_000_000).contains(&layers),
                "{e}: LayersSize {layers}, images {images}"
            ),
            _ => assert_eq!(layers, images, "{e}: LayersSize"),
        }

        let r = engine.api("POST", "/containers/prune");
        assert_eq!(r.status, 200, "{e}: {}", r.text);
        assert_eq!(strings(&r.json()["ContainersDeleted"]), stopped, "{e}");
        assert!(r.json()["SpaceReclaimed"].is_u64(), "{e}: {}", r.text);
        let left = engine.api("GET", "/containers/json?all=1").json();
        assert_eq!(find(&left, "Id", &running)["State"], "running", "{e}");

        let blob = engine
            .api("GET", &format!("/images/{dangling}/json"))
            .json()["Size"]
            .as_u64()
            .unwrap_or_default();
        let dangling_only = query_value(r#"{"dangling":["true"]}"#);
        let r = engine.api("POST", &format!("/images/prune?filters={dangling_only}"));
        assert_eq!(r.status, 200, "{e}: {}", r.text);
        let gone = deleted(&r.json());
        assert!(gone.contains(&id(&dangling)), "{e}: {}", r.text);
        assert_eq!(
            gone.len(),
            match g {
                Gen::Docker20 | Gen::Docker28 => 2,
                _ => 1,
            },
            "{e}: the image (and the classic store's layer): {gone:?}"
        );
        let untagged_ids = if g == Gen::Docker28Containerd {
            vec![dangling.clone()]
        } else {
            vec![]
        };
        assert_eq!(untagged(&r.json()), untagged_ids, "{e}: {}", r.text);
        let reclaimed = r.json()["SpaceReclaimed"].as_u64().unwrap_or_default();
        if g == Gen::Docker28Containerd {
            // The inspect's `Size`: the content blob, not the snapshot.
            assert!(
                blob > 1_000_000 && blob < size_of(&dangling) / 2,
                "{e}: {blob}"
            );
            assert_eq!(reclaimed, blob, "{e}: {}", r.text);
        } else {
            assert_eq!(reclaimed, size_of(&dangling), "{e}: {}", r.text);
        }

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
        let mut both = vec![id(&old), id(&unused)];
        both.sort();
        // Podman's own API (a path bollard does not offer).
        let libpod = || {
            let r = engine.api("POST", "/v4.3.1/libpod/images/prune?all=true");
            assert_eq!(r.status, 200, "{e}: {}", r.text);
            strings(&Value::Array(
                r.json()
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|i| i["Id"].clone())
                    .collect(),
            ))
        };
        match g {
            Gen::Podman4 => {
                assert_eq!(r.status, 500, "{e}: {}", r.text);
                assert!(
                    r.message().contains("\"dangling\" filter more than once"),
                    "{e}: {}",
                    r.text
                );
                assert_eq!(libpod(), both, "{e}");
            }
            Gen::Podman5 => {
                assert_eq!(r.status, 200, "{e}: {}", r.text);
                assert_eq!(deleted(&r.json()), both, "{e}: {}", r.text);
                assert_eq!(untagged(&r.json()), Vec::<String>::new(), "{e}");
                assert_eq!(libpod(), Vec::<String>::new(), "{e}: nothing left");
            }
            Gen::Docker20 | Gen::Docker28 | Gen::Docker28Containerd => {
                assert_eq!(r.status, 200, "{e}: {}", r.text);
                assert_eq!(
                    untagged(&r.json()),
                    ["old:1", "unused:1"],
                    "{e}: {}",
                    r.text
                );
                let gone = deleted(&r.json());
                assert!(
                    gone.contains(&old) && gone.contains(&unused),
                    "{e}: {}",
                    r.text
                );
                let layers = if g == Gen::Docker28Containerd { 0 } else { 2 };
                assert_eq!(gone.len(), 2 + layers, "{e}: {}", r.text);
            }
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
