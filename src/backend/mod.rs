//! Aggregation backends: the one trait every implementation fills in, and the choice between them.
//!
//! ```text
//!   host (window/)                         backend                      host (window/)
//!   events ─► slot per event ─► SlotBatch ─► reduce per slot ─► Partials ─► merge into panes /
//!            (key × pane × epoch,                                            sessions, fire
//!             or session fragment)
//! ```
//!
//! The host assigns every on-time event a *slot*: a dense, batch-local index that stands for one
//! `(key, pane, epoch)` or one session fragment; late events get [`SKIP_SLOT`]. A backend reduces
//! `(slot, values)` into one [`Partials`] entry per slot — the shape of DataFusion's
//! `GroupsAccumulator::update_batch` with group indices — and the host merges those partials into
//! the window state it owns (plain data, serialisable). One call per micro-batch: a device wants
//! large batches and few round trips.

pub mod cpu;
pub mod gpu;
pub mod reference;

use crate::agg::ColPartial;
use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// Slot value for events that are not aggregated (late events).
pub const SKIP_SLOT: u32 = u32::MAX;

/// One micro-batch of work for a backend.
#[derive(Clone, Copy, Debug)]
pub struct SlotBatch<'a> {
    /// Slot per event, `< num_slots` or [`SKIP_SLOT`].
    pub slots: &'a [u32],
    /// Value columns, each as long as `slots`.
    pub values: &'a [Vec<f64>],
    /// Number of distinct slots.
    pub num_slots: usize,
    /// Whether var/std are requested (the second moment must be kept).
    pub want_m2: bool,
}

/// Per-slot partial aggregates returned by a backend.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Partials {
    /// Value columns.
    pub ncols: usize,
    /// Events per slot.
    pub count: Vec<u64>,
    /// `cols[slot * ncols + c]`.
    pub cols: Vec<ColPartial>,
}

impl Partials {
    /// Resets to `num_slots` identity entries of `ncols` columns.
    pub fn reset(&mut self, num_slots: usize, ncols: usize) {
        self.ncols = ncols;
        self.count.clear();
        self.count.resize(num_slots, 0);
        self.cols.clear();
        self.cols.resize(num_slots * ncols, ColPartial::IDENTITY);
    }

    /// Number of slots.
    pub fn len(&self) -> usize {
        self.count.len()
    }

    /// True when there are no slots.
    pub fn is_empty(&self) -> bool {
        self.count.is_empty()
    }

    /// The partials of one slot.
    pub fn slot(&self, s: usize) -> &[ColPartial] {
        &self.cols[s * self.ncols..(s + 1) * self.ncols]
    }

    /// Merges `other` (same shape) into `self`, slot by slot.
    pub fn combine(&mut self, other: &Partials) {
        for (a, b) in self.count.iter_mut().zip(&other.count) {
            *a += *b;
        }
        for (a, b) in self.cols.iter_mut().zip(&other.cols) {
            a.combine(b);
        }
    }
}

/// Time spent in each stage of a backend, for metrics and benchmarks.
///
/// On a pipelined backend (the GPU with [`AggBackend::submit`]) the device works on one batch
/// while the host uploads the next, so `kernel_s` is the time the host *waited* for the device
/// (zero when the overlap hides the kernels completely); the synchronous [`AggBackend::reduce`]
/// measures kernels alone.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct StageTimes {
    /// Host → device transfers (GPU) or input preparation, seconds.
    pub upload_s: f64,
    /// Reduction kernels (or waiting for them, when pipelined), seconds.
    pub kernel_s: f64,
    /// Device → host transfers, seconds.
    pub readback_s: f64,
    /// Batches the device completed (GPU; 0 on backends that reduce on the host).
    pub batches: u64,
    /// Batches that were submitted while another was still in flight on the device.
    pub overlapped: u64,
}

impl StageTimes {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &StageTimes) {
        self.upload_s += other.upload_s;
        self.kernel_s += other.kernel_s;
        self.readback_s += other.readback_s;
        self.batches += other.batches;
        self.overlapped += other.overlapped;
    }
}

/// What [`AggBackend::submit`] did with a batch.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Submitted {
    /// The result is already in `out`.
    Ready,
    /// The device is working on it; take it with [`AggBackend::complete`].
    InFlight,
}

/// How a backend chose its micro-batch size: the fixed cost of one batch (submit, synchronise,
/// read back) against the cost per event, so that the fixed part stays below
/// [`BatchPolicy::MAX_FIXED_SHARE`] of a batch's time.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct BatchPolicy {
    /// Seconds one batch costs whatever its size (measured with a one-event batch).
    pub fixed_s: f64,
    /// Seconds per event beyond the fixed cost (measured with a large batch).
    pub per_event_s: f64,
    /// The chosen micro-batch size, events.
    pub batch_events: usize,
    /// `fixed_s / (fixed_s + batch_events * per_event_s)`: the share of a batch's time that is
    /// fixed cost at the chosen size.
    pub fixed_share: f64,
}

impl BatchPolicy {
    /// The largest share of a batch's time the fixed cost may take.
    pub const MAX_FIXED_SHARE: f64 = 0.10;

    /// The smallest batch (a power of two in `[min, max]`) whose fixed share is at most
    /// [`Self::MAX_FIXED_SHARE`]; `max` when none is small enough.
    pub fn choose(fixed_s: f64, per_event_s: f64, min: usize, max: usize) -> BatchPolicy {
        let fixed_s = fixed_s.max(0.0);
        let per_event_s = per_event_s.max(1e-15);
        let share = |n: usize| fixed_s / (fixed_s + n as f64 * per_event_s);
        let min = min.max(1).next_power_of_two();
        let mut n = min;
        while n < max && share(n) > Self::MAX_FIXED_SHARE {
            n = n.saturating_mul(2);
        }
        let n = n.min(max.max(1));
        BatchPolicy {
            fixed_s,
            per_event_s,
            batch_events: n,
            fixed_share: share(n),
        }
    }
}

/// The aggregation backend trait.
///
/// `reduce` must give the same answer on every backend: `count`, `n`, `min`, `max` exactly;
/// `sum` and `m2` within the tolerances of DESIGN.md §4.
pub trait AggBackend: Send {
    /// Which backend this is.
    fn kind(&self) -> BackendKind;

    /// A one-line description for reports (for the GPU: adapter name, driver, API, software or
    /// hardware).
    fn describe(&self) -> String;

    /// Reduces one batch into `out`, which is reset to `batch.num_slots` entries first.
    fn reduce(&mut self, batch: &SlotBatch<'_>, ncols: usize, out: &mut Partials) -> Result<()>;

    /// Whether the pipeline may leave tumbling and sliding windows out of this backend and fold
    /// each event straight into its pane's row while it assigns it (one pass over the events, no
    /// slots, no partials to merge). True for a backend whose reduce is that same scatter on the
    /// host (the CPU); a device keeps the slot path, which hands it whole batches.
    fn reduces_in_place(&self) -> bool {
        false
    }

    /// Cumulative stage times since creation.
    fn stage_times(&self) -> StageTimes {
        StageTimes::default()
    }

    /// Largest batch (events) the backend takes in one call with `ncols` value columns; the
    /// pipeline cuts its micro-batches to fit.
    fn max_batch_events(&self, _ncols: usize) -> usize {
        usize::MAX
    }

    /// The micro-batch size the backend works best with when the user sets none. The GPU
    /// measures its fixed per-batch cost once and picks a size by [`BatchPolicy::choose`].
    fn preferred_batch_events(&mut self, _ncols: usize) -> Result<usize> {
        Ok(crate::pipeline::DEFAULT_BATCH_SIZE)
    }

    /// How the preferred batch size was chosen, once [`Self::preferred_batch_events`] has run
    /// (backends without a per-batch fixed cost have none).
    fn batch_policy(&self) -> Option<BatchPolicy> {
        None
    }

    /// Starts reducing `batch`. A synchronous backend reduces into `out` at once and returns
    /// [`Submitted::Ready`] (the default). A pipelined backend uploads and dispatches, returns
    /// [`Submitted::InFlight`], and hands the result out later through [`Self::complete`], so
    /// the device works while the host prepares the next batch. At most
    /// [`Self::max_in_flight`] batches may be in flight at once.
    fn submit(&mut self, batch: &SlotBatch<'_>, ncols: usize, out: &mut Partials) -> Result<Submitted> {
        self.reduce(batch, ncols, out).map(|_| Submitted::Ready)
    }

    /// Completes the oldest in-flight batch into `out` (reset first). `batch` must be the batch
    /// it was submitted with: a backend may recompute it when the device result cannot be used
    /// (values beyond the device's range).
    fn complete(&mut self, _batch: &SlotBatch<'_>, _ncols: usize, _out: &mut Partials) -> Result<()> {
        Err(Error::config("complete() called with no batch in flight"))
    }

    /// How many batches may be in flight at once (0 for a synchronous backend).
    fn max_in_flight(&self) -> usize {
        0
    }
}

/// Which backend exists or was chosen.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, serde::Serialize)]
pub enum BackendKind {
    /// The scalar test oracle.
    Reference,
    /// The multi-threaded CPU backend.
    Cpu,
    /// WGSL compute shaders through wgpu.
    Gpu,
}

impl fmt::Display for BackendKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendKind::Reference => "reference",
            BackendKind::Cpu => "cpu",
            BackendKind::Gpu => "gpu",
        })
    }
}

/// What the user asks for: `auto | cpu | gpu | reference`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum BackendChoice {
    /// A hardware GPU adapter when one exists, otherwise the CPU backend.
    #[default]
    Auto,
    /// The CPU backend.
    Cpu,
    /// The GPU backend; an error when no adapter exists (a software adapter is accepted).
    Gpu,
    /// The reference backend (slow; for tests and debugging).
    Reference,
}

impl fmt::Display for BackendChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            BackendChoice::Auto => "auto",
            BackendChoice::Cpu => "cpu",
            BackendChoice::Gpu => "gpu",
            BackendChoice::Reference => "reference",
        })
    }
}

impl FromStr for BackendChoice {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "auto" => BackendChoice::Auto,
            "cpu" => BackendChoice::Cpu,
            "gpu" => BackendChoice::Gpu,
            "reference" | "ref" => BackendChoice::Reference,
            other => {
                return Err(Error::config(format!(
                    "unknown backend '{other}'; expected auto, cpu, gpu or reference"
                )));
            }
        })
    }
}

/// The backend chosen for a choice, and why.
pub struct Selected {
    /// The backend.
    pub backend: Box<dyn AggBackend>,
    /// A line for the user: which backend and why (e.g. "auto: no hardware GPU adapter, using cpu").
    pub reason: String,
}

/// Opens the backend for `choice`. `threads` applies to the CPU backend (0 = all cores).
pub fn select(choice: BackendChoice, threads: usize) -> Result<Selected> {
    match choice {
        BackendChoice::Reference => Ok(Selected {
            backend: Box::new(reference::ReferenceBackend),
            reason: "reference backend (scalar oracle) as requested".into(),
        }),
        BackendChoice::Cpu => {
            let b = cpu::CpuBackend::new(threads);
            let reason = format!("cpu backend as requested ({})", b.describe());
            Ok(Selected {
                backend: Box::new(b),
                reason,
            })
        }
        BackendChoice::Gpu => {
            let b = gpu::GpuBackend::new(gpu::AdapterPreference::AnyIncludingSoftware)?;
            let reason = format!("gpu backend as requested: {}", b.describe());
            Ok(Selected {
                backend: Box::new(b),
                reason,
            })
        }
        BackendChoice::Auto => match gpu::GpuBackend::new(gpu::AdapterPreference::HardwareOnly) {
            Ok(b) => {
                let reason = format!("auto: chose the gpu backend on {}", b.describe());
                Ok(Selected {
                    backend: Box::new(b),
                    reason,
                })
            }
            Err(e) => {
                let b = cpu::CpuBackend::new(threads);
                let reason = format!("auto: chose the cpu backend ({}) because {e}", b.describe());
                Ok(Selected {
                    backend: Box::new(b),
                    reason,
                })
            }
        },
    }
}

/// Tolerances for comparing two backends' partials (DESIGN.md §4).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// Relative tolerance of sums, means and variances.
    pub rel: f64,
    /// Relative tolerance of standard deviations.
    pub rel_std: f64,
}

impl Tolerance {
    /// The GPU contract: 1e-5 relative, 1e-4 for std.
    pub const GPU: Tolerance = Tolerance {
        rel: 1e-5,
        rel_std: 1e-4,
    };
    /// Two f64 CPU paths: 1e-9 relative.
    pub const CPU: Tolerance = Tolerance {
        rel: 1e-9,
        rel_std: 1e-9,
    };
}

/// Checks that `actual` matches `expected` slot by slot: counts, `n`, `min` and `max` exactly;
/// sums within `tol.rel` of the larger of the sum and the slot's largest magnitude (a sum that
/// cancels to almost zero is judged against the values that went into it); `m2` within
/// `tol.rel`, the standard deviation within `tol.rel_std`. The error names the first mismatch.
pub fn check_parity(actual: &Partials, expected: &Partials, tol: Tolerance) -> Result<(), String> {
    if actual.count.len() != expected.count.len() || actual.ncols != expected.ncols {
        return Err(format!(
            "shape {}x{} vs {}x{}",
            actual.count.len(),
            actual.ncols,
            expected.count.len(),
            expected.ncols
        ));
    }
    let close = |a: f64, b: f64, scale: f64, rel: f64| {
        if a.is_nan() || b.is_nan() {
            return a.is_nan() && b.is_nan();
        }
        if a.is_infinite() || b.is_infinite() {
            return a == b;
        }
        (a - b).abs() <= rel * scale.max(b.abs()) + f64::MIN_POSITIVE
    };
    for s in 0..actual.count.len() {
        if actual.count[s] != expected.count[s] {
            return Err(format!("slot {s}: count {} vs {}", actual.count[s], expected.count[s]));
        }
        for c in 0..actual.ncols {
            let (a, e) = (&actual.cols[s * actual.ncols + c], &expected.cols[s * actual.ncols + c]);
            if (a.n, a.min, a.max) != (e.n, e.min, e.max) {
                return Err(format!(
                    "slot {s} column {c}: (n, min, max) {:?} vs {:?}",
                    (a.n, a.min, a.max),
                    (e.n, e.min, e.max)
                ));
            }
            if e.n == 0 {
                continue;
            }
            let mag = crate::agg::from_order_key(e.min)
                .abs()
                .max(crate::agg::from_order_key(e.max).abs());
            if !close(a.sum, e.sum, mag, tol.rel) {
                return Err(format!("slot {s} column {c}: sum {} vs {}", a.sum, e.sum));
            }
            if e.n > 1 {
                let (va, ve) = (a.m2 / (a.n - 1) as f64, e.m2 / (e.n - 1) as f64);
                // a variance that is tiny next to the mean's magnitude is judged on that scale
                let scale = ve.abs().max(mag * mag * 1e-12);
                if !close(va, ve, scale, tol.rel)
                    || !close(va.max(0.0).sqrt(), ve.max(0.0).sqrt(), scale.sqrt(), tol.rel_std)
                {
                    return Err(format!("slot {s} column {c}: variance {va} vs {ve}"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::BatchPolicy;

    #[test]
    fn batch_policy_picks_the_smallest_size_under_the_fixed_share() {
        // 2 ms fixed, 100 ns per event: 9 x 2 ms / 100 ns = 180,000 events -> 262,144.
        let p = BatchPolicy::choose(2e-3, 1e-7, 1 << 16, 1 << 24);
        assert_eq!(p.batch_events, 1 << 18);
        assert!(p.fixed_share <= BatchPolicy::MAX_FIXED_SHARE);
        let half = BatchPolicy::choose(2e-3, 1e-7, 1 << 16, 1 << 17);
        assert_eq!(half.batch_events, 1 << 17, "capped at the device maximum");
        assert!(half.fixed_share > BatchPolicy::MAX_FIXED_SHARE);
        // a cheap submit keeps the minimum
        assert_eq!(BatchPolicy::choose(1e-6, 1e-7, 1 << 16, 1 << 24).batch_events, 1 << 16);
        // an H100-like device: 0.3 ms fixed, 0.5 ns per event -> 16M cap
        let h = BatchPolicy::choose(3e-4, 5e-10, 1 << 16, 1 << 24);
        assert!(h.batch_events >= 1 << 22, "{h:?}");
    }
}
