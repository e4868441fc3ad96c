//! HDR histograms of microseconds, shipped between processes as (value, count) pairs
//! and merged by the coordinator.

use hdrhistogram::Histogram;
use serde::{Deserialize, Serialize};

/// A new histogram of 1 µs .. 120 s at 3 significant digits.
pub fn new() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 120_000_000, 3).expect("static bounds")
}

/// Records microseconds, clamped into range.
pub fn record(h: &mut Histogram<u64>, us: u64) {
    let _ = h.record(us.clamp(1, 120_000_000));
}

/// A histogram as recorded (value, count) pairs.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Dump(pub Vec<(u64, u64)>);

/// Dumps the recorded values.
pub fn dump(h: &Histogram<u64>) -> Dump {
    Dump(
        h.iter_recorded()
            .map(|v| (v.value_iterated_to(), v.count_at_value()))
            .collect(),
    )
}

/// Merges dumps into one histogram.
pub fn merge<'a>(dumps: impl IntoIterator<Item = &'a Dump>) -> Histogram<u64> {
    let mut h = new();
    for d in dumps {
        for &(v, n) in &d.0 {
            let _ = h.record_n(v.clamp(1, 120_000_000), n);
        }
    }
    h
}

/// Percentiles in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Summary {
    pub count: u64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub p999_ms: f64,
    pub max_ms: f64,
    pub mean_ms: f64,
}

/// Summarises a histogram of microseconds.
pub fn summary(h: &Histogram<u64>) -> Summary {
    if h.is_empty() {
        return Summary::default();
    }
    let ms = |us: u64| us as f64 / 1000.0;
    Summary {
        count: h.len(),
        p50_ms: ms(h.value_at_quantile(0.50)),
        p90_ms: ms(h.value_at_quantile(0.90)),
        p99_ms: ms(h.value_at_quantile(0.99)),
        p999_ms: ms(h.value_at_quantile(0.999)),
        max_ms: ms(h.max()),
        mean_ms: h.mean() / 1000.0,
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dump_merge_keeps_quantiles() {
        let mut a = super::new();
        let mut b = super::new();
        for i in 1..=1000 {
            super::record(&mut a, i);
            super::record(&mut b, i + 1000);
        }
        let m = super::merge([&super::dump(&a), &super::dump(&b)]);
        assert_eq!(m.len(), 2000);
        let s = super::summary(&m);
        assert!((s.p50_ms - 1.0).abs() < 0.01, "{s:?}");
    }
}
