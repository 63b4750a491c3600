//! A real, private containerd with its CRI plugin per test: the kubelet's image store and
//! runtime, driven through the CRI as the kubelet drives it, on a loop-mounted ext4 filesystem
//! of its own or on a [`SharedFs`] with other engines.
//!
//! Owns: one temp dir per containerd (`/tmp/dic-it-<pid>-<n>-<name>`) with its configuration,
//! state, sockets, runc root and log; containerd, its shims and the containers they run; the
//! cgroups of its pods (under a parent of its own, `/dic-it-<pid>-<n>` in every hierarchy); and
//! their teardown. Must not: touch the machine's containerd (`/run/containerd/containerd.sock`,
//! `/var/lib/containerd`), pull anything, or depend on the library under test.
//!
//! Which containerd (`DIC_TEST_CRI`): `host` (default: Debian 12's containerd 1.6.20, run from
//! `/usr/bin/containerd`; its CRI has no `GetContainerEvents` and does not report `pinned`) or
//! `bed` (containerd 2.1.9 from the engines test bed's root, chrooted in a mount namespace of
//! this dir's, see [`super::bed`]).
//!
//! Layout of a containerd's dir; with [`PrivateCri::start`] it also holds the filesystem and
//! containerd's root is `fs/containerd`; with [`PrivateCri::start_on`] it is `<shared mount>/<name>`:
//! ```text
//! containerd.toml  containerd.sock(.ttrpc)  containerd.log
//! state/           containerd's state (the CRI's sandboxes, the shims' bundles, rootfs mounts)
//! runc/            runc's root (not the machine's /run/containerd/runc)
//! logs/            the pods' log directories
//! ```
//! What its CRI configuration needs on these machines: `restrict_oom_score_adj = true` (no
//! `CAP_SYS_RESOURCE`), a runc root of its own, and a sandbox image that keeps running: the
//! images are `FROM scratch` with a static busybox ([`super::rootfs::ImageArchive`], a `docker
//! save` archive, imported with `ctr -n k8s.io images import`), and the pause image's command
//! is `busybox sleep`. Pods use the host's network (no CNI here), so their hostname is empty.
//! Containers made with `ctr run` are not the CRI's: everything here goes through the CRI.
//!
//! Skipping: both constructors go through [`require`]`(Service::Cri)`. Teardown runs in `Drop`,
//! also when the test panicked: SIGTERM to containerd (bounded, then SIGKILL), SIGKILL to
//! every process naming this dir (the shims name its socket) and their descendants (the
//! containers), the pods' cgroups removed, what is left mounted under the dir and the root
//! unmounted, the dir removed; the filesystem goes with its last engine ([`SharedFs`]).

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use containerd_client::tonic;
use k8s_cri::v1 as cri;
use k8s_cri::v1::image_service_client::ImageServiceClient;
use k8s_cri::v1::runtime_service_client::RuntimeServiceClient;

use super::api;
use super::bed;
use super::dockerd;
use super::host;
use super::ledger::{Entry, Ledger, Outcome};
use super::loopfs::{SharedFs, next_id, scratch_dir};
use super::require::{Service, require};
use super::rootfs::ImageArchive;
use super::wait_until;

/// The host's containerd (Debian 12: 1.6.20) and its CLI.
pub const HOST_CONTAINERD: &str = "/usr/bin/containerd";
/// The host's `ctr`.
pub const HOST_CTR: &str = "/usr/bin/ctr";
/// The bed's containerd and `ctr`, as paths inside its root.
const BED_CONTAINERD: &str = "/usr/bin/containerd";
const BED_CTR: &str = "/usr/bin/ctr";
/// The sandbox image every private containerd is configured with.
pub const SANDBOX_IMAGE: &str = "dic.test/pause:1";
/// containerd's label for a pinned image (read by the CRI of containerd 1.7 and later).
pub const PINNED_LABEL: &str = "io.cri-containerd.pinned=pinned";
/// How long containerd may take to answer the CRI after being started.
const READY_BOUND: Duration = Duration::from_secs(60);
/// How long containerd may take to stop after SIGTERM.
const STOP_BOUND: Duration = Duration::from_secs(20);
/// Any `ctr` invocation, and any CRI call.
const COMMAND_BOUND: Duration = Duration::from_secs(180);

/// Which containerd the CRI tests of this process run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CriKind {
    /// Debian 12's containerd 1.6.20.
    Host,
    /// containerd 2.1.9 from the engines test bed's root.
    Bed,
}

impl CriKind {
    /// The flavour named by `DIC_TEST_CRI`; panics on a value it does not know.
    pub fn current() -> CriKind {
        static KIND: OnceLock<CriKind> = OnceLock::new();
        *KIND.get_or_init(|| match std::env::var("DIC_TEST_CRI").ok().as_deref() {
            None | Some("") | Some("host") => CriKind::Host,
            Some("bed") => CriKind::Bed,
            Some(other) => panic!("DIC_TEST_CRI={other:?}: expected host or bed"),
        })
    }

    /// The flavour's name in the ledger.
    pub fn label(self) -> &'static str {
        match self {
            CriKind::Host => "cri-host",
            CriKind::Bed => "cri-bed",
        }
    }
}

/// A private containerd with its CRI; dropped, it leaves nothing behind (its filesystem goes
/// with the last engine on it).
pub struct PrivateCri {
    kind: CriKind,
    dir: PathBuf,
    root: PathBuf,
    /// The pods' cgroup parent, `/dic-it-<pid>-<n>`.
    cgroup_parent: String,
    /// Declared after the paths and dropped after `Drop::drop` has stopped containerd.
    fs: SharedFs,
    child: Option<Child>,
    tokio: tokio::runtime::Runtime,
}

impl PrivateCri {
    /// Starts a containerd whose root is on a fresh loop-mounted ext4 filesystem of `fs_mib`
    /// MiB, with the sandbox image imported, and waits until its CRI answers. `None` when this
    /// machine cannot run it (recorded as a skip); panics instead under CI.
    pub fn start(name: &str, fs_mib: u64) -> Option<PrivateCri> {
        if !require(Service::Cri) {
            return None;
        }
        let dir = scratch_dir(name);
        let fs = SharedFs::make_in(dir.clone(), fs_mib, None);
        let root = fs.engine_root("containerd");
        Some(PrivateCri::launch(dir, root, fs))
    }

    /// Starts a containerd whose root is `<fs mount>/<name>` on a filesystem shared with other
    /// engines; its state, sockets and log are in a temp dir of its own. Skips like `start`.
    pub fn start_on(fs: &SharedFs, name: &str) -> Option<PrivateCri> {
        if !require(Service::Cri) {
            return None;
        }
        let root = fs.engine_root(name);
        Some(PrivateCri::launch(scratch_dir(name), root, fs.clone()))
    }

    fn launch(dir: PathBuf, root: PathBuf, fs: SharedFs) -> PrivateCri {
        let tokio = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("a tokio runtime for the CRI calls: {e}"));
        // From here on, a panic drops `c` and tears down whatever was set up so far.
        let mut c = PrivateCri {
            kind: CriKind::current(),
            cgroup_parent: format!("/dic-it-{}-{}", std::process::id(), next_id()),
            dir,
            root,
            fs,
            child: None,
            tokio,
        };
        for sub in ["state", "runc", "logs", "cni-conf", "cni-bin"] {
            fs::create_dir_all(c.dir.join(sub))
                .unwrap_or_else(|e| panic!("creating {sub} in {}: {e}", c.dir.display()));
        }
        fs::write(c.dir.join("containerd.toml"), c.config())
            .unwrap_or_else(|e| panic!("writing containerd.toml: {e}"));
        c.spawn();
        let pause = ImageArchive::build_with(
            &c.dir,
            SANDBOX_IMAGE,
            0,
            1_600_000_000,
            &["/busybox", "sleep", "100000"],
            &[],
        );
        c.import(pause.path());
        let version = c.block_on(async |rt, _| {
            rt.version(cri::VersionRequest {
                version: "v1".into(),
            })
            .await
        });
        Ledger::current().record(&Entry {
            outcome: Outcome::Engine,
            service: Service::Cri.name().to_string(),
            engine: c.kind.label().to_string(),
            test: "-".to_string(),
            reason: format!(
                "{} {}, CRI {}",
                version.runtime_name, version.runtime_version, version.runtime_api_version
            ),
        });
        c
    }

    /// containerd's configuration: version 2 for 1.6, version 3 for 2.1.
    fn config(&self) -> String {
        let d = self.dir.display();
        let root = self.root.display();
        let common = format!(
            "root = \"{root}\"\nstate = \"{d}/state\"\n\
             [grpc]\n  address = \"{d}/containerd.sock\"\n\
             [ttrpc]\n  address = \"{d}/containerd.sock.ttrpc\"\n\
             [debug]\n  address = \"\"\n[metrics]\n  address = \"\"\n\
             [plugins.\"io.containerd.internal.v1.opt\"]\n  path = \"{d}/opt\"\n"
        );
        match self.kind {
            CriKind::Host => format!(
                "version = 2\n{common}\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n\
                 \x20 sandbox_image = \"{SANDBOX_IMAGE}\"\n\
                 \x20 restrict_oom_score_adj = true\n\
                 \x20 stream_server_address = \"127.0.0.1\"\n\
                 \x20 stream_server_port = \"0\"\n\
                 \x20 [plugins.\"io.containerd.grpc.v1.cri\".containerd]\n\
                 \x20   snapshotter = \"overlayfs\"\n\
                 \x20   default_runtime_name = \"runc\"\n\
                 \x20   [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc]\n\
                 \x20     runtime_type = \"io.containerd.runc.v2\"\n\
                 \x20     [plugins.\"io.containerd.grpc.v1.cri\".containerd.runtimes.runc.options]\n\
                 \x20       Root = \"{d}/runc\"\n\
                 \x20 [plugins.\"io.containerd.grpc.v1.cri\".cni]\n\
                 \x20   bin_dir = \"{d}/cni-bin\"\n\
                 \x20   conf_dir = \"{d}/cni-conf\"\n"
            ),
            CriKind::Bed => format!(
                "version = 3\n{common}\
                 [plugins.\"io.containerd.cri.v1.images\"]\n\
                 \x20 snapshotter = \"overlayfs\"\n\
                 \x20 [plugins.\"io.containerd.cri.v1.images\".pinned_images]\n\
                 \x20   sandbox = \"{SANDBOX_IMAGE}\"\n\
                 [plugins.\"io.containerd.cri.v1.runtime\"]\n\
                 \x20 restrict_oom_score_adj = true\n\
                 \x20 [plugins.\"io.containerd.cri.v1.runtime\".containerd]\n\
                 \x20   default_runtime_name = \"runc\"\n\
                 \x20   [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc]\n\
                 \x20     runtime_type = \"io.containerd.runc.v2\"\n\
                 \x20     [plugins.\"io.containerd.cri.v1.runtime\".containerd.runtimes.runc.options]\n\
                 \x20       Root = \"{d}/runc\"\n\
                 \x20 [plugins.\"io.containerd.cri.v1.runtime\".cni]\n\
                 \x20   bin_dirs = [\"{d}/cni-bin\"]\n\
                 \x20   conf_dir = \"{d}/cni-conf\"\n\
                 [plugins.\"io.containerd.grpc.v1.cri\"]\n\
                 \x20 stream_server_address = \"127.0.0.1\"\n\
                 \x20 stream_server_port = \"0\"\n"
            ),
        }
    }

    fn spawn(&mut self) {
        if self.kind == CriKind::Bed && !bed::namespace_alive(&self.dir) {
            let mount = self.fs.mount_point().to_path_buf();
            let more: Vec<&Path> = if mount.starts_with(&self.dir) {
                Vec::new()
            } else {
                vec![mount.as_path()]
            };
            bed::namespace(&self.dir, &more);
        }
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("opening containerd.log: {e}"));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup of containerd.log: {e}"));
        let _ = fs::remove_file(self.socket());
        let mut cmd = match self.kind {
            CriKind::Host => Command::new(HOST_CONTAINERD),
            CriKind::Bed => bed::command_in(&self.dir, BED_CONTAINERD),
        };
        cmd.arg("--config")
            .arg(self.dir.join("containerd.toml"))
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawning containerd ({:?}): {e}", self.kind)),
        );
        let socket = self.socket();
        let mut exited = false;
        let up = wait_until(READY_BOUND, || {
            if let Some(Ok(Some(_))) = self.child.as_mut().map(Child::try_wait) {
                exited = true;
                return true;
            }
            api::socket_answers(&socket) && self.try_version()
        });
        if exited || !up {
            panic!("containerd did not answer the CRI\n{}", self.log_tail(30));
        }
    }

    /// `unix://<dir>/containerd.sock`: the CRI endpoint (and containerd's own API).
    pub fn endpoint(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// The socket.
    pub fn socket(&self) -> PathBuf {
        self.dir.join("containerd.sock")
    }

    /// containerd's root: what the cleaner's `paths` name for this engine.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The filesystem containerd's root is on.
    pub fn fs(&self) -> &SharedFs {
        &self.fs
    }

    /// Which flavour this is.
    pub fn kind(&self) -> CriKind {
        self.kind
    }

    fn log_path(&self) -> PathBuf {
        self.dir.join("containerd.log")
    }

    fn log_tail(&self, n: usize) -> String {
        let text = fs::read_to_string(self.log_path()).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = lines[lines.len().saturating_sub(n)..].join("\n");
        format!("last lines of {}:\n{tail}", self.log_path().display())
    }

    /// `ctr --address <socket> -n k8s.io ARGS`, the flavour's own; panics unless it succeeds.
    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in("k8s.io", args)
    }

    /// `ctr` in containerd namespace `namespace`.
    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        let mut cmd = match self.kind {
            CriKind::Host => Command::new(HOST_CTR),
            CriKind::Bed => bed::command_in(&self.dir, BED_CTR),
        };
        cmd.arg("--address")
            .arg(self.socket())
            .args(["--namespace", namespace])
            .args(args);
        let out = host::run(cmd, COMMAND_BOUND);
        if !out.status.success() {
            panic!(
                "ctr {} failed ({}): {}\n{}",
                args.join(" "),
                out.status,
                String::from_utf8_lossy(&out.stderr).trim(),
                self.log_tail(10)
            );
        }
        out
    }

    fn import(&self, archive: &str) {
        self.ctr(&["images", "import", archive]);
    }

    /// Imports an image tagged `tag` holding `payload_mib` MiB of random bytes (command
    /// `busybox sleep`), created long ago; returns its id as the CRI names it.
    pub fn image(&self, tag: &str, payload_mib: u64) -> String {
        self.image_with_labels(tag, payload_mib, &[])
    }

    /// [`PrivateCri::image`] with image labels.
    pub fn image_with_labels(
        &self,
        tag: &str,
        payload_mib: u64,
        labels: &[(&str, &str)],
    ) -> String {
        self.image_at(tag, payload_mib, 1_600_000_000, labels)
    }

    /// [`PrivateCri::image_with_labels`], created (built) at `created_secs`: a cleaner that
    /// never saw it used takes that for its last use on its first start.
    pub fn image_at(
        &self,
        tag: &str,
        payload_mib: u64,
        created_secs: i64,
        labels: &[(&str, &str)],
    ) -> String {
        let archive = ImageArchive::build_with(
            &self.dir,
            tag,
            payload_mib,
            created_secs,
            &["/busybox", "sleep", "100000"],
            labels,
        );
        self.import(archive.path());
        // containerd 2.x's CRI learns of an image from containerd's events, a moment later.
        let mut id = None;
        wait_until(COMMAND_BOUND, || {
            id = self.image_id(tag);
            id.is_some()
        });
        id.unwrap_or_else(|| panic!("{tag} imported but not listed by the CRI"))
    }

    /// Imports an image tagged `tag` of `payload_mib` MiB into containerd namespace
    /// `namespace` (`moby`: where Docker's containerd image store keeps its images).
    pub fn import_into(&self, namespace: &str, tag: &str, payload_mib: u64) {
        let archive = ImageArchive::build(&self.dir, tag, payload_mib, 1_600_000_000);
        self.ctr_in(namespace, &["images", "import", archive.path()]);
    }

    /// The image names in containerd namespace `namespace` (its `sha256:` names left out),
    /// sorted.
    pub fn names_in(&self, namespace: &str) -> Vec<String> {
        let out = self.ctr_in(namespace, &["images", "list", "--quiet"]);
        let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|n| !n.is_empty() && !n.starts_with("sha256:"))
            .map(str::to_string)
            .collect();
        names.sort();
        names
    }

    /// Pins `tag` with containerd's label (containerd 1.7+ report it as CRI `pinned`).
    pub fn pin(&self, tag: &str) {
        self.ctr(&["images", "label", tag, PINNED_LABEL]);
    }

    /// The id of the image `reference` names, through the CRI.
    pub fn image_id(&self, reference: &str) -> Option<String> {
        let reference = reference.to_string();
        self.block_on(async move |_, im| {
            im.image_status(cri::ImageStatusRequest {
                image: Some(cri::ImageSpec {
                    image: reference.clone(),
                    ..Default::default()
                }),
                verbose: false,
            })
            .await
        })
        .image
        .map(|i| i.id)
    }

    /// Every image's id, through the CRI.
    pub fn image_ids(&self) -> Vec<String> {
        self.images().into_iter().map(|i| i.id).collect()
    }

    /// Every image's tags, sorted (the sandbox image's included).
    pub fn tags(&self) -> Vec<String> {
        let mut tags: Vec<String> = self
            .images()
            .into_iter()
            .flat_map(|i| i.repo_tags)
            .collect();
        tags.sort();
        tags
    }

    fn images(&self) -> Vec<cri::Image> {
        self.block_on(async |_, im| {
            im.list_images(cri::ListImagesRequest { filter: None })
                .await
        })
        .images
    }

    /// A pod sandbox on the host's network, as the kubelet makes one; returns its id.
    pub fn pod(&self, name: &str) -> String {
        let config = self.sandbox_config(name);
        self.block_on(async move |rt, _| {
            rt.run_pod_sandbox(cri::RunPodSandboxRequest {
                config: Some(config.clone()),
                runtime_handler: String::new(),
            })
            .await
        })
        .pod_sandbox_id
    }

    fn sandbox_config(&self, name: &str) -> cri::PodSandboxConfig {
        cri::PodSandboxConfig {
            metadata: Some(cri::PodSandboxMetadata {
                name: name.to_string(),
                uid: format!("uid-{name}"),
                namespace: "dic-it".into(),
                attempt: 0,
            }),
            // The host's network: no hostname of its own.
            hostname: String::new(),
            log_directory: self.dir.join("logs").join(name).display().to_string(),
            linux: Some(cri::LinuxPodSandboxConfig {
                cgroup_parent: self.cgroup_parent.clone(),
                security_context: Some(cri::LinuxSandboxSecurityContext {
                    namespace_options: Some(host_network()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates and starts a container of `image` running `cmd` in pod `pod` (named `pod_name`
    /// when it was made); returns its id.
    pub fn run(&self, pod: &str, pod_name: &str, image: &str, cmd: &[&str]) -> String {
        let sandbox_config = self.sandbox_config(pod_name);
        let config = cri::ContainerConfig {
            metadata: Some(cri::ContainerMetadata {
                name: format!("c{}", next_id()),
                attempt: 0,
            }),
            image: Some(cri::ImageSpec {
                image: image.to_string(),
                ..Default::default()
            }),
            command: cmd.iter().map(|s| s.to_string()).collect(),
            log_path: "c.log".into(),
            linux: Some(cri::LinuxContainerConfig {
                security_context: Some(cri::LinuxContainerSecurityContext {
                    namespace_options: Some(host_network()),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        };
        let pod = pod.to_string();
        let id = self
            .block_on(async move |rt, _| {
                rt.create_container(cri::CreateContainerRequest {
                    pod_sandbox_id: pod.clone(),
                    config: Some(config.clone()),
                    sandbox_config: Some(sandbox_config.clone()),
                })
                .await
            })
            .container_id;
        let start = id.clone();
        self.block_on(async move |rt, _| {
            rt.start_container(cri::StartContainerRequest {
                container_id: start.clone(),
            })
            .await
        });
        id
    }

    /// The state of container `id` (`None` once it is removed).
    pub fn container_state(&self, id: &str) -> Option<cri::ContainerState> {
        let id = id.to_string();
        self.block_on(async move |rt, _| {
            rt.list_containers(cri::ListContainersRequest { filter: None })
                .await
        })
        .containers
        .into_iter()
        .find(|c| c.id == id)
        .map(|c| c.state())
    }

    /// Waits (bounded) until container `id` has exited.
    pub fn wait_exited(&self, id: &str) {
        let exited = wait_until(COMMAND_BOUND, || {
            self.container_state(id) == Some(cri::ContainerState::ContainerExited)
        });
        assert!(exited, "container {id} did not exit\n{}", self.log_tail(10));
    }

    /// Stops (if running) and removes container `id`, as the kubelet's GC does.
    pub fn remove_container(&self, id: &str) {
        let id = id.to_string();
        self.block_on(async move |rt, _| {
            rt.stop_container(cri::StopContainerRequest {
                container_id: id.clone(),
                timeout: 0,
            })
            .await?;
            rt.remove_container(cri::RemoveContainerRequest {
                container_id: id.clone(),
            })
            .await
        });
    }

    /// Stops and removes pod sandbox `id` with its containers.
    pub fn remove_pod(&self, id: &str) {
        let id = id.to_string();
        self.block_on(async move |rt, _| {
            rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await?;
            rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                pod_sandbox_id: id.clone(),
            })
            .await
        });
    }

    /// One use of `image` that only the runtime's events tell of: a pod with one container
    /// that runs `busybox true` and exits, then both removed (as after a finished Job).
    pub fn use_image(&self, image: &str) {
        let name = format!("use{}", next_id());
        let pod = self.pod(&name);
        let c = self.run(&pod, &name, image, &["/busybox", "true"]);
        self.wait_exited(&c);
        self.remove_container(&c);
        self.remove_pod(&pod);
    }

    /// Starts a dockerd from the bed (Docker 28) with the containerd image store on this
    /// containerd (`--containerd`), as on a node where Docker 29 and the kubelet share one
    /// containerd: its images go to namespace `moby`, the kubelet's are in `k8s.io`. Its data
    /// root is `<fs mount>/<name>`; it runs in this containerd's namespace (containerd must see
    /// its mounts) and goes with it. Only the bed's containerd (2.1) can serve it.
    pub fn dockerd(&self, name: &str) -> DockerOnCri {
        assert_eq!(
            self.kind,
            CriKind::Bed,
            "Docker 28's containerd store needs containerd 2.x"
        );
        let data_root = self.fs.engine_root(name);
        let d = DockerOnCri {
            dir: self.dir.clone(),
            data_root,
            child: None,
        };
        d.spawn(self)
    }

    /// Stops containerd (SIGTERM, SIGKILL after a bound) and starts it again on the same root
    /// and socket; its shims and their containers keep running meanwhile, as on a node.
    pub fn restart(&mut self) {
        self.stop_containerd();
        self.spawn();
    }

    fn stop_containerd(&mut self) {
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                host::signal("TERM", &[child.id()]);
                if !wait_until(STOP_BOUND, || !matches!(child.try_wait(), Ok(None))) {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
    }

    /// The CRI answers `Version`.
    fn try_version(&self) -> bool {
        let socket = self.socket();
        self.tokio.block_on(async move {
            let Ok(Ok(channel)) =
                tokio::time::timeout(Duration::from_secs(2), containerd_client::connect(&socket))
                    .await
            else {
                return false;
            };
            let mut rt = RuntimeServiceClient::new(channel);
            let call = rt.version(cri::VersionRequest {
                version: "v1".into(),
            });
            matches!(
                tokio::time::timeout(Duration::from_secs(2), call).await,
                Ok(Ok(_))
            )
        })
    }

    /// Runs one CRI exchange (`f` gets the runtime and image clients) under a bound; panics
    /// with containerd's log when it fails.
    fn block_on<T, F>(&self, f: F) -> T
    where
        F: AsyncFnOnce(
            &mut RuntimeServiceClient<tonic::transport::Channel>,
            &mut ImageServiceClient<tonic::transport::Channel>,
        ) -> Result<tonic::Response<T>, tonic::Status>,
    {
        let socket = self.socket();
        let result = self.tokio.block_on(async move {
            let channel = containerd_client::connect(&socket)
                .await
                .map_err(|e| format!("connecting to {}: {e}", socket.display()))?;
            let mut rt = RuntimeServiceClient::new(channel.clone());
            let mut im = ImageServiceClient::new(channel);
            match tokio::time::timeout(COMMAND_BOUND, f(&mut rt, &mut im)).await {
                Ok(Ok(r)) => Ok(r.into_inner()),
                Ok(Err(s)) => Err(format!("{:?}: {}", s.code(), s.message())),
                Err(_) => Err(format!("no answer within {COMMAND_BOUND:?}")),
            }
        });
        result.unwrap_or_else(|e| panic!("CRI call failed: {e}\n{}", self.log_tail(15)))
    }

    /// The pods' cgroups, innermost first, in every hierarchy.
    fn cgroups(&self) -> Vec<PathBuf> {
        let parent = self.cgroup_parent.trim_start_matches('/');
        let mut out = Vec::new();
        let hierarchies = fs::read_dir("/sys/fs/cgroup")
            .map(|d| d.flatten().map(|e| e.path()).collect::<Vec<_>>())
            .unwrap_or_default();
        for h in hierarchies.iter().chain([&PathBuf::from("/sys/fs/cgroup")]) {
            let dir = h.join(parent);
            if !dir.is_dir() || out.contains(&dir) {
                continue;
            }
            if let Ok(children) = fs::read_dir(&dir) {
                out.extend(
                    children
                        .flatten()
                        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
                        .map(|e| e.path()),
                );
            }
            out.push(dir);
        }
        out
    }
}

/// A dockerd 28 whose images are in a [`PrivateCri`]'s containerd (see [`PrivateCri::dockerd`]).
pub struct DockerOnCri {
    dir: PathBuf,
    data_root: PathBuf,
    child: Option<Child>,
}

impl DockerOnCri {
    fn spawn(mut self, c: &PrivateCri) -> DockerOnCri {
        fs::write(
            self.dir.join("daemon.json"),
            "{\"features\": {\"containerd-snapshotter\": true}}\n",
        )
        .unwrap_or_else(|e| panic!("writing daemon.json: {e}"));
        let log = fs::File::create(self.dir.join("dockerd.log"))
            .unwrap_or_else(|e| panic!("creating dockerd.log: {e}"));
        let err = log
            .try_clone()
            .unwrap_or_else(|e| panic!("dup of dockerd.log: {e}"));
        let mut cmd = bed::command_in(&self.dir, "/usr/sbin/dockerd");
        cmd.arg(format!("--containerd={}", c.socket().display()));
        dockerd::private_daemon_args(
            &mut cmd,
            &self.data_root,
            &self.dir.join("docker-exec"),
            &self.dir,
            &self.host(),
        );
        cmd.stdin(Stdio::null()).stdout(log).stderr(err);
        self.child = Some(
            cmd.spawn()
                .unwrap_or_else(|e| panic!("spawning dockerd: {e}")),
        );
        let socket = self.socket();
        if let Err(why) = api::wait_for_ping(&mut self.child, &socket, READY_BOUND) {
            let text = fs::read_to_string(self.dir.join("dockerd.log")).unwrap_or_default();
            panic!("dockerd {why}\n{text}");
        }
        self
    }

    fn socket(&self) -> PathBuf {
        self.dir.join("docker.sock")
    }

    /// `unix://…/docker.sock`, for `docker_host`.
    pub fn host(&self) -> String {
        format!("unix://{}", self.socket().display())
    }

    /// Its `--data-root`: what the cleaner's `paths` name for it.
    pub fn data_root(&self) -> &Path {
        &self.data_root
    }

    /// The bed's Docker CLI against this daemon; panics unless it succeeds.
    pub fn docker(&self, args: &[&str]) -> Output {
        let mut cmd = Command::new(bed::in_root("/usr/bin/docker"));
        cmd.arg("--host").arg(self.host()).args(args);
        for var in ["DOCKER_HOST", "DOCKER_CONTEXT", "DOCKER_CONFIG"] {
            cmd.env_remove(var);
        }
        cmd.env("DOCKER_CONFIG", self.dir.join("docker-cli"));
        let out = host::run(cmd, COMMAND_BOUND);
        assert!(
            out.status.success(),
            "docker {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        );
        out
    }

    /// Loads an image tagged `tag` of `payload_mib` MiB, created at `created_secs`; returns
    /// its id.
    pub fn image_at(&self, tag: &str, payload_mib: u64, created_secs: i64) -> String {
        let archive = ImageArchive::build(&self.dir, tag, payload_mib, created_secs);
        self.docker(&["load", "--input", archive.path()]);
        let out = self.docker(&["image", "inspect", "--format", "{{.Id}}", tag]);
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }

    /// Its images' tags, sorted.
    pub fn tags(&self) -> Vec<String> {
        let out = self.docker(&["image", "ls", "--format", "{{.Repository}}:{{.Tag}}"]);
        let mut tags: Vec<String> = String::from_utf8_lossy(&out.stdout)
            .lines()
            .map(str::trim)
            .filter(|t| !t.is_empty() && !t.contains("<none>"))
            .map(str::to_string)
            .collect();
        tags.sort();
        tags
    }
}

impl Drop for DockerOnCri {
    fn drop(&mut self) {
        // Nothing here may panic. Its containerd's teardown sweeps what is left of it.
        if let Some(mut child) = self.child.take() {
            if let Ok(None) = child.try_wait() {
                host::signal("TERM", &[child.id()]);
                if !wait_until(STOP_BOUND, || !matches!(child.try_wait(), Ok(None))) {
                    let _ = child.kill();
                }
            }
            let _ = child.wait();
        }
        host::unmount_under(&self.data_root);
    }
}

/// The host's network and the pod's IPC, with a PID namespace per container (as a hostNetwork
/// pod of the kubelet's).
fn host_network() -> cri::NamespaceOption {
    cri::NamespaceOption {
        network: cri::NamespaceMode::Node as i32,
        pid: cri::NamespaceMode::Container as i32,
        ipc: cri::NamespaceMode::Pod as i32,
        ..Default::default()
    }
}

impl PrivateCri {
    /// Stops and removes every pod, best effort and bounded: a shim that exits by itself
    /// removes its socket (containerd 1.6 keeps them in the host's `/run/containerd/s`,
    /// whatever its state dir), a SIGKILLed one leaves it behind. Never panics.
    fn remove_pods_quietly(&self) {
        let socket = self.socket();
        if self.child.is_none() || !api::socket_answers(&socket) {
            return;
        }
        self.tokio.block_on(async move {
            let bound = Duration::from_secs(20);
            let Ok(Ok(channel)) =
                tokio::time::timeout(bound, containerd_client::connect(&socket)).await
            else {
                return;
            };
            let mut rt = RuntimeServiceClient::new(channel);
            let Ok(Ok(pods)) = tokio::time::timeout(
                bound,
                rt.list_pod_sandbox(cri::ListPodSandboxRequest { filter: None }),
            )
            .await
            else {
                return;
            };
            for pod in pods.into_inner().items {
                let _ = tokio::time::timeout(
                    bound,
                    rt.stop_pod_sandbox(cri::StopPodSandboxRequest {
                        pod_sandbox_id: pod.id.clone(),
                    }),
                )
                .await;
                let _ = tokio::time::timeout(
                    bound,
                    rt.remove_pod_sandbox(cri::RemovePodSandboxRequest {
                        pod_sandbox_id: pod.id,
                    }),
                )
                .await;
            }
        });
    }
}

impl Drop for PrivateCri {
    fn drop(&mut self) {
        // Nothing here may panic: this runs while a failed test unwinds.
        self.remove_pods_quietly();
        self.stop_containerd();
        host::kill_processes_under(&self.dir);
        host::remove_cgroups(&self.cgroups());
        host::unmount_under(&self.root);
        if self.dir != self.fs.dir() {
            host::teardown_dir(&self.dir);
        }
    }
}
