//! The fake API server's TLS and HTTP side: a CA and server certificate per server, the accept
//! loop, and the request handler that records each request, applies faults and routes it.

use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Method, Request, Response};
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair, KeyUsagePurpose};
use serde_json::{Value, json};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::{self, pki_types::PrivateKeyDer};

use super::answers::*;
use super::{Fault, Recorded, State, leases, merge};

/// A CA and a server certificate for 127.0.0.1 and localhost signed by it.
pub(super) fn tls() -> (String, TlsAcceptor) {
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

pub(super) async fn serve(
    listener: tokio::net::TcpListener,
    acceptor: TlsAcceptor,
    state: Arc<Mutex<State>>,
) {
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

pub(super) type Answer = Response<Full<Bytes>>;

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
                let node = node.clone();
                s.changed("nodes", name, &node);
            }
        }
        Some(Fault::Lease(namespace, lease)) => {
            let mut s = state.lock().unwrap_or_else(|e| e.into_inner());
            leases::put(&mut s, namespace, lease);
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
    if let [
        "apis",
        "coordination.k8s.io",
        "v1",
        "namespaces",
        namespace,
        "leases",
        rest @ ..,
    ] = segments.as_slice()
        && s.forbid_leases
    {
        let verb = match (&method, rest.is_empty()) {
            (&Method::GET, true) => "list",
            (&Method::GET, false) => "get",
            (&Method::POST, _) => "create",
            (&Method::PUT, _) => "update",
            (&Method::PATCH, _) => "patch",
            _ => "delete",
        };
        return Ok(leases::forbidden(verb, namespace, rest.first().copied()));
    }
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
            }, {
                "name": "coordination.k8s.io",
                "versions": [{ "groupVersion": "coordination.k8s.io/v1", "version": "v1" }],
                "preferredVersion": { "groupVersion": "coordination.k8s.io/v1", "version": "v1" },
            }],
        })),
        (&Method::GET, ["apis", "rbac.authorization.k8s.io", "v1"]) => ok(rbac_resources()),
        (&Method::GET, ["apis", "coordination.k8s.io", "v1"]) => ok(leases::resources()),
        (
            &Method::GET,
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
            ],
        ) => leases::list(&s, ns),
        (
            &Method::POST,
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
            ],
        ) => leases::create(&mut s, ns, body),
        (
            &Method::GET,
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
                name,
            ],
        ) => leases::get(&s, ns, name),
        (
            &Method::PUT,
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
                name,
            ],
        ) => leases::replace(&mut s, ns, name, body),
        (
            &Method::PATCH,
            [
                "apis",
                "coordination.k8s.io",
                "v1",
                "namespaces",
                ns,
                "leases",
                name,
            ],
        ) => leases::patch(&mut s, ns, name, media, body),
        (&Method::GET, ["api", "v1"]) => ok(resources()),
        // The namespaces every cluster has (kubectl looks one up after a 404 inside it).
        (&Method::GET, ["api", "v1", "namespaces", namespace]) => {
            if ["default", "kube-system", "kube-public", "kube-node-lease"].contains(namespace) {
                ok(json!({
                    "kind": "Namespace", "apiVersion": "v1",
                    "metadata": { "name": namespace, "resourceVersion": "1" },
                    "spec": { "finalizers": ["kubernetes"] }, "status": { "phase": "Active" },
                }))
            } else {
                not_found("namespaces", namespace)
            }
        }
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
