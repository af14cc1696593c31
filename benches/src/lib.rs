//! Shared pieces of the criterion benchmarks (`benches/benches/*.rs`); the
//! load harnesses are `compare.py`, `membership.py` and `src/bin/`.

use std::time::Duration;

use criterion::Criterion;

/// Short warm-up and measurement so both suites finish in about 3 minutes.
pub fn criterion_config() -> Criterion {
    Criterion::default().warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3))
}
