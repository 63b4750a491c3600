//! The loop-mounted ext4 filesystem under a [`PrivateDockerd`]: making it, reading its `statvfs`
//! through `stat -f`, and filling it outside Docker's dirs to reach a chosen usage.

use std::fs::{self, File};
use std::io::Write;

use super::{COMMAND_BOUND, MIB, PrivateDockerd, path_str};
use crate::util::host::{self, FsStat};

impl PrivateDockerd {
    /// A sparse `fs.img` of `fs_mib` MiB, `mkfs.ext4` (4 KiB blocks; exactly `inodes` inodes when
    /// `Some`, rounded up by mkfs to whole block groups), attached to a loop device and mounted on
    /// the mount point. Teardown (unmount, detach) is in `Drop`.
    pub(super) fn make_filesystem(&self, fs_mib: u64, inodes: Option<u64>) {
        let img = self.dir.join("fs.img");
        File::create(&img)
            .and_then(|f| f.set_len(fs_mib * MIB))
            .unwrap_or_else(|e| panic!("creating {}: {e}", img.display()));
        let mut mkfs = vec!["-q", "-F", "-b", "4096"];
        let inodes = inodes.map(|i| i.to_string());
        if let Some(i) = &inodes {
            mkfs.extend(["-N", i]);
        }
        mkfs.push(path_str(&img));
        host::run_ok("mkfs.ext4", &mkfs, COMMAND_BOUND);
        let out = host::run_ok(
            "losetup",
            &["--find", "--show", path_str(&img)],
            COMMAND_BOUND,
        );
        let dev = String::from_utf8_lossy(&out.stdout).trim().to_string();
        fs::create_dir(&self.mount)
            .unwrap_or_else(|e| panic!("creating {}: {e}", self.mount.display()));
        host::run_ok(
            "mount",
            &["-t", "ext4", &dev, path_str(&self.mount)],
            COMMAND_BOUND,
        );
    }

    /// `statvfs` of the data root's filesystem.
    pub fn fs_stat(&self) -> FsStat {
        host::statfs(&self.mount)
    }

    /// (blocks used %, inodes used %) of the data root's filesystem; see [`FsStat`].
    pub fn used_pct(&self) -> (f64, f64) {
        let s = self.fs_stat();
        (s.used_pct(), s.inodes_used_pct())
    }

    /// Appends zeros to `<mount>/filler` (outside Docker's dirs) until blocks used reach `pct`.
    /// Does nothing when usage is already there. Root may write into the 5 % reserve, so any
    /// `pct` up to 100 can be reached.
    pub fn fill_to(&self, pct: f64) {
        assert!(
            (0.0..=100.0).contains(&pct),
            "fill_to({pct}): not a percentage"
        );
        let path = self.mount.join("filler");
        let mut file = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .unwrap_or_else(|e| panic!("opening {}: {e}", path.display()));
        let chunk = vec![0u8; MIB as usize];
        for _ in 0..20 {
            let s = self.fs_stat();
            if s.used_pct() >= pct {
                return;
            }
            // Round up to whole blocks and add one: ext4 also allocates extent blocks.
            let want_blocks = (pct / 100.0 * s.blocks as f64).ceil() as u64;
            let missing =
                (want_blocks.saturating_sub(s.blocks - s.blocks_avail) + 1) * s.block_bytes;
            let mut left = missing;
            while left > 0 {
                let n = left.min(MIB) as usize;
                file.write_all(&chunk[..n])
                    .unwrap_or_else(|e| panic!("filling {} to {pct} %: {e}", path.display()));
                left -= n as u64;
            }
            file.sync_all()
                .unwrap_or_else(|e| panic!("syncing {}: {e}", path.display()));
        }
        panic!(
            "fill_to({pct}): still at {:?} after 20 rounds",
            self.used_pct()
        );
    }

    /// Removes the filler written by [`PrivateDockerd::fill_to`].
    pub fn clear_filler(&self) {
        match fs::remove_file(self.mount.join("filler")) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => panic!("removing filler: {e}"),
            _ => {}
        }
    }
}
