//! One integration-test binary; shared helpers live in `util`.

mod busy;
mod clean;
mod config;
mod cordon;
mod credentials;
mod cri;
mod docker_harness;
mod engines;
mod fleet;
mod inputs;
mod kube_daemon;
mod kube_fake;
mod kubectl;
mod lifecycle;
mod metrics;
mod operator;
mod podman;
mod races;
mod react;
mod reclaim;
mod state;
mod stores;
mod usage;
mod util;
