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

    /// Threads used to reduce `events` events into `slots` slots. Each extra thread costs a
    /// reset and a merge of a whole slot-indexed partial buffer on the calling thread: worth it
    /// only while the slots are few next to the events (with about one slot per event, as for
    /// uniform keys in short windows, one thread is the fastest).
    fn threads_for(&self, events: usize, slots: usize) -> usize {
        if events < PARALLEL_MIN_EVENTS {
            return 1;
        }
        let by_slots = 1 + events / (4 * slots.max(1));
        self.threads
            .min(events / (PARALLEL_MIN_EVENTS / 2))
            .min(by_slots)
            .max(1)
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
            "cpu, {} reduce thread{}",
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }

    fn reduce(&mut self, batch: &SlotBatch<'_>, ncols: usize, out: &mut Partials) -> Result<()> {
        let t0 = Instant::now();
        let n = batch.slots.len();
        let threads = self.threads_for(n, batch.num_slots);
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

    fn reduces_in_place(&self) -> bool {
        true
    }

    fn stage_times(&self) -> StageTimes {
        self.times
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::SKIP_SLOT;
    use crate::backend::reference::ReferenceBackend;

    #[test]
    fn threads_follow_the_slot_share_and_every_split_equals_the_reference() {
        let cpu = CpuBackend::new(4);
        assert_eq!(cpu.threads_for(1000, 10), 1, "small batches stay on one thread");
        assert_eq!(cpu.threads_for(200_000, 16), 4);
        assert_eq!(
            cpu.threads_for(200_000, 150_000),
            1,
            "about a slot per event: one thread"
        );
        assert_eq!(cpu.threads_for(200_000, 25_000), 3);
        let n = 200_000;
        for num_slots in [16usize, 25_000, 150_000] {
            // integer values: sums are exact in any order, so partials compare equal
            let slots: Vec<u32> = (0..n)
                .map(|i| {
                    if i % 97 == 0 {
                        SKIP_SLOT
                    } else {
                        ((i * 7919) % num_slots) as u32
                    }
                })
                .collect();
            let values = vec![(0..n).map(|i| ((i * 31) % 1000) as f64 - 500.0).collect::<Vec<f64>>()];
            for want_m2 in [false, true] {
                let batch = SlotBatch {
                    slots: &slots,
                    values: &values,
                    num_slots,
                    want_m2,
                };
                let (mut a, mut b) = (Partials::default(), Partials::default());
                CpuBackend::new(4).reduce(&batch, 1, &mut a).unwrap();
                ReferenceBackend.reduce(&batch, 1, &mut b).unwrap();
                assert_eq!(a.count, b.count, "{num_slots} slots");
                for (x, y) in a.cols.iter().zip(&b.cols) {
                    assert_eq!(
                        (x.n, x.sum, x.min, x.max),
                        (y.n, y.sum, y.min, y.max),
                        "{num_slots} slots"
                    );
                    if want_m2 {
                        assert!(
                            (x.m2 - y.m2).abs() <= 1e-9 * y.m2.abs().max(1.0),
                            "{num_slots} slots m2"
                        );
                    }
                }
            }
        }
    }
}
