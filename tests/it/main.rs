//! One integration-test binary; shared helpers live in `util`.

mod usage;
mod util;
