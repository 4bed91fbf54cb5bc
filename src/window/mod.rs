//! Event-time windows: specs, the per-event watermark, and the two halves of every window kind —
//! the **assigner** (per event: watermark, lateness, slot) and the **store** (window state,
//! firing, purging).
//!
//! ```text
//!  batch ─► Assigner::assign ─► slots + Plan ─► backend.reduce ─► Partials ─► Store::apply ─► rows
//!            (sequential,          │                                          ▲
//!             structure only)      └──────────── plan (slot → key/pane/session) ┘
//! ```
//!
//! The assigner owns only structure that follows from timestamps and keys; the store owns the
//! aggregates. The two can therefore run on different threads, one batch apart.

pub mod panes;
pub mod session;
pub mod spec;
pub mod watermark;

pub use spec::{PaneLayout, WindowSpec};
pub use watermark::Watermark;

use crate::agg::{Aggregates, SumPartial};
use crate::backend::Partials;
use crate::batch::KeyOrder;
use crate::output::WindowRows;
use panes::{PaneAssigner, PanePlan, PaneStore};
use session::{SessionAssigner, SessionPlan, SessionStore};

/// `end - 1 + lateness`: the watermark at which a window ending at `end` is purged.
#[inline]
pub fn cleanup_time(end: i64, lateness: i64) -> i64 {
    end.saturating_sub(1).saturating_add(lateness)
}

/// What the assigner hands the store for one batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Plan {
    /// Tumbling or sliding windows.
    Panes(PanePlan),
    /// Tumbling or sliding windows whose state is counts and sums ([`SumPartial`]).
    SumPanes(PanePlan<SumPartial>),
    /// Session windows.
    Sessions(SessionPlan),
}

impl Plan {
    /// An empty plan of the kind `spec` needs.
    pub fn for_spec(spec: &WindowSpec) -> Self {
        if spec.is_session() {
            Plan::Sessions(SessionPlan::default())
        } else {
            Plan::Panes(PanePlan::default())
        }
    }

    /// Number of slots the plan allocated.
    pub fn num_slots(&self) -> usize {
        match self {
            Plan::Panes(p) => p.num_slots(),
            Plan::SumPanes(p) => p.num_slots(),
            Plan::Sessions(p) => p.num_slots(),
        }
    }

    /// The watermark after the batch.
    pub fn end_watermark(&self) -> i64 {
        match self {
            Plan::Panes(p) => p.end_watermark,
            Plan::SumPanes(p) => p.end_watermark,
            Plan::Sessions(p) => p.end_watermark,
        }
    }
}

/// The per-event half of a window operator.
#[derive(Clone, Debug)]
pub enum Assigner {
    /// Tumbling or sliding windows.
    Panes(PaneAssigner),
    /// Tumbling or sliding windows whose state is counts and sums ([`SumPartial`]).
    SumPanes(PaneAssigner<SumPartial>),
    /// Session windows.
    Sessions(SessionAssigner),
}

impl Assigner {
    /// The assigner for `spec` with watermark delay and allowed lateness in ms, for a store of
    /// the same `aggs` ([`Store::new`]).
    pub fn new(spec: &WindowSpec, delay: i64, lateness: i64, aggs: &Aggregates) -> Self {
        match (spec.panes(), spec) {
            (Some(layout), _) if aggs.sums_suffice() => Assigner::SumPanes(PaneAssigner::new(layout, delay, lateness)),
            (Some(layout), _) => Assigner::Panes(PaneAssigner::new(layout, delay, lateness)),
            (None, WindowSpec::Session { gap }) => {
                Assigner::Sessions(SessionAssigner::new(gap.as_millis(), delay, lateness))
            }
            (None, _) => unreachable!("only session windows have no pane layout"),
        }
    }

    /// Assigns one batch: late positions to `late`, a slot per event to `slots`, the rest to
    /// `plan` (which must be of this assigner's kind; it is replaced otherwise). `values` are
    /// read only in the direct mode ([`Assigner::reduce_in_place`]).
    #[allow(clippy::too_many_arguments)]
    pub fn assign<V: AsRef<[f64]>>(
        &mut self,
        ts: &[i64],
        keys: &[u32],
        values: &[V],
        num_keys: usize,
        slots: &mut Vec<u32>,
        late: &mut Vec<u32>,
        plan: &mut Plan,
    ) {
        match self {
            Assigner::Panes(a) => {
                if !matches!(plan, Plan::Panes(_)) {
                    *plan = Plan::Panes(PanePlan::default());
                }
                if let Plan::Panes(p) = plan {
                    a.assign(ts, keys, values, num_keys, slots, late, p);
                }
            }
            Assigner::SumPanes(a) => {
                if !matches!(plan, Plan::SumPanes(_)) {
                    *plan = Plan::SumPanes(PanePlan::default());
                }
                if let Plan::SumPanes(p) = plan {
                    a.assign(ts, keys, values, num_keys, slots, late, p);
                }
            }
            Assigner::Sessions(a) => {
                if !matches!(plan, Plan::Sessions(_)) {
                    *plan = Plan::Sessions(SessionPlan::default());
                }
                if let Plan::Sessions(p) = plan {
                    a.assign(ts, keys, num_keys, slots, late, p);
                }
            }
        }
    }

    /// Turns on the direct mode for tumbling and sliding windows: events are reduced into pane
    /// rows while they are assigned, and `store` takes the rows over (see [`panes`]). Returns
    /// false (and changes nothing) for session windows, which keep the slot path.
    pub fn reduce_in_place(&mut self, store: &mut Store, ncols: usize, want_m2: bool) -> bool {
        match (self, store) {
            (Assigner::Panes(a), Store::Panes(s)) => panes::reduce_in_place(a, s, ncols, want_m2),
            (Assigner::SumPanes(a), Store::SumPanes(s)) => panes::reduce_in_place(a, s, ncols, want_m2),
            _ => false,
        }
    }

    /// True once [`Self::reduce_in_place`] turned the direct mode on: values are read only while
    /// assigned (the store never sees them).
    pub fn reduces_in_place(&self) -> bool {
        match self {
            Assigner::Panes(a) => a.reduces_in_place(),
            Assigner::SumPanes(a) => a.reduces_in_place(),
            Assigner::Sessions(_) => false,
        }
    }

    /// The plan that ends the input (watermark +∞).
    pub fn finish(&mut self) -> Plan {
        match self {
            Assigner::Panes(a) => {
                let mut p = PanePlan::default();
                a.finish(&mut p);
                Plan::Panes(p)
            }
            Assigner::SumPanes(a) => {
                let mut p = PanePlan::default();
                a.finish(&mut p);
                Plan::SumPanes(p)
            }
            Assigner::Sessions(a) => {
                let mut p = SessionPlan::default();
                a.finish(&mut p);
                Plan::Sessions(p)
            }
        }
    }

    /// Brings the assigner's view of the key order up to date (call before assigning a batch
    /// whose keys `keys` encodes; only the direct mode of sliding windows keeps one).
    pub fn note_keys(&mut self, keys: &crate::batch::KeyValues) {
        match self {
            Assigner::Panes(a) => a.note_keys(keys),
            Assigner::SumPanes(a) => a.note_keys(keys),
            Assigner::Sessions(_) => {}
        }
    }

    /// `(key, pane)` states the assigner itself holds (direct mode: panes it is filling).
    pub fn open_states(&self) -> usize {
        match self {
            Assigner::Panes(a) => a.open_states(),
            Assigner::SumPanes(a) => a.open_states(),
            Assigner::Sessions(_) => 0,
        }
    }

    /// The watermark that applies to the next event.
    pub fn watermark(&self) -> i64 {
        match self {
            Assigner::Panes(a) => a.watermark(),
            Assigner::SumPanes(a) => a.watermark(),
            Assigner::Sessions(a) => a.watermark(),
        }
    }
}

/// The window state of a window operator.
// not boxed: the store is matched on every batch, and there is one per pipeline
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug)]
pub enum Store {
    /// Tumbling or sliding windows.
    Panes(PaneStore),
    /// Tumbling or sliding windows whose aggregates follow from counts and sums
    /// ([`Aggregates::sums_suffice`]): 16 bytes of state per `(key, pane)` and value column
    /// instead of 40.
    SumPanes(PaneStore<SumPartial>),
    /// Session windows.
    Sessions(SessionStore),
}

impl Store {
    /// The store for `spec` with allowed lateness in ms, `ncols` value columns and aggregates
    /// `aggs`, which choose the state kept: second moments only for variances, and for
    /// tumbling and sliding windows counts and sums alone when they suffice.
    pub fn new(spec: &WindowSpec, lateness: i64, ncols: usize, aggs: &Aggregates) -> Self {
        let want_m2 = aggs.needs_m2();
        match spec.panes() {
            Some(layout) if aggs.sums_suffice() => Store::SumPanes(PaneStore::new(layout, lateness, ncols, want_m2)),
            Some(layout) => Store::Panes(PaneStore::new(layout, lateness, ncols, want_m2)),
            None => Store::Sessions(SessionStore::new(ncols, want_m2)),
        }
    }

    /// Applies one batch's plan and partials; emitted rows are appended to `out`. Pane rows the
    /// plan carries (direct mode) are taken out of it.
    pub fn apply(&mut self, plan: &mut Plan, partials: &Partials, keys: &KeyOrder, out: &mut WindowRows) {
        match (self, plan) {
            (Store::Panes(s), Plan::Panes(p)) => s.apply(p, partials, keys, out),
            (Store::SumPanes(s), Plan::SumPanes(p)) => s.apply(p, partials, keys, out),
            (Store::Sessions(s), Plan::Sessions(p)) => s.apply(p, partials, keys, out),
            _ => debug_assert!(false, "plan kind does not match the store"),
        }
    }

    /// Makes room in `rows` for `n` more rows with the states this store emits.
    pub fn reserve_rows(&self, rows: &mut WindowRows, n: usize) {
        match self {
            Store::SumPanes(_) => rows.reserve_for::<SumPartial>(n),
            Store::Panes(_) | Store::Sessions(_) => rows.reserve_for::<crate::agg::ColPartial>(n),
        }
    }

    /// `(key, window)` or session states currently held: bounded on an endless stream.
    pub fn open_states(&self) -> usize {
        match self {
            Store::Panes(s) => s.open_states(),
            Store::SumPanes(s) => s.open_states(),
            Store::Sessions(s) => s.open_sessions(),
        }
    }
}

/// Hints the CPU to bring `r`'s cache line in: the per-event loops look up state by key in
/// arrays far larger than the L1 cache, and the keys of the next events are known in advance.
#[inline(always)]
pub(crate) fn prefetch<T>(r: &T) {
    prefetch_ptr((r as *const T).cast::<u8>());
}

/// [`prefetch`] of the first and the last byte of `*r`: a record that straddles two cache lines
/// (a 48-byte one does every other time) needs both.
#[inline(always)]
pub(crate) fn prefetch_whole<T>(r: &T) {
    let first = (r as *const T).cast::<u8>();
    prefetch_ptr(first);
    prefetch_ptr(first.wrapping_add(std::mem::size_of::<T>().saturating_sub(1)));
}

#[inline(always)]
fn prefetch_ptr(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch has no architectural effect (it cannot fault, even on an invalid
    // address), and SSE, which provides it, is part of the x86_64 baseline.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast::<i8>());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
