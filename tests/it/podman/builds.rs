//! Classic builds (`DOCKER_BUILDKIT=0`) on both engines: the parents they record, the events
//! they log, and what removing a parent does.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime};

use serde_json::{Value, json};

use super::events::stamp;
use super::{Gen, Probed, find, hex, pair, strings, text};
use crate::util::api::{self, Reply};

/// What was built on an engine, and what it answered.
struct Built {
    base: String,
    child: String,
    two: String,
    /// `GET /images/json` and `GET /images/json?all=true` after the builds.
    list: Value,
    all: Value,
    /// `DELETE /images/{base id}`, and `GET /images/json?all=true` after it.
    removal: Reply,
    after: Value,
}

/// An imported base; a child FROM it with one `RUN` step, built twice (the second time tagged
/// `b-child:2`); an image FROM it with two steps (`COPY`, `RUN`); then the base removed by id.
fn build(engine: &dyn Probed) -> Built {
    let base = engine.image("b-base:1", 1);
    let from = if engine.generation().is_podman() {
        "localhost/b-base:1"
    } else {
        "b-base:1"
    };
    let run =
        r#"RUN ["/busybox", "sh", "-c", "/busybox head -c 100000 /dev/urandom > /generated"]"#;
    let one_step = format!("FROM {from}\n{run}\n");
    let child = engine.classic_build("b-child:1", &one_step);
    let again = engine.classic_build("b-child:2", &one_step);
    assert_eq!(again, child, "{}: a cache hit", engine.generation().name());
    let two = engine.classic_build(
        "b-two:1",
        &format!("FROM {from}\nCOPY busybox /bb2\n{run}\n"),
    );
    let list = engine.api("GET", "/images/json").json();
    let all = engine.api("GET", "/images/json?all=true").json();
    let removal = engine.api("DELETE", &format!("/images/{base}"));
    let after = engine.api("GET", "/images/json?all=true").json();
    Built {
        base,
        child,
        two,
        list,
        all,
        removal,
        after,
    }
}

fn ids(list: &Value) -> BTreeSet<String> {
    list.as_array()
        .into_iter()
        .flatten()
        .map(|i| text(&i["Id"]).to_string())
        .collect()
}

/// Image events of `action`: (`Actor.ID`, `Attributes.name`), in order.
fn image_events(events: &[Value], action: &str) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| text(&e["Type"]) == "image" && text(&e["Action"]) == action)
        .map(|e| {
            (
                text(&e["Actor"]["ID"]).to_string(),
                text(&e["Actor"]["Attributes"]["name"]).to_string(),
            )
        })
        .collect()
}

/// Classic builds (the Docker CLI with `DOCKER_BUILDKIT=0`; for Podman through its service, as
/// a `docker build` on a node) FROM an imported base.
///
/// Same on every engine: an image built FROM the base with one `RUN` step has a `ParentId`
/// naming the base; one built with two steps (`COPY`, `RUN`) names the intermediate image the
/// first step left, which `/images/json` lists only with `all=true`, untagged, its own
/// `ParentId` naming the base. Building the same Dockerfile again is a cache hit: the same
/// image, with the new tag added.
///
/// Different, and what the cleaner must expect:
/// - `ParentId`: `sha256:<hex>` on Docker (20.10, 28.5 both stores); **bare hex on Podman 4.3
///   and 5.8**, whose `Id` has the prefix. Compare ids only after normalising both.
/// - the hidden intermediate's `RepoTags`: Docker 20.10 `["<none>:<none>"]`, Docker 28.5 `[]`,
///   Podman 4.3 `null`, Podman 5.8 `[]`.
/// - events: Docker logs a `tag` naming the image's id for each tag a build gives (a cache hit
///   too); Docker 28.5 also logs `image create` for each image the build commits (the classic
///   store not for the intermediate of a `COPY`, the containerd store for every one), Docker
///   20.10 none. **Podman (4.3 and 5.8) logs one `build` per build, a cache hit too, with an
///   empty `Actor.ID` and the image's bare hex id as `Attributes.name`, and no `tag`**, not even
///   for a new tag: a build is a use only through its `build` event.
/// - removing the parent by id: Docker's classic store (20.10, 28.5) 409 "(cannot be forced) -
///   image has dependent child images"; **the containerd store 200, the parent deleted** (its
///   children's `ParentId` still names it); **Podman 200 with only `[{"Untagged": …}]`, yet the
///   image is gone** (its children's and the intermediate's `ParentId` become ""). There the
///   layers stay for the children: nothing is freed and the tag is lost. A cleaner must keep the
///   parent of an image that stays, through a build's hidden intermediates too.
#[test]
fn classic_builds_parents_and_events() {
    let Some(p) = pair("builds") else {
        return;
    };
    let since = stamp(SystemTime::now() - Duration::from_secs(1));
    let built = [build(&p.docker), build(&p.podman)];
    // Concurrently, with a future `until`: Podman returns nothing for an `until` in the past.
    let until = stamp(SystemTime::now() + Duration::from_millis(1200));
    let query = format!("/events?since={since}&until={until}");
    let (docker_events, podman_events) = std::thread::scope(|s| {
        let get = |socket: std::path::PathBuf| {
            let query = query.clone();
            move || api::request_within(&socket, "GET", &query, Duration::from_secs(30))
        };
        let d = s.spawn(get(p.docker.socket()));
        let q = s.spawn(get(p.podman.socket()));
        (
            d.join().expect("docker events"),
            q.join().expect("podman events"),
        )
    });

    for (engine, b, events) in [
        (&p.docker as &dyn Probed, &built[0], &docker_events),
        (&p.podman, &built[1], &podman_events),
    ] {
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
        let name = |n: &str| {
            if podman {
                format!("docker.io/library/{n}")
            } else {
                n.to_string()
            }
        };

        // Parents.
        assert_eq!(text(&find(&b.list, "Id", &b.base)["ParentId"]), "", "{e}");
        let child = find(&b.list, "Id", &b.child);
        assert_eq!(text(&child["ParentId"]), id(&b.base), "{e}: {child}");
        assert_eq!(
            strings(&child["RepoTags"]),
            [name("b-child:1"), name("b-child:2")],
            "{e}: {child}"
        );
        let two = find(&b.list, "Id", &b.two);
        let step = text(&two["ParentId"]).to_string();
        let step_id = if podman {
            format!("sha256:{step}")
        } else {
            step.clone()
        };
        assert!(
            !ids(&b.list).contains(&step_id),
            "{e}: the intermediate {step} is not listed without all=true"
        );
        let intermediate = find(&b.all, "Id", &step_id);
        assert_eq!(
            text(&intermediate["ParentId"]),
            id(&b.base),
            "{e}: {intermediate}"
        );
        let untagged = match g {
            Gen::Docker20 => json!(["<none>:<none>"]),
            Gen::Podman4 => Value::Null,
            Gen::Docker28 | Gen::Docker28Containerd | Gen::Podman5 => json!([]),
        };
        assert_eq!(intermediate["RepoTags"], untagged, "{e}: {intermediate}");

        // Events.
        assert_eq!(events.status, 200, "{e}: {}", events.text);
        let events = events.json_lines();
        let pair_of = |i: &str, n: &str| (id(i), n.to_string());
        if podman {
            assert_eq!(
                image_events(&events, "build"),
                [
                    (String::new(), hex(&b.child).to_string()),
                    (String::new(), hex(&b.child).to_string()),
                    (String::new(), hex(&b.two).to_string()),
                ],
                "{e}"
            );
            assert_eq!(
                image_events(&events, "tag"),
                [pair_of(&b.base, "b-base:1")],
                "{e}: no tag from a build"
            );
        } else {
            assert_eq!(image_events(&events, "build"), [], "{e}");
            assert_eq!(
                image_events(&events, "tag"),
                [
                    pair_of(&b.base, "b-base:1"),
                    pair_of(&b.child, "b-child:1"),
                    pair_of(&b.child, "b-child:2"),
                    pair_of(&b.two, "b-two:1"),
                ],
                "{e}"
            );
            let committed: Vec<&str> = match g {
                Gen::Docker20 => vec![],
                Gen::Docker28 => vec![&b.child, &b.two],
                _ => vec![&b.child, &step_id, &b.two],
            };
            let creates: Vec<String> = image_events(&events, "create")
                .into_iter()
                .map(|(actor, _)| actor)
                .collect();
            assert_eq!(creates, committed, "{e}");
        }

        // Removing the parent.
        let r = &b.removal;
        let base_left = ids(&b.after).contains(&b.base);
        match g {
            Gen::Docker20 | Gen::Docker28 => {
                assert_eq!(r.status, 409, "{e}: {}", r.text);
                assert!(
                    r.message()
                        .contains("(cannot be forced) - image has dependent child images"),
                    "{e}: {}",
                    r.text
                );
                assert!(base_left, "{e}");
            }
            Gen::Docker28Containerd => {
                assert_eq!(
                    (r.status, r.json()),
                    (200, json!([{"Untagged": "b-base:1"}, {"Deleted": b.base}])),
                    "{e}: {}",
                    r.text
                );
                assert!(!base_left, "{e}");
                assert_eq!(
                    text(&find(&b.after, "Id", &b.child)["ParentId"]),
                    b.base,
                    "{e}: the child still names its parent"
                );
            }
            Gen::Podman4 | Gen::Podman5 => {
                assert_eq!(
                    (r.status, r.json()),
                    (200, json!([{"Untagged": "localhost/b-base:1"}])),
                    "{e}: {}",
                    r.text
                );
                assert!(!base_left, "{e}: gone, though no Deleted says so");
                for orphan in [&b.child, &step_id] {
                    assert_eq!(
                        text(&find(&b.after, "Id", orphan)["ParentId"]),
                        "",
                        "{e}: {orphan}"
                    );
                }
            }
        }
    }
}
