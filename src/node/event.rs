//! The Event posted on the Node at the end of a pass, shaped like the kubelet's node events
//! (namespace `default`, `involvedObject` the Node, `source.host` the node name). Failing to post
//! one is logged, never fatal.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;

use super::api::{self, ObjectPath};
use super::error::{Error, KubeError};
use super::timing::timed_out;
use super::{COMPONENT, Cordoner, EVENT_NAMESPACE, NodeEvent, chain};

/// The longest object name Kubernetes accepts (an RFC 1123 subdomain).
const MAX_NAME: usize = 253;

impl Cordoner {
    /// Posts `event` on the Node within the call budget; a failure is logged, never fatal.
    pub(super) async fn post(&mut self, event: &NodeEvent) {
        let Some(node) = self.node.clone() else {
            return;
        };
        if self.dry_run {
            return;
        }
        let budget = self.timing.call_budget;
        let result = tokio::time::timeout(budget, self.try_post(&node, event))
            .await
            .unwrap_or_else(|_| Err(timed_out("posting an event", &node, budget)));
        match result {
            Ok(()) => log::info!(
                "posted event {} on node {node}: {}",
                event.reason,
                event.message
            ),
            Err(e @ Error::NoKubeconfig { .. }) => log::debug!("event not posted: {}", chain(&e)),
            Err(e) => {
                // Not fatal, and not what `describe()` reports; a refused credential still goes.
                if e.status() == Some(401) {
                    self.link.forget();
                }
                log::warn!("{}", chain(&e));
            }
        }
    }

    async fn try_post(&mut self, node: &str, event: &NodeEvent) -> Result<(), Error> {
        let client = self.client().await?;
        // The kubelet's convention when the uid is unknown: the node name (kubectl describe
        // node finds both).
        let uid = self.pass_uid.clone().unwrap_or_else(|| node.to_string());
        let object = node_event(node, &uid, event, Timestamp::now());
        let events = ObjectPath::namespaced_collection("/api/v1", EVENT_NAMESPACE, "events");
        api::create::<Event>(&client, &events, &object)
            .await
            .map(|_| ())
            .map_err(|source: KubeError| Error::Event {
                node: node.to_string(),
                reason: event.reason,
                source,
            })
    }
}

/// `{node}.{nanoseconds in hex}` as the kubelet names its events, the node part shortened when
/// the whole would pass the 253 characters of a name (and trimmed to end in a letter or digit).
fn event_name(node: &str, now: Timestamp) -> String {
    let suffix = format!(".{:x}", now.as_nanosecond());
    let room = MAX_NAME.saturating_sub(suffix.len());
    let mut prefix: String = node.chars().take(room).collect();
    while prefix.ends_with(['.', '-']) {
        prefix.pop();
    }
    format!("{prefix}{suffix}")
}

/// The core/v1 Event posted on the Node, shaped like the kubelet's own node events.
pub fn node_event(node: &str, uid: &str, event: &NodeEvent, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(event_name(node, now)),
            namespace: Some(EVENT_NAMESPACE.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("v1".to_string()),
            kind: Some("Node".to_string()),
            name: Some(node.to_string()),
            uid: Some(uid.to_string()),
            ..ObjectReference::default()
        },
        reason: Some(event.reason.to_string()),
        message: Some(event.message.clone()),
        type_: Some(if event.warning { "Warning" } else { "Normal" }.to_string()),
        source: Some(EventSource {
            component: Some(COMPONENT.to_string()),
            host: Some(node.to_string()),
        }),
        first_timestamp: Some(Time(now)),
        last_timestamp: Some(Time(now)),
        count: Some(1),
        reporting_component: Some(COMPONENT.to_string()),
        reporting_instance: Some(node.to_string()),
        ..Event::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_is_shaped_like_the_kubelets() {
        let now = Timestamp::from_second(1_800_000_000).expect("valid");
        let event = NodeEvent {
            warning: true,
            reason: "FreeDiskSpaceFailed",
            message: "still 91% used, 3.2 GiB short of the low watermark".to_string(),
        };
        let value = serde_json::to_value(node_event("n1", "uid-1", &event, now)).expect("json");
        assert_eq!(value["metadata"]["namespace"], "default");
        assert!(
            value["metadata"]["name"]
                .as_str()
                .is_some_and(|n| n.starts_with("n1."))
        );
        assert_eq!(value["involvedObject"]["kind"], "Node");
        assert_eq!(value["involvedObject"]["uid"], "uid-1");
        assert_eq!(value["type"], "Warning");
        assert_eq!(value["source"]["component"], COMPONENT);
        assert_eq!(value["source"]["host"], "n1");
        assert_eq!(value["firstTimestamp"], "2027-01-15T08:00:00Z");
    }

    #[test]
    fn event_names_stay_valid_names() {
        let now = Timestamp::from_second(1_800_000_000).expect("valid");
        assert_eq!(
            event_name("n1", now),
            format!("n1.{:x}", now.as_nanosecond())
        );
        let long = format!("{}.{}", vec!["a".repeat(60); 3].join("."), "b-c".repeat(20));
        let name = event_name(&long, now);
        assert!(name.len() <= MAX_NAME, "{}", name.len());
        assert!(super::super::is_subdomain(&name), "{name}");
    }
}
