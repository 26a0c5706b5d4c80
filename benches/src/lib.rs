//! Shared pieces of the report binaries in `src/bin` (the criterion benches live in `benches/`).

pub mod cgroup;
pub mod edge_load;
pub mod rig;
pub mod smtp_load;

use serde::Serialize;

/// Median, min and max of repeated measurements, with the raw samples in run order.
#[derive(Clone, Debug, Serialize)]
pub struct Spread {
    pub samples: Vec<f64>,
    pub median: f64,
    pub min: f64,
    pub max: f64,
}

impl Spread {
    pub fn of(samples: Vec<f64>) -> Self {
        let mut sorted = samples.clone();
        sorted.sort_by(|a, b| a.total_cmp(b));
        let (median, min, max) = match sorted.len() {
            0 => (f64::NAN, f64::NAN, f64::NAN),
            n => (sorted[n / 2], sorted[0], sorted[n - 1]),
        };
        Self { samples, median, min, max }
    }
}
