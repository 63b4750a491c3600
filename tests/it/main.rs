//! One integration-test binary; shared helpers live in `util`.

mod clean;
mod docker_harness;
mod usage;
mod util;
