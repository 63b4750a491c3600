//! The pure half of the cordon guard: given a Node as read from the API server, decide whether we
//! may cordon it, which leftover of ours it carries, and build the one strategic-merge patch that
//! adds or removes exactly what we own. No I/O and no clock: the caller passes the timestamp.
//!
//! Every patch carries `metadata.resourceVersion`, so the API server rejects it with 409 when the
//! Node changed since our GET (an admin's cordon in between is then never claimed as ours).

use std::fmt;

use k8s_openapi::api::core::v1::{Node, Taint};
use serde_json::{Map, Value, json};

/// Our ownership annotation; its value is the RFC 3339 time we cordoned (or tainted) the node.
pub const ANNOTATION: &str = "docker-image-cleaner.io/cordoned";
/// The annotation the original Python docker-image-cleaner set with its cordon; recovered too.
pub const LEGACY_ANNOTATION: &str = "hub.jupyter.org/image-cleaner-cordoned";
/// The key of our own `NoSchedule` taint in `cordon_mode = "taint"`.
pub const TAINT_KEY: &str = "docker-image-cleaner.io/cleaning";
/// The effect of our taint: new pods stay away, running ones are left alone.
pub const TAINT_EFFECT: &str = "NoSchedule";

/// What we added to a node, and so what a release removes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// `spec.unschedulable: true`, as `kubectl cordon` sets it.
    Unschedulable,
    /// Our `NoSchedule` taint (other taints untouched).
    Taint,
}

impl fmt::Display for Hold {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Hold::Unschedulable => f.write_str("spec.unschedulable"),
            Hold::Taint => write!(f, "taint {TAINT_KEY}:{TAINT_EFFECT}"),
        }
    }
}

/// The decision at the start of a pass.
#[derive(Debug, Clone, PartialEq)]
pub enum Begin {
    /// The node already carries a cordon of ours (a leftover, or a release still pending): hold
    /// it as it is, no PATCH.
    Adopt(Hold),
    /// Someone else cordoned the node (or took over our taint by removing our annotation): clean
    /// without touching it, and never lift it.
    Foreign,
    /// Send this patch; once it is accepted we hold `Hold`.
    Patch(Hold, Value),
}

/// The cordon of ours the node carries, if any: our (or the original tool's) annotation together
/// with our taint or `spec.unschedulable`. Our taint wins: with it present, an unschedulable node
/// was cordoned by someone else meanwhile.
pub fn leftover(node: &Node) -> Option<Hold> {
    if !owned(node) {
        None
    } else if has_our_taint(node) {
        Some(Hold::Taint)
    } else if unschedulable(node) {
        Some(Hold::Unschedulable)
    } else {
        None
    }
}

/// Decides how to cordon `node` in the wanted way; `stamp` is the annotation value (now).
pub fn begin(node: &Node, want: Hold, stamp: &str) -> Begin {
    if let Some(hold) = leftover(node) {
        return Begin::Adopt(hold);
    }
    let taken = match want {
        Hold::Unschedulable => unschedulable(node),
        Hold::Taint => has_our_taint(node),
    };
    if taken {
        return Begin::Foreign;
    }
    let mut annotations = stale_annotations(node);
    annotations.insert(ANNOTATION.to_string(), Value::String(stamp.to_string()));
    let spec = match want {
        Hold::Unschedulable => json!({ "unschedulable": true }),
        Hold::Taint => {
            let mut taints = taints(node);
            taints.push(json!({ "key": TAINT_KEY, "effect": TAINT_EFFECT }));
            json!({ "taints": taints })
        }
    };
    Begin::Patch(want, patch(node, annotations, spec))
}

/// The patch that removes exactly what we added as `hold`, or `None` when our annotation is gone
/// (someone took the cordon over: leave the node as it is).
pub fn release(node: &Node, hold: Hold) -> Option<Value> {
    if !owned(node) {
        return None;
    }
    let spec = match hold {
        Hold::Unschedulable if unschedulable(node) => json!({ "unschedulable": null }),
        Hold::Taint if has_our_taint(node) => {
            let rest: Vec<Value> = taints(node)
                .into_iter()
                .filter(|t| t.get("key").and_then(Value::as_str) != Some(TAINT_KEY))
                .collect();
            // The list is atomic: send what remains, or null to drop the field as kubectl does.
            json!({ "taints": if rest.is_empty() { Value::Null } else { Value::Array(rest) } })
        }
        _ => json!({}),
    };
    Some(patch(node, stale_annotations(node), spec))
}

/// At start: the patch that lifts a leftover cordon of ours or of the original tool, or that only
/// drops a stale annotation of ours from a schedulable node (else a later admin cordon would look
/// like ours). `None` when the node carries nothing of ours.
pub fn recover(node: &Node) -> Option<(Option<Hold>, Value)> {
    if !owned(node) {
        return None;
    }
    let hold = leftover(node);
    let value = match hold {
        Some(hold) => release(node, hold)?,
        None => patch(node, stale_annotations(node), json!({})),
    };
    Some((hold, value))
}

/// The value of our annotation (or of the original tool's) on the node, for log lines.
pub fn annotation(node: &Node) -> Option<(&'static str, &str)> {
    let annotations = node.metadata.annotations.as_ref()?;
    [ANNOTATION, LEGACY_ANNOTATION]
        .into_iter()
        .find_map(|key| annotations.get(key).map(|value| (key, value.as_str())))
}

/// True when the node is cordoned, whoever did it.
pub fn unschedulable(node: &Node) -> bool {
    node.spec.as_ref().and_then(|s| s.unschedulable) == Some(true)
}

fn owned(node: &Node) -> bool {
    annotation(node).is_some()
}

fn has_our_taint(node: &Node) -> bool {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .is_some_and(|taints| taints.iter().any(is_ours))
}

fn is_ours(taint: &Taint) -> bool {
    taint.key == TAINT_KEY
}

/// The node's taints as JSON, exactly as read (the list is replaced whole by a patch).
fn taints(node: &Node) -> Vec<Value> {
    node.spec
        .as_ref()
        .and_then(|s| s.taints.as_ref())
        .map(|taints| {
            taints
                .iter()
                // Serialising a k8s-openapi struct into a Value cannot fail.
                .map(|t| serde_json::to_value(t).unwrap_or(Value::Null))
                .collect()
        })
        .unwrap_or_default()
}

/// Null entries for each of our annotations the node carries (null deletes a map key).
fn stale_annotations(node: &Node) -> Map<String, Value> {
    let present = node.metadata.annotations.as_ref();
    [ANNOTATION, LEGACY_ANNOTATION]
        .into_iter()
        .filter(|key| present.is_some_and(|a| a.contains_key(*key)))
        .map(|key| (key.to_string(), Value::Null))
        .collect()
}

fn patch(node: &Node, annotations: Map<String, Value>, spec: Value) -> Value {
    let mut metadata = Map::new();
    if !annotations.is_empty() {
        metadata.insert("annotations".into(), Value::Object(annotations));
    }
    if let Some(version) = &node.metadata.resource_version {
        metadata.insert("resourceVersion".into(), Value::String(version.clone()));
    }
    let mut patch = Map::new();
    patch.insert("metadata".into(), Value::Object(metadata));
    if spec.as_object().is_some_and(|s| !s.is_empty()) {
        patch.insert("spec".into(), spec);
    }
    Value::Object(patch)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(value: Value) -> Node {
        let mut base = json!({ "metadata": { "name": "n1", "resourceVersion": "7" } });
        merge(&mut base, value);
        serde_json::from_value(base).expect("test node")
    }

    fn merge(into: &mut Value, from: Value) {
        match (into, from) {
            (Value::Object(a), Value::Object(b)) => {
                for (k, v) in b {
                    merge(a.entry(k).or_insert(Value::Null), v);
                }
            }
            (slot, v) => *slot = v,
        }
    }

    const STAMP: &str = "2026-11-28T05:00:00Z";

    #[test]
    fn cordons_a_schedulable_node_with_our_annotation() {
        let n = node(json!({}));
        let want = json!({
            "metadata": { "annotations": { ANNOTATION: STAMP }, "resourceVersion": "7" },
            "spec": { "unschedulable": true },
        });
        assert_eq!(
            begin(&n, Hold::Unschedulable, STAMP),
            Begin::Patch(Hold::Unschedulable, want)
        );
    }

    #[test]
    fn someone_elses_cordon_is_foreign() {
        let n = node(json!({ "spec": { "unschedulable": true } }));
        assert_eq!(begin(&n, Hold::Unschedulable, STAMP), Begin::Foreign);
        assert_eq!(leftover(&n), None);
        assert_eq!(recover(&n), None);
        assert_eq!(release(&n, Hold::Unschedulable), None);
    }

    #[test]
    fn our_leftover_cordon_is_adopted_and_recovered() {
        for key in [ANNOTATION, LEGACY_ANNOTATION] {
            let n = node(json!({
                "metadata": { "annotations": { key: "true", "other": "x" } },
                "spec": { "unschedulable": true },
            }));
            assert_eq!(
                begin(&n, Hold::Taint, STAMP),
                Begin::Adopt(Hold::Unschedulable)
            );
            let want = json!({
                "metadata": { "annotations": { key: null }, "resourceVersion": "7" },
                "spec": { "unschedulable": null },
            });
            assert_eq!(recover(&n), Some((Some(Hold::Unschedulable), want)));
        }
    }

    #[test]
    fn stale_annotation_on_a_schedulable_node_is_dropped() {
        let n = node(json!({ "metadata": { "annotations": { ANNOTATION: STAMP } } }));
        let want =
            json!({ "metadata": { "annotations": { ANNOTATION: null }, "resourceVersion": "7" } });
        assert_eq!(recover(&n), Some((None, want)));
        // A new cordon overwrites it.
        assert!(matches!(
            begin(&n, Hold::Unschedulable, "t2"),
            Begin::Patch(..)
        ));
    }

    #[test]
    fn taint_mode_appends_our_taint_and_keeps_the_others() {
        let other = json!({ "key": "dedicated", "value": "gpu", "effect": "NoSchedule" });
        let old = json!({ "key": "x", "effect": "NoExecute", "timeAdded": "2026-01-01T00:00:00Z" });
        let n = node(json!({ "spec": { "taints": [other, old], "unschedulable": true } }));
        let Begin::Patch(Hold::Taint, p) = begin(&n, Hold::Taint, STAMP) else {
            panic!("expected a taint patch");
        };
        let ours = json!({ "key": TAINT_KEY, "effect": TAINT_EFFECT });
        assert_eq!(p["spec"], json!({ "taints": [other, old, ours] }));
        assert_eq!(p["metadata"]["annotations"][ANNOTATION], STAMP);
    }

    #[test]
    fn taint_release_removes_only_ours_and_leaves_unschedulable() {
        let other = json!({ "key": "dedicated", "effect": "NoSchedule" });
        let ours = json!({ "key": TAINT_KEY, "effect": TAINT_EFFECT });
        let n = node(json!({
            "metadata": { "annotations": { ANNOTATION: STAMP } },
            "spec": { "taints": [other, ours], "unschedulable": true },
        }));
        assert_eq!(leftover(&n), Some(Hold::Taint));
        let want = json!({
            "metadata": { "annotations": { ANNOTATION: null }, "resourceVersion": "7" },
            "spec": { "taints": [other] },
        });
        assert_eq!(release(&n, Hold::Taint), Some(want));
    }

    #[test]
    fn last_taint_removed_sends_null() {
        let n = node(json!({
            "metadata": { "annotations": { ANNOTATION: STAMP } },
            "spec": { "taints": [{ "key": TAINT_KEY, "effect": TAINT_EFFECT }] },
        }));
        assert_eq!(
            release(&n, Hold::Taint).expect("ours")["spec"],
            json!({ "taints": null })
        );
    }

    #[test]
    fn our_taint_without_our_annotation_is_foreign() {
        let n =
            node(json!({ "spec": { "taints": [{ "key": TAINT_KEY, "effect": TAINT_EFFECT }] } }));
        assert_eq!(begin(&n, Hold::Taint, STAMP), Begin::Foreign);
        assert_eq!(release(&n, Hold::Taint), None);
    }

    #[test]
    fn release_after_someone_uncordoned_only_drops_the_annotation() {
        let n = node(json!({ "metadata": { "annotations": { ANNOTATION: STAMP } } }));
        let want =
            json!({ "metadata": { "annotations": { ANNOTATION: null }, "resourceVersion": "7" } });
        assert_eq!(release(&n, Hold::Unschedulable), Some(want));
    }
}
