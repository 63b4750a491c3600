//! The tarball every test image is imported from: a `FROM scratch` root holding the static
//! busybox, a random nonce (so no two images share a layer or an id), an optional random payload
//! of a known size and optional small files. Both engines' harnesses import it (`docker import`,
//! `podman import`); [`ImageArchive`] wraps it in a `docker save` archive with a chosen creation
//! time and tag, for `docker load` and `podman load`. Must not: talk to an engine.

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

/// A `docker save` archive (`manifest.json`, the image's config, one layer: a [`RootfsTar`])
/// whose image was created at a given time and is tagged with a given name: `docker load` and
/// `podman load` take it, and every engine then lists the image with that `Created`, as an
/// image built or pulled long ago (an import is always created now). Staged under an engine's
/// temp dir like [`RootfsTar`]; the stage is removed on drop.
pub struct ImageArchive {
    stage: PathBuf,
    tar: PathBuf,
}

impl ImageArchive {
    /// The archive of an image tagged `tag`, created at `created_secs` (unix seconds), holding
    /// `/busybox` (default command `/busybox true`), a nonce and `payload_mib` MiB of random
    /// bytes.
    pub fn build(parent: &Path, tag: &str, payload_mib: u64, created_secs: i64) -> ImageArchive {
        Self::build_with(
            parent,
            tag,
            payload_mib,
            created_secs,
            &["/busybox", "true"],
            &[],
        )
    }

    /// [`ImageArchive::build`] with a default command of `cmd` and image labels `labels` (a CRI
    /// pod sandbox runs its image's own command: the sandbox image must keep running).
    pub fn build_with(
        parent: &Path,
        tag: &str,
        payload_mib: u64,
        created_secs: i64,
        cmd: &[&str],
        labels: &[(&str, &str)],
    ) -> ImageArchive {
        let layer = RootfsTar::build(parent, payload_mib, 0);
        let stage = parent.join(format!("archive-{}", next_id()));
        let content = stage.join("content");
        // From here on a panic drops the stage.
        let staged = ImageArchive {
            tar: stage.join("image.tar"),
            stage,
        };
        let fail =
            |what: &str, e: std::io::Error| -> ! { panic!("{what} in {}: {e}", content.display()) };
        fs::create_dir_all(&content).unwrap_or_else(|e| fail("mkdir", e));
        fs::copy(layer.path(), content.join("layer.tar"))
            .unwrap_or_else(|e| fail("copying the layer", e));
        let created = jiff::Timestamp::from_second(created_secs)
            .unwrap_or_else(|e| panic!("created_secs {created_secs}: {e}"))
            .to_string();
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let config = serde_json::json!({
            "architecture": arch,
            "os": "linux",
            "created": created,
            "config": {
                "Cmd": cmd,
                "Labels": labels.iter().map(|(k, v)| (k.to_string(), serde_json::json!(v))).collect::<serde_json::Map<_, _>>(),
            },
            "rootfs": {
                "type": "layers",
                "diff_ids": [format!("sha256:{}", sha256(&content.join("layer.tar")))],
            },
            "history": [{"created": created, "created_by": "dic-it: busybox, a nonce, a payload"}],
        });
        let config_path = content.join("config.json");
        fs::write(&config_path, config.to_string()).unwrap_or_else(|e| fail("config", e));
        // Docker names the config by its digest, which is the image's id.
        let config_name = format!("{}.json", sha256(&config_path));
        fs::rename(&config_path, content.join(&config_name))
            .unwrap_or_else(|e| fail("naming the config", e));
        let manifest = serde_json::json!([{
            "Config": config_name,
            "RepoTags": [tag],
            "Layers": ["layer.tar"],
        }]);
        fs::write(content.join("manifest.json"), manifest.to_string())
            .unwrap_or_else(|e| fail("manifest.json", e));
        host::run_ok(
            "tar",
            &[
                "-C",
                path_str(&content),
                "-cf",
                path_str(&staged.tar),
                "manifest.json",
                &config_name,
                "layer.tar",
            ],
            Duration::from_secs(180),
        );
        staged
    }

    /// The archive.
    pub fn path(&self) -> &str {
        path_str(&self.tar)
    }
}

impl Drop for ImageArchive {
    fn drop(&mut self) {
        if let Err(e) = fs::remove_dir_all(&self.stage)
            && e.kind() != std::io::ErrorKind::NotFound
        {
            eprintln!("removing {}: {e}", self.stage.display());
        }
    }
}

/// The SHA-256 of a file, in hex (`sha256sum`).
fn sha256(path: &Path) -> String {
    let out = host::run_ok("sha256sum", &[path_str(path)], Duration::from_secs(60));
    let text = String::from_utf8_lossy(&out.stdout);
    let hex = text
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string();
    assert!(
        hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()),
        "sha256sum {} printed {text:?}",
        path.display()
    );
    hex
}
