//! The families read at every scrape rather than fed after a pass: the cordon and the fleet slot
//! as they are now (a pass may be holding them), from the [`CordonClock`] the guard shares.
//! Reads the clock; changes nothing.

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;

use crate::node::CordonClock;

/// The families read at every scrape: the cordon, as it is now (a pass may be holding it).
#[derive(Debug)]
pub(super) struct Live {
    clock: CordonClock,
}

impl Live {
    /// The families of `clock`.
    pub(super) fn new(clock: CordonClock) -> Live {
        Live { clock }
    }
}

impl Collector for Live {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let held = ConstGauge::new(i64::from(self.clock.held()));
        held.encode(encoder.encode_descriptor(
            "node_cordoned",
            "1 while the node is held cordoned (or tainted) by us, 0 otherwise; a cordon by someone else is 0.",
            None,
            held.metric_type(),
        )?)?;
        let seconds = ConstCounter::new(self.clock.total().as_secs_f64());
        seconds.encode(encoder.encode_descriptor(
            "node_cordoned_seconds",
            "Seconds the node was held cordoned (or tainted) by us, the current hold included.",
            None,
            seconds.metric_type(),
        )?)?;
        // Fleet slots, when configured: read the same way from what the guard shares.
        if let Some((held, waited)) = self.clock.slot() {
            let held = ConstGauge::new(i64::from(held));
            held.encode(encoder.encode_descriptor(
                "fleet_slot_held",
                "1 while this node holds one of the fleet's cleaning slots (a Lease), 0 otherwise.",
                None,
                held.metric_type(),
            )?)?;
            let waited = ConstCounter::new(waited.as_secs_f64());
            waited.encode(encoder.encode_descriptor(
                "fleet_slot_wait_seconds",
                "Seconds passes spent waiting for a free cleaning slot (every slot held by other nodes), waits that ended.",
                None,
                waited.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
