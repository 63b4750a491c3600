//! Whether a test may use a real service on this machine, and the ledger of what ran.
//!
//! Owns: the CI rule, [`is_root`], what each real [`Service`] needs, and recording each check in
//! the ledger ([`super::ledger`]). Must not:
//! start or set up a service (that is [`super::dockerd`] and the tests' own helpers).
//!
//! # The CI rule
//! `CI` set to a non-empty value other than `false` or `0` means CI (`.ci/run`, GitHub Actions and
//! GitLab set `CI=true`). Under CI a missing service is a failure: [`require`] panics. Elsewhere
//! the test is skipped: [`require`] prints a loud note and returns false, and the test returns at
//! once. `scripts/test.sh` applies the same rule to its summary.
//!
//! # Use
//! A real-service test starts with `if !require(Service::Kubectl) { return; }`, or with a
//! constructor that calls [`require`] itself ([`super::dockerd::PrivateDockerd::start`] returns
//! `None`: `let Some(d) = PrivateDockerd::start(..) else { return };`). No other early return may
//! make a real-service test pass. A new service is one [`Service`] variant: its ledger name in
//! [`Service::name`] and what it needs in `Service::needs`.
//!
//! # The ledger
//! Every [`require`] appends one line to the [`Ledger`] (format and location in
//! [`super::ledger`]); `scripts/test.sh` summarises it after `cargo test`.

use std::fs;
use std::io::Write;
use std::path::Path;

use super::bed::{self, DockerKind, PodmanKind};
use super::cri::{CriKind, HOST_CONTAINERD, HOST_CTR};
use super::dockerd::{BUSYBOX, DOCKER_CLI, DOCKERD};
use super::host;
use super::ledger::{Entry, Ledger, Outcome};
use super::podman::{CONMON, PODMAN};

/// A real service a test runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// A private dockerd ([`super::dockerd::PrivateDockerd`]): root, dockerd 20.10 and its CLI, a
    /// static busybox for the images, and the tools for a loop-mounted ext4 filesystem.
    Dockerd,
    /// The real `kubectl`, cross-checked against the fake API server.
    Kubectl,
    /// Root itself (mounts, running a child as another user).
    Root,
    /// A private rootful Podman API service ([`super::podman::PrivatePodman`]): root, podman
    /// 4.3 with conmon and runc, the Docker 20.10 CLI (to talk to it as Docker clients do), a
    /// static busybox, `unshare` and the tools for a loop-mounted ext4 filesystem.
    Podman,
    /// `prometheus-node-exporter`, reading the textfile metrics.
    NodeExporter,
    /// `promtool`, checking the metrics' exposition format.
    Promtool,
    /// A private containerd with its CRI plugin ([`super::cri::PrivateCri`]): root, containerd
    /// and ctr (the host's 1.6, or the bed's 2.1 with `DIC_TEST_CRI=bed`), runc, a static
    /// busybox for the images, and the tools for a loop-mounted ext4 filesystem.
    Cri,
}

/// What a service needs of the machine.
#[derive(Debug)]
pub struct Needs {
    /// Runs as uid 0.
    pub root: bool,
    /// Files that must exist at these exact paths.
    pub files: &'static [&'static str],
    /// Files that must exist and be statically linked (they run inside `FROM scratch` images).
    pub static_files: &'static [&'static str],
    /// Executables looked up in PATH (and the sbin dirs).
    pub tools: &'static [&'static str],
    /// The engines test bed's root (`tests/engines/bed.sh ensure`), for a flavour run from it.
    pub engines_root: bool,
    /// What to do when something is missing (install what, run how), for the skip note.
    pub hint: &'static str,
}

impl Service {
    /// Every service, for the harness's own tests.
    pub const ALL: [Service; 7] = [
        Service::Dockerd,
        Service::Kubectl,
        Service::Root,
        Service::Podman,
        Service::NodeExporter,
        Service::Promtool,
        Service::Cri,
    ];

    /// The name in the ledger and the summary of `scripts/test.sh`.
    pub fn name(self) -> &'static str {
        match self {
            Service::Dockerd => "dockerd",
            Service::Kubectl => "kubectl",
            Service::Root => "root",
            Service::Podman => "podman",
            Service::NodeExporter => "node-exporter",
            Service::Promtool => "promtool",
            Service::Cri => "cri",
        }
    }

    /// The engine flavour this service runs as in this process (see [`super::bed`]); `-` for a
    /// service that is not an engine.
    pub fn engine(self) -> &'static str {
        match self {
            Service::Dockerd => DockerKind::current().label(),
            Service::Podman => PodmanKind::current().label(),
            Service::Cri => CriKind::current().label(),
            _ => "-",
        }
    }

    /// What this service needs of the machine.
    pub fn needs(self) -> Needs {
        const NONE: &[&str] = &[];
        match self {
            Service::Dockerd if DockerKind::current().is_bed() => Needs {
                root: true,
                files: NONE,
                static_files: &[BUSYBOX],
                tools: &[
                    "mkfs.ext4",
                    "losetup",
                    "mount",
                    "umount",
                    "tar",
                    "stat",
                    "kill",
                    "unshare",
                    "nsenter",
                ],
                engines_root: true,
                hint: "run as root with busybox-static, e2fsprogs and mount installed, after tests/engines/bed.sh ensure; scripts/test.sh does both",
            },
            Service::Podman if PodmanKind::current() == PodmanKind::Bed => Needs {
                root: true,
                files: NONE,
                static_files: &[BUSYBOX],
                tools: &[
                    "unshare",
                    "nsenter",
                    "mkfs.ext4",
                    "losetup",
                    "mount",
                    "umount",
                    "tar",
                    "stat",
                    "kill",
                ],
                engines_root: true,
                hint: "run as root with busybox-static, e2fsprogs and mount installed, after tests/engines/bed.sh ensure; scripts/test.sh does both",
            },
            Service::Dockerd => Needs {
                root: true,
                files: &[DOCKERD, DOCKER_CLI],
                static_files: &[BUSYBOX],
                tools: &[
                    "mkfs.ext4",
                    "losetup",
                    "mount",
                    "umount",
                    "tar",
                    "stat",
                    "kill",
                ],
                engines_root: false,
                hint: "run as root with docker.io, busybox-static, e2fsprogs and mount installed; scripts/test.sh installs them",
            },
            Service::Kubectl => Needs {
                root: false,
                files: NONE,
                static_files: NONE,
                tools: &["kubectl"],
                engines_root: false,
                hint: "install kubectl",
            },
            Service::Root => Needs {
                root: true,
                files: NONE,
                static_files: NONE,
                tools: &["mount", "umount"],
                engines_root: false,
                hint: "run the tests as root",
            },
            Service::Podman => Needs {
                root: true,
                files: &[PODMAN, CONMON, DOCKER_CLI],
                static_files: &[BUSYBOX],
                tools: &[
                    "runc",
                    "unshare",
                    "mkfs.ext4",
                    "losetup",
                    "mount",
                    "umount",
                    "tar",
                    "stat",
                    "kill",
                ],
                engines_root: false,
                hint: "run as root with podman (it brings conmon), runc, docker.io (its CLI), busybox-static, e2fsprogs and mount installed; scripts/test.sh installs them",
            },
            Service::NodeExporter => Needs {
                root: false,
                files: NONE,
                static_files: NONE,
                tools: &["prometheus-node-exporter"],
                engines_root: false,
                hint: "install prometheus-node-exporter",
            },
            Service::Cri if CriKind::current() == CriKind::Bed => Needs {
                root: true,
                files: NONE,
                static_files: &[BUSYBOX],
                tools: &[
                    "unshare",
                    "nsenter",
                    "mkfs.ext4",
                    "losetup",
                    "mount",
                    "umount",
                    "tar",
                    "sha256sum",
                    "stat",
                    "kill",
                ],
                engines_root: true,
                hint: "run as root with busybox-static, e2fsprogs and mount installed, after tests/engines/bed.sh ensure; scripts/test.sh does both",
            },
            Service::Cri => Needs {
                root: true,
                files: &[HOST_CONTAINERD, HOST_CTR],
                static_files: &[BUSYBOX],
                tools: &[
                    "runc",
                    "mkfs.ext4",
                    "losetup",
                    "mount",
                    "umount",
                    "tar",
                    "sha256sum",
                    "stat",
                    "kill",
                ],
                engines_root: false,
                hint: "run as root with containerd (it brings ctr), runc, busybox-static, e2fsprogs and mount installed",
            },
            Service::Promtool => Needs {
                root: false,
                files: NONE,
                static_files: NONE,
                tools: &["promtool"],
                engines_root: false,
                hint: "install prometheus (it ships promtool)",
            },
        }
    }
}

impl Needs {
    /// What this machine lacks, one item each; empty when everything is there.
    pub fn missing(&self) -> Vec<String> {
        let mut missing = Vec::new();
        if self.root && !is_root() {
            missing.push("root".to_string());
        }
        for file in self.files {
            if !Path::new(file).is_file() {
                missing.push((*file).to_string());
            }
        }
        for file in self.static_files {
            if !Path::new(file).is_file() {
                missing.push((*file).to_string());
            } else if !host::is_static_elf(Path::new(file)) {
                missing.push(format!("a static {file} (this one is dynamically linked)"));
            }
        }
        for tool in self.tools {
            if host::find_in_path(tool).is_none() {
                missing.push((*tool).to_string());
            }
        }
        if self.engines_root && bed::root().is_none() {
            missing.push(format!("the engines root ({} ensure)", bed::BED_SH));
        }
        missing
    }
}

/// Whether this is CI, by the rule in the module docs.
pub fn ci() -> bool {
    ci_from(std::env::var("CI").ok().as_deref())
}

/// The CI rule on the value of `CI` (`None` when unset).
pub fn ci_from(value: Option<&str>) -> bool {
    value.is_some_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Whether this process runs as root (effective uid 0), from `/proc/self/status` (no libc).
pub fn is_root() -> bool {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    // Fields: real, effective, saved, filesystem.
    status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        == Some("0")
}

/// Checks that the current test can use `service` and records the outcome in the ledger.
///
/// True: go on. False: the test is skipped (a note is on stderr and in the ledger) and must
/// return at once. Under CI a missing service panics instead.
#[must_use = "a false result means: return from the test now"]
pub fn require(service: Service) -> bool {
    let test = current_test();
    let Err(why) = check(
        service.name(),
        service.engine(),
        &service.needs(),
        &test,
        &Ledger::current(),
        ci(),
    ) else {
        return true;
    };
    // Straight to the stderr handle: libtest captures `eprintln!` of passing tests.
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED {test}: needs {}; {why} (set CI=true to fail instead) ***",
        service.name(),
    );
    false
}

/// [`require`] with everything explicit and no note on stderr, for the harness's own tests:
/// records the outcome in `ledger`; `Err(why)` when something is missing, a panic then if `ci`.
pub fn check(
    service: &str,
    engine: &str,
    needs: &Needs,
    test: &str,
    ledger: &Ledger,
    ci: bool,
) -> Result<(), String> {
    let missing = needs.missing();
    if missing.is_empty() {
        ledger.record(&Entry {
            outcome: Outcome::Ran,
            service: service.to_string(),
            engine: engine.to_string(),
            test: test.to_string(),
            reason: "-".to_string(),
        });
        return Ok(());
    }
    let why = format!("missing: {} ({})", missing.join(", "), needs.hint);
    ledger.record(&Entry {
        outcome: Outcome::Skipped,
        service: service.to_string(),
        engine: engine.to_string(),
        test: test.to_string(),
        reason: if ci {
            format!("{why}; CI is set, so the test failed")
        } else {
            why.clone()
        },
    });
    if ci {
        panic!("CI is set, so this is a failure: {test} needs {service}; {why}");
    }
    Err(why)
}

/// Records that the running test, which has already passed [`require`] for `service`, does not
/// apply to the engine of this run, and why (`na` in the ledger; `scripts/test.sh` lists each
/// with its reason). The test must return at once. Only for something the engine does not have
/// (a containerd of its own, a build cache endpoint), never to hide a fault of ours.
pub fn not_applicable(service: Service, why: &str) {
    let test = current_test();
    Ledger::current().record(&Entry {
        outcome: Outcome::NotApplicable,
        service: service.name().to_string(),
        engine: service.engine().to_string(),
        test: test.clone(),
        reason: why.to_string(),
    });
    let _ = writeln!(
        std::io::stderr(),
        "\n*** N/A {test} on {}: {why} ***",
        service.engine()
    );
}

/// The running test's name: libtest names each test's thread after it (`clean::lru_order…`).
fn current_test() -> String {
    match std::thread::current().name() {
        Some(name) if name != "main" => name.to_string(),
        _ => "<unnamed test thread>".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::panic::{AssertUnwindSafe, catch_unwind};

    fn temp_ledger() -> (tempfile::TempDir, Ledger) {
        let dir = tempfile::tempdir().expect("temp dir");
        let ledger = Ledger::at(&dir.path().join("sub").join("ledger"));
        (dir, ledger)
    }

    const ABSENT: Needs = Needs {
        root: false,
        files: &["/nonexistent/dic/dockerd"],
        static_files: &["/nonexistent/dic/busybox"],
        tools: &["dic-no-such-tool"],
        engines_root: false,
        hint: "nothing real",
    };

    #[test]
    fn the_ci_rule() {
        for (value, ci) in [
            (None, false),
            (Some(""), false),
            (Some("false"), false),
            (Some("0"), false),
            (Some("true"), true),
            (Some("1"), true),
            (Some("yes"), true),
        ] {
            assert_eq!(ci_from(value), ci, "CI={value:?}");
        }
    }

    #[test]
    fn a_missing_service_is_a_recorded_skip_naming_what_is_missing() {
        let (_dir, ledger) = temp_ledger();
        let why = check("svc", "-", &ABSENT, "mod::a_test", &ledger, false).expect_err("missing");
        let entries: Vec<Entry> = ledger.entries().into_iter().flatten().collect();
        assert_eq!(entries.len(), 1, "{entries:?}");
        let e = &entries[0];
        assert_eq!(
            (e.outcome, e.service.as_str(), e.test.as_str()),
            (Outcome::Skipped, "svc", "mod::a_test")
        );
        assert_eq!(e.reason, why);
        for item in [
            "/nonexistent/dic/dockerd",
            "/nonexistent/dic/busybox",
            "dic-no-such-tool",
        ] {
            assert!(e.reason.contains(item), "{e:?}");
        }
    }

    #[test]
    fn under_ci_a_missing_service_panics_and_is_recorded() {
        let (_dir, ledger) = temp_ledger();
        let result = catch_unwind(AssertUnwindSafe(|| {
            check("svc", "-", &ABSENT, "mod::a_test", &ledger, true)
        }));
        let message = result.expect_err("must panic under CI");
        let message = message
            .downcast_ref::<String>()
            .cloned()
            .unwrap_or_default();
        assert!(
            message.contains("CI is set") && message.contains("dic-no-such-tool"),
            "{message}"
        );
        let entries: Vec<Entry> = ledger.entries().into_iter().flatten().collect();
        assert_eq!(entries.len(), 1);
        assert_eq!(entries[0].outcome, Outcome::Skipped);
    }

    #[test]
    fn a_present_service_is_recorded_as_ran() {
        let (_dir, ledger) = temp_ledger();
        let present = Needs {
            root: false,
            files: &["/proc/self/status"],
            static_files: &[],
            tools: &["sh"],
            engines_root: false,
            hint: "-",
        };
        assert_eq!(check("svc", "-", &present, "mod::b", &ledger, true), Ok(()));
        let entries: Vec<_> = ledger.entries();
        assert_eq!(
            entries,
            [Ok(Entry {
                outcome: Outcome::Ran,
                service: "svc".to_string(),
                engine: "-".to_string(),
                test: "mod::b".to_string(),
                reason: "-".to_string(),
            })]
        );
    }

    /// A 64-bit little-endian ELF header with one program header of type `p_type`.
    fn elf_with_program_header(p_type: u32) -> Vec<u8> {
        let mut elf = vec![0u8; 64 + 56];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes()); // e_phoff
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes()); // e_phentsize
        elf[0x38..0x3a].copy_from_slice(&1u16.to_le_bytes()); // e_phnum
        elf[64..68].copy_from_slice(&p_type.to_le_bytes());
        elf
    }

    #[test]
    fn a_static_executable_is_told_from_a_dynamic_one() {
        let dir = tempfile::tempdir().expect("temp dir");
        let write = |name: &str, bytes: &[u8]| {
            let path = dir.path().join(name);
            fs::write(&path, bytes).expect("write");
            path
        };
        const PT_LOAD: u32 = 1;
        const PT_INTERP: u32 = 3;
        assert!(host::is_static_elf(&write(
            "static",
            &elf_with_program_header(PT_LOAD)
        )));
        assert!(!host::is_static_elf(&write(
            "dynamic",
            &elf_with_program_header(PT_INTERP)
        )));
        assert!(!host::is_static_elf(&write(
            "truncated",
            &elf_with_program_header(PT_LOAD)[..80]
        )));
        assert!(!host::is_static_elf(&write("script", b"#!/bin/sh\ntrue\n")));
        assert!(!host::is_static_elf(&dir.path().join("absent")));
        // This test binary is linked dynamically.
        let me = std::env::current_exe().expect("current exe");
        assert!(!host::is_static_elf(&me), "{}", me.display());
    }

    #[test]
    fn every_service_has_its_own_name_and_a_hint() {
        let mut names: Vec<&str> = Service::ALL.iter().map(|s| s.name()).collect();
        assert!(Service::ALL.iter().all(|s| !s.needs().hint.is_empty()));
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), Service::ALL.len(), "{names:?}");
        assert!(names.iter().all(|n| !n.contains(char::is_whitespace)));
    }
}
