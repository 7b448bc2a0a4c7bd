//! Where a phase's time went: every process's CPU between two moments, from `/proc`.

use std::time::Instant;

use serde::Serialize;

use crate::bench::procstat::{self, ProcSample, Watched, clock_ticks_per_sec};
use crate::bench::setup::{Llmq, MockChild};

/// CPU over one phase, in cores (CPU seconds per wall second), per process.
#[derive(Debug, Clone, Serialize)]
pub struct PhaseCpu {
    pub phase: String,
    pub seconds: f64,
    pub cores: Vec<(String, f64)>,
}

/// The processes whose CPU a phase splits: the producer first, then the worker(s),
/// nats-server and the mock.
pub(super) fn processes(
    producer: Watched,
    llmq: &Llmq,
    mock: &MockChild,
) -> anyhow::Result<Vec<Watched>> {
    let this = std::process::id();
    let mut procs = vec![producer];
    procs.extend(llmq.watched()?.into_iter().filter(|w| w.pid != this));
    procs.push(Watched::new("mock", mock.pid));
    Ok(procs)
}

/// Every process's reading at one moment.
#[derive(Debug, Clone)]
pub(super) struct Snapshot {
    pub(super) at: Instant,
    pub(super) samples: Vec<Option<ProcSample>>,
}

impl Snapshot {
    pub(super) fn take(procs: &[Watched]) -> Snapshot {
        Snapshot {
            at: Instant::now(),
            samples: procs.iter().map(|p| procstat::sample(p.pid)).collect(),
        }
    }

    pub(super) fn secs_since(&self, earlier: &Snapshot) -> f64 {
        self.at.duration_since(earlier.at).as_secs_f64()
    }
}

/// A phase's CPU between two snapshots of the same processes.
pub(super) fn phase_cpu(
    phase: &str,
    procs: &[Watched],
    from: &Snapshot,
    to: &Snapshot,
) -> PhaseCpu {
    let seconds = to.secs_since(from);
    let tck = clock_ticks_per_sec() as f64;
    let cores = procs
        .iter()
        .zip(from.samples.iter().zip(&to.samples))
        .map(|(p, pair)| {
            let ticks = match pair {
                (Some(a), Some(b)) => b.cpu_ticks.saturating_sub(a.cpu_ticks),
                _ => 0,
            };
            (p.name.clone(), ticks as f64 / tck / seconds.max(1e-9))
        })
        .collect();
    PhaseCpu {
        phase: phase.to_owned(),
        seconds,
        cores,
    }
}
