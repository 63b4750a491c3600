//! The guard's requests to the API server, built here rather than through `kube::Api`, which puts
//! names into the URL unescaped (`node-1?dryRun=All` would become a query). Every path segment
//! is percent-encoded, and node names are checked to be RFC 1123 subdomains before any request.
//!
//! [`update`] is kubectl's update-if-required shape for any object: read it, let a pure function
//! decide what to send (or that nothing is needed), send it with the `resourceVersion` read, and
//! read again on 409, a bounded number of times; Nodes go through it. [`upsert`] is the same
//! shape for an object that may not exist yet and is written whole (PUT): the fleet's slot
//! Leases, created on 404 and read again after a 409 on either write.

use std::fmt;

use kube::core::Request;
use kube::core::params::{GetParams, Patch, PatchParams, PostParams};
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::COMPONENT;
use super::error::KubeError;

/// Characters left as they are in a path segment: RFC 3986 unreserved.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// `raw` as one URL path segment: everything but unreserved characters percent-encoded, and the
/// dot segments `.` and `..` (which a URL resolver would apply) encoded too.
pub fn segment(raw: &str) -> String {
    if raw == "." || raw == ".." {
        return raw.replace('.', "%2E");
    }
    let mut out = String::with_capacity(raw.len());
    for b in raw.bytes() {
        if unreserved(b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// True for an RFC 1123 subdomain, what Kubernetes requires of a Node's name: at most 253
/// characters, dot-separated labels of lowercase letters, digits and `-`, each starting and
/// ending with a letter or digit.
pub fn is_subdomain(name: &str) -> bool {
    let label = |l: &str| {
        let b = l.as_bytes();
        let edge = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        !b.is_empty()
            && b.len() <= 63
            && b.first().is_some_and(edge)
            && b.last().is_some_and(edge)
            && b.iter().all(|c| edge(c) || *c == b'-')
    };
    !name.is_empty() && name.len() <= 253 && name.split('.').all(label)
}

/// Where a named object lives: its collection (a path of literal segments) and its name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectPath {
    collection: String,
    name: String,
}

impl ObjectPath {
    /// The cluster-scoped Node `name`.
    pub fn node(name: &str) -> Self {
        ObjectPath {
            collection: "/api/v1/nodes".to_string(),
            name: name.to_string(),
        }
    }

    /// The object `name` in the collection `{prefix}/namespaces/{namespace}/{plural}`, e.g. a
    /// Lease under `/apis/coordination.k8s.io/v1`.
    pub fn namespaced(prefix: &str, namespace: &str, plural: &str, name: &str) -> Self {
        ObjectPath {
            collection: Self::namespaced_collection(prefix, namespace, plural),
            name: name.to_string(),
        }
    }

    /// The collection path with `namespace` escaped, e.g. `/api/v1/namespaces/{ns}/events`.
    pub fn namespaced_collection(prefix: &str, namespace: &str, plural: &str) -> String {
        format!("{prefix}/namespaces/{}/{plural}", segment(namespace))
    }

    /// The object's URL path, name escaped.
    pub fn url(&self) -> String {
        format!("{}/{}", self.collection, segment(&self.name))
    }
}

impl fmt::Display for ObjectPath {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.url())
    }
}

/// GET the object.
pub async fn get<K: DeserializeOwned>(
    client: &kube::Client,
    path: &ObjectPath,
) -> Result<K, KubeError> {
    let request = Request::new(&path.collection)
        .get(&segment(&path.name), &GetParams::default())
        .map_err(|e| KubeError(kube::Error::BuildRequest(e)))?;
    client.request(request).await.map_err(KubeError)
}

/// PATCH the object with a strategic merge patch, as `kubectl cordon` does, as our field manager.
pub async fn patch<K: DeserializeOwned>(
    client: &kube::Client,
    path: &ObjectPath,
    value: Value,
) -> Result<K, KubeError> {
    let params = PatchParams {
        field_manager: Some(COMPONENT.to_string()),
        ..PatchParams::default()
    };
    let request = Request::new(&path.collection)
        .patch(&segment(&path.name), &params, &Patch::Strategic(value))
        .map_err(|e| KubeError(kube::Error::BuildRequest(e)))?;
    client.request(request).await.map_err(KubeError)
}

/// POST `object` into the collection at `collection` (already escaped).
pub async fn create<K: DeserializeOwned>(
    client: &kube::Client,
    collection: &str,
    object: &impl serde::Serialize,
) -> Result<K, KubeError> {
    let body = serde_json::to_vec(object).map_err(|e| KubeError(kube::Error::SerdeError(e)))?;
    let request = Request::new(collection)
        .create(&PostParams::default(), body)
        .map_err(|e| KubeError(kube::Error::BuildRequest(e)))?;
    client.request(request).await.map_err(KubeError)
}

/// PUT `object` in place of the object at `path` (an update: the API server checks the
/// `metadata.resourceVersion` it carries).
pub async fn replace<K: DeserializeOwned>(
    client: &kube::Client,
    path: &ObjectPath,
    object: &impl serde::Serialize,
) -> Result<K, KubeError> {
    let body = serde_json::to_vec(object).map_err(|e| KubeError(kube::Error::SerdeError(e)))?;
    let request = Request::new(&path.collection)
        .replace(&segment(&path.name), &PostParams::default(), body)
        .map_err(|e| KubeError(kube::Error::BuildRequest(e)))?;
    client.request(request).await.map_err(KubeError)
}

/// What a decision on the object as read asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision<T> {
    /// Nothing to send: the object is as wanted (or must be left alone); the outcome is `T`.
    Keep(T),
    /// Send this patch (it carries the `resourceVersion` read); once accepted, the outcome is `T`.
    Send(Value, T),
}

/// A decision carried out.
#[derive(Debug)]
pub struct Updated<K, T> {
    /// The object as last read, or as the API server returned it after the patch.
    pub object: K,
    /// The decision's outcome.
    pub outcome: T,
}

/// Why an update did not go through.
#[derive(Debug)]
pub enum UpdateError<T> {
    /// The object could not be read.
    Read(KubeError),
    /// The patch for `intent` failed (after `tries` conflicts, the last 409).
    Write {
        /// The outcome the refused patch was for.
        intent: T,
        /// Why it failed.
        source: KubeError,
    },
}

/// Reads the object at `path`, lets `decide` choose, sends at most one patch per read, and reads
/// again when the object changed in between (409), up to `tries` reads in all.
pub async fn update<K, T>(
    client: &kube::Client,
    path: &ObjectPath,
    tries: u32,
    mut decide: impl FnMut(&K) -> Decision<T>,
) -> Result<Updated<K, T>, UpdateError<T>>
where
    K: DeserializeOwned,
{
    let mut attempt = 1;
    loop {
        let current: K = get(client, path).await.map_err(UpdateError::Read)?;
        let (value, intent) = match decide(&current) {
            Decision::Keep(outcome) => {
                return Ok(Updated {
                    object: current,
                    outcome,
                });
            }
            Decision::Send(value, intent) => (value, intent),
        };
        match patch(client, path, value).await {
            Ok(object) => {
                return Ok(Updated {
                    object,
                    outcome: intent,
                });
            }
            Err(e) if e.status() == Some(409) && attempt < tries => {
                log::info!("{path} changed since it was read: reading it again");
                attempt += 1;
            }
            Err(source) => return Err(UpdateError::Write { intent, source }),
        }
    }
}

/// What a decision on an object that may be missing asks for.
#[derive(Debug, Clone, PartialEq)]
pub enum Write<K, T> {
    /// Nothing to send; the outcome is `T`.
    Keep(T),
    /// The object is missing: create this one; once created, the outcome is `T`.
    Create(K, T),
    /// Replace the object with this one (carrying the `resourceVersion` read); once accepted,
    /// the outcome is `T`.
    Replace(K, T),
}

/// Reads the object at `path` (`None` when the API server answers 404), lets `decide` choose,
/// sends at most one write per read (POST to create, PUT to replace) and reads again when
/// another client won in between (409 on either), up to `tries` reads in all.
pub async fn upsert<K, T>(
    client: &kube::Client,
    path: &ObjectPath,
    tries: u32,
    mut decide: impl FnMut(Option<&K>) -> Write<K, T>,
) -> Result<Updated<Option<K>, T>, UpdateError<T>>
where
    K: DeserializeOwned + serde::Serialize,
{
    let mut attempt = 1;
    loop {
        let current: Option<K> = match get(client, path).await {
            Ok(k) => Some(k),
            Err(e) if e.status() == Some(404) => None,
            Err(e) => return Err(UpdateError::Read(e)),
        };
        let (written, intent) = match decide(current.as_ref()) {
            Write::Keep(outcome) => {
                return Ok(Updated {
                    object: current,
                    outcome,
                });
            }
            Write::Create(object, intent) => {
                (create(client, &path.collection, &object).await, intent)
            }
            Write::Replace(object, intent) => (replace(client, path, &object).await, intent),
        };
        match written {
            Ok(object) => {
                return Ok(Updated {
                    object: Some(object),
                    outcome: intent,
                });
            }
            Err(e) if e.status() == Some(409) && attempt < tries => {
                log::debug!("{path} changed since it was read: reading it again");
                attempt += 1;
            }
            Err(source) => return Err(UpdateError::Write { intent, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_one_escaped_segment() {
        let url = |n: &str| ObjectPath::node(n).url();
        assert_eq!(
            url("node-1.example.com"),
            "/api/v1/nodes/node-1.example.com"
        );
        assert_eq!(
            url("node-1?dryRun=All"),
            "/api/v1/nodes/node-1%3FdryRun%3DAll"
        );
        assert_eq!(url("node-1/status"), "/api/v1/nodes/node-1%2Fstatus");
        assert_eq!(url("a#b c%"), "/api/v1/nodes/a%23b%20c%25");
        assert_eq!(url(".."), "/api/v1/nodes/%2E%2E");
        assert_eq!(
            url("../../api/v1/secrets"),
            "/api/v1/nodes/..%2F..%2Fapi%2Fv1%2Fsecrets"
        );
        assert_eq!(url("nœud"), "/api/v1/nodes/n%C5%93ud");
        assert_eq!(
            ObjectPath::namespaced_collection("/api/v1", "a/b", "events"),
            "/api/v1/namespaces/a%2Fb/events"
        );
    }

    #[test]
    fn node_names_must_be_rfc_1123_subdomains() {
        for good in ["n1", "node-1.example.com", "a", &"a".repeat(63), "1-2.3"] {
            assert!(is_subdomain(good), "{good}");
        }
        let long = vec!["a".repeat(63); 4].join(".") + ".ab";
        assert_eq!(long.len(), 258);
        for bad in [
            "",
            "Node-1",
            "node_1",
            "-n",
            "n-",
            "a..b",
            ".a",
            "a.",
            "node-1?dryRun=All",
            "node-1/status",
            "..",
            &"a".repeat(64),
            &long,
        ] {
            assert!(!is_subdomain(bad), "{bad}");
        }
    }
}
