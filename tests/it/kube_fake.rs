//! A fake Kubernetes API server for the cordon tests: HTTPS with a CA made per server, bearer-token
//! auth, Nodes and Events in memory, every request recorded, and faults on demand.
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

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use docker_image_cleaner::config::Config;
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

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

/// What the next requests get instead of the normal answer.
#[derive(Debug, Clone)]
pub enum Fault {
    /// The normal answer (to let a request through before a fault).
    Pass,
    /// Another client changes the node (JSON merge) just before this request is handled.
    Edit(&'static str, Value),
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

    /// Writes a kubeconfig for this server at `path` presenting `token`.
    pub fn write_kubeconfig(&self, path: &Path, token: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: fake\n  user:\n    token: {token}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url(),
            self.dir.path().join("ca.crt").display(),
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// The CA file that signs this server's certificate.
    pub fn ca_path(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// Writes a kubeconfig for this server at `path` whose cluster entry has the `server` line
    /// plus `cluster` (YAML lines indented by 4, e.g. a CA or `insecure-skip-tls-verify`) and
    /// whose user entry `fake` is `user` (YAML lines indented by 4).
    pub fn write_kubeconfig_raw(&self, path: &Path, cluster: &str, user: &str) {
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: fake\n  cluster:\n    server: {}\n{cluster}users:\n- name: fake\n  user:\n{user}contexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\ncurrent-context: fake\n",
            self.url(),
        );
        std::fs::write(path, text).expect("write kubeconfig");
    }

    /// Writes a kubeconfig with this server's CA and the user entry `user` (YAML lines
    /// indented by 4).
    pub fn write_kubeconfig_user(&self, path: &Path, user: &str) {
        let ca = format!("    certificate-authority: {}\n", self.ca_path().display());
        self.write_kubeconfig_raw(path, &ca, user);
    }

    /// Writes an executable shell script `name` in the scratch directory with `body` after the
    /// `#!/bin/sh` line; returns its path.
    pub fn write_script(&self, name: &str, body: &str) -> PathBuf {
        use std::os::unix::fs::PermissionsExt;
        let path = self.dir.path().join(name);
        std::fs::write(&path, format!("#!/bin/sh\n{body}")).expect("write script");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755))
            .expect("chmod script");
        path
    }

    /// An exec credential plugin that appends a line to `runs` each time it runs and prints an
    /// ExecCredential (`client.authentication.k8s.io/v1`) with the accepted token, expiring at
    /// `expires` (RFC 3339) when given. Returns the user entry (YAML lines indented by 4).
    pub fn exec_plugin(&self, runs: &Path, expires: Option<&str>) -> String {
        let expiry = expires
            .map(|e| format!(",\"expirationTimestamp\":\"{e}\""))
            .unwrap_or_default();
        let script = self.write_script(
            "plugin.sh",
            &format!(
                "echo run >> '{}'\necho '{{\"apiVersion\":\"client.authentication.k8s.io/v1\",\"kind\":\"ExecCredential\",\"status\":{{\"token\":\"{}\"{expiry}}}}}'\n",
                runs.display(),
                self.token()
            ),
        );
        exec_user(&script)
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

/// The user entry (YAML lines indented by 4) running `command` as a non-interactive
/// `client.authentication.k8s.io/v1` exec credential plugin.
pub fn exec_user(command: &Path) -> String {
    format!(
        "    exec:\n      apiVersion: client.authentication.k8s.io/v1\n      command: {}\n      interactiveMode: Never\n",
        command.display()
    )
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

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it.
fn tls() -> (String, TlsAcceptor) {
    let ca_key = KeyPair::generate().expect("CA key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "fake-kubernetes-ca");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca_cert = ca_params.self_signed(&ca_key).expect("CA certificate");
    let issuer = Issuer::from_params(&ca_params, &ca_key);

    let key = KeyPair::generate().expect("server key");
    let mut params = CertificateParams::new(vec!["127.0.0.1".to_string(), "localhost".to_string()])
        .expect("server params");
    params
        .distinguished_name
        .push(DnType::CommonName, "kube-apiserver");
    let cert = params.signed_by(&key, &issuer).expect("server certificate");

    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_no_client_auth()
        .with_single_cert(
            vec![cert.der().clone()],
            PrivateKeyDer::Pkcs8(key.serialize_der().into()),
        )
        .expect("server TLS config");
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    (ca_cert.pem(), TlsAcceptor::from(Arc::new(config)))
}

async fn serve(listener: tokio::net::TcpListener, acceptor: TlsAcceptor, state: Arc<Mutex<State>>) {
    loop {
        let Ok((tcp, _)) = listener.accept().await else {
            continue;
        };
        let acceptor = acceptor.clone();
        let state = Arc::clone(&state);
        tokio::spawn(async move {
            let Ok(tls) = acceptor.accept(tcp).await else {
                return;
            };
            let service = hyper::service::service_fn(move |req| handle(Arc::clone(&state), req));
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(tls), service)
                .await;
        });
    }
}

type Answer = Response<Full<Bytes>>;

async fn handle(state: Arc<Mutex<State>>, req: Request<Incoming>) -> Result<Answer, Infallible> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().map(str::to_string);
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    let content_type = header("content-type");
    let user_agent = header("user-agent");
    let authorization = header("authorization");
    let bytes = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let body = if bytes.is_empty() {
        None
    } else {
        Some(
            serde_json::from_slice(&bytes)
                .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into_owned())),
        )
    };
    let fault = {
        let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
        s.requests.push(Recorded {
            method: method.to_string(),
            path: path.clone(),
            query,
            content_type: content_type.clone(),
            user_agent,
            body: body.clone(),
        });
        s.faults.pop_front()
    };
    match fault {
        Some(Fault::Pass) | None => {}
        Some(Fault::Edit(name, patch)) => {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            let version = s.next_version();
            if let Some(node) = s.nodes.get_mut(name) {
                merge(node, patch);
                node["metadata"]["resourceVersion"] = json!(version);
            }
        }
        Some(Fault::Hang) => std::future::pending::<()>().await,
        Some(Fault::Unauthorized) => return Ok(unauthorized()),
        Some(Fault::Status(code)) => {
            let reason = match code {
                409 => "Conflict",
                503 => "ServiceUnavailable",
                _ => "InternalError",
            };
            return Ok(status(
                code,
                reason,
                "fault injected by the test",
                json!({}),
            ));
        }
    }
    let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
    let bearer = authorization
        .as_deref()
        .and_then(|a| a.strip_prefix("Bearer "));
    let known = bearer.is_some_and(|t| t == s.token || s.issued.iter().any(|(_, i)| i == t));
    if !known {
        return Ok(unauthorized());
    }
    let media = content_type
        .as_deref()
        .map(|c| c.split(';').next().unwrap_or(c).trim().to_string());
    let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
    let answer = match (&method, segments.as_slice()) {
        (&Method::GET, ["version"]) => ok(json!({
            "major": "1", "minor": "33", "gitVersion": "v1.33.0", "gitCommit": "fake",
            "gitTreeState": "clean", "buildDate": "2026-11-01T00:00:00Z", "goVersion": "go1.24.0",
            "compiler": "gc", "platform": "linux/amd64",
        })),
        (&Method::GET, ["api"]) => ok(json!({
            "kind": "APIVersions", "versions": ["v1"],
            "serverAddressByClientCIDRs": [{ "clientCIDR": "0.0.0.0/0", "serverAddress": "127.0.0.1:6443" }],
        })),
        (&Method::GET, ["apis"]) => ok(json!({
            "kind": "APIGroupList", "apiVersion": "v1",
            "groups": [{
                "name": "rbac.authorization.k8s.io",
                "versions": [{ "groupVersion": "rbac.authorization.k8s.io/v1", "version": "v1" }],
                "preferredVersion": { "groupVersion": "rbac.authorization.k8s.io/v1", "version": "v1" },
            }],
        })),
        (&Method::GET, ["apis", "rbac.authorization.k8s.io", "v1"]) => ok(rbac_resources()),
        (&Method::GET, ["api", "v1"]) => ok(resources()),
        (&Method::GET, ["api", "v1", "nodes", name]) => match s.nodes.get(*name) {
            Some(node) => ok(node.clone()),
            None => not_found("nodes", name),
        },
        (&Method::PATCH, ["api", "v1", "nodes", name]) => patch_node(&mut s, name, media, body),
        (&Method::POST, ["api", "v1", "namespaces", namespace, "events"]) => {
            create_event(&mut s, namespace, body)
        }
        (
            &Method::POST,
            [
                "api",
                "v1",
                "namespaces",
                namespace,
                "serviceaccounts",
                name,
                "token",
            ],
        ) => token_request(&mut s, namespace, name, body),
        (&Method::POST, ["api", "v1", "namespaces", namespace, "secrets"]) => {
            create_secret(&mut s, namespace, body)
        }
        (&Method::GET, ["api", "v1", "namespaces", namespace, "secrets", name]) => {
            match s.secrets.get(&format!("{namespace}/{name}")) {
                Some(secret) => ok(secret.clone()),
                None => not_found("secrets", name),
            }
        }
        (&Method::GET, ["api", "v1", "namespaces", _, "events"]) => ok(json!({
            "kind": "EventList", "apiVersion": "v1",
            "metadata": { "resourceVersion": s.version.to_string() },
            "items": s.events,
        })),
        _ => status(
            404,
            "NotFound",
            "the server could not find the requested resource",
            json!({}),
        ),
    };
    Ok(answer)
}

fn patch_node(s: &mut State, name: &str, media: Option<String>, body: Option<Value>) -> Answer {
    match media.as_deref() {
        Some("application/strategic-merge-patch+json" | "application/merge-patch+json") => {}
        other => {
            let message = format!(
                "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json (got {other:?})"
            );
            return status(415, "UnsupportedMediaType", &message, json!({}));
        }
    }
    let Some(patch @ Value::Object(_)) = body else {
        return status(
            400,
            "BadRequest",
            "the patch is not a JSON object",
            json!({}),
        );
    };
    if has_directive(&patch) {
        // We never send `$patch`/`$retainKeys`/`$setElementOrder`; fail loudly if anyone does.
        return status(
            400,
            "BadRequest",
            "patch directives are not supported by the fake",
            json!({}),
        );
    }
    let Some(current) = s.nodes.get(name).cloned() else {
        return not_found("nodes", name);
    };
    if let Some(wanted) = patch.pointer("/metadata/resourceVersion")
        && Some(wanted) != current.pointer("/metadata/resourceVersion")
    {
        let message = format!(
            "Operation cannot be fulfilled on nodes \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        );
        return status(
            409,
            "Conflict",
            &message,
            json!({ "name": name, "kind": "nodes" }),
        );
    }
    let mut updated = current.clone();
    merge(&mut updated, patch);
    if updated != current {
        let version = s.next_version();
        updated["metadata"]["resourceVersion"] = json!(version);
        s.nodes.insert(name.to_string(), updated.clone());
    }
    ok(updated)
}

fn create_event(s: &mut State, namespace: &str, body: Option<Value>) -> Answer {
    let Some(mut event @ Value::Object(_)) = body else {
        return status(
            400,
            "BadRequest",
            "the event is not a JSON object",
            json!({}),
        );
    };
    let body_namespace = event.pointer("/metadata/namespace").and_then(Value::as_str);
    if body_namespace.is_some_and(|n| n != namespace) {
        let message =
            "the namespace of the provided object does not match the namespace sent on the request";
        return status(400, "BadRequest", message, json!({}));
    }
    // Core validation: an Event about a cluster-scoped object must live in "default".
    let involved_namespace = event
        .pointer("/involvedObject/namespace")
        .and_then(Value::as_str);
    if involved_namespace.unwrap_or("").is_empty() && namespace != "default" {
        let message = "Event \"\" is invalid: involvedObject.namespace: Invalid value: \"\": does not match event.namespace";
        return status(422, "Invalid", message, json!({ "kind": "Event" }));
    }
    let version = s.next_version();
    event["metadata"]["namespace"] = json!(namespace);
    event["metadata"]["resourceVersion"] = json!(version);
    event["metadata"]["uid"] = json!(format!("e-{version}"));
    event["metadata"]["creationTimestamp"] = json!(now());
    s.events.push(event.clone());
    let mut answer = ok(event);
    *answer.status_mut() = StatusCode::CREATED;
    answer
}

/// `kubectl create token`: a TokenRequest answered with a fresh token for the account.
fn token_request(s: &mut State, namespace: &str, name: &str, body: Option<Value>) -> Answer {
    let account = format!("{namespace}/{name}");
    if !s.accounts.contains(&account) {
        return not_found("serviceaccounts", name);
    }
    // kubectl sends this one as protobuf (and accepts JSON back): only a JSON body is read.
    let mut request = match body {
        Some(request @ Value::Object(_)) => request,
        _ => json!({
            "kind": "TokenRequest", "apiVersion": "authentication.k8s.io/v1",
            "metadata": { "name": name, "namespace": namespace }, "spec": {},
        }),
    };
    let seconds = request
        .pointer("/spec/expirationSeconds")
        .and_then(Value::as_i64)
        .unwrap_or(3600);
    let expires = k8s_openapi::jiff::Timestamp::now()
        .as_second()
        .saturating_add(seconds);
    let expires = k8s_openapi::jiff::Timestamp::from_second(expires)
        .map(|t| t.to_string())
        .unwrap_or_default();
    request["status"] = json!({ "token": s.issue(&account), "expirationTimestamp": expires });
    let mut answer = ok(request);
    *answer.status_mut() = StatusCode::CREATED;
    answer
}

/// A Secret; one of type `kubernetes.io/service-account-token` naming an existing account gets
/// its `token`, `ca.crt` and `namespace` filled in at once, as the token controller does soon after.
fn create_secret(s: &mut State, namespace: &str, body: Option<Value>) -> Answer {
    let Some(mut secret @ Value::Object(_)) = body else {
        return status(
            400,
            "BadRequest",
            "the secret is not a JSON object",
            json!({}),
        );
    };
    let Some(name) = secret.pointer("/metadata/name").and_then(Value::as_str) else {
        return status(
            422,
            "Invalid",
            "Secret \"\" is invalid: metadata.name: Required value",
            json!({}),
        );
    };
    let key = format!("{namespace}/{name}");
    if s.secrets.contains_key(&key) {
        let message = format!("secrets \"{name}\" already exists");
        return status(
            409,
            "AlreadyExists",
            &message,
            json!({ "name": name, "kind": "secrets" }),
        );
    }
    let account = secret
        .pointer("/metadata/annotations/kubernetes.io~1service-account.name")
        .and_then(Value::as_str)
        .map(|a| format!("{namespace}/{a}"));
    let is_token =
        secret.get("type").and_then(Value::as_str) == Some("kubernetes.io/service-account-token");
    if let (true, Some(account)) = (is_token, account)
        && s.accounts.contains(&account)
    {
        let token = s.issue(&account);
        let base64 = |text: &str| {
            serde_json::to_value(k8s_openapi::ByteString(text.as_bytes().to_vec()))
                .unwrap_or(Value::Null)
        };
        secret["data"] = json!({
            "token": base64(&token),
            "namespace": base64(namespace),
            "ca.crt": base64("(the cluster CA)"),
        });
    }
    let version = s.next_version();
    secret["metadata"]["namespace"] = json!(namespace);
    secret["metadata"]["resourceVersion"] = json!(version);
    secret["metadata"]["creationTimestamp"] = json!(now());
    s.secrets.insert(key, secret.clone());
    let mut answer = ok(secret);
    *answer.status_mut() = StatusCode::CREATED;
    answer
}

/// Discovery of the RBAC group, so kubectl can map `packaging/kubernetes/rbac.yaml` (nothing of
/// it is served).
fn rbac_resources() -> Value {
    let verbs = json!([
        "create", "delete", "get", "list", "patch", "update", "watch"
    ]);
    let resource = |name: &str, kind: &str, namespaced: bool| json!({ "name": name, "singularName": "", "namespaced": namespaced, "kind": kind, "verbs": verbs });
    json!({
        "kind": "APIResourceList",
        "groupVersion": "rbac.authorization.k8s.io/v1",
        "resources": [
            resource("clusterroles", "ClusterRole", false),
            resource("clusterrolebindings", "ClusterRoleBinding", false),
            resource("roles", "Role", true),
            resource("rolebindings", "RoleBinding", true),
        ],
    })
}

fn resources() -> Value {
    let verbs = json!([
        "create",
        "delete",
        "deletecollection",
        "get",
        "list",
        "patch",
        "update",
        "watch"
    ]);
    json!({
        "kind": "APIResourceList",
        "groupVersion": "v1",
        "resources": [
            { "name": "nodes", "singularName": "node", "namespaced": false, "kind": "Node",
              "verbs": verbs, "shortNames": ["no"] },
            { "name": "nodes/status", "singularName": "", "namespaced": false, "kind": "Node",
              "verbs": ["get", "patch", "update"] },
            { "name": "events", "singularName": "event", "namespaced": true, "kind": "Event",
              "verbs": verbs, "shortNames": ["ev"] },
            { "name": "secrets", "singularName": "secret", "namespaced": true, "kind": "Secret",
              "verbs": verbs },
            { "name": "serviceaccounts", "singularName": "serviceaccount", "namespaced": true,
              "kind": "ServiceAccount", "verbs": verbs, "shortNames": ["sa"] },
            { "name": "serviceaccounts/token", "singularName": "", "namespaced": true,
              "group": "authentication.k8s.io", "version": "v1", "kind": "TokenRequest",
              "verbs": ["create"] },
        ],
    })
}

/// RFC 7386 merge: objects merge key by key, `null` deletes, anything else replaces. For the Node
/// fields in play this is also what a strategic merge patch does.
pub fn merge(into: &mut Value, patch: Value) {
    match patch {
        Value::Object(fields) => {
            if !into.is_object() {
                *into = json!({});
            }
            if let Value::Object(target) = into {
                for (key, value) in fields {
                    if value.is_null() {
                        target.remove(&key);
                    } else {
                        merge(target.entry(key).or_insert(Value::Null), value);
                    }
                }
            }
        }
        other => *into = other,
    }
}

fn has_directive(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_directive(v)),
        Value::Array(items) => items.iter().any(has_directive),
        _ => false,
    }
}

fn ok(value: Value) -> Answer {
    answer(StatusCode::OK, value)
}

fn answer(code: StatusCode, value: Value) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn status(code: u16, reason: &str, message: &str, details: Value) -> Answer {
    let mut body = json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
        "message": message, "reason": reason, "code": code,
    });
    if details.as_object().is_some_and(|d| !d.is_empty()) {
        body["details"] = details;
    }
    answer(
        StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
        body,
    )
}

fn unauthorized() -> Answer {
    status(401, "Unauthorized", "Unauthorized", json!({}))
}

fn not_found(kind: &str, name: &str) -> Answer {
    let message = format!("{kind} \"{name}\" not found");
    status(
        404,
        "NotFound",
        &message,
        json!({ "name": name, "kind": kind }),
    )
}
