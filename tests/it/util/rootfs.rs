//! The tarball every test image is imported from: a `FROM scratch` root holding the static
//! busybox, a random nonce (so no two images share a layer or an id), an optional random payload
//! of a known size and optional small files. Both engines' harnesses import it (`docker import`,
//! `podman import`). Must not: talk to an engine.

use std::fs::{self, File};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::dockerd::BUSYBOX;
use super::host;
use super::loopfs::{MIB, next_id, path_str};

/// The default command of every test image, as a `--change` instruction.
pub const CMD_CHANGE: &str = r#"CMD ["/busybox", "true"]"#;

/// A staged rootfs tarball under an engine's temp dir (never on the loop filesystem, so staging
/// does not change its usage); the stage is removed on drop.
pub struct RootfsTar {
    stage: PathBuf,
    tar: PathBuf,
}

impl RootfsTar {
    /// Stages `/busybox`, `/nonce`, `/payload` (`payload_mib` MiB of random bytes, none when 0)
    /// and `/files/0..files` under `parent` and tars them up.
    pub fn build(parent: &Path, payload_mib: u64, files: u64) -> RootfsTar {
        let stage = parent.join(format!("stage-{}", next_id()));
        let root = stage.join("rootfs");
        let tar = stage.join("rootfs.tar");
        // From here on a panic drops the stage.
        let staged = RootfsTar { stage, tar };
        let fail =
            |what: &str, e: std::io::Error| -> ! { panic!("{what} in {}: {e}", root.display()) };
        fs::create_dir_all(root.join("files")).unwrap_or_else(|e| fail("mkdir", e));
        fs::copy(BUSYBOX, root.join("busybox")).unwrap_or_else(|e| fail("copying busybox", e));
        // A nonce makes each layer unique even without payload: identical tarballs would give
        // one image (same layer, same config, same id).
        let mut nonce = [0u8; 16];
        File::open("/dev/urandom")
            .and_then(|mut r| r.read_exact(&mut nonce))
            .unwrap_or_else(|e| fail("reading /dev/urandom", e));
        fs::write(root.join("nonce"), nonce).unwrap_or_else(|e| fail("writing nonce", e));
        if payload_mib > 0 {
            let mut src =
                File::open("/dev/urandom").unwrap_or_else(|e| fail("opening /dev/urandom", e));
            let mut dst =
                File::create(root.join("payload")).unwrap_or_else(|e| fail("creating payload", e));
            let copied = std::io::copy(&mut (&mut src).take(payload_mib * MIB), &mut dst)
                .unwrap_or_else(|e| fail("writing payload", e));
            assert_eq!(copied, payload_mib * MIB, "short read from /dev/urandom");
        }
        for i in 0..files {
            fs::write(root.join("files").join(i.to_string()), format!("{i}\n"))
                .unwrap_or_else(|e| fail("writing small files", e));
        }
        host::run_ok(
            "tar",
            &["-C", path_str(&root), "-cf", path_str(&staged.tar), "."],
            Duration::from_secs(180),
        );
        staged
    }

    /// The tarball.
    pub fn path(&self) -> &str {
        path_str(&self.tar)
    }
}

impl Drop for RootfsTar {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.stage)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("removing {}: {e}", self.stage.display());
        }
    }
}
