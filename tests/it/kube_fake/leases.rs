//! `coordination.k8s.io/v1` Leases in the fake API server, with the real server's semantics
//! (`pkg/registry/coordination/lease/strategy.go` and the generic registry store):
//! - POST creates; an existing name is 409 `AlreadyExists`;
//! - GET of a missing Lease is 404 `NotFound` (`leases.coordination.k8s.io "x" not found`);
//! - PUT needs `metadata.resourceVersion` (the strategy allows no unconditional update: 422
//!   `must be specified for an update`), and a stale one is 409 `Conflict`; a PUT to a missing
//!   Lease creates it (the strategy allows create on update); a PUT that changes nothing keeps
//!   the version;
//! - PATCH (what `kubectl apply` sends the second time) merges, with the same precondition when
//!   the patch carries a `resourceVersion`;
//! - the server sets `uid`, `creationTimestamp` and `resourceVersion`, whatever the client sent.
//!
//! [`FakeKube::forbid_leases`] answers 403 the way RBAC does, for the kubelet's credential.

use hyper::StatusCode;
use serde_json::{Value, json};

use super::answers::{answer, has_directive, merge, ok, status};
use super::server::Answer;
use super::{FakeKube, State, now};

/// The group, as the API server names Lease errors.
const GROUP: &str = "coordination.k8s.io";

fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

fn details(name: &str) -> Value {
    json!({ "name": name, "group": GROUP, "kind": "leases" })
}

fn not_found(name: &str) -> Answer {
    status(
        404,
        "NotFound",
        &format!("leases.{GROUP} \"{name}\" not found"),
        details(name),
    )
}

fn conflict(name: &str) -> Answer {
    status(
        409,
        "Conflict",
        &format!(
            "Operation cannot be fulfilled on leases.{GROUP} \"{name}\": the object has been modified; please apply your changes to the latest version and try again"
        ),
        details(name),
    )
}

/// RBAC's 403 for `verb` on the Lease `name` (none for create and list).
pub(super) fn forbidden(verb: &str, namespace: &str, name: Option<&str>) -> Answer {
    let object = match name {
        Some(name) => format!("leases.{GROUP} \"{name}\""),
        None => format!("leases.{GROUP}"),
    };
    let message = format!(
        "{object} is forbidden: User \"system:node:n1\" cannot {verb} resource \"leases\" in API group \"{GROUP}\" in the namespace \"{namespace}\""
    );
    let mut d = json!({ "group": GROUP, "kind": "leases" });
    if let Some(name) = name {
        d["name"] = json!(name);
    }
    status(403, "Forbidden", &message, d)
}

/// A body that must be a Lease object for `namespace` (its namespace, if given, matching).
fn lease_body(namespace: &str, body: Option<Value>) -> Result<Value, Box<Answer>> {
    let Some(lease @ Value::Object(_)) = body else {
        return Err(Box::new(status(
            400,
            "BadRequest",
            "the lease is not a JSON object",
            json!({}),
        )));
    };
    if lease.get("kind").is_some_and(|k| k != "Lease") {
        return Err(Box::new(status(
            400,
            "BadRequest",
            &format!("the kind of the object is {}, not Lease", lease["kind"]),
            json!({}),
        )));
    }
    let body_namespace = lease.pointer("/metadata/namespace").and_then(Value::as_str);
    if body_namespace.is_some_and(|n| n != namespace) {
        return Err(Box::new(status(
            400,
            "BadRequest",
            "the namespace of the provided object does not match the namespace sent on the request",
            json!({}),
        )));
    }
    Ok(lease)
}

/// Stores `lease` as a new object: the server's metadata set.
fn store_new(s: &mut State, namespace: &str, name: &str, mut lease: Value) -> Answer {
    let version = s.next_version();
    lease["apiVersion"] = json!(format!("{GROUP}/v1"));
    lease["kind"] = json!("Lease");
    lease["metadata"]["name"] = json!(name);
    lease["metadata"]["namespace"] = json!(namespace);
    lease["metadata"]["resourceVersion"] = json!(version);
    lease["metadata"]["uid"] = json!(format!("1ea5e000-0000-4000-8000-{version:0>12}"));
    lease["metadata"]["creationTimestamp"] = json!(now());
    s.leases.insert(key(namespace, name), lease.clone());
    s.changed("leases", &key(namespace, name), &lease);
    answer(StatusCode::CREATED, lease)
}

pub(super) fn get(s: &State, namespace: &str, name: &str) -> Answer {
    match s.leases.get(&key(namespace, name)) {
        Some(lease) => ok(lease.clone()),
        None => not_found(name),
    }
}

pub(super) fn list(s: &State, namespace: &str) -> Answer {
    let prefix = format!("{namespace}/");
    let items: Vec<Value> = s
        .leases
        .iter()
        .filter(|(k, _)| k.starts_with(&prefix))
        .map(|(_, v)| v.clone())
        .collect();
    ok(json!({
        "kind": "LeaseList", "apiVersion": format!("{GROUP}/v1"),
        "metadata": { "resourceVersion": s.version.to_string() },
        "items": items,
    }))
}

pub(super) fn create(s: &mut State, namespace: &str, body: Option<Value>) -> Answer {
    let lease = match lease_body(namespace, body) {
        Ok(lease) => lease,
        Err(refused) => return *refused,
    };
    let Some(name) = lease
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .map(str::to_string)
    else {
        return status(
            422,
            "Invalid",
            "Lease.coordination.k8s.io \"\" is invalid: metadata.name: Required value: name or generateName is required",
            json!({ "group": GROUP, "kind": "Lease" }),
        );
    };
    if s.leases.contains_key(&key(namespace, &name)) {
        return status(
            409,
            "AlreadyExists",
            &format!("leases.{GROUP} \"{name}\" already exists"),
            details(&name),
        );
    }
    store_new(s, namespace, &name, lease)
}

pub(super) fn replace(s: &mut State, namespace: &str, name: &str, body: Option<Value>) -> Answer {
    let mut lease = match lease_body(namespace, body) {
        Ok(lease) => lease,
        Err(refused) => return *refused,
    };
    let body_name = lease.pointer("/metadata/name").and_then(Value::as_str);
    if body_name.is_some_and(|n| n != name) {
        let message = format!(
            "the name of the object ({}) does not match the name on the URL ({name})",
            body_name.unwrap_or_default()
        );
        return status(400, "BadRequest", &message, json!({}));
    }
    let Some(current) = s.leases.get(&key(namespace, name)).cloned() else {
        // The Lease strategy allows create on update.
        return store_new(s, namespace, name, lease);
    };
    let wanted = lease
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if wanted.is_empty() {
        return status(
            422,
            "Invalid",
            &format!(
                "Lease.coordination.k8s.io \"{name}\" is invalid: metadata.resourceVersion: Invalid value: 0x0: must be specified for an update"
            ),
            json!({ "name": name, "group": GROUP, "kind": "Lease" }),
        );
    }
    if Some(wanted)
        != current
            .pointer("/metadata/resourceVersion")
            .and_then(Value::as_str)
    {
        return conflict(name);
    }
    // What the server owns stays as it was.
    for field in ["uid", "creationTimestamp", "namespace", "name"] {
        lease["metadata"][field] = current["metadata"][field].clone();
    }
    lease["apiVersion"] = current["apiVersion"].clone();
    lease["kind"] = current["kind"].clone();
    commit(s, namespace, name, current, lease)
}

pub(super) fn patch(
    s: &mut State,
    namespace: &str,
    name: &str,
    media: Option<String>,
    body: Option<Value>,
) -> Answer {
    if !matches!(
        media.as_deref(),
        Some("application/strategic-merge-patch+json" | "application/merge-patch+json")
    ) {
        return status(
            415,
            "UnsupportedMediaType",
            "the body of the request was in an unknown format - accepted media types include: application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml, application/strategic-merge-patch+json",
            json!({}),
        );
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
        return status(
            400,
            "BadRequest",
            "patch directives are not supported by the fake",
            json!({}),
        );
    }
    let Some(current) = s.leases.get(&key(namespace, name)).cloned() else {
        return not_found(name);
    };
    if let Some(wanted) = patch.pointer("/metadata/resourceVersion")
        && Some(wanted) != current.pointer("/metadata/resourceVersion")
    {
        return conflict(name);
    }
    let mut updated = current.clone();
    merge(&mut updated, patch);
    commit(s, namespace, name, current, updated)
}

/// Stores `updated` in place of `current`, with a new version only when something changed.
fn commit(
    s: &mut State,
    namespace: &str,
    name: &str,
    current: Value,
    mut updated: Value,
) -> Answer {
    updated["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"].clone();
    if updated == current {
        return ok(current);
    }
    let version = s.next_version();
    updated["metadata"]["resourceVersion"] = json!(version);
    s.leases.insert(key(namespace, name), updated.clone());
    s.changed("leases", &key(namespace, name), &updated);
    ok(updated)
}

/// Stores `lease` as another client's write (for tests and [`super::Fault::Lease`]).
pub(super) fn put(s: &mut State, namespace: &str, lease: Value) {
    let name = lease["metadata"]["name"]
        .as_str()
        .expect("a lease has a name")
        .to_string();
    let _ = store_new(s, namespace, &name, lease);
}

/// Discovery of `coordination.k8s.io/v1`, so kubectl maps `lease`.
pub(super) fn resources() -> Value {
    json!({
        "kind": "APIResourceList",
        "groupVersion": format!("{GROUP}/v1"),
        "resources": [{
            "name": "leases", "singularName": "lease", "namespaced": true, "kind": "Lease",
            "verbs": ["create", "delete", "deletecollection", "get", "list", "patch", "update", "watch"],
        }],
    })
}

impl FakeKube {
    /// The Lease `namespace/name` as stored now.
    pub fn lease(&self, namespace: &str, name: &str) -> Option<Value> {
        self.lock().leases.get(&key(namespace, name)).cloned()
    }

    /// Every Lease in `namespace`, by name.
    pub fn leases(&self, namespace: &str) -> Vec<Value> {
        let prefix = format!("{namespace}/");
        self.lock()
            .leases
            .iter()
            .filter(|(k, _)| k.starts_with(&prefix))
            .map(|(_, v)| v.clone())
            .collect()
    }

    /// Stores `lease` as another client would have written it (a new version, its
    /// `metadata.name`, and the namespace `namespace`).
    pub fn put_lease(&self, namespace: &str, lease: Value) {
        put(&mut self.lock(), namespace, lease);
    }

    /// From now on every request on a Lease is refused with 403, as RBAC refuses the
    /// kubelet's credential (`false`: allowed again).
    pub fn forbid_leases(&self, forbid: bool) {
        self.lock().forbid_leases = forbid;
    }
}
