//! Probes of Podman's Docker-compatible API (`podman system service`, Debian's podman 4.3.1),
//! side by side with Docker 20.10 (Debian's docker.io), for every call the cleaner makes. Raw
//! HTTP over the unix sockets, unversioned paths as bollard 0.21 sends them (crates.md G1), no
//! library code: these pin down what the engines answer, so an engine upgrade that changes an
//! answer fails here, loudly, before it misleads the cleaner.
//!
//! Each test starts one private dockerd and one private Podman service on one shared loop
//! filesystem, does the same things to both and asserts each one's answer. The doc comment of
//! each test says what the difference means for the cleaner. Split: this file has the setup,
//! `/version` and the listings; [`removals`] tagging and removing; [`events`] the event stream;
//! [`prune`] the prune and disk-usage endpoints.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use crate::util::api::Reply;
use crate::util::bed::{DockerKind, PodmanKind};
use crate::util::cli::EngineCli;
use crate::util::dockerd::PrivateDockerd;
use crate::util::loopfs::SharedFs;
use crate::util::podman::PrivatePodman;
use crate::util::require::Service;

mod events;
mod prune;
mod removals;

/// The two engines of a probe, on one filesystem.
struct Pair {
    docker: PrivateDockerd,
    podman: PrivatePodman,
}

/// A dockerd and a Podman service on a fresh 512 MiB shared filesystem; `None` when this machine
/// cannot run them (recorded as skips; a panic under CI).
fn pair(name: &str) -> Option<Pair> {
    let fs = SharedFs::new(Service::Podman, name, 512, None)?;
    let t0 = Instant::now();
    let docker = PrivateDockerd::start_on(&fs, "docker")?;
    let t1 = Instant::now();
    let podman = PrivatePodman::start_on(&fs, "podman")?;
    eprintln!(
        "{name}: dockerd started in {:?}, podman in {:?}",
        t1 - t0,
        t1.elapsed()
    );
    Some(Pair { docker, podman })
}

/// What a probe does to an engine, the same way on both (with the containers and listings of
/// its CLI).
trait Probed: EngineCli {
    fn api(&self, method: &str, path: &str) -> Reply;
    fn socket(&self) -> PathBuf;
    fn image(&self, tag: &str, payload_mib: u64) -> String;
    fn dangling_image(&self, payload_mib: u64) -> String;
    /// `save` the image `tag` to a file, remove it, `load` it back.
    fn save_remove_load(&self, tag: &str);
}

impl Probed for PrivateDockerd {
    fn api(&self, method: &str, path: &str) -> Reply {
        PrivateDockerd::api(self, method, path)
    }
    fn socket(&self) -> PathBuf {
        PrivateDockerd::socket(self)
    }
    fn image(&self, tag: &str, payload_mib: u64) -> String {
        PrivateDockerd::image(self, tag, payload_mib)
    }
    fn dangling_image(&self, payload_mib: u64) -> String {
        PrivateDockerd::dangling_image(self, payload_mib)
    }
    fn save_remove_load(&self, tag: &str) {
        let file = self.dir().join("saved.tar");
        let file = file.to_str().expect("ASCII temp path");
        self.docker(&["save", "-o", file, tag]);
        self.docker(&["rmi", tag]);
        self.docker(&["load", "-i", file]);
    }
}

impl Probed for PrivatePodman {
    fn api(&self, method: &str, path: &str) -> Reply {
        PrivatePodman::api(self, method, path)
    }
    fn socket(&self) -> PathBuf {
        PrivatePodman::socket(self)
    }
    fn image(&self, tag: &str, payload_mib: u64) -> String {
        PrivatePodman::image(self, tag, payload_mib)
    }
    fn dangling_image(&self, payload_mib: u64) -> String {
        PrivatePodman::dangling_image(self, payload_mib)
    }
    fn save_remove_load(&self, tag: &str) {
        let file = self.dir().join("saved.tar");
        let file = file.to_str().expect("ASCII temp path");
        self.podman_copying(&["save", "-o", file, tag]);
        self.podman(&["rmi", tag]);
        self.podman_copying(&["load", "-i", file]);
    }
}

/// `sha256:<hex>` → `<hex>`.
fn hex(id: &str) -> &str {
    id.strip_prefix("sha256:").unwrap_or(id)
}

/// A JSON string, or "" when it is not one.
fn text(v: &Value) -> &str {
    v.as_str().unwrap_or_default()
}

/// A JSON array of strings, sorted; empty for `null`.
fn strings(v: &Value) -> Vec<String> {
    let mut all: Vec<String> = v
        .as_array()
        .map(|a| a.iter().map(|s| text(s).to_string()).collect())
        .unwrap_or_default();
    all.sort();
    all
}

/// The element of a JSON array whose `key` is `value`; panics naming both when there is none.
fn find<'a>(list: &'a Value, key: &str, value: &str) -> &'a Value {
    list.as_array()
        .and_then(|a| a.iter().find(|v| text(&v[key]) == value))
        .unwrap_or_else(|| panic!("no {key} = {value} in {list}"))
}

fn now_secs() -> i64 {
    let since_epoch = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock after 1970");
    i64::try_from(since_epoch.as_secs()).expect("seconds fit i64")
}

/// `GET /version`. What tells Podman from Docker: a component named "Podman Engine" (Docker's
/// is "Engine"), `Platform.Name` "linux/amd64/debian-12" on 4.3 and "linux/amd64/debian-unknown"
/// on 5.8 (Docker's is empty). Podman claims Docker API 1.41 (4.3) or 1.44 (5.8) in `ApiVersion`;
/// its own API version (4.3.1 or 5.8.6, minimum 4.0.0) is in the component's `Details`.
/// Docker 20.10 answers API 1.41 (minimum 1.12), Docker 28.5 API 1.51 (minimum 1.24). For the
/// cleaner: detect Podman by the component name, never by `ApiVersion`.
#[test]
fn version_identifies_the_engine() {
    let Some(p) = pair("version") else {
        return;
    };
    let d = p.docker.api("GET", "/version").json();
    let q = p.podman.api("GET", "/version").json();
    let summary = |v: &Value| {
        (
            text(&v["Components"][0]["Name"]).to_string(),
            text(&v["Platform"]["Name"]).to_string(),
            text(&v["ApiVersion"]).to_string(),
            text(&v["MinAPIVersion"]).to_string(),
        )
    };
    let (docker_version, docker_api, docker_min) = match p.docker.kind() {
        DockerKind::Host => ("20.10.", "1.41", "1.12"),
        DockerKind::Bed | DockerKind::BedContainerd => ("28.5.", "1.51", "1.24"),
    };
    assert_eq!(
        summary(&d),
        (
            "Engine".into(),
            String::new(),
            docker_api.into(),
            docker_min.into()
        )
    );
    assert!(text(&d["Version"]).starts_with(docker_version), "{d}");
    let (podman_version, platform, podman_api) = match p.podman.kind() {
        PodmanKind::Host => ("4.3.1", "linux/amd64/debian-12", "1.41"),
        PodmanKind::Bed => ("5.8.6", "linux/amd64/debian-unknown", "1.44"),
    };
    assert_eq!(
        summary(&q),
        (
            "Podman Engine".into(),
            platform.into(),
            podman_api.into(),
            "1.24".into()
        )
    );
    assert_eq!(text(&q["Version"]), podman_version);
    let details = &q["Components"][0]["Details"];
    assert_eq!(
        (
            text(&details["APIVersion"]),
            text(&details["MinAPIVersion"])
        ),
        (podman_version, "4.0.0")
    );
    let names = |v: &Value| -> Vec<String> {
        let components = v["Components"].as_array().into_iter().flatten();
        components.map(|c| text(&c["Name"]).to_string()).collect()
    };
    assert!(!names(&d).iter().any(|n| n.contains("Podman")), "{d}");
    assert!(names(&q).contains(&"Podman Engine".to_string()));
}

/// `GET /images/json`, `GET /containers/json?all=1`, `GET /images/{name}/json`: the inventory.
///
/// Same on both: `Id` and `ImageID` are `sha256:<hex>`; `ParentId` is "" for an imported image;
/// `Created` is unix seconds in the list and RFC 3339 in the inspect; `Size` is the image's
/// bytes; `State` is `created`, `running` or `exited`; inspect finds an image by short tag, by
/// `sha256:` id, by bare or 12-digit hex.
///
/// Different, and what the cleaner must expect:
/// - tags: Podman stores a CLI-made short name as `localhost/app:1` (and an API-made one as
///   `docker.io/library/app:1`); Docker keeps `app:1`. Compare tags only after normalising both.
/// - a dangling image: Docker lists `RepoTags: ["<none>:<none>"]`, Podman `null` (and adds
///   `"Dangling": true`). Treat both as "no tag".
/// - `Containers`: Docker -1 (crates.md G2), Podman the real count.
/// - a container's `Image`: the name as given on Docker, the resolved `localhost/app:1` on
///   Podman (an id stays the id on both). Use `ImageID`.
#[test]
fn listings_and_inspect() {
    let Some(p) = pair("listings") else {
        return;
    };
    let started = now_secs();
    for (e, engine, tag) in [
        ("docker", &p.docker as &dyn Probed, "app:1"),
        ("podman", &p.podman as &dyn Probed, "localhost/app:1"),
    ] {
        let t = Instant::now();
        let id = engine.image("app:1", 2);
        let dangling = engine.dangling_image(1);
        let exited = engine.stopped_container("app:1");
        let created = engine.created_container(&id);
        let running = engine.running_container("app:1");

        let images = engine.api("GET", "/images/json").json();
        let image = find(&images, "Id", &id);
        assert_eq!(strings(&image["RepoTags"]), [tag], "{e}: {image}");
        assert_eq!(text(&image["ParentId"]), "", "{e}");
        let created_at = image["Created"].as_i64().unwrap_or_default();
        assert!(
            (started - 60..now_secs() + 60).contains(&created_at),
            "{e}: {image}"
        );
        let size = image["Size"].as_u64().unwrap_or_default();
        // 2 MiB of payload, busybox (1.9 MiB), a nonce.
        assert!((4_000_000..4_200_000).contains(&size), "{e}: {size}");
        let (containers, dangling_tags) = match e {
            "docker" => (-1, Value::from(vec!["<none>:<none>"])),
            _ => (3, Value::Null),
        };
        assert_eq!(image["Containers"].as_i64(), Some(containers), "{e}");
        let unnamed = find(&images, "Id", &dangling);
        assert_eq!(unnamed["RepoTags"], dangling_tags, "{e}: {unnamed}");
        assert_eq!(
            unnamed["Dangling"].as_bool(),
            (e == "podman").then_some(true),
            "{e}"
        );

        let all = engine.api("GET", "/containers/json?all=1").json();
        for (c, state, given) in [
            (&exited, "exited", tag),
            (&created, "created", id.as_str()),
            (&running, "running", tag),
        ] {
            let c = find(&all, "Id", c);
            assert_eq!(
                (text(&c["State"]), text(&c["ImageID"]), text(&c["Image"])),
                (
                    state,
                    id.as_str(),
                    if e == "docker" && given == tag {
                        "app:1"
                    } else {
                        given
                    }
                ),
                "{e}: {c}"
            );
        }

        let short = &hex(&id)[..12];
        for name in ["app:1", id.as_str(), hex(&id), short] {
            let r = engine.api("GET", &format!("/images/{name}/json"));
            assert_eq!(r.status, 200, "{e}: {name}: {}", r.text);
            let v = r.json();
            assert_eq!(
                (text(&v["Id"]), strings(&v["RepoTags"])),
                (id.as_str(), vec![tag.to_string()])
            );
            assert!(
                text(&v["Created"]).parse::<jiff::Timestamp>().is_ok(),
                "{e}: {v}"
            );
        }
        eprintln!("{e}: listings probe {:?}", t.elapsed());
    }
}
