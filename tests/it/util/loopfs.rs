//! Loop-mounted ext4 filesystems for the real engines, and the temp dirs everything lives in.
//!
//! Owns: [`SharedFs`] (a sparse image, its loop device and mount point, filling it and reading
//! its `statvfs`, foreign files, one data root per engine on it); the per-test temp dirs
//! (`/tmp/dic-it-<pid>-<n>-<name>`), their sweep after a killed test process, and [`leftovers`].
//! Must not: start an engine (that is [`super::dockerd`] and [`super::podman`]), or touch
//! anything outside its temp dirs.
//!
//! Layout of a filesystem's dir (for [`super::dockerd::PrivateDockerd::start`] this is the
//! daemon's own dir, which then also holds the daemon's files):
//! ```text
//! fs.img          sparse ext4 image, attached to a loop device
//! fs/             its mount point (what `used_pct` and `fill_to` measure)
//! fs/<engine>/    one data root per engine (`--data-root`, Podman's `--root`)
//! fs/filler       written by `fill_to`; fs/foreign-<name> by `foreign_file`: outside every data root
//! ```
//!
//! Teardown order: every engine on a filesystem holds a clone of its [`SharedFs`] (an `Arc`), so
//! the filesystem is unmounted and detached only when the last engine on it has been torn down,
//! whatever order the test drops them in, also while a failed test unwinds.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use super::host::{self, FsStat};
use super::require::{Service, require};

/// Temp dirs are `<TMP>/<PREFIX><pid>-<n>-<name>`; short, because the API and containerd
/// socket paths under them must stay below the 108-byte `sun_path` limit.
const TMP: &str = "/tmp";
const PREFIX: &str = "dic-it-";
/// Any single tool invocation (mkfs, losetup, mount).
const TOOL_BOUND: Duration = Duration::from_secs(180);

/// One mebibyte.
pub const MIB: u64 = 1024 * 1024;

static NEXT_ID: AtomicU64 = AtomicU64::new(0);
static SWEEP: Once = Once::new();

/// A loop-mounted ext4 filesystem that several engines can share, as on a node where
/// `/var/lib/docker` and `/var/lib/containers` are on one disk. Cloning gives another handle to
/// the same filesystem; it is torn down when the last handle (engines hold one each) is dropped.
#[derive(Clone)]
pub struct SharedFs {
    inner: Arc<LoopFs>,
}

struct LoopFs {
    dir: PathBuf,
    mount: PathBuf,
    /// Data-root names handed out, so two engines never share one.
    roots: Mutex<Vec<String>>,
}

impl SharedFs {
    /// A fresh filesystem of `fs_mib` MiB (4 KiB blocks, 5 % reserved as mkfs does by default;
    /// exactly `inodes` inodes when `Some`, rounded up by mkfs to whole block groups) in its own
    /// temp dir, for engines started with `start_on`.
    ///
    /// `service` is the engine the test will run on it (its needs include the loop tools):
    /// returns `None` when this machine cannot run that, recorded as a skip; panics under CI.
    pub fn new(service: Service, name: &str, fs_mib: u64, inodes: Option<u64>) -> Option<SharedFs> {
        if !require(service) {
            return None;
        }
        Some(SharedFs::make_in(scratch_dir(name), fs_mib, inodes))
    }

    /// The filesystem in `dir` (`dir/fs.img`, mounted on `dir/fs`); `dir` exists and is empty
    /// but for what its owner puts there. Tearing the filesystem down removes `dir`.
    pub(super) fn make_in(dir: PathBuf, fs_mib: u64, inodes: Option<u64>) -> SharedFs {
        // From here on, a panic drops `fs` and tears down whatever was set up so far.
        let fs = SharedFs {
            inner: Arc::new(LoopFs {
                mount: dir.join("fs"),
                dir,
                roots: Mutex::new(Vec::new()),
            }),
        };
        let img = fs.dir().join("fs.img");
        File::create(&img)
            .and_then(|f| f.set_len(fs_mib * MIB))
            .unwrap_or_else(|e| panic!("creating {}: {e}", img.display()));
        let mut mkfs = vec!["-q", "-F", "-b", "4096"];
        let inodes = inodes.map(|i| i.to_string());
        if let Some(i) = &inodes {
            mkfs.extend(["-N", i]);
        }
        mkfs.push(path_str(&img));
        host::run_ok("mkfs.ext4", &mkfs, TOOL_BOUND);
        let out = host::run_ok("losetup", &["--find", "--show", path_str(&img)], TOOL_BOUND);
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        let mount = fs.mount_point();
        fs::create_dir(mount).unwrap_or_else(|e| panic!("creating {}: {e}", mount.display()));
        host::run_ok("mount", &["-t", "ext4", &dev, path_str(mount)], TOOL_BOUND);
        fs
    }

    /// The temp dir holding the image and the mount point (for [`leftovers`]).
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The mount point: parent of every data root, of the filler and of foreign files.
    pub fn mount_point(&self) -> &Path {
        &self.inner.mount
    }

    /// A new, empty data root `<mount>/<name>` for one engine; panics if `name` was taken.
    pub(super) fn engine_root(&self, name: &str) -> PathBuf {
        let name = slug(name);
        let mut roots = self.inner.roots.lock().unwrap_or_else(|e| e.into_inner());
        assert!(
            !roots.contains(&name),
            "two engines named {name:?} on {}",
            self.mount_point().display()
        );
        roots.push(name.clone());
        let root = self.mount_point().join(name);
        fs::create_dir(&root).unwrap_or_else(|e| panic!("creating {}: {e}", root.display()));
        root
    }

    /// `statvfs` of the filesystem, through `stat -f`.
    pub fn fs_stat(&self) -> FsStat {
        host::statfs(self.mount_point())
    }

    /// (blocks used %, inodes used %); see [`FsStat`].
    pub fn used_pct(&self) -> (f64, f64) {
        let s = self.fs_stat();
        (s.used_pct(), s.inodes_used_pct())
    }

    /// Appends zeros to `<mount>/filler` (outside every data root) until blocks used reach
    /// `pct`. Does nothing when usage is already there. Root may write into the 5 % reserve, so
    /// any `pct` up to 100 can be reached.
    pub fn fill_to(&self, pct: f64) {
        assert!(
            (0.0..=100.0).contains(&pct),
            "fill_to({pct}): not a percentage"
        );
        let path = self.mount_point().join("filler");
        for _ in 0..20 {
            let s = self.fs_stat();
            if s.used_pct() >= pct {
                return;
            }
            // Round up to whole blocks and add one: ext4 also allocates extent blocks.
            let want_blocks = (pct / 100.0 * s.blocks as f64).ceil() as u64;
            let missing =
                (want_blocks.saturating_sub(s.blocks - s.blocks_avail) + 1) * s.block_bytes;
            append_zeros(&path, missing);
        }
        panic!(
            "fill_to({pct}): still at {:?} after 20 rounds",
            self.used_pct()
        );
    }

    /// Removes the filler written by [`SharedFs::fill_to`].
    pub fn clear_filler(&self) {
        remove_if_there(&self.mount_point().join("filler"));
    }

    /// Writes `<mount>/foreign-<name>`, `mib` MiB of zeros (allocated, not sparse), outside
    /// every data root: disk pressure that belongs to no engine. Returns its path.
    pub fn foreign_file(&self, name: &str, mib: u64) -> PathBuf {
        let path = self.mount_point().join(format!("foreign-{}", slug(name)));
        append_zeros(&path, mib * MIB);
        path
    }

    /// Removes a file written by [`SharedFs::foreign_file`].
    pub fn remove_foreign_file(&self, name: &str) {
        remove_if_there(&self.mount_point().join(format!("foreign-{}", slug(name))));
    }
}

impl Drop for LoopFs {
    fn drop(&mut self) {
        // Nothing here may panic: this runs while a failed test unwinds. The engines on this
        // filesystem are gone (each held a handle); anything else naming the dir goes too.
        host::kill_processes_under(&self.dir);
        host::teardown_dir(&self.dir);
    }
}

/// A fresh, empty temp dir `/tmp/dic-it-<pid>-<n>-<name>` (`name` shortened to 16 lowercase
/// ASCII characters). The first call in a test process first sweeps the dirs of dead ones.
pub(super) fn scratch_dir(name: &str) -> PathBuf {
    SWEEP.call_once(sweep_stale);
    let n = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let dir = PathBuf::from(TMP).join(format!("{PREFIX}{}-{n}-{}", std::process::id(), slug(name)));
    fs::create_dir(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// A number unique in this test process (for staging dirs and names).
pub(super) fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// What an engine or a filesystem left behind under `dir`: mounts, processes, loop devices,
/// the dir itself. Empty after a clean teardown; used by the harness's own tests.
pub fn leftovers(dir: &Path) -> Vec<String> {
    let mut found: Vec<String> = host::mounts_under(dir)
        .into_iter()
        .map(|m| format!("mount {m}"))
        .collect();
    found.extend(
        host::processes_under(dir)
            .into_iter()
            .map(|p| format!("process {p}")),
    );
    found.extend(
        host::loop_devices_of(&dir.join("fs.img"))
            .into_iter()
            .map(|l| format!("loop {l}")),
    );
    if dir.exists() {
        found.push(format!("dir {}", dir.display()));
    }
    found
}

/// `path` as `&str`: our paths are built from ASCII only (see [`scratch_dir`]).
pub(super) fn path_str(p: &Path) -> &str {
    p.to_str()
        .unwrap_or_else(|| panic!("non-UTF-8 path {}", p.display()))
}

fn slug(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(16)
        .collect()
}

fn append_zeros(path: &Path, bytes: u64) {
    let fail = |what: &str, e: std::io::Error| -> ! { panic!("{what} {}: {e}", path.display()) };
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| fail("opening", e));
    let chunk = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(MIB);
        // `n` is at most 1 MiB, the chunk's length.
        let n_usize = usize::try_from(n).unwrap_or(chunk.len());
        file.write_all(&chunk[..n_usize])
            .unwrap_or_else(|e| fail("writing", e));
        left -= n;
    }
    file.sync_all().unwrap_or_else(|e| fail("syncing", e));
}

fn remove_if_there(path: &Path) {
    match fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            panic!("removing {}: {e}", path.display())
        }
        _ => {}
    }
}

/// Tears down dirs of earlier test processes that died without running `Drop` (SIGKILL, abort):
/// first every process naming any of them (engines before filesystems), then the dirs.
fn sweep_stale() {
    let Ok(entries) = fs::read_dir(TMP) else {
        return;
    };
    let stale: Vec<PathBuf> = entries
        .flatten()
        .filter(|entry| {
            let name = entry.file_name().to_string_lossy().to_string();
            let Some(pid) = name.strip_prefix(PREFIX).and_then(|r| r.split('-').next()) else {
                return false;
            };
            // A dir named after our own pid predates this process (pid reuse): we made none yet.
            let ours = pid == std::process::id().to_string();
            pid.parse::<u32>().is_ok() && (ours || !Path::new("/proc").join(pid).exists())
        })
        .map(|entry| entry.path())
        .collect();
    for dir in &stale {
        eprintln!("sweeping {} left by a dead test process", dir.display());
        host::kill_processes_under(dir);
    }
    for dir in &stale {
        host::teardown_dir(dir);
    }
}
