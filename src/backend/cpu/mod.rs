//! The CPU backend: the fast fallback, multi-threaded over all cores, no per-event allocation.
//!
//! Each thread reduces a contiguous range of the batch into its own slot-indexed partial buffer
//! ([`reduce::reduce_slots`]); the buffers are then merged slot by slot
//! ([`reduce::merge_partials`], with the one `ColPartial::combine` every backend uses). Buffers
//! are kept between batches. The GPU's sort-based kernels have sequential twins of the same
//! names in [`mirror`].

pub mod mirror;
pub mod reduce;

use super::{AggBackend, BackendKind, Partials, SlotBatch, StageTimes};
use crate::error::Result;
use std::time::Instant;

/// Batches smaller than this are reduced on one thread (thread start-up would dominate).
const PARALLEL_MIN_EVENTS: usize = 1 << 15;

/// The multi-threaded CPU backend.
pub struct CpuBackend {
    threads: usize,
    scratch: Vec<Partials>,
    times: StageTimes,
}

impl CpuBackend {
    /// A backend using `threads` threads (0 = every available core).
    pub fn new(threads: usize) -> Self {
        let threads = if threads == 0 {
            std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
        } else {
            threads
        };
        CpuBackend {
            threads,
            scratch: vec![],
            times: StageTimes::default(),
        }
    }

    /// Number of worker threads.
    pub fn threads(&self) -> usize {
        self.threads
    }
}

impl AggBackend for CpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Cpu
    }

    fn describe(&self) -> String {
        format!(
            "cpu, {} thread{}",
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }

    fn reduce(&mut self, batch: &SlotBatch<'_>, ncols: usize, out: &mut Partials) -> Result<()> {
        let t0 = Instant::now();
        let n = batch.slots.len();
        let threads = if n < PARALLEL_MIN_EVENTS {
            1
        } else {
            self.threads.min(n / (PARALLEL_MIN_EVENTS / 2)).max(1)
        };
        out.reset(batch.num_slots, ncols);
        if threads == 1 {
            reduce::reduce_slots(batch, 0..n, out);
        } else {
            self.scratch.resize_with(threads - 1, Partials::default);
            for s in &mut self.scratch {
                s.reset(batch.num_slots, ncols);
            }
            let chunk = n.div_ceil(threads);
            std::thread::scope(|scope| {
                for (t, part) in self.scratch.iter_mut().enumerate() {
                    let lo = (t + 1) * chunk;
                    let hi = ((t + 2) * chunk).min(n);
                    scope.spawn(move || reduce::reduce_slots(batch, lo..hi, part));
                }
                reduce::reduce_slots(batch, 0..chunk.min(n), out);
            });
            for part in &self.scratch {
                reduce::merge_partials(out, part);
            }
        }
        self.times.kernel_s += t0.elapsed().as_secs_f64();
        Ok(())
    }

    fn stage_times(&self) -> StageTimes {
        self.times
    }
}
