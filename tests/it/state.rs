//! The state directory as an operator meets it: a root filesystem out of inodes, a directory other
//! users can write to, a symlink planted where the state is written, a umask of 000, a dry run.
//! What is asserted is what a user notices: exit codes, what was cleaned, notify messages, the
//! files and modes left in the directory, and a file outside it left alone.
//!
//! Everything here runs as root (loop mounts, chown); the tests that clean start a private
//! dockerd, the others point the cleaner at a Docker socket that does not exist (`run` waits for
//! it, `once` and `status` fail only after the state is loaded).

use std::fs::{self, File};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Once;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use crate::util::cleaner::Cleaner;
use crate::util::cli::EngineCli;
use crate::util::daemon::Daemon;
use crate::util::dockerd::PrivateDockerd;
use crate::util::host;
use crate::util::require::{Service, require};

/// Bound of anything that should happen "soon" (start, a status change, a clean stop).
const SOON: Duration = Duration::from_secs(20);
/// Bound of a whole `once` against a private dockerd.
const MINUTE: Duration = Duration::from_secs(60);
/// Another instance holds the lock (EX_TEMPFAIL).
const EXIT_LOCKED: i32 = 75;
/// A configuration problem (EX_CONFIG).
const EXIT_CONFIG: i32 = 78;
/// A Docker endpoint nobody listens on: `run` waits for it, `once` and `status` fail after
/// loading the state.
const NO_DOCKER: &str = "unix:///nonexistent/dic-state-test/docker.sock";
/// The state file's name in the state directory.
const STATE_FILE: &str = "last-use.json";

static NEXT_FS: AtomicU64 = AtomicU64::new(0);
static SWEEP: Once = Once::new();
/// Dirs of [`StateFs`] are `/tmp/<FS_PREFIX><pid>-<n>-<name>`. Not the dockerd harness's prefix:
/// its sweep takes dirs named after its own pid for leftovers of an earlier process.
const FS_PREFIX: &str = "dic-statefs-";

/// A small loop-mounted ext4 filesystem for a state directory, set up as the dockerd harness sets
/// up its own (`fs.img` attached to a loop device, mounted on `fs/`), so `host::teardown_dir`
/// tears it down: on drop, and at the first `new` of a later test process for dirs left by one
/// that was killed.
struct StateFs {
    dir: PathBuf,
    mount: PathBuf,
}

impl StateFs {
    /// 8 MiB, 4 KiB blocks, `inodes` inodes (rounded up by mkfs).
    fn new(name: &str, inodes: u64) -> StateFs {
        SWEEP.call_once(sweep_dead);
        let n = NEXT_FS.fetch_add(1, Ordering::Relaxed);
        let dir = PathBuf::from(format!("/tmp/{FS_PREFIX}{}-{n}-{name}", std::process::id()));
        fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
        let s = StateFs {
            mount: dir.join("fs"),
            dir,
        };
        let img = s.dir.join("fs.img");
        File::create(&img)
            .and_then(|f| f.set_len(8 * 1024 * 1024))
            .unwrap_or_else(|e| panic!("creating {}: {e}", img.display()));
        let img = img.to_str().expect("ASCII path");
        let inodes = inodes.to_string();
        host::run_ok(
            "mkfs.ext4",
            &["-q", "-F", "-b", "4096", "-N", &inodes, img],
            MINUTE,
        );
        let out = host::run_ok("losetup", &["--find", "--show", img], MINUTE);
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        fs::create_dir(&s.mount).expect("mount point");
        host::run_ok(
            "mount",
            &[&dev, s.mount.to_str().expect("ASCII path")],
            MINUTE,
        );
        s
    }

    /// Creates empty files until the filesystem has no inode left (ENOSPC).
    fn exhaust_inodes(&self) {
        let fill = self.mount.join("fill");
        fs::create_dir(&fill).expect("fill dir");
        for i in 0..100_000 {
            match File::create(fill.join(i.to_string())) {
                Ok(_) => {}
                Err(e) if e.raw_os_error() == Some(28) => {
                    let stat = host::statfs(&self.mount);
                    assert_eq!(stat.files_free, 0, "ENOSPC with inodes left: {stat:?}");
                    return;
                }
                Err(e) => panic!("filling {}: {e}", fill.display()),
            }
        }
        panic!("{} never ran out of inodes", self.mount.display());
    }
}

impl Drop for StateFs {
    fn drop(&mut self) {
        host::teardown_dir(&self.dir);
    }
}

/// Tears down [`StateFs`] dirs of test processes that are gone.
fn sweep_dead() {
    let Ok(entries) = fs::read_dir("/tmp") else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(pid) = name
            .strip_prefix(FS_PREFIX)
            .and_then(|r| r.split('-').next())
        else {
            continue;
        };
        if pid.parse::<u32>().is_ok() && !Path::new("/proc").join(pid).exists() {
            host::teardown_dir(&entry.path());
        }
    }
}

/// Watermarks `below` and `below + gap` points under the current usage (rounded down), so the
/// pass starts and must free about `below + gap` points.
fn watermarks_under(used_pct: f64, below: f64, gap: f64) -> (f64, f64) {
    let high = (used_pct - below).floor();
    (high, high - gap)
}

/// `cmd` with its state directory moved to `state_dir` (the environment overrides the file).
fn with_state_dir(mut cmd: Command, state_dir: &Path) -> Command {
    cmd.env("DOCKER_IMAGE_CLEANER_STATE_DIR", state_dir);
    cmd
}

/// `cmd` run through `sh` with umask `umask`, keeping its program, arguments and environment.
fn under_umask(cmd: &Command, umask: &str) -> Command {
    let mut sh = Command::new("/bin/sh");
    sh.arg("-c")
        .arg(format!("umask {umask} && exec \"$0\" \"$@\""))
        .arg(cmd.get_program())
        .args(cmd.get_args());
    for (k, v) in cmd.get_envs() {
        match v {
            Some(v) => sh.env(k, v),
            None => sh.env_remove(k),
        };
    }
    sh
}

/// The lines of `log` at WARN or above that name `path`.
fn warnings_naming(log: &str, path: &Path) -> Vec<String> {
    let path = path.display().to_string();
    log.lines()
        .filter(|l| (l.contains("WARN") || l.contains("ERROR")) && l.contains(&path))
        .map(String::from)
        .collect()
}

fn mode(path: &Path) -> u32 {
    fs::symlink_metadata(path)
        .unwrap_or_else(|e| panic!("stat {}: {e}", path.display()))
        .mode()
        & 0o7777
}

/// The names in `dir`, sorted.
fn names_in(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("listing {}: {e}", dir.display()))
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// A version 1 state file in `state_dir` (one image, last used an hour ago): the next save
/// migrates it, so a `run` that only starts and stops writes the state once.
fn seed_v1(state_dir: &Path) {
    fs::create_dir_all(state_dir).expect("state dir");
    fs::set_permissions(state_dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs();
    let text = format!(
        r#"{{"version": 1, "cursor_nanos": null, "images": {{"sha256:aa": {{"first_seen": {0}, "last_used": {0}}}}}}}"#,
        now - 3600
    );
    fs::write(state_dir.join(STATE_FILE), text).expect("write state");
}

/// A cleaner against [`NO_DOCKER`], watching the temp dir.
fn no_docker_cleaner(extra: &str) -> Cleaner {
    Cleaner::for_host(NO_DOCKER, &std::env::temp_dir(), extra)
}

#[test]
fn once_and_run_keep_cleaning_when_the_state_filesystem_has_no_inode_left() {
    let Some(d) = PrivateDockerd::start("state-inodes", 512, None) else {
        return;
    };
    let state = StateFs::new("inodes", 64);
    let state_dir = state.mount.join("state");
    fs::create_dir(&state_dir).expect("state dir");
    fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    state.exhaust_inodes();

    let tagged = d.image("app:1", 20);
    let dangling = d.dangling_image(120);
    let (used, _) = d.used_pct();
    let (high, low) = watermarks_under(used, 3.0, 5.0);
    let cleaner = Cleaner::new(
        &d,
        &format!("threshold_high = {high}\nthreshold_low = {low}\ninterval_seconds = 1\n"),
    );
    let once = with_state_dir(cleaner.command(&["once"]), &state_dir);
    let out = Daemon::plain(once).output(MINUTE);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(0),
        "`once` must clean although the state cannot be written:\n{err}"
    );
    let images = d.image_ids();
    assert!(
        !images.contains(&dangling) && images.contains(&tagged),
        "the planned image must go, the tagged one stay: {images:?}\n{err}"
    );
    assert_eq!(
        warnings_naming(&err, &state_dir).len(),
        1,
        "one warning about the state directory:\n{err}"
    );
    assert!(
        !state_dir.join("lock").exists(),
        "the lock needs no file of its own"
    );

    // The daemon starts, passes every second above its (lowered) high watermark, tries to save
    // after each pass, and warns once.
    let mut run = with_state_dir(cleaner.command(&["run"]), &state_dir);
    run.env("DOCKER_IMAGE_CLEANER_THRESHOLD_HIGH", "2")
        .env("DOCKER_IMAGE_CLEANER_THRESHOLD_LOW", "1");
    let mut daemon = Daemon::service(run, None);
    daemon.ready(SOON);
    for _ in 0..3 {
        daemon.wait_status("idle", SOON);
    }
    assert!(daemon.running(), "{}", daemon.context());
    daemon.terminate(SOON);
    let log = daemon.log();
    assert_eq!(
        warnings_naming(&log, &state_dir).len(),
        1,
        "one warning for several failed saves, not one each:\n{log}"
    );
}

#[test]
fn a_state_dir_that_cannot_be_created_is_locked_through_its_parent() {
    if !require(Service::Root) {
        return;
    }
    let state = StateFs::new("no-mkdir", 64);
    state.exhaust_inodes();
    let state_dir = state.mount.join("state");
    let cleaner = no_docker_cleaner("");
    let mut first = Daemon::service(with_state_dir(cleaner.command(&["run"]), &state_dir), None);
    first.ready(SOON);
    first.wait_status("waiting for Docker", SOON);

    // The lock is still taken: on the nearest directory that exists.
    let once = with_state_dir(cleaner.command(&["once"]), &state_dir);
    let out = Daemon::plain(once).output(SOON);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(EXIT_LOCKED), "{err}");
    assert!(
        err.contains(&state.mount.display().to_string()),
        "the refusal names what is locked: {err}"
    );
    assert!(first.running(), "{}", first.context());
    first.terminate(SOON);
    let log = first.log();
    assert!(
        !warnings_naming(&log, &state_dir).is_empty(),
        "the daemon says its state is in memory only:\n{log}"
    );
    assert!(!state_dir.exists());
}

#[test]
fn a_symlink_planted_at_the_temporary_file_is_replaced_not_followed() {
    if !require(Service::Root) {
        return;
    }
    let cleaner = no_docker_cleaner("");
    let state_dir = cleaner.state_dir();
    seed_v1(&state_dir);
    let outside = tempfile::tempdir().expect("temp dir");
    let secret = outside.path().join("shadow");
    fs::write(&secret, "root:secret\n").expect("secret");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
    symlink(&secret, state_dir.join("last-use.json.tmp")).expect("symlink");

    let mut d = cleaner.spawn(&["run"]);
    d.ready(SOON);
    d.wait_status("waiting for Docker", SOON);
    d.terminate(SOON);

    assert_eq!(
        fs::read_to_string(&secret).expect("secret"),
        "root:secret\n",
        "the symlink's target must not be written:\n{}",
        d.context()
    );
    assert_eq!(names_in(&state_dir), vec![STATE_FILE.to_string()]);
    let saved = cleaner.state().expect("state saved at stop");
    assert_eq!(saved["version"], 2, "{saved}");
    assert!(
        saved
            .pointer("/engines/default/images/sha256:aa/last_used_ms")
            .is_some(),
        "{saved}"
    );
    assert_eq!(mode(&state_dir.join(STATE_FILE)), 0o600);
}

/// Runs `args` against `cleaner` and asserts exit 78 with a message naming `path` and `why`.
fn refused(cleaner: &Cleaner, args: &[&str], path: &Path, why: &str) {
    let out = Daemon::service(cleaner.command(args), None).output(SOON);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(EXIT_CONFIG),
        "`{}` must refuse the state directory: {err}",
        args.join(" ")
    );
    assert!(
        err.contains(&path.display().to_string()) && err.contains(why),
        "`{}` must name {} and say {why:?}: {err}",
        args.join(" "),
        path.display()
    );
}

#[test]
fn a_state_dir_others_can_write_to_is_refused_with_exit_78() {
    if !require(Service::Root) {
        return;
    }
    let cleaner = no_docker_cleaner("");
    let state_dir = cleaner.state_dir();
    seed_v1(&state_dir);
    let before = fs::read(state_dir.join(STATE_FILE)).expect("state");

    fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o770)).expect("chmod");
    for args in [&["run"][..], &["once"], &["once", "--dry-run"], &["status"]] {
        refused(&cleaner, args, &state_dir, "writable by its group");
    }
    fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700)).expect("chmod");

    std::os::unix::fs::chown(&state_dir, Some(65534), Some(65534)).expect("chown");
    for args in [&["run"][..], &["once"]] {
        refused(&cleaner, args, &state_dir, "owned by uid 65534");
    }
    std::os::unix::fs::chown(&state_dir, Some(0), Some(0)).expect("chown");

    // An ancestor others may write to (without the sticky bit) is refused as well.
    let parent = state_dir.parent().expect("parent");
    fs::set_permissions(parent, fs::Permissions::from_mode(0o777)).expect("chmod");
    refused(&cleaner, &["run"], parent, "writable by others");
    // With the sticky bit (as /tmp) it is fine.
    fs::set_permissions(parent, fs::Permissions::from_mode(0o1777)).expect("chmod");
    let mut d = cleaner.spawn(&["run"]);
    d.ready(SOON);
    d.terminate(SOON);
    fs::set_permissions(parent, fs::Permissions::from_mode(0o700)).expect("chmod");

    let after = cleaner.state().expect("state");
    assert_eq!(after["version"], 2, "the last run could save: {after}");
    assert_ne!(
        fs::read(state_dir.join(STATE_FILE)).expect("state"),
        before,
        "saved by the last run only"
    );
}

#[test]
fn files_are_0600_and_a_created_state_dir_0700_whatever_the_umask() {
    let Some(d) = PrivateDockerd::start("state-umask", 256, None) else {
        return;
    };
    d.image("app:1", 1);
    let cleaner = Cleaner::new(&d, "threshold_high = 100\n");
    let state_dir = cleaner.state_dir();
    assert!(!state_dir.exists());
    let out = Daemon::plain(under_umask(&cleaner.command(&["once"]), "000")).output(MINUTE);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&state_dir), 0o700, "the state directory we created");
    assert_eq!(names_in(&state_dir), vec![STATE_FILE.to_string()]);
    assert_eq!(mode(&state_dir.join(STATE_FILE)), 0o600, "the state file");
    let meta = fs::metadata(state_dir.join(STATE_FILE)).expect("stat");
    assert_eq!(meta.uid(), 0);
}

#[test]
fn a_dry_run_and_status_change_nothing_and_take_no_lock() {
    if !require(Service::Root) {
        return;
    }
    let cleaner = no_docker_cleaner("");
    let state_dir = cleaner.state_dir();
    fs::create_dir(&state_dir).expect("state dir");
    fs::set_permissions(&state_dir, fs::Permissions::from_mode(0o700)).expect("chmod");
    fs::write(state_dir.join(STATE_FILE), "{not json").expect("corrupt state");

    // The daemon is not running: a corrupt file stays as it is for the read-only commands
    // (Docker is away, so they fail, but only after reading the state).
    for args in [&["once", "--dry-run"][..], &["status"]] {
        let out = cleaner.run(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "`{}`: {err}", args.join(" "));
        assert_eq!(
            names_in(&state_dir),
            vec![STATE_FILE.to_string()],
            "`{}` must not move the state aside: {err}",
            args.join(" ")
        );
    }

    // A dry-run daemon beside a running one is not refused, and neither is `status`.
    let mut first = cleaner.spawn(&["run"]);
    first.ready(SOON);
    let mut dry = cleaner.spawn(&["run", "--dry-run"]);
    dry.ready(SOON);
    dry.terminate(SOON);
    let status = cleaner.run(&["status"]);
    assert_ne!(
        status.status.code(),
        Some(EXIT_LOCKED),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    first.terminate(SOON);
}

mod ahead;
