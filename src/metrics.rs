//! The metrics: one registry of Prometheus metric families, read from each pass's
//! [`Report`], the configuration and the cordon clock, and exported in the
//! Prometheus text format (0.0.4, encoded by the `prometheus-client` crate) two ways, each off
//! unless configured: a node_exporter textfile (`metrics_textfile`), written atomically at start
//! and after every pass, and `GET /metrics` on `metrics_listen`. Decides nothing: what it shows
//! changes nothing the daemon does, and no failure to export stops cleaning.
//!
//! - `families`: every family, its name, help and labels, and [`Families::record`], the one
//!   place a `Report` is read;
//! - `live`: the families read at every scrape (the cordon and the fleet slot, as they are now);
//! - `textfile`: the atomic write, warned about once while it fails;
//! - `serve`: the HTTP endpoint, in its own task, bounded against hostile clients.

mod families;
mod live;
mod serve;
mod textfile;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use prometheus_client::registry::Registry;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::cycle::{self, Report};
use crate::node::CordonClock;

pub use families::{Families, Reconnects};

/// The prefix of every metric name.
pub const PREFIX: &str = "docker_image_cleaner";

/// Errors of the export: only the endpoint's listener can fail the start.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `metrics_listen` cannot be bound (in use, or not an address of this host).
    #[error("cannot listen for metrics on {addr} (metrics_listen)")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// A step of writing the textfile failed (logged as a warning, never fatal).
    #[error("cannot write the metrics textfile {}: {what} {}", path.display(), file.display())]
    Textfile {
        /// The textfile (`metrics_textfile`).
        path: PathBuf,
        /// The step: "create", "write", "rename to", ...
        what: &'static str,
        /// The file of that step (the temporary file, or the textfile for the rename).
        file: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// The registry and its outputs, owned by the daemon's loop (or by `once`).
pub struct Exporter {
    registry: Arc<Registry>,
    families: Families,
    clock: CordonClock,
    textfile: Option<textfile::Textfile>,
    /// The endpoint, stopped when dropped; `None` when `metrics_listen` is off (or for `once`).
    server: Option<serve::Server>,
    listen: Option<SocketAddr>,
}

impl Exporter {
    /// The exporter of the daemon: serves `metrics_listen` until `shutdown` (an address that
    /// cannot be bound is an error), and writes the textfile now. Needs the tokio runtime.
    pub fn daemon(config: &Config, shutdown: &CancellationToken) -> Result<Exporter, Error> {
        let mut exporter = Exporter::new(config);
        if let Some(addr) = config.metrics_listen {
            let listener = serve::bind(addr)?;
            exporter.server = Some(serve::spawn(
                listener,
                addr,
                Arc::clone(&exporter.registry),
                shutdown.child_token(),
            )?);
            log::info!("serving metrics on http://{addr}/metrics");
        }
        exporter.write();
        Ok(exporter)
    }

    /// The exporter of one pass (`once`): no endpoint (the daemon's may be running); the textfile
    /// is written by [`Exporter::pass`].
    pub fn one_pass(config: &Config) -> Exporter {
        Exporter::new(config)
    }

    fn new(config: &Config) -> Exporter {
        let clock = CordonClock::default();
        let mut registry = Registry::with_prefix(PREFIX);
        let families = Families::register(&mut registry, clock.clone());
        families.configure(config);
        Exporter {
            registry: Arc::new(registry),
            families,
            clock,
            textfile: config.metrics_textfile.clone().map(textfile::Textfile::new),
            server: None,
            listen: config.metrics_listen,
        }
    }

    /// The clock the cordon guard keeps (`Cordoner::with_clock`): the cordon state and the time
    /// cordoned are read from it at every scrape.
    pub fn clock(&self) -> CordonClock {
        self.clock.clone()
    }

    /// After a pass, whatever its end (`now_ms`: the wall clock then): counts it, shows its
    /// figures, writes the textfile.
    pub fn pass(&mut self, pass: &Result<Report, cycle::Error>, now_ms: i64) {
        self.families.record(pass, now_ms);
        self.write();
    }

    /// The counter of `engine`'s event-stream reconnects, for its follower task.
    pub fn reconnects(&self, engine: &str) -> Reconnects {
        self.families.reconnects(engine)
    }

    /// A new configuration: new watermarks and engines show at once, a new textfile is written
    /// from now on; the endpoint keeps its address until a restart.
    pub fn reload(&mut self, config: &Config) {
        self.families.configure(config);
        if config.metrics_listen != self.listen {
            log::warn!(
                "metrics_listen changes only with a restart: keeping {}",
                self.listen
                    .map_or_else(|| "no endpoint".to_string(), |a| a.to_string())
            );
        }
        let path = self.textfile.as_ref().map(textfile::Textfile::path);
        if config.metrics_textfile.as_deref() != path {
            self.textfile = config.metrics_textfile.clone().map(textfile::Textfile::new);
        }
        self.write();
    }

    /// The metrics as the endpoint and the textfile show them.
    pub fn render(&self) -> Result<String, std::fmt::Error> {
        families::render(&self.registry)
    }

    fn write(&mut self) {
        let Some(t) = &mut self.textfile else { return };
        match families::render(&self.registry) {
            Ok(text) => t.write(&text),
            Err(e) => log::warn!("cannot encode the metrics for the textfile: {e}"),
        }
    }
}

#[cfg(test)]
mod tests;
