//! Helpers shared by the integration tests.
//!
//! - [`bed`]: which engine of the matrix a real-engine test runs on (`DIC_TEST_DOCKER`,
//!   `DIC_TEST_PODMAN`), and the engines test bed's root (Docker 28, containerd 2.1, Podman 5.8);
//! - [`require`]: whether a real service (a private dockerd, kubectl, root, …) can be used here,
//!   and the CI rule; [`ledger`]: the file that counts every real-service test as ran or skipped;
//! - [`dockerd`]: a private dockerd per test on a loop-mounted ext4 filesystem; [`podman`]: a
//!   private rootful `podman system service` (Docker-compatible API) likewise; [`loopfs`]: those
//!   filesystems, one per engine or one [`loopfs::SharedFs`] for several, and the temp dirs;
//!   [`rootfs`]: the `FROM scratch` tarball both import; [`api`]: raw HTTP over their sockets;
//! - [`cri`]: a private containerd with its CRI plugin (the kubelet's image store), driven
//!   through the CRI, on a loop-mounted ext4 filesystem (`DIC_TEST_CRI`: 1.6 or 2.1);
//! - [`cleaner`]: the built binary with its own configuration and state, and [`daemon`], the one
//!   process runner for it;
//! - [`notify`]: a fake systemd notification socket; [`interpose`]: a Docker API proxy that runs a
//!   test's hook just before it forwards a chosen request (races at an exact point of a pass);
//! - [`cli`]: containers and listings through an engine's own CLI, the same for both;
//! - [`host`]: bounded commands, `/proc`, mounts and loop devices.

use std::time::{Duration, Instant};

pub mod api;
pub mod bed;
pub mod cleaner;
pub mod cli;
pub mod cri;
pub mod daemon;
pub mod dockerd;
pub mod host;
pub mod interpose;
pub mod ledger;
pub mod loopfs;
pub mod notify;
pub mod podman;
pub mod require;
pub mod rootfs;

/// How often [`wait_until`] looks.
const POLL: Duration = Duration::from_millis(20);

/// Polls `condition` every 20 ms until it holds (true) or `timeout` has passed (false, after one
/// last look). For observable conditions with no event to wait on (a process gone, a file
/// written, a request recorded); never a fixed sleep.
pub fn wait_until(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        std::thread::sleep(POLL.min(left));
    }
}
