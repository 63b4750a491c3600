//! A fake Kubernetes API server for the cordon tests: HTTPS with a CA made per server, bearer-token
//! auth, Nodes, Events and Leases in memory, every request recorded, every change to a Node or a
//! Lease logged in order ([`FakeKube::changes`]), and faults on demand.
//!
//! It answers the way the real API server does for what we and `kubectl cordon/uncordon/get`
//! use: `Status` bodies for 401/404/409/415/422, `resourceVersion` bumped on every change and
//! checked when a patch carries one, strategic-merge and JSON merge patches (identical for the
//! Node fields in play: maps merge, `null` deletes, lists such as `spec.taints` are replaced whole
//! because the Node schema marks them atomic), and minimal legacy discovery (`/api`, `/apis`,
//! `/api/v1`, `/version`). For `packaging/kubernetes/make-kubeconfig.sh` it also issues tokens of
//! ServiceAccounts, through a TokenRequest (`kubectl create token`) or a Secret of type
//! `kubernetes.io/service-account-token` filled in as the token controller does. Unlike a real cluster no node controller runs, so cordoning adds no
//! `node.kubernetes.io/unschedulable` taint.
//!
//! The server runs on its own thread and runtime, so it serves while a test blocks on `kubectl`,
//! and stops (dropping requests left hanging) when the `FakeKube` is dropped.
//!
//! - `server`: TLS, the accept loop, the handler (records, faults, routes);
//! - `answers`: what each route answers, `Status` bodies included;
//! - `leases`: `coordination.k8s.io/v1` Leases (the fleet's slots) with the real semantics;
//! - `kubeconfigs`: kubeconfig variants and exec credential plugins for it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use docker_image_cleaner::config::Config;
use serde_json::{Value, json};

mod answers;
mod kubeconfigs;
mod leases;
mod server;

pub use answers::merge;
pub use kubeconfigs::exec_user;
use server::{serve, tls};

/// One request as it reached the server.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    pub path: String,
    pub query: Option<String>,
    pub content_type: Option<String>,
    pub user_agent: Option<String>,
    pub body: Option<Value>,
}

impl Recorded {
    /// True for a request on the Node `name` itself (GET or PATCH), not discovery or events.
    pub fn is_node(&self, name: &str) -> bool {
        self.path == format!("/api/v1/nodes/{name}")
    }
}

/// One change the server made to a stored object, in the order the server made them.
#[derive(Debug, Clone)]
pub struct Change {
    /// When.
    pub at: std::time::Instant,
    /// `nodes` or `leases`.
    pub kind: &'static str,
    /// The Node's name, or the Lease's `namespace/name`.
    pub name: String,
    /// The object as stored after the change.
    pub object: Value,
}

/// What the next requests get instead of the normal answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The normal answer (to let a request through before a fault).
    Pass,
    /// Another client changes the node (JSON merge) just before this request is handled.
    Edit(&'static str, Value),
    /// Another client writes this Lease (into this namespace, a new version) just before this
    /// request is handled.
    Lease(&'static str, Value),
    /// An error Status with this code (500, 503 ...).
    Status(u16),
    /// 401 as for a bad token.
    Unauthorized,
    /// No answer at all: the client's timeout must fire.
    Hang,
}

#[derive(Default)]
struct State {
    token: String,
    /// Tokens issued to ServiceAccounts, accepted as well: (namespace/name, token).
    issued: Vec<(String, String)>,
    /// `namespace/name` of the ServiceAccounts that exist.
    accounts: Vec<String>,
    /// Secrets by `namespace/name`.
    secrets: BTreeMap<String, Value>,
    nodes: BTreeMap<String, Value>,
    /// Leases by `namespace/name`.
    leases: BTreeMap<String, Value>,
    /// Every request on a Lease answers 403.
    forbid_leases: bool,
    changes: Vec<Change>,
    events: Vec<Value>,
    requests: Vec<Recorded>,
    faults: VecDeque<Fault>,
    version: u64,
}

impl State {
    fn next_version(&mut self) -> String {
        self.version += 1;
        self.version.to_string()
    }

    /// Logs a change to a stored object.
    fn changed(&mut self, kind: &'static str, name: &str, object: &Value) {
        self.changes.push(Change {
            at: std::time::Instant::now(),
            kind,
            name: name.to_string(),
            object: object.clone(),
        });
    }

    fn issue(&mut self, account: &str) -> String {
        let token = format!("sa-token-{}-{:x}", self.issued.len(), nanos());
        self.issued.push((account.to_string(), token.clone()));
        token
    }
}

/// A running fake API server with a kubeconfig for it.
pub struct FakeKube {
    addr: SocketAddr,
    state: Arc<Mutex<State>>,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl FakeKube {
    /// Starts a server on 127.0.0.1 with a fresh CA, server certificate and token.
    pub fn start() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let (ca_pem, acceptor) = tls();
        let token = format!(
            "fake-token-{:x}",
            std::process::id() as u128 * 1_000_003 + nanos()
        );
        let state = Arc::new(Mutex::new(State {
            token,
            ..State::default()
        }));
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = Arc::clone(&state);
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("fake API server runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                    .await
                    .expect("bind");
                addr_tx
                    .send(listener.local_addr().expect("address"))
                    .expect("report address");
                tokio::select! {
                    () = serve(listener, acceptor, served) => {}
                    _ = stop_rx => {}
                }
            });
            // Dropping the runtime here cancels connections left hanging by Fault::Hang.
        });
        let addr = addr_rx.recv().expect("fake API server address");
        let ca = dir.path().join("ca.crt");
        std::fs::write(&ca, ca_pem).expect("write CA");
        let fake = Self {
            addr,
            state,
            kubeconfig: dir.path().join("kubeconfig"),
            dir,
            stop: Some(stop),
            thread: Some(thread),
        };
        let token = fake.token();
        fake.write_kubeconfig(&fake.kubeconfig, &token);
        fake
    }

    /// `https://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    /// The kubeconfig (CA file and the right token) for this server.
    pub fn kubeconfig(&self) -> &Path {
        &self.kubeconfig
    }

    /// The token the server accepts.
    pub fn token(&self) -> String {
        self.lock().token.clone()
    }

    /// A scratch directory that lives as long as the server.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Accepts only `token` from now on (a rotated credential).
    pub fn set_token(&self, token: &str) {
        self.lock().token = token.to_string();
    }

    /// A configuration with cordoning on for `node` through this server.
    pub fn config(&self, node: &str) -> Config {
        Config {
            node_name: Some(node.to_string()),
            kubeconfig: Some(self.kubeconfig.clone()),
            ..Config::default()
        }
    }

    /// Adds a schedulable Ready node, with `extra` merged into it (e.g. `{"spec":{...}}`).
    pub fn add_node(&self, name: &str, extra: Value) {
        let mut state = self.lock();
        let version = state.next_version();
        let mut node = json!({
            "kind": "Node",
            "apiVersion": "v1",
            "metadata": {
                "name": name,
                "uid": format!("0b7c6d2e-{:012x}", nanos() & 0xffff_ffff_ffff),
                "resourceVersion": version,
                "creationTimestamp": "2026-11-01T00:00:00Z",
                "labels": { "kubernetes.io/hostname": name, "kubernetes.io/os": "linux" },
                "annotations": { "node.alpha.kubernetes.io/ttl": "0" },
            },
            "spec": { "podCIDR": "10.244.1.0/24", "podCIDRs": ["10.244.1.0/24"] },
            "status": {
                "conditions": [{
                    "type": "Ready", "status": "True", "reason": "KubeletReady",
                    "message": "kubelet is posting ready status",
                    "lastHeartbeatTime": "2026-11-28T00:00:00Z",
                    "lastTransitionTime": "2026-11-01T00:00:00Z",
                }],
                "nodeInfo": { "kubeletVersion": "v1.33.0", "osImage": "Debian GNU/Linux 12 (bookworm)" },
            },
        });
        merge(&mut node, extra);
        state.changed("nodes", name, &node);
        state.nodes.insert(name.to_string(), node);
    }

    /// The node as stored now.
    pub fn node(&self, name: &str) -> Value {
        self.lock().nodes.get(name).cloned().expect("node exists")
    }

    /// Changes the stored node as another client would (bumps resourceVersion).
    pub fn edit_node(&self, name: &str, patch: Value) {
        let mut state = self.lock();
        let version = state.next_version();
        let node = state.nodes.get_mut(name).expect("node exists");
        merge(node, patch);
        node["metadata"]["resourceVersion"] = json!(version);
        let node = node.clone();
        state.changed("nodes", name, &node);
    }

    /// Creates the ServiceAccount `namespace/name` (as `kubectl apply -f rbac.yaml` would).
    pub fn add_service_account(&self, namespace: &str, name: &str) {
        self.lock().accounts.push(format!("{namespace}/{name}"));
    }

    /// The tokens issued so far to ServiceAccounts, as `(namespace/name, token)`.
    pub fn issued_tokens(&self) -> Vec<(String, String)> {
        self.lock().issued.clone()
    }

    /// Events posted so far.
    pub fn events(&self) -> Vec<Value> {
        self.lock().events.clone()
    }

    /// Every request so far, in order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.lock().requests.clone()
    }

    /// The requests on the Node `name` itself, as `(method, content type)`.
    pub fn node_calls(&self, name: &str) -> Vec<(String, Option<String>)> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_node(name))
            .map(|r| (r.method, r.content_type))
            .collect()
    }

    /// The JSON bodies of the PATCHes on the Node `name`.
    pub fn patches(&self, name: &str) -> Vec<Value> {
        self.requests()
            .into_iter()
            .filter(|r| r.is_node(name) && r.method == "PATCH")
            .filter_map(|r| r.body)
            .collect()
    }

    /// Every change to a Node or a Lease so far, in the order the server made them.
    pub fn changes(&self) -> Vec<Change> {
        self.lock().changes.clone()
    }

    /// Forgets the requests recorded so far.
    pub fn clear_requests(&self) {
        self.lock().requests.clear();
    }

    /// The next `count` requests get `fault` instead of an answer.
    pub fn fail_next(&self, count: usize, fault: Fault) {
        self.lock().faults.extend(std::iter::repeat_n(fault, count));
    }

    /// Faults not used up yet.
    pub fn faults_left(&self) -> usize {
        self.lock().faults.len()
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock already fails the test; the data is still usable.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for FakeKube {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Short timeouts for tests that make the server fail or hang.
pub fn quick_timing() -> docker_image_cleaner::node::Timing {
    docker_image_cleaner::node::Timing {
        connect_timeout: Duration::from_secs(2),
        request_timeout: Duration::from_millis(700),
        release_tries: 3,
        release_backoff: Duration::from_millis(50),
        release_budget: Duration::from_secs(5),
        exec_timeout: Duration::from_secs(2),
        call_budget: Duration::from_secs(5),
    }
}

/// Now as the API server writes it: RFC 3339, whole seconds, UTC.
fn now() -> String {
    let now = k8s_openapi::jiff::Timestamp::now();
    k8s_openapi::jiff::Timestamp::from_second(now.as_second())
        .unwrap_or(now)
        .to_string()
}

fn nanos() -> u128 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default()
}
