//! One integration-test binary; shared helpers live in `util`.

mod clean;
mod config;
mod cordon;
mod docker_harness;
mod kube_fake;
mod kubectl;
mod lifecycle;
mod podman;
mod usage;
mod util;
