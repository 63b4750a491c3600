//! `statvfs(2)` and its arithmetic: how full the filesystem holding a path is, in blocks and in
//! inodes, with the kubelet's formula, and how much must be freed to get below a percentage.
//! Pure arithmetic apart from the one system call.

use std::path::{Path, PathBuf};

use super::Error;

/// How full the filesystem holding a path is, from `statvfs(2)`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FsUsage {
    /// The path that was measured (any path on the filesystem).
    pub path: PathBuf,
    /// Size of the filesystem: `f_blocks * f_frsize`.
    pub total_bytes: u64,
    /// Bytes available to unprivileged users: `f_bavail * f_frsize`.
    pub avail_bytes: u64,
    /// `100 * (1 - f_bavail / f_blocks)`, the kubelet's formula; 0 when `f_blocks == 0`.
    pub blocks_used_pct: f64,
    /// Number of inodes: `f_files`; 0 on filesystems without a fixed inode table (btrfs).
    pub total_inodes: u64,
    /// Inodes available to unprivileged users: `f_favail`.
    pub avail_inodes: u64,
    /// `100 * (1 - f_favail / f_files)`; 0 when `f_files == 0`.
    pub inodes_used_pct: f64,
    /// The filesystem's device (`st_dev` of the path): which engines live on it. 0 when
    /// unknown (built from counts).
    #[serde(skip)]
    pub dev: u64,
}

impl FsUsage {
    /// The trigger figure: the larger of `blocks_used_pct` and `inodes_used_pct`.
    pub fn used_pct(&self) -> f64 {
        self.blocks_used_pct.max(self.inodes_used_pct)
    }

    /// Bytes in use: what `blocks_used_pct` counts (`(f_blocks - f_bavail) * f_frsize`).
    pub fn used_bytes(&self) -> u64 {
        self.total_bytes.saturating_sub(self.avail_bytes)
    }

    /// Pure arithmetic from the `statvfs` counts: used % = `100 * (1 - f_bavail / f_blocks)`,
    /// likewise `f_favail / f_files`; 0 % when `f_blocks == 0` or `f_files == 0` (btrfs).
    pub fn from_counts(
        path: PathBuf,
        frsize: u64,
        blocks: u64,
        bavail: u64,
        files: u64,
        favail: u64,
    ) -> FsUsage {
        let total_bytes = blocks.saturating_mul(frsize);
        let avail_bytes = bavail.saturating_mul(frsize);
        FsUsage {
            path,
            total_bytes,
            avail_bytes,
            // From bytes rather than blocks so that `bytes_to_reach` agrees to the last bit; the
            // ratio is the same (exactly so below 2^53 bytes).
            blocks_used_pct: used_pct(total_bytes, avail_bytes),
            total_inodes: files,
            avail_inodes: favail,
            inodes_used_pct: used_pct(files, favail),
            dev: 0,
        }
    }

    /// Bytes that must be freed so that `blocks_used_pct` drops below `low_pct` (strictly: a usage
    /// equal to `low_pct` is not below); 0 when already below. When no amount is enough
    /// (`low_pct <= 0`), all used bytes.
    pub fn bytes_to_reach(&self, low_pct: f64) -> u64 {
        amount_to_reach(self.total_bytes, self.avail_bytes, low_pct)
    }

    /// Inodes that must be freed so that `inodes_used_pct` drops below `low_pct` (strictly); 0 when
    /// already below or when the filesystem has no inode count. When no amount is enough
    /// (`low_pct <= 0`), all used inodes.
    pub fn inodes_to_reach(&self, low_pct: f64) -> u64 {
        amount_to_reach(self.total_inodes, self.avail_inodes, low_pct)
    }
}

/// `100 * (1 - avail / total)`, clamped to 0..=100; 0 when `total == 0`.
fn used_pct(total: u64, avail: u64) -> f64 {
    if total == 0 {
        return 0.0;
    }
    (100.0 * (1.0 - avail as f64 / total as f64)).clamp(0.0, 100.0)
}

/// The smallest `x` with `used_pct(total, avail + x) < low_pct`, found by bisection over the very
/// formula that reports the usage, so "freed that much" and "is now below" never disagree by a
/// rounding. `used_pct` is monotonic in `avail`, which makes the bisection valid.
fn amount_to_reach(total: u64, avail: u64, low_pct: f64) -> u64 {
    let used = total.saturating_sub(avail);
    let below = |freed: u64| used_pct(total, avail.saturating_add(freed)) < low_pct;
    if below(0) {
        return 0;
    }
    if !below(used) {
        return used;
    }
    // Invariant: !below(not_enough) && below(enough).
    let (mut not_enough, mut enough) = (0, used);
    while enough - not_enough > 1 {
        let mid = not_enough + (enough - not_enough) / 2;
        if below(mid) {
            enough = mid;
        } else {
            not_enough = mid;
        }
    }
    enough
}

/// Measures the filesystem holding `path` with `statvfs(2)`.
pub fn statvfs(path: &Path) -> Result<FsUsage, Error> {
    let st = rustix::fs::statvfs(path).map_err(|errno| Error::Statvfs {
        path: path.to_owned(),
        source: errno.into(),
    })?;
    Ok(FsUsage::from_counts(
        path.to_owned(),
        st.f_frsize,
        st.f_blocks,
        st.f_bavail,
        st.f_files,
        st.f_favail,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(frsize: u64, blocks: u64, bavail: u64, files: u64, favail: u64) -> FsUsage {
        FsUsage::from_counts(PathBuf::from("/x"), frsize, blocks, bavail, files, favail)
    }

    #[test]
    fn from_counts_computes_kubelet_percentages() {
        // (frsize, blocks, bavail, files, favail) -> (blocks %, inodes %, used_pct)
        let cases = [
            (
                "quarter free",
                (4096, 1000, 250, 100, 90),
                (75.0, 10.0, 75.0),
            ),
            (
                "inodes dominate",
                (4096, 1000, 900, 100, 5),
                (10.0, 95.0, 95.0),
            ),
            (
                "btrfs: no inode count",
                (4096, 1000, 500, 0, 0),
                (50.0, 0.0, 50.0),
            ),
            ("no blocks", (4096, 0, 0, 10, 10), (0.0, 0.0, 0.0)),
            ("full", (4096, 1000, 0, 100, 0), (100.0, 100.0, 100.0)),
            ("empty", (1024, 1000, 1000, 100, 100), (0.0, 0.0, 0.0)),
            (
                "avail above total is clamped",
                (4096, 10, 20, 10, 20),
                (0.0, 0.0, 0.0),
            ),
        ];
        for (name, (frsize, blocks, bavail, files, favail), (b_pct, i_pct, pct)) in cases {
            let u = usage(frsize, blocks, bavail, files, favail);
            let close = |a: f64, b: f64| (a - b).abs() < 1e-9;
            assert!(close(u.blocks_used_pct, b_pct), "{name}: blocks % {u:?}");
            assert!(close(u.inodes_used_pct, i_pct), "{name}: inodes % {u:?}");
            assert!(close(u.used_pct(), pct), "{name}: used % {u:?}");
            assert_eq!(u.total_bytes, blocks * frsize, "{name}: total bytes");
            assert_eq!(u.avail_bytes, bavail * frsize, "{name}: avail bytes");
            assert_eq!((u.total_inodes, u.avail_inodes), (files, favail), "{name}");
        }
    }

    #[test]
    fn amounts_to_reach_low_watermark() {
        // (frsize, blocks, bavail, files, favail, low %) -> (bytes, inodes)
        let cases = [
            ("already below", (1, 1000, 250, 100, 90, 80.0), (0, 0)),
            // Usage exactly at low is not below it: one more byte, one more inode.
            ("exactly at low", (1, 1000, 200, 100, 20, 80.0), (1, 1)),
            (
                "exactly at low, 4 KiB blocks",
                (4096, 100, 20, 10, 2, 80.0),
                (1, 1),
            ),
            (
                "90 % to below 80 %",
                (1, 1000, 100, 1000, 100, 80.0),
                (101, 101),
            ),
            ("full to below 50 %", (1, 1000, 0, 10, 0, 50.0), (501, 6)),
            (
                "btrfs: inodes never trigger",
                (1, 1000, 0, 0, 0, 50.0),
                (501, 0),
            ),
            (
                "low 0 % is unreachable: everything",
                (1, 1000, 100, 10, 4, 0.0),
                (900, 6),
            ),
            ("empty filesystem", (1, 0, 0, 0, 0, 80.0), (0, 0)),
        ];
        for (name, (frsize, blocks, bavail, files, favail, low), (bytes, inodes)) in cases {
            let u = usage(frsize, blocks, bavail, files, favail);
            assert_eq!(u.bytes_to_reach(low), bytes, "{name}: bytes");
            assert_eq!(u.inodes_to_reach(low), inodes, "{name}: inodes");
        }
    }

    #[test]
    fn bytes_to_reach_is_the_least_that_gets_below() {
        // Realistic sizes where float rounding could bite: freeing the answer gets below `low`,
        // freeing one byte less does not.
        let cases = [
            (4096, 25_000_000, 5_000_000, 80.0),
            (4096, 61_000_000, 3_123_457, 85.0),
            (1024, 7_777_777, 1, 99.9),
            (4096, 262_144_000_000, 13, 33.3),
        ];
        for (frsize, blocks, bavail, low) in cases {
            let u = usage(frsize, blocks, bavail, 0, 0);
            let freed = u.bytes_to_reach(low);
            assert!(
                used_pct(u.total_bytes, u.avail_bytes + freed) < low,
                "{u:?} {freed}"
            );
            assert!(
                used_pct(u.total_bytes, u.avail_bytes + freed - 1) >= low,
                "{u:?} {freed}"
            );
        }
    }

    #[test]
    fn statvfs_error_names_the_path() {
        let err = statvfs(Path::new("/nonexistent/usage-test")).expect_err("a missing path");
        assert_eq!(err.to_string(), "failed to statvfs /nonexistent/usage-test");
        let source = std::error::Error::source(&err).map(ToString::to_string);
        assert!(
            source.is_some_and(|s| s.contains("No such file")),
            "{err:?}"
        );
        assert!(!err.is_transient());
    }
}
