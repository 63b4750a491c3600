//! `usage` against `du -sxB1`.
//!
//! Every tree is built in a temporary directory and measured both ways; the byte counts must agree
//! exactly. The mount-point and unreadable-entry tests need root (`require(Service::Root)`):
//! without it they are recorded as skipped, or fail under CI (see `util::require`).

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt, symlink};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use docker_image_cleaner::usage::{self, TreeUsage};

use crate::util::require::{Service, require};

const KIB: usize = 1024;
/// Size of the file outside the tree that symlinks point to: far more than the tree holds.
const OUTSIDE_BYTES: usize = 8 * 1024 * KIB;

/// Runs `du -scxB1` (or `du -scx --inodes`) on `roots` and returns the total.
fn du_total(roots: &[&Path], inodes: bool) -> u64 {
    du_total_as(roots, inodes, None)
}

fn du_total_as(roots: &[&Path], inodes: bool, uid: Option<u32>) -> u64 {
    let mut cmd = Command::new("du");
    cmd.arg(if inodes { "-scx" } else { "-scxB1" });
    if inodes {
        cmd.arg("--inodes");
    }
    cmd.args(roots);
    if let Some(uid) = uid {
        cmd.uid(uid).gid(uid);
    }
    let out = cmd.output().expect("run du");
    let stdout = String::from_utf8_lossy(&out.stdout);
    // du exits 1 when it could not read something but still prints the total.
    let total = stdout.lines().last().unwrap_or_default();
    let Some((value, "total")) = total.split_once('\t') else {
        panic!(
            "unexpected du output {stdout:?}, stderr {:?}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    value.parse().expect("du prints a number")
}

fn measure(roots: &[&Path]) -> TreeUsage {
    let roots: Vec<PathBuf> = roots.iter().map(|p| p.to_path_buf()).collect();
    usage::tree_usage(&roots).expect("tree_usage")
}

/// Asserts that `tree_usage(roots)` reports exactly what `du -scxB1 roots` and
/// `du -scx --inodes roots` report, with nothing unreadable, and returns it.
fn assert_matches_du(roots: &[&Path]) -> TreeUsage {
    let ours = measure(roots);
    assert_eq!(ours.bytes, du_total(roots, false), "bytes of {roots:?}");
    assert_eq!(ours.inodes, du_total(roots, true), "inodes of {roots:?}");
    assert_eq!(ours.unreadable, 0, "unreadable in {roots:?}");
    ours
}

fn write_file(path: &Path, len: usize) {
    fs::write(path, vec![b'x'; len]).expect("write test file");
}

/// Builds under `base`: `outside/` (one big file) and `tree/` with nested directories, files of
/// various sizes (empty, tiny, sparse), hard links and symlinks to a file and to a directory
/// outside the tree. Returns `(tree, outside)`.
fn build_tree(base: &Path) -> (PathBuf, PathBuf) {
    let outside = base.join("outside");
    let tree = base.join("tree");
    fs::create_dir_all(&outside).expect("mkdir outside");
    write_file(&outside.join("big"), OUTSIDE_BYTES);

    fs::create_dir_all(tree.join("a/b/c/d")).expect("mkdir nested");
    fs::create_dir_all(tree.join("empty-dir")).expect("mkdir empty");
    fs::create_dir_all(tree.join("links")).expect("mkdir links");
    write_file(&tree.join("empty"), 0);
    write_file(&tree.join("tiny"), 1);
    write_file(&tree.join("a/four-k"), 4 * KIB);
    write_file(&tree.join("a/b/odd"), 4 * KIB + 1);
    write_file(&tree.join("a/b/c/d/medium"), 100 * KIB);
    write_file(&tree.join("a/b/c/large"), 1024 * KIB);
    for i in 0..50 {
        write_file(&tree.join(format!("a/b/many-{i}")), i * 97);
    }

    // Sparse: 64 MiB apparent size, 8 KiB of data in the middle.
    let mut sparse = fs::File::create(tree.join("sparse")).expect("create sparse");
    sparse.set_len(64 * 1024 * 1024).expect("size sparse");
    sparse
        .seek(SeekFrom::Start(16 * 1024 * 1024))
        .expect("seek sparse");
    sparse.write_all(&[b's'; 8 * KIB]).expect("write sparse");

    // Three names for one inode, plus a link whose other name is outside the tree.
    fs::hard_link(tree.join("a/b/c/d/medium"), tree.join("links/medium-1")).expect("link");
    fs::hard_link(tree.join("a/b/c/d/medium"), tree.join("links/medium-2")).expect("link");
    write_file(&outside.join("linked"), 20 * KIB);
    fs::hard_link(outside.join("linked"), tree.join("links/from-outside")).expect("link");

    symlink(outside.join("big"), tree.join("to-big-file")).expect("symlink file");
    symlink(&outside, tree.join("to-outside-dir")).expect("symlink dir");
    symlink("a/b", tree.join("to-inner-dir")).expect("symlink inner");
    symlink("nowhere", tree.join("dangling")).expect("symlink dangling");
    (tree, outside)
}

fn tempdir() -> tempfile::TempDir {
    tempfile::tempdir().expect("create temp dir")
}

#[test]
fn one_root_matches_du_byte_for_byte() {
    let tmp = tempdir();
    let (tree, outside) = build_tree(tmp.path());

    let ours = assert_matches_du(&[&tree]);
    // Symlinks are not followed: the 8 MiB they point to are not in the tree.
    assert!(
        ours.bytes < OUTSIDE_BYTES as u64,
        "followed a symlink: {ours:?}"
    );
    assert!(measure(&[&outside]).bytes >= OUTSIDE_BYTES as u64);

    // Sparse files count their allocation, not their length.
    let sparse = assert_matches_du(&[&tree.join("sparse")]);
    assert!(
        sparse.bytes < 1024 * 1024,
        "sparse counted by length: {sparse:?}"
    );

    // Hard links count once: two names of a 100 KiB file in `links` cost 100 KiB once; a file
    // whose other name is outside counts in full.
    let blocks = |name: &str| {
        fs::symlink_metadata(tree.join(name))
            .expect("stat")
            .blocks()
    };
    let links = assert_matches_du(&[&tree.join("links")]);
    let expected = blocks("links") + blocks("links/medium-1") + blocks("links/from-outside");
    assert_eq!(links.bytes, expected * 512);
    assert_eq!(links.inodes, 3);

    // A root that is a symlink is measured as the link (du's default -P), not its target.
    let link_root = assert_matches_du(&[&tree.join("to-outside-dir")]);
    assert_eq!(link_root.inodes, 1);
    assert!(link_root.bytes < OUTSIDE_BYTES as u64);

    // Empty directory and empty file.
    assert_matches_du(&[&tree.join("empty-dir")]);
    assert_eq!(assert_matches_du(&[&tree.join("empty")]).bytes, 0);
}

#[test]
fn two_roots_count_shared_inodes_once() {
    let tmp = tempdir();
    let a = tmp.path().join("a");
    let b = tmp.path().join("b");
    fs::create_dir_all(a.join("sub/deeper")).expect("mkdir a");
    fs::create_dir_all(&b).expect("mkdir b");
    write_file(&a.join("shared"), 64 * KIB);
    write_file(&a.join("sub/own"), 12 * KIB);
    write_file(&a.join("sub/deeper/own"), 3 * KIB);
    write_file(&b.join("own"), 20 * KIB);
    fs::hard_link(a.join("shared"), b.join("shared")).expect("link across roots");
    let shared = fs::symlink_metadata(a.join("shared"))
        .expect("stat shared")
        .blocks()
        * 512;

    let alone_a = assert_matches_du(&[&a]);
    let alone_b = assert_matches_du(&[&b]);
    let both = assert_matches_du(&[&a, &b]);
    assert_eq!(both.bytes, alone_a.bytes + alone_b.bytes - shared);
    assert_eq!(both.inodes, alone_a.inodes + alone_b.inodes - 1);
    assert_eq!(assert_matches_du(&[&b, &a]), both);

    // Nested and repeated roots count once, in either order.
    let sub = a.join("sub");
    assert_eq!(assert_matches_du(&[&a, &sub]), alone_a);
    assert_eq!(assert_matches_du(&[&sub, &a]), alone_a);
    assert_eq!(assert_matches_du(&[&a, &a]), alone_a);
    assert_eq!(assert_matches_du(&[&a.join("sub/own"), &a]), alone_a);
}

/// Unmounts on drop, so that a failing assertion does not leave a mount behind.
struct Mount(PathBuf);

impl Drop for Mount {
    fn drop(&mut self) {
        let status = Command::new("umount").arg(&self.0).status();
        if !matches!(status, Ok(s) if s.success()) {
            eprintln!(
                "failed to unmount {}: {status:?}; trying lazily",
                self.0.display()
            );
            let _ = Command::new("umount").arg("-l").arg(&self.0).status();
        }
    }
}

/// Mounts a 1 MiB tmpfs on `dir` (as root: the test has required [`Service::Root`]).
fn mount_tmpfs(dir: &Path) -> Mount {
    mount(&["-t", "tmpfs", "-o", "size=1m", "tmpfs"], dir)
}

/// `mount ARGS... dir`; panics when that fails.
fn mount(args: &[&str], dir: &Path) -> Mount {
    let out = Command::new("mount")
        .args(args)
        .arg(dir)
        .output()
        .expect("run mount");
    assert!(
        out.status.success(),
        "cannot mount {args:?} on {}: {}",
        dir.display(),
        String::from_utf8_lossy(&out.stderr).trim()
    );
    Mount(dir.to_owned())
}

#[test]
fn mount_point_inside_is_neither_counted_nor_entered() {
    if !require(Service::Root) {
        return;
    }
    let tmp = tempdir();
    let (tree, _outside) = build_tree(tmp.path());
    let mnt = tree.join("a/b/mnt");
    fs::create_dir(&mnt).expect("mkdir mount point");
    let before = assert_matches_du(&[&tree]);
    let mount_point_dir = fs::symlink_metadata(&mnt).expect("stat mnt").blocks() * 512;
    assert!(mount_point_dir > 0);

    let _mount = mount_tmpfs(&mnt);
    write_file(&mnt.join("on-tmpfs"), 256 * KIB);
    fs::create_dir(mnt.join("dir-on-tmpfs")).expect("mkdir on tmpfs");
    assert_ne!(
        fs::metadata(&mnt).expect("stat mnt").dev(),
        fs::metadata(&tree).expect("stat tree").dev(),
        "the tmpfs is not mounted"
    );

    // The mounted filesystem is not entered, and the mount point itself is not counted either
    // (du -x skips it entirely): the tree lost exactly the directory the tmpfs covers.
    let after = assert_matches_du(&[&tree]);
    assert_eq!(after.bytes, before.bytes - mount_point_dir);
    assert_eq!(after.inodes, before.inodes - 1);

    // Measured as a root of its own, the tmpfs counts, and with the tree the two add up.
    let on_tmpfs = assert_matches_du(&[&mnt]);
    assert!(on_tmpfs.bytes >= 256 * KIB as u64, "{on_tmpfs:?}");
    assert_eq!(on_tmpfs.inodes, 3);
    let both = assert_matches_du(&[&tree, &mnt]);
    assert_eq!(both.bytes, after.bytes + on_tmpfs.bytes);
}

#[test]
fn bind_mounts_of_the_same_filesystem_count_once_and_cycles_end() {
    if !require(Service::Root) {
        return;
    }
    let tmp = tempdir();
    let (tree, _outside) = build_tree(tmp.path());
    fs::create_dir(tree.join("view")).expect("mkdir view");
    fs::create_dir(tree.join("a/b/loop")).expect("mkdir loop");
    let before = assert_matches_du(&[&tree]);
    let blocks = |name: &str| {
        fs::symlink_metadata(tree.join(name))
            .expect("stat")
            .blocks()
    };
    let covered = (blocks("view") + blocks("a/b/loop")) * 512;

    // `view` shows `a/b/c` again; `a/b/loop` shows the whole tree again, a cycle. Same st_dev,
    // so `-x` does not stop there: only remembering directories does. (du with one operand
    // would count `a/b/c` twice and the tree twice.) The directories they cover disappear.
    let c = tree.join("a/b/c");
    let _view = mount(&["--bind", &c.to_string_lossy()], &tree.join("view"));
    let _loop = mount(&["--bind", &tree.to_string_lossy()], &tree.join("a/b/loop"));
    let after = measure(&[&tree]);
    assert_eq!(after.bytes, before.bytes - covered, "{before:?} {after:?}");
    assert_eq!(after.inodes, before.inodes - 2);
    assert_eq!(after.unreadable, 0);
}

/// Set by `unreadable_entries_are_counted_and_the_walk_goes_on` for its unprivileged child.
const CHILD_ROOT_VAR: &str = "DIC_USAGE_TEST_UNPRIVILEGED_ROOT";
const CHILD_MARKER: &str = "TREE_USAGE";
const NOBODY: u32 = 65534;

/// Not a test of its own: the body of the unprivileged child of the test below, which runs this
/// test binary again as `nobody` with only this test selected. Run by hand (`--ignored`, no
/// [`CHILD_ROOT_VAR`]), it is that test, so it never passes without asserting anything.
#[test]
#[ignore = "helper run by unreadable_entries_are_counted_and_the_walk_goes_on"]
fn unprivileged_child() {
    let Some(root) = std::env::var_os(CHILD_ROOT_VAR) else {
        unreadable_entries_are_counted_and_the_walk_goes_on();
        return;
    };
    let usage = measure(&[Path::new(&root)]);
    println!(
        "{CHILD_MARKER} {} {} {}",
        usage.bytes, usage.inodes, usage.unreadable
    );
}

#[test]
fn unreadable_entries_are_counted_and_the_walk_goes_on() {
    // Root makes entries unreadable to a walk run as `nobody`.
    if !require(Service::Root) {
        return;
    }
    let tmp = tempdir();
    let tree = tmp.path().join("tree");
    fs::create_dir_all(tree.join("locked")).expect("mkdir locked");
    fs::create_dir_all(tree.join("list-only")).expect("mkdir list-only");
    fs::create_dir_all(tree.join("readable/sub")).expect("mkdir readable");
    write_file(&tree.join("locked/secret"), 40 * KIB);
    write_file(&tree.join("list-only/a"), 8 * KIB);
    write_file(&tree.join("list-only/b"), 8 * KIB);
    write_file(&tree.join("readable/sub/file"), 16 * KIB);
    let mode = |path: &Path, mode: u32| {
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).expect("chmod");
    };
    mode(tmp.path(), 0o755);
    mode(&tree.join("locked"), 0o000);
    // Names can be listed but not stat'ed: no search (x) permission.
    mode(&tree.join("list-only"), 0o644);

    let exe = std::env::current_exe().expect("current test binary");
    let out = Command::new(&exe)
        .args([
            "--exact",
            "usage::unprivileged_child",
            "--ignored",
            "--nocapture",
        ])
        .env(CHILD_ROOT_VAR, &tree)
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .unwrap_or_else(|err| panic!("cannot run {} as uid {NOBODY}: {err}", exe.display()));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix(CHILD_MARKER)) else {
        panic!(
            "child printed no result (is {} readable by nobody?)\nstdout: {stdout}\nstderr: {stderr}",
            exe.display()
        );
    };
    let fields: Vec<u64> = line
        .split_whitespace()
        .map(|f| f.parse().expect("child prints numbers"))
        .collect();
    let [bytes, inodes, unreadable] = fields[..] else {
        panic!("bad child line {line:?}");
    };

    // `locked` cannot be opened (1) and neither entry of `list-only` can be stat'ed (2); both
    // directories themselves still count, as with du, and the walk went on into `readable`.
    assert_eq!(unreadable, 3, "{stdout}");
    assert_eq!(bytes, du_total_as(&[&tree], false, Some(NOBODY)));
    assert_eq!(inodes, du_total_as(&[&tree], true, Some(NOBODY)));
    let as_root = assert_matches_du(&[&tree]);
    assert_eq!(as_root.inodes, inodes + 3);
}

#[test]
fn missing_root_is_an_error_naming_it() {
    let tmp = tempdir();
    let missing = tmp.path().join("gone");
    let err = usage::tree_usage(&[tmp.path().to_owned(), missing.clone()])
        .expect_err("a missing root is an error");
    assert_eq!(
        err.to_string(),
        format!("failed to stat {}", missing.display())
    );
    let cause = std::error::Error::source(&err).map(ToString::to_string);
    assert!(cause.is_some_and(|c| c.contains("No such file")), "{err:?}");
    assert!(!err.is_transient());

    let empty = usage::tree_usage(&[]).expect("no roots");
    assert_eq!(
        empty,
        TreeUsage {
            bytes: 0,
            inodes: 0,
            unreadable: 0
        }
    );
}

/// Runs `cmd` and returns its stdout split into numbers.
fn numbers(cmd: &mut Command) -> Vec<u64> {
    let out = cmd.output().expect("run command");
    assert!(
        out.status.success(),
        "{cmd:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|word| word.parse().ok())
        .collect()
}

#[test]
fn statvfs_agrees_with_df_and_stat_f() {
    let tmp = tempdir();
    let ours = usage::statvfs(tmp.path()).expect("statvfs");
    assert_eq!(ours.path, tmp.path());

    // stat -f: fundamental block size, blocks, blocks available to non-root, inodes, free inodes.
    let stat_f = numbers(
        Command::new("stat")
            .args(["-f", "-c", "%S %b %a %c %d"])
            .arg(tmp.path()),
    );
    let [frsize, blocks, bavail, files, ffree] = stat_f[..] else {
        panic!("unexpected stat -f output {stat_f:?}");
    };
    let df = numbers(
        Command::new("df")
            .args(["-B1", "--output=size,avail,itotal,iavail"])
            .arg(tmp.path()),
    );
    let [df_size, df_avail, df_itotal, df_iavail] = df[..] else {
        panic!("unexpected df output {df:?}");
    };

    assert_eq!(ours.total_bytes, frsize * blocks);
    assert_eq!(ours.total_bytes, df_size);
    assert_eq!(ours.total_inodes, files);
    assert_eq!(ours.total_inodes, df_itotal);
    // Others write to this filesystem meanwhile: free space may move a little between calls.
    let near = |a: u64, b: u64, slack: u64| a.abs_diff(b) <= slack;
    let byte_slack = ours.total_bytes / 1000;
    let inode_slack = ours.total_inodes / 1000 + 10;
    assert!(
        near(ours.avail_bytes, frsize * bavail, byte_slack),
        "{ours:?} vs {stat_f:?}"
    );
    assert!(
        near(ours.avail_bytes, df_avail, byte_slack),
        "{ours:?} vs {df:?}"
    );
    assert!(
        near(ours.avail_inodes, ffree, inode_slack),
        "{ours:?} vs {stat_f:?}"
    );
    assert!(
        near(ours.avail_inodes, df_iavail, inode_slack),
        "{ours:?} vs {df:?}"
    );

    let pct = |avail: u64, total: u64| {
        if total == 0 {
            0.0
        } else {
            100.0 * (1.0 - avail as f64 / total as f64)
        }
    };
    let blocks_pct = pct(bavail, blocks);
    let inodes_pct = pct(ffree, files);
    assert!(
        (ours.blocks_used_pct - blocks_pct).abs() < 0.2,
        "{ours:?} vs {blocks_pct}"
    );
    assert!(
        (ours.inodes_used_pct - inodes_pct).abs() < 0.2,
        "{ours:?} vs {inodes_pct}"
    );
    assert_eq!(
        ours.used_pct(),
        ours.blocks_used_pct.max(ours.inodes_used_pct)
    );
    assert!(
        ours.blocks_used_pct > 0.0 && ours.blocks_used_pct < 100.0,
        "{ours:?}"
    );
}
