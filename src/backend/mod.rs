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
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize)]
pub struct StageTimes {
    /// Host → device transfers (GPU) or input preparation, seconds.
    pub upload_s: f64,
    /// Reduction kernels, seconds.
    pub kernel_s: f64,
    /// Device → host transfers, seconds.
    pub readback_s: f64,
}

impl StageTimes {
    /// Adds `other` to `self`.
    pub fn add(&mut self, other: &StageTimes) {
        self.upload_s += other.upload_s;
        self.kernel_s += other.kernel_s;
        self.readback_s += other.readback_s;
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

    /// Cumulative stage times since creation.
    fn stage_times(&self) -> StageTimes {
        StageTimes::default()
    }

    /// Largest batch (events) the backend takes in one call with `ncols` value columns; the
    /// pipeline cuts its micro-batches to fit.
    fn max_batch_events(&self, _ncols: usize) -> usize {
        usize::MAX
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
