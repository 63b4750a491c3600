//! Host plumbing for the real-service helpers: bounded commands, `/proc` scans, mounts, loop
//! devices, `statvfs` through `stat -f`. Std only; everything goes through the usual tools (`kill`,
//! `umount`, `losetup`) so no `unsafe`. Must not: decide whether a test runs (that is `require`).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

/// Runs `cmd` with stdin closed and output captured; SIGKILLs it and panics after `bound`.
pub fn run(mut cmd: Command, bound: Duration) -> Output {
    let shown = format!("{cmd:?}");
    let child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawning {shown}: {e}"));
    let pid = child.id();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(bound) {
        Ok(out) => out.unwrap_or_else(|e| panic!("waiting for {shown}: {e}")),
        Err(_) => {
            signal("KILL", &[pid]);
            panic!("{shown} did not finish within {bound:?}; killed");
        }
    }
}

/// Runs `program args` (bounded) and panics with its stderr unless it succeeds.
pub fn run_ok(program: &str, args: &[&str], bound: Duration) -> Output {
    let mut cmd = Command::new(program);
    cmd.args(args);
    let out = run(cmd, bound);
    if !out.status.success() {
        panic!(
            "{program} {} failed ({}): {}",
            args.join(" "),
            out.status,
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    out
}

/// `kill -<sig> pids…`; errors (already gone) are ignored. Never panics.
pub fn signal(sig: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{sig}"))
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// The first executable file named `tool` in PATH's dirs, then `/usr/sbin` and `/sbin` (root's
/// tools are there even when PATH lacks them).
pub fn find_in_path(tool: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(tool))
        .find(|p| p.is_file())
}

/// Whether `path` is a 64-bit little-endian ELF executable without an interpreter
/// (`PT_INTERP`): it runs in an image that holds nothing else. False for anything else.
pub fn is_static_elf(path: &Path) -> bool {
    const PT_INTERP: u32 = 3;
    let Ok(elf) = fs::read(path) else {
        return false;
    };
    let u16_at = |at: usize| Some(u16::from_le_bytes(elf.get(at..at + 2)?.try_into().ok()?));
    let u32_at = |at: usize| Some(u32::from_le_bytes(elf.get(at..at + 4)?.try_into().ok()?));
    let u64_at = |at: usize| Some(u64::from_le_bytes(elf.get(at..at + 8)?.try_into().ok()?));
    // Magic, ELFCLASS64, ELFDATA2LSB.
    if elf.get(..6) != Some(b"\x7fELF\x02\x01".as_slice()) {
        return false;
    }
    let headers = (|| {
        let phoff = usize::try_from(u64_at(0x20)?).ok()?;
        let size = usize::from(u16_at(0x36)?);
        let count = usize::from(u16_at(0x38)?);
        (0..count)
            .map(|i| {
                let start = phoff.checked_add(i.checked_mul(size)?)?;
                // The whole header must be there, not only its type.
                elf.get(start..start.checked_add(size)?)?;
                u32_at(start)
            })
            .collect::<Option<Vec<u32>>>()
    })();
    headers.is_some_and(|types| !types.contains(&PT_INTERP))
}

/// Live processes (not zombies) whose command line names a path under `dir`, plus all their
/// descendants (container processes run under shims). `"pid cmdline"` strings, for messages.
pub fn processes_under(dir: &Path) -> Vec<String> {
    let procs = scan_proc();
    let needle = format!("{}/", dir.display());
    let mut picked: Vec<u32> = procs
        .iter()
        .filter(|p| p.cmdline.contains(&needle))
        .map(|p| p.pid)
        .collect();
    let mut i = 0;
    while i < picked.len() {
        let parent = picked[i];
        for p in &procs {
            if p.ppid == parent && !picked.contains(&p.pid) {
                picked.push(p.pid);
            }
        }
        i += 1;
    }
    procs
        .iter()
        .filter(|p| picked.contains(&p.pid))
        .map(|p| format!("{} {}", p.pid, p.cmdline))
        .collect()
}

/// SIGKILLs [`processes_under`] `dir` and waits (bounded) until they are gone. Never panics.
pub fn kill_processes_under(dir: &Path) {
    let gone = super::wait_until(Duration::from_secs(10), || {
        let pids = pids_under(dir);
        signal("KILL", &pids);
        pids.is_empty()
    });
    if !gone {
        eprintln!(
            "processes under {} survive SIGKILL: {:?}",
            dir.display(),
            pids_under(dir)
        );
    }
}

fn pids_under(dir: &Path) -> Vec<u32> {
    processes_under(dir)
        .iter()
        .filter_map(|p| p.split(' ').next()?.parse().ok())
        .collect()
}

/// Mount points at or under `dir`, in mount order (`/proc/self/mountinfo`).
pub fn mounts_under(dir: &Path) -> Vec<String> {
    let dir = dir.display().to_string();
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    info.lines()
        .filter_map(|l| l.split(' ').nth(4))
        .map(|m| m.replace("\\040", " "))
        .filter(|m| *m == dir || m.starts_with(&format!("{dir}/")))
        .collect()
}

/// Loop devices backed by `file` (`losetup -j`).
pub fn loop_devices_of(file: &Path) -> Vec<String> {
    let out = Command::new("losetup")
        .arg("-j")
        .arg(file)
        .stderr(Stdio::null())
        .output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    text.lines()
        .filter_map(|l| l.split(':').next())
        .map(String::from)
        .collect()
}

/// Unmounts everything at or under `dir`, innermost first (lazily if busy). Never panics.
pub fn unmount_under(dir: &Path) {
    for _ in 0..5 {
        let mounts = mounts_under(dir);
        if mounts.is_empty() {
            break;
        }
        for m in mounts.iter().rev() {
            let ok = Command::new("umount").arg(m).stderr(Stdio::null()).status();
            if !matches!(ok, Ok(s) if s.success()) {
                let _ = Command::new("umount").args(["--lazy", m]).status();
            }
        }
    }
}

/// Unmounts everything under `dir` ([`unmount_under`]), detaches the loop devices of
/// `dir/fs.img` and removes `dir`, unless something is still mounted there (then deleting would
/// reach into a live filesystem). Never panics; reports on stderr.
pub fn teardown_dir(dir: &Path) {
    unmount_under(dir);
    for dev in loop_devices_of(&dir.join("fs.img")) {
        let _ = Command::new("losetup").args(["--detach", &dev]).status();
    }
    let left = mounts_under(dir);
    if !left.is_empty() {
        eprintln!("still mounted, keeping {}: {left:?}", dir.display());
        return;
    }
    if let Err(e) = fs::remove_dir_all(dir)
        && e.kind() != std::io::ErrorKind::NotFound
    {
        eprintln!("removing {}: {e}", dir.display());
    }
}

/// Cgroup dirs (any hierarchy, v1 or v2) named `libpod-<id>` for one of `ids`: where rootful
/// Podman with the cgroupfs manager puts each container (`<hierarchy>/libpod_parent/libpod-<id>`).
pub fn cgroups_named(ids: &[String]) -> Vec<PathBuf> {
    let names: Vec<String> = ids.iter().map(|id| format!("libpod-{id}")).collect();
    let mut found = Vec::new();
    let mut level = vec![PathBuf::from("/sys/fs/cgroup")];
    for _ in 0..3 {
        let mut next = Vec::new();
        for dir in &level {
            let Ok(entries) = fs::read_dir(dir) else {
                continue;
            };
            for e in entries.flatten() {
                // Real dirs only: `cpu,cpuacct` and friends are symlinks to hierarchies we visit.
                if !e.file_type().is_ok_and(|t| t.is_dir()) {
                    continue;
                }
                if names.contains(&e.file_name().to_string_lossy().to_string()) {
                    found.push(e.path());
                } else {
                    next.push(e.path());
                }
            }
        }
        level = next;
    }
    found
}

/// The pids in a cgroup (`cgroup.procs`); empty when it is gone.
pub fn cgroup_pids(cgroup: &Path) -> Vec<u32> {
    fs::read_to_string(cgroup.join("cgroup.procs"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

/// Removes empty cgroups (bounded retries: the kernel frees a cgroup shortly after its last
/// process is reaped). Never panics; reports what stays on stderr.
pub fn remove_cgroups(cgroups: &[PathBuf]) {
    let removed = super::wait_until(Duration::from_secs(5), || {
        cgroups
            .iter()
            .all(|c| fs::remove_dir(c).is_ok() || !c.exists())
    });
    if !removed {
        let left: Vec<&PathBuf> = cgroups.iter().filter(|c| c.exists()).collect();
        eprintln!("cgroups left behind: {left:?}");
    }
}

/// `statvfs` of a filesystem as `stat -f` reports it: an oracle independent of the library's
/// own statvfs code.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct FsStat {
    /// Fundamental block size in bytes (`f_frsize`).
    pub block_bytes: u64,
    /// Total data blocks (`f_blocks`).
    pub blocks: u64,
    /// Blocks available to unprivileged users (`f_bavail`).
    pub blocks_avail: u64,
    /// Total inodes (`f_files`).
    pub files: u64,
    /// Free inodes (`f_ffree`; equals `f_favail` on ext4).
    pub files_free: u64,
}

impl FsStat {
    /// `100 * (1 - f_bavail / f_blocks)`: the formula the cleaner and the kubelet trigger on.
    pub fn used_pct(&self) -> f64 {
        100.0 * (1.0 - self.blocks_avail as f64 / self.blocks as f64)
    }

    /// `100 * (1 - f_ffree / f_files)`.
    pub fn inodes_used_pct(&self) -> f64 {
        100.0 * (1.0 - self.files_free as f64 / self.files as f64)
    }

    /// Bytes counted as used by [`FsStat::used_pct`] (`(f_blocks - f_bavail) * f_frsize`).
    pub fn used_bytes(&self) -> u64 {
        (self.blocks - self.blocks_avail) * self.block_bytes
    }
}

/// [`FsStat`] of the filesystem holding `path`, from `stat -f`.
pub fn statfs(path: &Path) -> FsStat {
    let mut cmd = Command::new("stat");
    cmd.args(["-f", "-c", "%S %b %a %c %d"]).arg(path);
    let out = run(cmd, Duration::from_secs(30));
    let text = String::from_utf8_lossy(&out.stdout);
    let v: Vec<u64> = text
        .split_whitespace()
        .filter_map(|n| n.parse().ok())
        .collect();
    let [block_bytes, blocks, blocks_avail, files, files_free] = v[..] else {
        panic!(
            "stat -f {} printed {text:?} ({})",
            path.display(),
            out.status
        );
    };
    FsStat {
        block_bytes,
        blocks,
        blocks_avail,
        files,
        files_free,
    }
}

struct Proc {
    pid: u32,
    ppid: u32,
    cmdline: String,
}

fn scan_proc() -> Vec<Proc> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    let mut procs = Vec::new();
    for e in entries.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        // Fields after the last ')' (the command may contain one): state, ppid, …
        let Ok(stat) = fs::read_to_string(e.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut fields = rest.split_whitespace();
        let (Some(state), Some(ppid)) = (fields.next(), fields.next()) else {
            continue;
        };
        if state == "Z" || state == "X" {
            continue;
        }
        let cmdline = fs::read(e.path().join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
        procs.push(Proc {
            pid,
            ppid: ppid.parse().unwrap_or(0),
            cmdline,
        });
    }
    procs
}
