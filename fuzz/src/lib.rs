//! The checks behind the fuzz targets. They live in `checks.rs` so that the regression
//! test `crates/sip-core/tests/fuzz_regressions.rs` runs exactly the same code.

mod checks;

pub use checks::{check_framer, check_message, check_sdp, check_uri};
