//! The Event posted on the Node at the end of a pass, shaped like the kubelet's node events
//! (namespace `default`, `involvedObject` the Node, `source.host` the node name). Failing to post
//! one is logged, never fatal.

use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, PostParams};

use super::chain;
use super::error::{Error, KubeError};
use super::{COMPONENT, Cordoner, EVENT_NAMESPACE, NodeEvent};

impl Cordoner {
    pub(super) async fn post(&mut self, event: &NodeEvent) {
        let Some(node) = self.node.clone() else {
            return;
        };
        if self.dry_run {
            return;
        }
        let result = async {
            let client = self.connect().await?;
            // The kubelet's convention when the uid is unknown: the node name (kubectl
            // describe node finds both).
            let uid = self.node_uid.clone().unwrap_or_else(|| node.clone());
            let object = node_event(&node, &uid, event, Timestamp::now());
            Api::<Event>::namespaced(client, EVENT_NAMESPACE)
                .create(&PostParams::default(), &object)
                .await
                .map_err(|e| Error::Event {
                    node: node.clone(),
                    reason: event.reason,
                    source: KubeError(e),
                })
        }
        .await;
        match result {
            Ok(_) => log::info!(
                "posted event {} on node {node}: {}",
                event.reason,
                event.message
            ),
            Err(e @ Error::NoKubeconfig { .. }) => log::debug!("event not posted: {}", chain(&e)),
            Err(e) => log::warn!("{}", chain(&e)),
        }
    }
}

/// The core/v1 Event posted on the Node, shaped like the kubelet's own node events.
pub fn node_event(node: &str, uid: &str, event: &NodeEvent, now: Timestamp) -> Event {
    Event {
        metadata: ObjectMeta {
            name: Some(format!("{node}.{:x}", now.as_nanosecond())),
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
}
