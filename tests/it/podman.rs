//! Probes of Podman's Docker-compatible API (`podman system service`) side by side with the
//! Docker Engine, for every call the cleaner makes, on each engine of the matrix
//! (`tests/it/util/bed.rs`): Docker 20.10 (Debian 12's docker.io), Docker 28.5 with the classic
//! overlay2 store and with the containerd image store (the engines test bed), Podman 4.3
//! (Debian 12) and Podman 5.8 (the bed). Raw HTTP over the unix sockets, unversioned paths as
//! bollard 0.21 sends them (crates.md G1), no library code: these pin down what each engine
//! answers, so an engine upgrade that changes an answer fails here, loudly, before it misleads
//! the cleaner.
//!
//! Each test starts one private dockerd and one private Podman service on one shared loop
//! filesystem, does the same things to both and asserts each one's answer, per engine
//! generation ([`Gen`]). The doc comment of each test says what differs, per version, and what
//! that means for the cleaner: it is the project's record of engine differences (the README's
//! "Engines and the versions tested" summarises it). Split: this file has the setup,
//! `/version` and the listings; [`removals`] tagging and removing; [`events`] the event stream;
//! [`builds`] classic builds, their parents and events; [`prune`] the prune and disk-usage
//! endpoints.

use std::path::PathBuf;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::util::api::Reply;
use crate::util::bed::{DockerKind, PodmanKind};
use crate::util::cli::EngineCli;
use crate::util::dockerd::{BUSYBOX, PrivateDockerd};
use crate::util::loopfs::SharedFs;
use crate::util::podman::PrivatePodman;
use crate::util::require::Service;

mod builds;
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

/// The engine generations the probes tell apart: what the matrix runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gen {
    /// Debian 12's docker.io 20.10 (API 1.41), overlay2.
    Docker20,
    /// docker.io 28.5 (API 1.51) with the classic image store (overlay2).
    Docker28,
    /// docker.io 28.5 with the containerd image store (containerd 2.1, overlayfs snapshotter).
    Docker28Containerd,
    /// Debian 12's podman 4.3.
    Podman4,
    /// podman 5.8.
    Podman5,
}

impl Gen {
    fn is_podman(self) -> bool {
        matches!(self, Gen::Podman4 | Gen::Podman5)
    }

    /// The name in assertion messages.
    fn name(self) -> &'static str {
        match self {
            Gen::Docker20 => "docker 20.10",
            Gen::Docker28 => "docker 28.5",
            Gen::Docker28Containerd => "docker 28.5 containerd store",
            Gen::Podman4 => "podman 4.3",
            Gen::Podman5 => "podman 5.8",
        }
    }
}

/// What a probe does to an engine, the same way on both (with the containers and listings of
/// its CLI).
trait Probed: EngineCli {
    /// Which engine this is.
    fn generation(&self) -> Gen;
    fn api(&self, method: &str, path: &str) -> Reply;
    fn socket(&self) -> PathBuf;
    fn image(&self, tag: &str, payload_mib: u64) -> String;
    fn dangling_image(&self, payload_mib: u64) -> String;
    /// `save` the image `tag` to a file, remove it, `load` it back.
    fn save_remove_load(&self, tag: &str);
    /// Builds `tag` from `dockerfile` (with the static busybox in the context as `busybox`)
    /// with the classic builder, `--network=none`: the Docker CLI with `DOCKER_BUILDKIT=0`,
    /// through Podman's service for Podman. Returns the image's id.
    fn classic_build(&self, tag: &str, dockerfile: &str) -> String;
}

impl Probed for PrivateDockerd {
    fn generation(&self) -> Gen {
        match self.kind() {
            DockerKind::Host => Gen::Docker20,
            DockerKind::Bed => Gen::Docker28,
            DockerKind::BedContainerd => Gen::Docker28Containerd,
        }
    }
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
    fn classic_build(&self, tag: &str, dockerfile: &str) -> String {
        let ctx = self
            .dir()
            .join(format!("build-{}", tag.replace([':', '/'], "-")));
        std::fs::create_dir_all(&ctx).expect("a build context dir");
        std::fs::copy(BUSYBOX, ctx.join("busybox")).expect("busybox in the build context");
        std::fs::write(ctx.join("Dockerfile"), dockerfile).expect("the Dockerfile");
        let ctx_path = ctx.to_str().expect("ASCII temp path");
        let args = ["build", "--network=none", "--tag", tag, ctx_path];
        let out = self.try_docker_env(&args, &[("DOCKER_BUILDKIT", "0")]);
        assert!(
            out.status.success(),
            "docker build (classic) of {tag} failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
        std::fs::remove_dir_all(&ctx).expect("removing the build context");
        let out = self.docker(&["image", "inspect", "--format", "{{.Id}}", tag]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Probed for PrivatePodman {
    fn generation(&self) -> Gen {
        match self.kind() {
            PodmanKind::Host => Gen::Podman4,
            PodmanKind::Bed => Gen::Podman5,
        }
    }
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
    fn classic_build(&self, tag: &str, dockerfile: &str) -> String {
        self.build_through_service(tag, dockerfile)
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
/// Same on every engine: `Id` and `ImageID` are `sha256:<hex>`; `ParentId` is "" for an imported
/// image; `Created` is unix seconds in the list and RFC 3339 in the inspect; `State` is
/// `created`, `running` or `exited`; inspect finds an image by short tag, by `sha256:` id, by
/// bare or 12-digit hex.
///
/// Different, and what the cleaner must expect:
/// - tags: Podman (4.3 and 5.8) stores a CLI-made short name as `localhost/app:1` (and an
///   API-made one as `docker.io/library/app:1`); Docker keeps `app:1`. Compare tags only after
///   normalising both.
/// - a dangling image: Docker 20.10 lists `RepoTags: ["<none>:<none>"]` (and `RepoDigests:
///   ["<none>@<none>"]`); Docker 28.5 (both stores) `RepoTags: []`; Podman 4.3 `null`, Podman
///   5.8 `[]`, both with `"Dangling": true`. Treat all of them as "no tag".
/// - `Containers`: Docker 20.10 -1 (crates.md G2); Docker 28.5 (both stores) and Podman the
///   real count.
/// - `VirtualSize`: equal to `Size` on Docker 20.10 and Podman 4.3; gone on Docker 28.5 and
///   Podman 5.8. Read `Size`.
/// - `Size`: the unpacked layers (busybox, the payload) on Docker 20.10, 28.5 classic and
///   Podman; **with the containerd image store, the unpacked snapshot plus the compressed
///   content blob** (each layer is on the disk twice), while the inspect's `Size` is the blob
///   alone. The image's `Id` is there its manifest's digest (also in `Descriptor.digest` and in
///   `RepoDigests` as `app@<id>`).
/// - `SharedSize`: -1 on Docker (20.10, 28.5 classic and containerd store) and Podman 5.8, 0 on
///   Podman 4.3.
/// - a container's `Image`: the name as given on Docker, the resolved `localhost/app:1` on
///   Podman (an id stays the id on both). Use `ImageID`.
#[test]
fn listings_and_inspect() {
    let Some(p) = pair("listings") else {
        return;
    };
    let started = now_secs();
    for engine in [&p.docker as &dyn Probed, &p.podman] {
        let g = engine.generation();
        let e = g.name();
        let tag = if g.is_podman() {
            "localhost/app:1"
        } else {
            "app:1"
        };
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
        // Unpacked: 2 MiB of payload, busybox (1.9 MiB), a nonce.
        let unpacked = 4_000_000..4_200_000;
        let inspected = engine.api("GET", &format!("/images/{id}/json")).json();
        let inspected_size = inspected["Size"].as_u64().unwrap_or_default();
        if g == Gen::Docker28Containerd {
            // The blob: the random payload does not compress, busybox does (to about 1 MB).
            assert!(
                (3_000_000..3_400_000).contains(&inspected_size),
                "{e}: inspect's Size {inspected_size}"
            );
            assert!(
                unpacked.contains(&(size - inspected_size)),
                "{e}: the list's Size {size} is the blob ({inspected_size}) and the snapshot"
            );
            assert_eq!(text(&image["Descriptor"]["digest"]), id, "{e}: {image}");
            assert_eq!(
                strings(&image["RepoDigests"]),
                [format!("app@{id}")],
                "{e}: {image}"
            );
        } else {
            assert!(unpacked.contains(&size), "{e}: {size}");
            assert_eq!(inspected_size, size, "{e}: inspect's Size");
        }
        match g {
            Gen::Docker20 | Gen::Podman4 => {
                assert_eq!(image["VirtualSize"].as_u64(), Some(size), "{e}: {image}");
            }
            _ => assert!(image.get("VirtualSize").is_none(), "{e}: {image}"),
        }
        let shared = if g == Gen::Podman4 { 0 } else { -1 };
        assert_eq!(image["SharedSize"].as_i64(), Some(shared), "{e}: {image}");
        let (containers, dangling_tags) = match g {
            Gen::Docker20 => (-1, json!(["<none>:<none>"])),
            Gen::Podman4 => (3, Value::Null),
            Gen::Docker28 | Gen::Docker28Containerd | Gen::Podman5 => (3, json!([])),
        };
        assert_eq!(image["Containers"].as_i64(), Some(containers), "{e}");
        let unnamed = find(&images, "Id", &dangling);
        assert_eq!(unnamed["RepoTags"], dangling_tags, "{e}: {unnamed}");
        let dangling_digests = match g {
            Gen::Docker20 => json!(["<none>@<none>"]),
            _ => json!([]),
        };
        assert_eq!(unnamed["RepoDigests"], dangling_digests, "{e}: {unnamed}");
        assert_eq!(
            unnamed["Containers"].as_i64(),
            Some(if g == Gen::Docker20 { -1 } else { 0 }),
            "{e}: {unnamed}"
        );
        assert_eq!(
            unnamed["Dangling"].as_bool(),
            g.is_podman().then_some(true),
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
                    if !g.is_podman() && given == tag {
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
