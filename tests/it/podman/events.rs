//! `GET /events` on both engines: which actions appear, what their actor fields hold, and how
//! `since`, `until`, `filters` and `stream` behave.

use std::collections::BTreeSet;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use super::{Gen, Probed, hex, pair, text};
use crate::util::api::{self, Reply, query_value};
use crate::util::wait_until;

/// A time as the cleaner sends it: `secs.nanos` (engine.rs `stamp`).
pub(super) fn stamp(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).expect("clock after 1970");
    format!("{}.{:09}", d.as_secs(), d.subsec_nanos())
}

/// `type action` of each event.
fn kinds(events: &[Value]) -> BTreeSet<String> {
    events
        .iter()
        .map(|e| format!("{} {}", text(&e["Type"]), text(&e["Action"])))
        .collect()
}

fn set(items: &[&str]) -> BTreeSet<String> {
    items.iter().map(|s| (*s).to_string()).collect()
}

/// Events of `type action` whose actor is `id`.
fn of<'a>(events: &'a [Value], kind: &str, id: &str) -> Vec<&'a Value> {
    events
        .iter()
        .filter(|e| format!("{} {}", text(&e["Type"]), text(&e["Action"])) == kind)
        .filter(|e| text(&e["Actor"]["ID"]) == id)
        .collect()
}

/// What was done to an engine, for the assertions.
struct Done {
    image: String,
    dangling: String,
    refused: String,
    container: String,
    /// The image saved, removed and loaded back.
    loaded: String,
}

/// On Podman, waits until the `cleanup` of the container `id` that exited is logged: conmon's
/// exit command (`podman container cleanup`) logs it after the exit, asynchronously, and a
/// removal that comes first leaves no `cleanup` event (seen on 5.8). Docker has no such event.
fn settle(engine: &dyn Probed, id: &str) {
    if !engine.generation().is_podman() {
        return;
    }
    let filters = query_value(&format!(r#"{{"container":["{id}"],"event":["cleanup"]}}"#));
    let since = stamp(SystemTime::now() - Duration::from_secs(600));
    let path = format!("/events?since={since}&stream=false&filters={filters}");
    let logged = wait_until(Duration::from_secs(30), || {
        !engine.api("GET", &path).json_lines().is_empty()
    });
    assert!(
        logged,
        "{}: no cleanup event for {id}",
        engine.generation().name()
    );
}

/// The same actions on each engine: import (tagged and not), tag through the API, a refused
/// removal, a container created, started, exited and removed, an untag, a removal, save and load.
fn act(engine: &dyn Probed) -> Done {
    let image = engine.image("ev-a:1", 1);
    let dangling = engine.dangling_image(1);
    assert_eq!(
        engine
            .api("POST", &format!("/images/{image}/tag?repo=ev-b&tag=1"))
            .status,
        201
    );
    let refused = engine.image("ev-keep:1", 1);
    engine.created_container(&refused);
    assert_eq!(
        engine.api("DELETE", &format!("/images/{refused}")).status,
        409
    );
    let container = engine.stopped_container("ev-a:1");
    settle(engine, &container);
    engine.cli(&["rm", &container]);
    assert_eq!(engine.api("DELETE", "/images/ev-b:1").status, 200);
    assert_eq!(
        engine.api("DELETE", &format!("/images/{image}")).status,
        200
    );
    let loaded = engine.image("ev-l:1", 1);
    engine.save_remove_load("ev-l:1");
    Done {
        image,
        dangling,
        refused,
        container,
        loaded,
    }
}

/// What one engine answered to the four queries.
struct Answers {
    full: Reply,
    full_took: Duration,
    containers: Reply,
    past: Reply,
    no_stream: Reply,
}

fn ask(engine: &dyn Probed, since: &str, until_past: &str, until: &str) -> Answers {
    let both = query_value(r#"{"type":["container","image"]}"#);
    let containers = query_value(r#"{"type":["container"]}"#);
    let socket = engine.socket();
    let get = |query: String, bound: Duration| {
        let socket = socket.clone();
        move || {
            let t = Instant::now();
            let r = api::request_within(&socket, "GET", &format!("/events?{query}"), bound);
            (r, t.elapsed())
        }
    };
    let long = Duration::from_secs(30);
    // Concurrently: the two queries that end at the future `until` cost one wait, not two.
    std::thread::scope(|s| {
        let full = s.spawn(get(
            format!("since={since}&until={until}&filters={both}"),
            long,
        ));
        let only = s.spawn(get(
            format!("since={since}&until={until}&filters={containers}"),
            long,
        ));
        let past = s.spawn(get(
            format!("since={since}&until={until_past}&filters={both}"),
            long,
        ));
        let no_stream = s.spawn(get(
            format!("since={since}&stream=false&filters={both}"),
            Duration::from_millis(1500),
        ));
        let (full, full_took) = full.join().expect("events thread");
        Answers {
            full,
            full_took,
            containers: only.join().expect("events thread").0,
            past: past.join().expect("events thread").0,
            no_stream: no_stream.join().expect("events thread").0,
        }
    })
}

/// `GET /events?since=…&until=…&filters={"type":["container","image"]}` after the same actions.
///
/// Same on every engine: `time` and `timeNano` are set on every event and agree; `filters` with
/// two types gives both, with one type only that one; a future `until` ends the stream at that
/// time (the request lasts until then); container events carry `Attributes["image"]`.
///
/// Docker 20.10 and 28.5 (API 1.51, both stores) still send the deprecated `status`, `id` and
/// `from` fields beside `Action` and `Actor` (API 1.52, Docker 29, drops them: read `Action`
/// and `Actor`). Docker 28.5's `die` adds `execDuration`.
///
/// Different, and what the cleaner must expect:
/// - Docker with the containerd image store: **`untag` names the tag removed** (`ev-b:1`), where
///   the classic store (20.10, 28.5) names the image id; `Actor.ID` is the image id on both.
/// - Podman (4.3 and 5.8), **`until` in the past returns nothing** (or a few events: the file
///   reader is stopped before it reads). Docker returns everything up to `until` and ends at
///   once. Asking Podman for history therefore needs a future `until` (it then waits until that
///   time) or `stream=false` (Podman only: the whole history, then the end; Docker ignores it and
///   keeps streaming).
/// - Podman, no `import` event: a `podman import` with a tag logs only `tag` (with the short name
///   given), one without a tag logs nothing. Docker logs `import` (and `tag`).
/// - Podman's image `Actor.ID` is the bare hex id (Docker: `sha256:<hex>`). A container created
///   from a name logs a `pull` (no registry is asked) and `podman load` logs `loadfromarchive`
///   (not `load`) with the archive's path as name: on **4.3 both with an empty `Actor.ID`**, on
///   **5.8 with the image's id**.
/// - Podman, **`delete` is logged for a refused removal too** (409 in use, 500 by id with two
///   tags) and along with an `untag`: it does not mean the image is gone. Docker logs `delete`
///   only when the image is removed.
/// - Podman's `untag` names the tag removed (`docker.io/library/ev-b:1`).
/// - Podman's container actions: `create init start attach die cleanup remove` (no `destroy`,
///   Docker's name for the removal); `cleanup` comes from conmon's exit command, after the exit
///   and asynchronously (a removal right after the exit can come first: then there is none);
///   `Attributes["image"]` is the resolved `localhost/ev-a:1` where Docker gives the name as
///   typed.
#[test]
fn events_of_each_action() {
    let Some(p) = pair("events") else {
        return;
    };
    let since = stamp(SystemTime::now() - Duration::from_secs(1));
    let t = Instant::now();
    let done = [act(&p.docker), act(&p.podman)];
    eprintln!("events: actions on both engines {:?}", t.elapsed());
    let until_past = stamp(SystemTime::now());
    let wait = Duration::from_millis(1200);
    let until = stamp(SystemTime::now() + wait);
    let t = Instant::now();
    let (docker, podman) = std::thread::scope(|s| {
        let d = s.spawn(|| ask(&p.docker, &since, &until_past, &until));
        let q = ask(&p.podman, &since, &until_past, &until);
        (d.join().expect("docker events"), q)
    });
    eprintln!("events: queries {:?}", t.elapsed());

    for (engine, answers, done) in [
        (&p.docker as &dyn Probed, &docker, &done[0]),
        (&p.podman, &podman, &done[1]),
    ] {
        let g = engine.generation();
        let e = g.name();
        let podman = g.is_podman();
        assert_eq!(answers.full.status, 200, "{e}: {}", answers.full.text);
        assert!(answers.full.ended, "{e}: a future until ends the stream");
        assert!(
            answers.full_took >= wait - Duration::from_millis(200),
            "{e}: {:?}",
            answers.full_took
        );
        let full = answers.full.json_lines();
        let expected = if podman {
            set(&[
                "container attach",
                "container cleanup",
                "container create",
                "container die",
                "container init",
                "container remove",
                "container start",
                "image delete",
                "image loadfromarchive",
                "image pull",
                "image save",
                "image tag",
                "image untag",
            ])
        } else {
            set(&[
                "container attach",
                "container create",
                "container destroy",
                "container die",
                "container start",
                "image delete",
                "image import",
                "image load",
                "image save",
                "image tag",
                "image untag",
            ])
        };
        assert_eq!(kinds(&full), expected, "{e}");
        for ev in &full {
            let (secs, nanos) = (ev["time"].as_i64(), ev["timeNano"].as_i64());
            assert_eq!(
                nanos.map(|n| n.div_euclid(1_000_000_000)),
                secs,
                "{e}: {ev}"
            );
            if !podman {
                // The fields API 1.52 drops, still sent by 20.10 and 28.5.
                assert_eq!(text(&ev["status"]), text(&ev["Action"]), "{e}: {ev}");
                assert_eq!(text(&ev["id"]), text(&ev["Actor"]["ID"]), "{e}: {ev}");
            }
        }

        // Actor.ID of image events.
        let image_ids: BTreeSet<&str> = full
            .iter()
            .filter(|ev| text(&ev["Type"]) == "image")
            .map(|ev| text(&ev["Actor"]["ID"]))
            .collect();
        let well_formed = |id: &str| {
            let h = if podman {
                Some(id)
            } else {
                id.strip_prefix("sha256:")
            };
            h.is_some_and(|h| h.len() == 64 && h.chars().all(|c| c.is_ascii_hexdigit()))
        };
        let odd: Vec<&&str> = image_ids.iter().filter(|id| !well_formed(id)).collect();
        assert_eq!(
            odd,
            if g == Gen::Podman4 { vec![&""] } else { vec![] },
            "{e}: {image_ids:?}"
        );
        let id = |i: &str| {
            if podman {
                hex(i).to_string()
            } else {
                i.to_string()
            }
        };

        let imports = of(&full, "image import", &id(&done.image)).len()
            + of(&full, "image import", &id(&done.dangling)).len();
        assert_eq!(imports, if podman { 0 } else { 2 }, "{e}");
        let naming_dangling = full
            .iter()
            .filter(|ev| text(&ev["Actor"]["ID"]) == id(&done.dangling))
            .count();
        assert_eq!(
            naming_dangling,
            if podman { 0 } else { 1 },
            "{e}: events naming the untagged import"
        );
        let refused = of(&full, "image delete", &id(&done.refused)).len();
        assert_eq!(
            refused,
            usize::from(podman),
            "{e}: delete events of a refused removal"
        );
        let untags = of(&full, "image untag", &id(&done.image));
        let untag_names: BTreeSet<&str> = untags
            .iter()
            .map(|ev| text(&ev["Actor"]["Attributes"]["name"]))
            .collect();
        let want: BTreeSet<&str> = match g {
            Gen::Podman4 | Gen::Podman5 => ["docker.io/library/ev-b:1", "localhost/ev-a:1"].into(),
            Gen::Docker28Containerd => ["ev-a:1", "ev-b:1"].into(),
            Gen::Docker20 | Gen::Docker28 => [done.image.as_str()].into(),
        };
        assert_eq!(untag_names, want, "{e}");
        assert_eq!(untags.len(), 2, "{e}: one untag per tag");
        if podman {
            let pulls: Vec<&Value> = full
                .iter()
                .filter(|ev| text(&ev["Action"]) == "pull")
                .collect();
            let loads: Vec<&Value> = full
                .iter()
                .filter(|ev| text(&ev["Action"]) == "loadfromarchive")
                .collect();
            let (pulled, loaded) = match g {
                Gen::Podman4 => (String::new(), String::new()),
                _ => (id(&done.image), id(&done.loaded)),
            };
            assert!(
                !pulls.is_empty()
                    && pulls
                        .iter()
                        .all(|ev| text(&ev["Actor"]["ID"]) == pulled.as_str()),
                "{e}: {pulls:?}"
            );
            assert!(
                pulls
                    .iter()
                    .any(|ev| text(&ev["Actor"]["Attributes"]["name"]) == "ev-a:1"),
                "{e}"
            );
            assert_eq!(loads.len(), 1, "{e}");
            assert_eq!(text(&loads[0]["Actor"]["ID"]), loaded, "{e}: {}", loads[0]);
            assert!(
                text(&loads[0]["Actor"]["Attributes"]["name"]).ends_with("/saved.tar"),
                "{e}: {}",
                loads[0]
            );
        } else {
            assert_eq!(of(&full, "image load", &done.loaded).len(), 1, "{e}");
        }
        let removal = if podman {
            "container remove"
        } else {
            "container destroy"
        };
        let creation = of(&full, "container create", &done.container);
        let image_attr =
            text(&creation.first().expect("a create event")["Actor"]["Attributes"]["image"]);
        assert_eq!(
            image_attr,
            if podman { "localhost/ev-a:1" } else { "ev-a:1" },
            "{e}"
        );
        assert_eq!(of(&full, removal, &done.container).len(), 1, "{e}");
        if podman {
            assert_eq!(
                of(&full, "container cleanup", &done.container).len(),
                1,
                "{e}"
            );
        }

        let containers = answers.containers.json_lines();
        assert!(
            containers.iter().all(|ev| text(&ev["Type"]) == "container"),
            "{e}"
        );
        let container_events = full
            .iter()
            .filter(|ev| text(&ev["Type"]) == "container")
            .count();
        assert_eq!(containers.len(), container_events, "{e}");

        let past = answers.past.json_lines();
        assert!(answers.past.ended, "{e}: a past until ends at once");
        if podman {
            assert!(
                past.len() < full.len(),
                "{e}: until in the past gave {} of {}",
                past.len(),
                full.len()
            );
        } else {
            assert_eq!(past.len(), full.len(), "{e}");
        }
        let no_stream = answers.no_stream.json_lines();
        assert_eq!(
            answers.no_stream.ended, podman,
            "{e}: stream=false ends only on Podman"
        );
        assert_eq!(no_stream.len(), full.len(), "{e}");
    }
}
