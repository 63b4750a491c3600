//! The fake API server's answers: Node patches, Events, TokenRequests, Secrets, discovery, and
//! `Status` bodies shaped like the real API server's.

use http_body_util::Full;
use hyper::Response;
use hyper::StatusCode;
use hyper::body::Bytes;
use serde_json::{Value, json};

use super::server::Answer;
use super::{State, now};

pub(super) fn patch_node(
    s: &mut State,
    name: &str,
    media: Option<String>,
    body: Option<Value>,
) -> Answer {
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
        s.changed("nodes", name, &updated);
    }
    ok(updated)
}

pub(super) fn create_event(s: &mut State, namespace: &str, body: Option<Value>) -> Answer {
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
pub(super) fn token_request(
    s: &mut State,
    namespace: &str,
    name: &str,
    body: Option<Value>,
) -> Answer {
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
pub(super) fn create_secret(s: &mut State, namespace: &str, body: Option<Value>) -> Answer {
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
pub(super) fn rbac_resources() -> Value {
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

pub(super) fn resources() -> Value {
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

pub(super) fn has_directive(value: &Value) -> bool {
    match value {
        Value::Object(map) => map
            .iter()
            .any(|(k, v)| k.starts_with('$') || has_directive(v)),
        Value::Array(items) => items.iter().any(has_directive),
        _ => false,
    }
}

pub(super) fn ok(value: Value) -> Answer {
    answer(StatusCode::OK, value)
}

pub(super) fn answer(code: StatusCode, value: Value) -> Answer {
    let mut response = Response::new(Full::new(Bytes::from(value.to_string())));
    *response.status_mut() = code;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

pub(super) fn status(code: u16, reason: &str, message: &str, details: Value) -> Answer {
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

pub(super) fn unauthorized() -> Answer {
    status(401, "Unauthorized", "Unauthorized", json!({}))
}

pub(super) fn not_found(kind: &str, name: &str) -> Answer {
    let message = format!("{kind} \"{name}\" not found");
    status(
        404,
        "NotFound",
        &message,
        json!({ "name": name, "kind": kind }),
    )
}
