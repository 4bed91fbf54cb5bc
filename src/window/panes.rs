//! Tumbling and sliding windows computed from panes.
//!
//! **Assigner** (host, sequential, per event): evaluates the per-event watermark, sends late
//! events to the side output, and gives every on-time event a slot that stands for
//! `(key, pane, epoch)`. An *epoch* is a stretch of the batch between two watermark points at
//! which some sliding window fires or is purged; splitting slots there keeps a window that fires
//! mid-batch from seeing events that came after its firing, so results never depend on the batch
//! size. Tumbling windows need no epochs (each pane is one window and lateness is decided per
//! event).
//!
//! **Store** (host, plain data): merges the backend's per-slot partials into per-pane state,
//! epoch by epoch, and fires a window by merging its `size / pane` panes when the watermark passes
//! its end. The cost per event is one pane update whatever the number of windows an event belongs
//! to; the cost per emitted row is one merge per pane.
//!
//! **Direct mode** (a backend that reduces on the host, [`crate::backend::AggBackend::reduces_in_place`]):
//! the assigner skips the slots and folds each event straight into the rows of its pane, which it
//! keeps across batches. A pane's rows are *sealed* — handed to the store, which adopts them as its
//! pane or merges them into the one it has — at the first watermark point at which a window
//! containing the pane fires (and, for later updates, at the next point or the batch's end). One
//! pass over the events replaces assign + reduce + merge, and the store fires a tumbling window
//! from the very rows the assigner filled.

use super::cleanup_time;
use super::spec::PaneLayout;
use super::watermark::Watermark;
use crate::agg::ColPartial;
use crate::backend::{Partials, SKIP_SLOT};
use crate::batch::KeyOrder;
use crate::output::{RowStates, WindowRows};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};

const NONE: u32 = u32::MAX;

/// Emptied panes handed back by the store for the assigner (direct mode) and the store itself to
/// fill again: their buffers are already allocated and mapped. They carry no key index: each
/// side keeps its own indexes, so that the per-event lookups stay in the cache of the core that
/// makes them.
pub type PanePool<P = ColPartial> = Arc<Mutex<Vec<Pane<P>>>>;

/// Emptied panes a pool keeps at most.
const POOL_MAX: usize = 16;

/// A watermark point inside a batch where windows fire or are purged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Epoch {
    /// Slots below this were allocated before the point.
    pub slot_end: u32,
    /// Direct mode: sealed panes below this were sealed before the point.
    pub sealed_end: u32,
    /// The watermark at the point.
    pub watermark: i64,
}

/// What the assigner tells the store about one batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PanePlan<P = ColPartial> {
    /// Key id of each slot.
    pub slot_key: Vec<u32>,
    /// Pane index of each slot.
    pub slot_pane: Vec<i64>,
    /// Watermark points inside the batch, in order.
    pub epochs: Vec<Epoch>,
    /// Direct mode: pane rows the assigner filled, in the order it sealed them.
    pub sealed: Vec<SealedPane<P>>,
    /// The watermark after the batch.
    pub end_watermark: i64,
}

/// Rows of one pane filled by the assigner in the direct mode, for the store to take over.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SealedPane<P = ColPartial> {
    /// The pane index.
    pub pane: i64,
    rows: Pane<P>,
}

impl<P> SealedPane<P> {
    /// `(key, pane)` states it holds.
    pub fn len(&self) -> usize {
        self.rows.keys.len()
    }

    /// True when it holds no state.
    pub fn is_empty(&self) -> bool {
        self.rows.keys.is_empty()
    }
}

impl<P> PanePlan<P> {
    fn clear(&mut self) {
        self.slot_key.clear();
        self.slot_pane.clear();
        self.epochs.clear();
        self.sealed.clear();
    }

    /// Number of slots.
    pub fn num_slots(&self) -> usize {
        self.slot_key.len()
    }
}

/// Per-pane lookup `key -> slot` for the current epoch. An entry is valid when its high half
/// equals the table's stamp, so tables are reused without clearing.
#[derive(Clone, Debug, Default)]
struct SlotTable {
    pane: i64,
    cleanup: i64,
    stamp: u32,
    entries: Vec<u64>,
}

/// The per-event half of pane windows: watermark, lateness, slot assignment.
#[derive(Clone, Debug)]
pub struct PaneAssigner<P = ColPartial> {
    layout: PaneLayout,
    lateness: i64,
    wm: Watermark,
    use_epochs: bool,
    next_boundary: i64,
    tables: Vec<SlotTable>,
    pool: Vec<SlotTable>,
    next_stamp: u32,
    /// The smallest cleanup time among `tables`.
    next_release: i64,
    /// The direct mode's state, when it is on.
    direct: Option<Direct<P>>,
}

/// A pane whose rows the assigner fills in the direct mode.
#[derive(Clone, Debug)]
struct LivePane<P> {
    /// `key -> row` of `rows` (the assigner's own; `rows` travel without it).
    index: Vec<u32>,
    pane: i64,
    /// The watermark at which the pane's state is purged.
    cleanup: i64,
    /// The watermark at which the first window containing the pane fires (its end - 1): from
    /// then on the store needs the pane's rows.
    fires: i64,
    rows: Pane<P>,
}

/// The direct mode: events folded into pane rows as they are assigned.
#[derive(Clone, Debug)]
struct Direct<P> {
    ncols: usize,
    want_m2: bool,
    live: Vec<LivePane<P>>,
    pool: PanePool<P>,
    /// Emptied indexes of sealed panes.
    indexes: Vec<Vec<u32>>,
    /// Sliding windows: the key order sealed panes are put in (the store merges panes in key
    /// order; sorting them here moves that work off the store's thread).
    order: Option<KeyOrder>,
    scratch: PaneScratch<P>,
    /// Keys of the batch being assigned (ids below it can occur in the panes).
    num_keys: usize,
}

impl<P: RowStates> Direct<P> {
    /// Hands the rows of every live pane whose first window fires by `w` to the plan.
    fn seal(&mut self, w: i64, plan: &mut PanePlan<P>) {
        let mut i = 0;
        while i < self.live.len() {
            if self.live[i].fires <= w {
                let mut lp = self.live.swap_remove(i);
                lp.rows.index = std::mem::take(&mut lp.index);
                // (an order that does not cover every key leaves the sort to the store)
                if let Some(order) = self.order.as_ref().filter(|o| o.len() >= self.num_keys) {
                    lp.rows.sort_by_key_order(order, self.ncols, &mut self.scratch);
                }
                keep(&mut self.indexes, lp.rows.take_index());
                if lp.rows.keys.is_empty() {
                    give_back(&self.pool, lp.rows);
                } else {
                    plan.sealed.push(SealedPane {
                        pane: lp.pane,
                        rows: lp.rows,
                    });
                }
            } else {
                i += 1;
            }
        }
    }

    /// Hands the rows of every live pane to the plan (end of input).
    fn seal_all(&mut self, plan: &mut PanePlan<P>) {
        self.seal(i64::MAX, plan);
    }
}

/// Turns on the direct mode of `assigner` ([`PaneAssigner::reduce_in_place`]) with `store`
/// taking its panes, the two sharing one pool of emptied panes. Returns true.
pub fn reduce_in_place<P: RowStates>(
    assigner: &mut PaneAssigner<P>,
    store: &mut PaneStore<P>,
    ncols: usize,
    want_m2: bool,
) -> bool {
    let pool = PanePool::default();
    store.share_pool(pool.clone());
    assigner.reduce_in_place(ncols, want_m2, pool);
    true
}

/// An emptied pane from `pool` (without index), or a new one.
fn take_pane<P: RowStates>(pool: &PanePool<P>) -> Pane<P> {
    pool.lock().ok().and_then(|mut v| v.pop()).unwrap_or_default()
}

/// Returns a pane's buffers to `pool` (dropped when the pool is full). Its index, if it still
/// has one, is dropped: indexes stay with the side that built them ([`Pane::take_index`]).
fn give_back<P: RowStates>(pool: &PanePool<P>, mut pane: Pane<P>) {
    pane.index = Vec::new();
    pane.keys.clear();
    pane.count.clear();
    pane.cols.clear();
    pane.sorted = 0;
    if pane.keys.capacity() == 0 {
        return;
    }
    if let Ok(mut v) = pool.lock()
        && v.len() < POOL_MAX
    {
        v.push(pane);
    }
}

/// An all-empty index of at least `n` entries from `pool`, or a new one.
fn take_index(pool: &mut Vec<Vec<u32>>, n: usize) -> Vec<u32> {
    let mut idx = pool.pop().unwrap_or_default();
    if idx.len() < n {
        idx.resize(n, NONE);
    }
    idx
}

/// Keeps an emptied index (all entries `NONE`) for re-use.
fn keep(pool: &mut Vec<Vec<u32>>, idx: Vec<u32>) {
    if idx.capacity() > 0 && pool.len() < POOL_MAX {
        pool.push(idx);
    }
}

impl<P: RowStates> PaneAssigner<P> {
    /// An assigner for `layout` with watermark delay and allowed lateness in ms.
    pub fn new(layout: PaneLayout, delay: i64, lateness: i64) -> Self {
        PaneAssigner {
            layout,
            lateness,
            wm: Watermark::new(delay),
            use_epochs: layout.slide != layout.size,
            next_boundary: i64::MIN,
            tables: vec![],
            pool: vec![],
            next_stamp: 1,
            next_release: i64::MAX,
            direct: None,
        }
    }

    /// Turns the direct mode on: events are folded into pane rows here (`ncols` value columns,
    /// second moments when `want_m2`) and no slots are allocated. `pool` is shared with the store,
    /// which hands emptied panes back through it. Call before the first batch.
    pub fn reduce_in_place(&mut self, ncols: usize, want_m2: bool, pool: PanePool<P>) {
        // every fire and purge point seals panes, tumbling windows included
        self.use_epochs = true;
        self.direct = Some(Direct {
            ncols,
            want_m2,
            live: vec![],
            pool,
            indexes: vec![],
            order: (self.layout.slide != self.layout.size).then(KeyOrder::default),
            scratch: PaneScratch::default(),
            num_keys: 0,
        });
    }

    /// Brings the key order up to date with `keys` before a batch whose keys they encode (direct
    /// mode with sliding windows, which seals panes in key order; a no-op otherwise).
    pub fn note_keys(&mut self, keys: &crate::batch::KeyValues) {
        if let Some(Direct { order: Some(o), .. }) = &mut self.direct {
            o.update(keys);
        }
    }

    /// `(key, pane)` states held in panes the assigner is filling (direct mode; 0 otherwise).
    pub fn open_states(&self) -> usize {
        self.direct
            .as_ref()
            .map_or(0, |d| d.live.iter().map(|lp| lp.rows.keys.len()).sum())
    }

    /// True in the direct mode ([`Self::reduce_in_place`]).
    pub fn reduces_in_place(&self) -> bool {
        self.direct.is_some()
    }

    /// The watermark that applies to the next event.
    pub fn watermark(&self) -> i64 {
        self.wm.current()
    }

    /// The watermark state (for checkpoints and metrics).
    pub fn watermark_state(&self) -> &Watermark {
        &self.wm
    }

    fn boundary_after(&self, w: i64) -> i64 {
        let l = &self.layout;
        let fire_end = l.next_window_end_after(w.saturating_add(1));
        let purge_end = l.next_window_end_after(w.saturating_add(1).saturating_sub(self.lateness));
        (fire_end - 1).min(cleanup_time(purge_end, self.lateness))
    }

    fn release_tables(&mut self) {
        self.pool.append(&mut self.tables);
        self.next_release = i64::MAX;
    }

    fn release_done(&mut self, w: i64) {
        let mut i = 0;
        self.next_release = i64::MAX;
        while i < self.tables.len() {
            if self.tables[i].cleanup <= w {
                let t = self.tables.swap_remove(i);
                self.pool.push(t);
            } else {
                self.next_release = self.next_release.min(self.tables[i].cleanup);
                i += 1;
            }
        }
    }

    fn fresh_stamp(&mut self) -> u32 {
        if self.next_stamp == u32::MAX {
            // Stamps wrap: clear every entry (stamp 0 matches no table) and give the tables in
            // use new stamps. Their keys get new slots for the rest of the batch; the store
            // merges two slots of one (key, pane) like any partials, so results stay exact.
            self.next_stamp = 1;
            for t in &mut self.pool {
                t.entries.fill(0);
                t.stamp = 0;
            }
            for t in &mut self.tables {
                t.entries.fill(0);
                t.stamp = self.next_stamp;
                self.next_stamp += 1;
            }
        }
        let s = self.next_stamp;
        self.next_stamp += 1;
        s
    }

    /// The table for pane `p`, creating it unless the pane is already past cleanup at `w`
    /// (then `None`: the event is late).
    #[inline]
    fn table_for(&mut self, p: i64, w: i64, num_keys: usize) -> Option<usize> {
        if let Some(i) = self.tables.iter().rposition(|t| t.pane == p) {
            return Some(i);
        }
        let cleanup = cleanup_time(self.layout.last_window_end(p), self.lateness);
        if cleanup <= w {
            return None;
        }
        let stamp = self.fresh_stamp();
        let mut t = self.pool.pop().unwrap_or_default();
        t.pane = p;
        t.cleanup = cleanup;
        self.next_release = self.next_release.min(cleanup);
        t.stamp = stamp;
        if t.entries.len() < num_keys {
            t.entries.resize(num_keys, 0);
        }
        self.tables.push(t);
        Some(self.tables.len() - 1)
    }

    /// Assigns one batch. `num_keys` bounds the key ids in `keys`. Late event positions go to
    /// `late`, slots (or [`SKIP_SLOT`]) to `slots`, the rest of the plan to `plan`. In the direct
    /// mode the events' `values` are folded into pane rows and `slots` stays empty.
    #[allow(clippy::too_many_arguments)]
    pub fn assign<V: AsRef<[f64]>>(
        &mut self,
        ts: &[i64],
        keys: &[u32],
        values: &[V],
        num_keys: usize,
        slots: &mut Vec<u32>,
        late: &mut Vec<u32>,
        plan: &mut PanePlan<P>,
    ) {
        plan.clear();
        slots.clear();
        if let Some(mut d) = self.direct.take() {
            if d.want_m2 {
                self.assign_direct::<true, V>(&mut d, ts, keys, values, num_keys, late, plan);
            } else {
                self.assign_direct::<false, V>(&mut d, ts, keys, values, num_keys, late, plan);
            }
            self.direct = Some(d);
            return;
        }
        slots.reserve(ts.len());
        let mut max = self.wm.max_ts();
        let mut last: usize = usize::MAX;
        // the time range of `last`'s pane
        let (mut last_lo, mut last_hi) = (i64::MAX, i64::MIN);
        for (i, (&t, &k)) in ts.iter().zip(keys).enumerate() {
            let w = self.wm.from_max(max);
            if self.use_epochs && w >= self.next_boundary && w != i64::MIN {
                plan.epochs.push(Epoch {
                    slot_end: plan.slot_key.len() as u32,
                    sealed_end: 0,
                    watermark: w,
                });
                self.release_tables();
                last = usize::MAX;
                self.next_boundary = self.boundary_after(w);
            }
            if w >= self.next_release {
                // Tables of panes past cleanup go back to the pool (LIFO, so the next pane
                // reuses a table that is still in cache).
                self.release_done(w);
                last = usize::MAX;
            }
            max = max.max(t);
            // Most events fall in the pane of the event before: a range check skips the division.
            let (p, ti) = if last < self.tables.len() && t >= last_lo && t < last_hi {
                (self.tables[last].pane, last)
            } else {
                let p = self.layout.pane_of(t);
                last_lo = self.layout.pane_start(p);
                last_hi = last_lo.saturating_add(self.layout.pane);
                match self.table_for(p, w, num_keys) {
                    Some(ti) => (p, ti),
                    None => {
                        last = usize::MAX;
                        late.push(i as u32);
                        slots.push(SKIP_SLOT);
                        continue;
                    }
                }
            };
            last = ti;
            let table = &mut self.tables[ti];
            if table.cleanup <= w {
                late.push(i as u32);
                slots.push(SKIP_SLOT);
                continue;
            }
            let e = &mut table.entries[k as usize];
            let slot = if (*e >> 32) as u32 == table.stamp {
                *e as u32
            } else {
                let s = plan.slot_key.len() as u32;
                *e = ((table.stamp as u64) << 32) | s as u64;
                plan.slot_key.push(k);
                plan.slot_pane.push(p);
                s
            };
            slots.push(slot);
        }
        self.wm.advance(max);
        self.release_tables();
        plan.end_watermark = self.wm.current();
    }

    /// The direct mode's [`Self::assign`]: the same watermark, lateness and epoch points as the
    /// slot path, with each on-time event folded into the row of its `(key, pane)`.
    #[allow(clippy::too_many_arguments)]
    fn assign_direct<const M2: bool, V: AsRef<[f64]>>(
        &mut self,
        d: &mut Direct<P>,
        ts: &[i64],
        keys: &[u32],
        values: &[V],
        num_keys: usize,
        late: &mut Vec<u32>,
        plan: &mut PanePlan<P>,
    ) {
        let ncols = d.ncols;
        debug_assert_eq!(values.len(), ncols);
        d.num_keys = d.num_keys.max(num_keys);
        // new keys since the last batch: every live pane's index covers them
        for lp in &mut d.live {
            if lp.index.len() < num_keys {
                lp.index.resize(num_keys, NONE);
            }
        }
        let one = if ncols == 1 { values[0].as_ref() } else { &[][..] };
        let mut max = self.wm.max_ts();
        let mut last: usize = usize::MAX;
        // the time range of `last`'s pane
        let (mut last_lo, mut last_hi) = (i64::MAX, i64::MIN);
        for (i, (&t, &k)) in ts.iter().zip(keys).enumerate() {
            let w = self.wm.from_max(max);
            if w >= self.next_boundary && w != i64::MIN {
                // the store fires or purges windows at `w`: it needs the rows of their panes
                d.seal(w, plan);
                plan.epochs.push(Epoch {
                    slot_end: 0,
                    sealed_end: plan.sealed.len() as u32,
                    watermark: w,
                });
                last = usize::MAX;
                self.next_boundary = self.boundary_after(w);
            }
            max = max.max(t);
            // Most events fall in the pane of the event before: a range check skips the division.
            let li = if last < d.live.len() && t >= last_lo && t < last_hi {
                last
            } else {
                let p = self.layout.pane_of(t);
                last_lo = self.layout.pane_start(p);
                last_hi = last_lo.saturating_add(self.layout.pane);
                match d.live.iter().rposition(|lp| lp.pane == p) {
                    Some(li) => li,
                    None => {
                        let cleanup = cleanup_time(self.layout.last_window_end(p), self.lateness);
                        if cleanup <= w {
                            last = usize::MAX;
                            late.push(i as u32);
                            continue;
                        }
                        d.live.push(LivePane {
                            index: take_index(&mut d.indexes, num_keys),
                            pane: p,
                            cleanup,
                            fires: self.layout.first_window_end(p) - 1,
                            rows: take_pane(&d.pool),
                        });
                        d.live.len() - 1
                    }
                }
            };
            last = li;
            let lp = &mut d.live[li];
            if lp.cleanup <= w {
                late.push(i as u32);
                continue;
            }
            let rows = &mut lp.rows;
            let r = lp.index[k as usize];
            if ncols == 1 {
                // Without a branch on whether the key has a row yet (a coin toss where most keys
                // see an event or two per pane): a row is appended for every event and kept only
                // for a key's first one; the event is added to its key's row either way.
                let len = rows.keys.len();
                let new = r == NONE;
                let pos = std::hint::select_unpredictable(new, len, r as usize);
                rows.keys.push(k);
                rows.count.push(0);
                rows.cols.push(P::IDENTITY);
                rows.count[pos] += 1;
                rows.cols[pos].push::<M2>(one[i]);
                lp.index[k as usize] = pos as u32;
                let keep = len + new as usize;
                rows.keys.truncate(keep);
                rows.count.truncate(keep);
                rows.cols.truncate(keep);
                continue;
            }
            if r == NONE {
                // the key's first event in the pane: its row is built from the event alone
                lp.index[k as usize] = rows.keys.len() as u32;
                rows.keys.push(k);
                rows.count.push(1);
                if ncols == 1 {
                    rows.cols.push(P::of::<M2>(one[i]));
                } else {
                    rows.cols.extend(values.iter().map(|v| P::of::<M2>(v.as_ref()[i])));
                }
                continue;
            }
            let r = r as usize;
            rows.count[r] += 1;
            if ncols == 1 {
                rows.cols[r].push::<M2>(one[i]);
            } else {
                for (c, v) in values.iter().enumerate() {
                    rows.cols[r * ncols + c].push::<M2>(v.as_ref()[i]);
                }
            }
        }
        self.wm.advance(max);
        let end = self.wm.current();
        // rows of panes whose windows fire with the batch's last watermark, and updates of fired
        // windows (each batch emits their next revision)
        d.seal(end, plan);
        plan.end_watermark = end;
    }

    /// Ends the input: the plan that fires every open window.
    pub fn finish(&mut self, plan: &mut PanePlan<P>) {
        plan.clear();
        if let Some(d) = &mut self.direct {
            d.seal_all(plan);
        }
        self.wm.finish();
        plan.end_watermark = self.wm.current();
    }
}

/// The partial state of one pane for every key that has data in it: rows in arrival order,
/// `index[key]` = row (or none).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Pane<P = ColPartial> {
    index: Vec<u32>,
    keys: Vec<u32>,
    count: Vec<u64>,
    cols: Vec<P>,
    /// Rows `..sorted` are in key order (rows appended later, by late updates, are not).
    sorted: usize,
}

impl<P: RowStates> Pane<P> {
    /// Puts the rows in key-value order (ranks never reorder existing keys, so it stays valid
    /// as keys arrive).
    fn sort_by_key_order(&mut self, keys: &KeyOrder, ncols: usize, scratch: &mut PaneScratch<P>) {
        scratch.keys.clear();
        scratch.keys.extend_from_slice(&self.keys);
        let index = &self.index;
        keys.order_ids(&mut scratch.keys, |k| index.get(k as usize).is_some_and(|&r| r != NONE));
        scratch.count.clear();
        scratch.cols.clear();
        let index = &self.index;
        let rows = || scratch.keys.iter().map(|&k| index[k as usize] as usize);
        scratch.count.extend(rows().map(|r| self.count[r]));
        if ncols == 1 {
            // one partial per row: a plain gather (a slice copy per row costs a memcpy call)
            scratch.cols.extend(rows().map(|r| self.cols[r]));
        } else {
            for r in rows() {
                scratch.cols.extend_from_slice(&self.cols[r * ncols..(r + 1) * ncols]);
            }
        }
        for (r, &k) in scratch.keys.iter().enumerate() {
            self.index[k as usize] = r as u32;
        }
        std::mem::swap(&mut self.keys, &mut scratch.keys);
        std::mem::swap(&mut self.count, &mut scratch.count);
        std::mem::swap(&mut self.cols, &mut scratch.cols);
        self.sorted = self.keys.len();
    }

    /// Adds `count` events with partials `cols` to `key`'s row (a new row when it has none).
    #[inline(always)]
    fn add_row(&mut self, key: u32, count: u64, cols: &[P], ncols: usize, m2: bool) {
        self.add_row_of(key, count, cols, ncols, m2, |p| *p)
    }

    /// [`Self::add_row`] from partials of another kind, each taken through `to` (the backends'
    /// full partials into this pane's kind, with no copy of the row between).
    #[inline(always)]
    fn add_row_of<S>(&mut self, key: u32, count: u64, cols: &[S], ncols: usize, m2: bool, to: impl Fn(&S) -> P) {
        let k = key as usize;
        if k >= self.index.len() {
            self.index.resize((k + 1).max(self.index.len() * 2), NONE);
        }
        let r = self.index[k];
        if r == NONE {
            self.index[k] = self.keys.len() as u32;
            self.keys.push(key);
            self.count.push(count);
            if let [c] = cols {
                // one column: a plain push
                self.cols.push(to(c));
            } else {
                self.cols.extend(cols.iter().map(&to));
            }
        } else {
            let r = r as usize;
            self.count[r] += count;
            let dst = &mut self.cols[r * ncols..(r + 1) * ncols];
            let pairs = dst.iter_mut().zip(cols);
            if m2 {
                pairs.for_each(|(d, c)| d.combine_with::<true>(&to(c)));
            } else {
                pairs.for_each(|(d, c)| d.combine_with::<false>(&to(c)));
            }
        }
    }

    fn get(&self, key: u32) -> Option<usize> {
        self.index
            .get(key as usize)
            .copied()
            .filter(|r| *r != NONE)
            .map(|r| r as usize)
    }

    /// Takes the index out, emptied (every entry `NONE`) for another pane.
    fn take_index(&mut self) -> Vec<u32> {
        for &k in &self.keys {
            self.index[k as usize] = NONE;
        }
        std::mem::take(&mut self.index)
    }

    /// Gives the pane `idx` (all entries `NONE`) as its index, filled from its rows.
    fn set_index(&mut self, mut idx: Vec<u32>) {
        if let Some(&max) = self.keys.iter().max()
            && max as usize >= idx.len()
        {
            idx.resize(max as usize + 1, NONE);
        }
        for (r, &k) in self.keys.iter().enumerate() {
            idx[k as usize] = r as u32;
        }
        self.index = idx;
    }
}

/// Scratch space to merge the panes of one window for every key, indexed by key rank (a count
/// of 0 marks an untouched rank).
#[derive(Clone, Debug, Default)]
struct Accumulator<P> {
    touched: Vec<u32>,
    count: Vec<u64>,
    cols: Vec<P>,
    scratch: PaneScratch<P>,
}

/// Rows in key order, by [`KeyOrder`] rank (ascending): a merge of consecutive panes.
#[derive(Clone, Debug, Default)]
struct OrderedRows<P> {
    rank: Vec<u32>,
    count: Vec<u64>,
    cols: Vec<P>,
}

impl<P> OrderedRows<P> {
    fn clear(&mut self) {
        self.rank.clear();
        self.count.clear();
        self.cols.clear();
    }

    fn len(&self) -> usize {
        self.rank.len()
    }
}

/// Sliding windows from prefix and suffix merges (van Herk / Gil-Werman): pane indices are cut
/// into blocks of `k` = panes per window, so a window that starts at pane `lo` inside block `b`
/// is the merge of its block's *suffix* from `lo` and the *prefix* of block `b + 1` up to the
/// window's last pane. Suffixes are built once per block, the prefix grows by one slide per
/// window: about three merges per emitted row instead of `k`.
#[derive(Clone, Debug, Default)]
struct Sliding<P> {
    /// The block whose suffixes `suffix` holds, and the keys their ranks were taken for.
    suffix_block: Option<(i64, usize)>,
    /// `suffix[i]`: panes `b * k + i ..= b * k + k - 1`, in key order.
    suffix: Vec<OrderedRows<P>>,
    /// The block whose prefix the accumulator holds, and the keys its ranks were taken for.
    prefix_block: Option<(i64, usize)>,
    /// The last pane merged into the prefix.
    prefix_last: i64,
    /// The prefix, indexed by key rank (count 0 = no row).
    prefix: Accumulator<P>,
    /// A window's rows before they are appended to the output.
    emitted: PaneScratch<P>,
}

/// Windows of at most this many panes use [`Sliding`]; longer ones merge their panes directly
/// (suffixes of a block cost up to `k / 2` copies of its rows in memory).
const MAX_SLIDING_PANES: i64 = 64;

/// Appends one row's partials (one column: a plain push, not a `memcpy` call).
#[inline(always)]
fn extend_cols<P: Copy>(dst: &mut Vec<P>, cols: &[P]) {
    if let [c] = cols {
        dst.push(*c);
    } else {
        dst.extend_from_slice(cols);
    }
}

/// Appends one row of `ncols` partials.
#[inline(always)]
fn push_row<P: Copy>(dst: &mut OrderedRows<P>, rank: u32, count: u64, cols: &[P]) {
    dst.rank.push(rank);
    dst.count.push(count);
    extend_cols(&mut dst.cols, cols);
}

/// Merges the rows of pane `a` (in key order) and rows `b` into `dst`, rows of the same key
/// combined.
fn merge_ordered<const M2: bool, P: RowStates>(
    a: (&[u32], &[u64], &[P]),
    b: &OrderedRows<P>,
    keys: &KeyOrder,
    ncols: usize,
    dst: &mut OrderedRows<P>,
) {
    let (ak, ac, acols) = a;
    let arow = |i: usize| &acols[i * ncols..(i + 1) * ncols];
    let brow = |j: usize| &b.cols[j * ncols..(j + 1) * ncols];
    dst.clear();
    let most = ak.len() + b.len();
    dst.rank.reserve(most);
    dst.count.reserve(most);
    dst.cols.reserve(most * ncols);
    let (mut i, mut j) = (0, 0);
    while i < ak.len() && j < b.len() {
        let (ra, rb) = (keys.rank(ak[i]), b.rank[j]);
        if ra < rb {
            push_row(dst, ra, ac[i], arow(i));
            i += 1;
        } else if rb < ra {
            push_row(dst, rb, b.count[j], brow(j));
            j += 1;
        } else {
            push_row(dst, ra, ac[i] + b.count[j], arow(i));
            let at = dst.cols.len() - ncols;
            combine_row::<M2, _>(&mut dst.cols[at..], brow(j));
            i += 1;
            j += 1;
        }
    }
    for i in i..ak.len() {
        push_row(dst, keys.rank(ak[i]), ac[i], arow(i));
    }
    for j in j..b.len() {
        push_row(dst, b.rank[j], b.count[j], brow(j));
    }
}

/// Appends the row of rank `r` of a sliding window: suffix row `s[*j]` when it has rank `r`
/// (then `*j` moves on), merged with the prefix's row `r` when that has events.
#[inline(always)]
fn emit_sliding<const M2: bool, P: RowStates>(
    out: &mut WindowRows,
    r: usize,
    s: &OrderedRows<P>,
    j: &mut usize,
    acc: &Accumulator<P>,
    sorted: &[u32],
    ncols: usize,
) {
    let ac = acc.count[r];
    let arow = &acc.cols[r * ncols..(r + 1) * ncols];
    if s.rank.get(*j) == Some(&(r as u32)) {
        let sj = *j;
        *j += 1;
        out.key.push(sorted[r]);
        out.count.push(s.count[sj] + ac);
        let states = P::row_states(out);
        let at = states.len();
        extend_cols(states, &s.cols[sj * ncols..(sj + 1) * ncols]);
        if ac != 0 {
            combine_row::<M2, _>(&mut states[at..], arow);
        }
    } else if ac != 0 {
        out.key.push(sorted[r]);
        out.count.push(ac);
        extend_cols(P::row_states(out), arow);
    }
}

/// `p`, or the identity when `keep` is false, chosen without a branch (which would mispredict as
/// often as keys are missing from a pane).
#[inline(always)]
fn or_identity<P: RowStates>(p: &P, keep: bool) -> P {
    std::hint::select_unpredictable(keep, *p, P::IDENTITY)
}

/// `v` when `keep`, else 0, without a branch.
#[inline(always)]
fn or_zero(v: u64, keep: bool) -> u64 {
    std::hint::select_unpredictable(keep, v, 0)
}

/// Grows `v` to at least `n` elements for rows written by position; the caller truncates it to
/// the rows written, so a buffer refilled with about as many rows is grown by only a few.
#[inline(always)]
fn grow<T: Copy>(v: &mut Vec<T>, n: usize, fill: T) {
    if v.len() < n {
        v.resize(n, fill);
    }
}

/// [`merge_ordered`] for one value column, when the two sides together hold
/// at least as many rows as there are keys: a walk over every rank, both cursors moved by
/// comparisons rather than branches (which side has the next key is close to a coin toss for
/// keys spread evenly over panes). Rows are written by position, the position moved on only past
/// kept rows. With fewer rows the walk over every rank costs more than the mispredicted merge
/// (Zipf keys: a threshold of half the keys made the window store 15-20% slower). With `M2` the
/// second moment is combined without a branch too ([`ColPartial::combine_branchless_m2`]).
#[inline(never)]
fn merge_dense_one<const M2: bool, P: RowStates>(
    a: (&[u32], &[u64], &[P]),
    b: &OrderedRows<P>,
    sorted: &[u32],
    dst: &mut OrderedRows<P>,
) {
    let (ak, ac, acols) = a;
    let cap = (ak.len() + b.len()).min(sorted.len()) + 1;
    grow(&mut dst.rank, cap, 0);
    grow(&mut dst.count, cap, 0);
    grow(&mut dst.cols, cap, P::IDENTITY);
    let (rank, count, cols) = (&mut dst.rank[..cap], &mut dst.count[..cap], &mut dst.cols[..cap]);
    let (alast, blast) = (ak.len() - 1, b.len() - 1);
    let (mut i, mut j, mut m) = (0, 0, 0);
    for (r, &id) in sorted.iter().enumerate() {
        let (ii, jj) = (i.min(alast), j.min(blast));
        let ka = ak[ii] == id;
        let kb = b.rank[jj] == r as u32;
        let mut p = or_identity(&acols[ii], ka);
        p.combine_dense::<M2>(&or_identity(&b.cols[jj], kb));
        rank[m] = r as u32;
        count[m] = or_zero(ac[ii], ka) + or_zero(b.count[jj], kb);
        cols[m] = p;
        m += (ka | kb) as usize;
        i += ka as usize;
        j += kb as usize;
    }
    // (a row whose key had no rank would stop its side's cursor and drop every row after it)
    assert!(i == ak.len() && j == b.len(), "every row has a rank in `sorted`");
    dst.rank.truncate(m);
    dst.count.truncate(m);
    dst.cols.truncate(m);
}

/// The rows of a sliding window for one value column (with or without variances), when the
/// suffix and the prefix hold rows for at least an eighth of the keys: every rank's suffix row
/// (if any) merged with the dense prefix without a branch on which keys the suffix holds. Rows
/// are written by position into `rows`, the position moved on past ranks
/// with events, and then appended to `out` in one copy per column: pushing each row onto `out`
/// behind a branch on whether the rank has one cost a quarter more of the store's time (Zipf keys),
/// pushing every row and cutting it off again more still.
#[inline(never)]
fn emit_dense_one<const M2: bool, P: RowStates>(
    out: &mut WindowRows,
    s: &OrderedRows<P>,
    acc: &Accumulator<P>,
    sorted: &[u32],
    rows: &mut PaneScratch<P>,
) {
    let n = sorted.len();
    grow(&mut rows.keys, n, 0);
    grow(&mut rows.count, n, 0);
    grow(&mut rows.cols, n, P::IDENTITY);
    let (key, count, cols) = (&mut rows.keys[..n], &mut rows.count[..n], &mut rows.cols[..n]);
    let slast = s.len().saturating_sub(1);
    let (mut j, mut m) = (0, 0);
    for (r, &id) in sorted.iter().enumerate() {
        let jj = j.min(slast);
        let ks = s.rank.get(jj) == Some(&(r as u32));
        let sc = s.count.get(jj).copied().unwrap_or(0);
        let sp = s.cols.get(jj).copied().unwrap_or(P::IDENTITY);
        let mut p = or_identity(&sp, ks);
        p.combine_dense::<M2>(&acc.cols[r]);
        let c = or_zero(sc, ks) + acc.count[r];
        key[m] = id;
        count[m] = c;
        cols[m] = p;
        m += (c != 0) as usize;
        j += ks as usize;
    }
    assert_eq!(j, s.len(), "every suffix row has a rank in `sorted`");
    out.key.extend_from_slice(&key[..m]);
    out.count.extend_from_slice(&count[..m]);
    P::row_states(out).extend_from_slice(&cols[..m]);
}

/// Buffers re-used when a pane is put in key order.
#[derive(Clone, Debug, Default)]
struct PaneScratch<P> {
    keys: Vec<u32>,
    count: Vec<u64>,
    cols: Vec<P>,
}

#[inline(always)]
fn combine_row<const M2: bool, P: RowStates>(dst: &mut [P], src: &[P]) {
    for (a, b) in dst.iter_mut().zip(src) {
        a.combine_with::<M2>(b);
    }
}

/// The window state of tumbling and sliding windows: per-pane partials, fired-window revisions.
#[derive(Clone, Debug)]
pub struct PaneStore<P = ColPartial> {
    layout: PaneLayout,
    lateness: i64,
    ncols: usize,
    want_m2: bool,
    wm: i64,
    /// Pane index -> position in `slab`.
    index: BTreeMap<i64, usize>,
    slab: Vec<Pane<P>>,
    free: Vec<usize>,
    /// Windows that fired and are still kept (`allowed lateness > 0`): `(start, key) -> revision`.
    fired: BTreeMap<(i64, u32), u32>,
    /// Fired, kept windows updated since their last firing.
    dirty: BTreeSet<(i64, u32)>,
    acc: Accumulator<P>,
    order: Vec<u32>,
    sliding: Sliding<P>,
    /// Windows of up to this many panes use `sliding` (a knob for the tests).
    sliding_max: i64,
    /// Emptied panes, shared with a direct-mode assigner.
    pool: PanePool<P>,
    /// Emptied indexes of purged panes.
    indexes: Vec<Vec<u32>>,
}

impl<P: RowStates> PaneStore<P> {
    /// An empty store; `want_m2` says whether variances are requested.
    pub fn new(layout: PaneLayout, lateness: i64, ncols: usize, want_m2: bool) -> Self {
        PaneStore {
            layout,
            lateness,
            ncols,
            want_m2,
            wm: i64::MIN,
            index: BTreeMap::new(),
            slab: vec![],
            free: vec![],
            fired: BTreeMap::new(),
            dirty: BTreeSet::new(),
            acc: Accumulator::default(),
            order: vec![],
            sliding: Sliding::default(),
            sliding_max: MAX_SLIDING_PANES,
            pool: PanePool::default(),
            indexes: vec![],
        }
    }

    /// Shares `pool` with a direct-mode assigner ([`PaneAssigner::reduce_in_place`]): purged and
    /// merged panes go back through it.
    pub fn share_pool(&mut self, pool: PanePool<P>) {
        self.pool = pool;
    }

    /// Panes currently held (for metrics and the bounded-memory tests).
    pub fn open_panes(&self) -> usize {
        self.index.len()
    }

    /// `(key, pane)` states currently held.
    pub fn open_states(&self) -> usize {
        self.index.values().map(|&i| self.slab[i].keys.len()).sum()
    }

    /// Applies one batch's partials (or, in the direct mode, takes its sealed panes) and fires
    /// what the watermark allows.
    pub fn apply(&mut self, plan: &mut PanePlan<P>, partials: &Partials, keys: &KeyOrder, out: &mut WindowRows) {
        let (mut s, mut g) = (0usize, 0usize);
        for ep in &plan.epochs {
            self.merge(&plan.slot_key, &plan.slot_pane, partials, s..ep.slot_end as usize);
            s = ep.slot_end as usize;
            for sp in &mut plan.sealed[g..ep.sealed_end as usize] {
                self.absorb(std::mem::take(sp));
            }
            g = ep.sealed_end as usize;
            self.advance_to(ep.watermark, keys, out);
        }
        self.merge(&plan.slot_key, &plan.slot_pane, partials, s..plan.slot_key.len());
        for sp in &mut plan.sealed[g..] {
            self.absorb(std::mem::take(sp));
        }
        plan.sealed.clear();
        self.advance_to(plan.end_watermark, keys, out);
        let dirty = std::mem::take(&mut self.dirty);
        self.emit_revisions(dirty.into_iter(), keys, out);
    }

    fn pane_slot(&mut self, p: i64) -> usize {
        if let Some(&i) = self.index.get(&p) {
            return i;
        }
        let pane = take_pane(&self.pool);
        self.place(p, pane)
    }

    /// Puts `pane` (rows without an index) in the slab as pane `p` (not held yet), indexed.
    fn place(&mut self, p: i64, mut pane: Pane<P>) -> usize {
        self.changed(p);
        pane.set_index(take_index(&mut self.indexes, 0));
        let i = match self.free.pop() {
            Some(i) => {
                self.slab[i] = pane;
                i
            }
            None => {
                self.slab.push(pane);
                self.slab.len() - 1
            }
        };
        self.index.insert(p, i);
        i
    }

    /// With allowed lateness, marks the fired and still kept windows of pane `p` that `key`'s
    /// new data updates: they emit a new revision.
    fn mark_dirty(&mut self, p: i64, key: u32) {
        let start = self.layout.pane_start(p);
        for ws in self.layout.windows_of(start) {
            let end = ws + self.layout.size;
            if end - 1 <= self.wm && cleanup_time(end, self.lateness) > self.wm {
                self.dirty.insert((ws, key));
            }
        }
    }

    /// Takes over the rows of a pane the assigner filled (direct mode): adopted as the pane when
    /// the store has none, else the smaller of the two is merged into the larger.
    fn absorb(&mut self, sealed: SealedPane<P>) {
        let SealedPane {
            pane: p,
            rows: mut incoming,
        } = sealed;
        if incoming.keys.is_empty() {
            give_back(&self.pool, incoming);
            return;
        }
        if self.lateness > 0 {
            for &k in &incoming.keys {
                self.mark_dirty(p, k);
            }
        }
        let Some(&i) = self.index.get(&p) else {
            self.place(p, incoming);
            return;
        };
        self.changed(p);
        let ncols = self.ncols;
        let m2 = self.want_m2;
        let pane = &mut self.slab[i];
        if pane.keys.len() * 2 < incoming.keys.len() {
            // far more rows arrive than are held: index those and merge the few held ones in
            std::mem::swap(pane, &mut incoming);
            let idx = incoming.take_index();
            pane.set_index(idx);
        }
        for (r, &key) in incoming.keys.iter().enumerate() {
            let src = &incoming.cols[r * ncols..(r + 1) * ncols];
            pane.add_row(key, incoming.count[r], src, ncols, m2);
        }
        give_back(&self.pool, incoming);
    }

    fn merge(&mut self, slot_key: &[u32], slot_pane: &[i64], partials: &Partials, range: std::ops::Range<usize>) {
        if range.is_empty() {
            return;
        }
        if self.want_m2 {
            self.merge_impl::<true>(slot_key, slot_pane, partials, range)
        } else {
            self.merge_impl::<false>(slot_key, slot_pane, partials, range)
        }
    }

    fn merge_impl<const M2: bool>(
        &mut self,
        slot_key: &[u32],
        slot_pane: &[i64],
        partials: &Partials,
        range: std::ops::Range<usize>,
    ) {
        let ncols = self.ncols;
        // Slots alternate between a few panes; remember the last ones.
        let mut cache: [(i64, usize); 4] = [(i64::MIN, 0); 4];
        let mut next = 0;
        for s in range {
            let p = slot_pane[s];
            let pi = match cache.iter().find(|c| c.0 == p) {
                Some(c) => c.1,
                None => {
                    self.changed(p);
                    let i = self.pane_slot(p);
                    cache[next] = (p, i);
                    next = (next + 1) % cache.len();
                    i
                }
            };
            let key = slot_key[s];
            // the backend's full partials, as this store keeps them
            self.slab[pi].add_row_of(key, partials.count[s], partials.slot(s), ncols, M2, P::from_full);
            if self.lateness > 0 {
                self.mark_dirty(p, key);
            }
        }
    }

    /// Advances the store's watermark to `w`: fires windows with `end - 1 <= w` (first firing),
    /// emits the last revision of updated windows about to be purged, and purges state that can
    /// no longer change.
    pub fn advance_to(&mut self, w: i64, keys: &KeyOrder, out: &mut WindowRows) {
        if w <= self.wm {
            return;
        }
        let size = self.layout.size;
        // Every window with `end - 1 <= self.wm` has fired; start from the first that has not.
        let mut e = if self.wm == i64::MIN {
            i64::MIN
        } else {
            self.layout.next_window_end_after(self.wm + 1)
        };
        loop {
            let first = if e == i64::MIN {
                self.index.keys().next().copied()
            } else {
                self.index
                    .range(self.layout.pane_of(e - size)..)
                    .next()
                    .map(|(p, _)| *p)
            };
            let Some(p) = first else { break };
            // The first window that holds data; the ones before it are empty.
            let c = if e == i64::MIN {
                self.layout.first_window_end(p)
            } else {
                e.max(self.layout.first_window_end(p))
            };
            if c - 1 > w {
                break;
            }
            if c != e {
                e = c;
                continue;
            }
            self.fire_window(e - size, keys, out);
            e += self.layout.slide;
        }
        self.wm = w;
        // Purge: emit pending revisions of windows that are about to go, then drop state.
        if self.lateness > 0 {
            let lateness = self.lateness;
            let purged: Vec<(i64, u32)> = self
                .dirty
                .iter()
                .take_while(|(s, _)| cleanup_time(s + size, lateness) <= w)
                .copied()
                .collect();
            for d in &purged {
                self.dirty.remove(d);
            }
            self.emit_revisions(purged.into_iter(), keys, out);
            while let Some((&(s, _), _)) = self.fired.first_key_value() {
                if cleanup_time(s + size, lateness) > w {
                    break;
                }
                // every window with this start is purged
                let rest = self.fired.split_off(&(s + 1, 0));
                self.fired = rest;
            }
        }
        while let Some((&p, &i)) = self.index.first_key_value() {
            if cleanup_time(self.layout.last_window_end(p), self.lateness) > w {
                break;
            }
            self.index.remove(&p);
            let mut pane = std::mem::take(&mut self.slab[i]);
            keep(&mut self.indexes, pane.take_index());
            give_back(&self.pool, pane);
            self.free.push(i);
        }
    }

    /// A pane of sliding windows changed: suffixes and prefixes that hold it are stale.
    fn changed(&mut self, p: i64) {
        let k = self.layout.panes_per_window();
        let b = p.div_euclid(k);
        let sl = &mut self.sliding;
        if sl.suffix_block.is_some_and(|(sb, _)| sb == b) {
            sl.suffix_block = None;
        }
        if sl.prefix_block.is_some_and(|(pb, _)| pb == b) && p <= sl.prefix_last {
            sl.prefix_block = None;
        }
    }

    /// The slab position of pane `p`, its rows put in key order first; `None` when it holds no
    /// data.
    fn ordered_pane(&mut self, p: i64, keys: &KeyOrder) -> Option<usize> {
        let &pi = self.index.get(&p)?;
        let pane = &mut self.slab[pi];
        if pane.sorted != pane.keys.len() {
            pane.sort_by_key_order(keys, self.ncols, &mut self.acc.scratch);
        }
        Some(pi)
    }

    /// Builds the suffixes `1..k` of block `b` (of `k` panes) unless they are current (the whole
    /// block, suffix 0, is its prefix: [`Self::fire_sliding`]).
    fn build_suffixes<const M2: bool>(&mut self, b: i64, k: i64, keys: &KeyOrder) {
        if self.sliding.suffix_block == Some((b, keys.len())) {
            return;
        }
        let ncols = self.ncols;
        self.sliding.suffix.resize_with(k as usize, OrderedRows::default);
        let none = OrderedRows::default();
        for i in (1..k as usize).rev() {
            let mut dst = std::mem::take(&mut self.sliding.suffix[i]);
            let pi = self.ordered_pane(b * k + i as i64, keys);
            let next = self.sliding.suffix.get(i + 1).unwrap_or(&none);
            match pi {
                Some(pi) => {
                    let pane = &self.slab[pi];
                    let rows = (&pane.keys[..], &pane.count[..], &pane.cols[..]);
                    let both = !pane.keys.is_empty() && !next.rank.is_empty();
                    if ncols == 1 && both && pane.keys.len() + next.len() >= keys.len() {
                        merge_dense_one::<M2, _>(rows, next, keys.sorted(), &mut dst);
                    } else {
                        merge_ordered::<M2, _>(rows, next, keys, ncols, &mut dst);
                    }
                }
                None => merge_ordered::<M2, _>((&[], &[], &[]), next, keys, ncols, &mut dst),
            }
            self.sliding.suffix[i] = dst;
        }
        self.sliding.suffix_block = Some((b, keys.len()));
    }

    /// Grows the prefix of block `b` (of `k` panes) up to pane `last`.
    fn advance_prefix<const M2: bool>(&mut self, b: i64, k: i64, last: i64, keys: &KeyOrder) {
        let ncols = self.ncols;
        let n = keys.len();
        if self.sliding.prefix_block != Some((b, n)) {
            let acc = &mut self.sliding.prefix;
            for &r in &acc.touched {
                let r = r as usize;
                acc.count[r] = 0;
                acc.cols[r * ncols..(r + 1) * ncols].fill(P::IDENTITY);
            }
            acc.touched.clear();
            if acc.count.len() < n {
                acc.count.resize(n, 0);
                acc.cols.resize(n * ncols, P::IDENTITY);
            }
            self.sliding.prefix_block = Some((b, n));
            self.sliding.prefix_last = b * k - 1;
        }
        for p in self.sliding.prefix_last + 1..=last {
            let Some(pi) = self.ordered_pane(p, keys) else { continue };
            let pane = &self.slab[pi];
            let acc = &mut self.sliding.prefix;
            for (r, &key) in pane.keys.iter().enumerate() {
                let a = keys.rank(key) as usize;
                let src = &pane.cols[r * ncols..(r + 1) * ncols];
                let dst = &mut acc.cols[a * ncols..(a + 1) * ncols];
                if acc.count[a] == 0 {
                    acc.touched.push(a as u32);
                    acc.count[a] = pane.count[r];
                    dst.copy_from_slice(src);
                } else {
                    acc.count[a] += pane.count[r];
                    combine_row::<M2, _>(dst, src);
                }
            }
        }
        self.sliding.prefix_last = self.sliding.prefix_last.max(last);
    }

    /// Fires sliding window `[start, end)` over panes `lo..=hi` from a suffix and a prefix.
    fn fire_sliding<const M2: bool>(
        &mut self,
        start: i64,
        end: i64,
        lo: i64,
        hi: i64,
        keys: &KeyOrder,
        out: &mut WindowRows,
    ) {
        let k = hi - lo + 1;
        let b = lo.div_euclid(k);
        let from = out.len();
        let ncols = self.ncols;
        let sorted = keys.sorted();
        let none = OrderedRows::default();
        let s = if lo == b * k {
            // The window is its block: the block's whole prefix, which the windows before it
            // grew to all but its last pane (so no suffix of the whole block is built).
            self.advance_prefix::<M2>(b, k, hi, keys);
            &none
        } else {
            self.build_suffixes::<M2>(b, k, keys);
            self.advance_prefix::<M2>(b + 1, k, hi, keys);
            &self.sliding.suffix[(lo - b * k) as usize]
        };
        let acc = &mut self.sliding.prefix;
        let n = keys.len();
        let most = acc.touched.len() + s.len();
        out.key.reserve(most);
        out.count.reserve(most);
        P::row_states(out).reserve(most * ncols);
        let mut j = 0;
        if most * 8 >= n {
            // most keys have a row: walk every rank
            if ncols == 1 {
                emit_dense_one::<M2, _>(out, s, acc, sorted, &mut self.sliding.emitted);
            } else {
                for r in 0..n {
                    emit_sliding::<M2, _>(out, r, s, &mut j, acc, sorted, ncols);
                }
            }
        } else {
            // few rows: the prefix's ranks in order, merged with the suffix's
            let mut touched = std::mem::take(&mut acc.touched);
            touched.sort_unstable();
            for &r in &touched {
                while j < s.len() && s.rank[j] < r {
                    emit_sliding::<M2, _>(out, s.rank[j] as usize, s, &mut j, acc, sorted, ncols);
                }
                emit_sliding::<M2, _>(out, r as usize, s, &mut j, acc, sorted, ncols);
            }
            while j < s.len() {
                emit_sliding::<M2, _>(out, s.rank[j] as usize, s, &mut j, acc, sorted, ncols);
            }
            acc.touched = touched;
        }
        out.close_firing(from, start, end);
        if self.lateness > 0 {
            for &key in &out.key[from..] {
                self.fired.insert((start, key), 0);
            }
        }
    }

    /// With allowed lateness, records the first firing of window `start` for the keys in
    /// `self.order`, so that late updates emit the next revision.
    fn remember_fired(&mut self, start: i64) {
        if self.lateness > 0 {
            for &k in &self.order {
                self.fired.insert((start, k), 0);
            }
        }
    }

    /// Merges the panes of window `[start, start + size)` for every key and emits one row each,
    /// in key order.
    fn fire_window(&mut self, start: i64, keys: &KeyOrder, out: &mut WindowRows) {
        let end = start + self.layout.size;
        let lo = self.layout.pane_of(start);
        let hi = self.layout.pane_of(end - 1);
        if lo == hi {
            // A tumbling window is one pane: emit its rows directly.
            let Some(&pi) = self.index.get(&lo) else { return };
            let pane = &self.slab[pi];
            self.order.clear();
            self.order.extend_from_slice(&pane.keys);
            keys.order_ids(&mut self.order, |k| {
                pane.index.get(k as usize).is_some_and(|&r| r != NONE)
            });
            let index = &pane.index;
            out.extend_firing(start, end, &self.order, &pane.count, &pane.cols, |k| {
                index[k as usize] as usize
            });
            self.remember_fired(start);
            return;
        }
        if hi - lo + 1 >= 3 && hi - lo < self.sliding_max {
            if self.want_m2 {
                self.fire_sliding::<true>(start, end, lo, hi, keys, out);
            } else {
                self.fire_sliding::<false>(start, end, lo, hi, keys, out);
            }
            return;
        }
        let dense = if self.want_m2 {
            self.accumulate::<true>(lo, hi, keys)
        } else {
            self.accumulate::<false>(lo, hi, keys)
        };
        // The touched ranks in order: a walk over all ranks when the window holds a large share
        // of the keys, else a sort of the touched ones.
        let acc = &mut self.acc;
        let n = keys.len();
        if dense || acc.touched.len() * 8 >= n {
            acc.touched.clear();
            acc.touched.resize(n, 0);
            let mut m = 0;
            for r in 0..n {
                acc.touched[m] = r as u32;
                m += (acc.count[r] != 0) as usize;
            }
            acc.touched.truncate(m);
        } else {
            acc.touched.sort_unstable();
        }
        self.order.clear();
        let sorted = keys.sorted();
        self.order.extend(acc.touched.iter().map(|&r| sorted[r as usize]));
        out.extend_firing(start, end, &self.order, &acc.count, &acc.cols, |k| {
            keys.rank(k) as usize
        });
        let ncols = self.ncols;
        for &r in &acc.touched {
            let r = r as usize;
            acc.count[r] = 0;
            acc.cols[r * ncols..(r + 1) * ncols].fill(P::IDENTITY);
        }
        acc.touched.clear();
        self.remember_fired(start);
    }

    /// Merges panes `lo..=hi` into the accumulator, which is indexed by key rank. Each pane is
    /// first put in key order (once: a pane serves `size / pane` windows), so the merge walks the
    /// accumulator forwards instead of jumping around it. Returns whether the window is dense
    /// (its panes' rows are a large share of all keys): then touched ranks are not tracked (the
    /// caller walks every rank) and, without variances, the merge has no data-dependent branch.
    fn accumulate<const M2: bool>(&mut self, lo: i64, hi: i64, keys: &KeyOrder) -> bool {
        let ncols = self.ncols;
        let n = keys.len();
        let acc = &mut self.acc;
        if acc.count.len() < n {
            acc.count.resize(n, 0);
            acc.cols.resize(n * ncols, P::IDENTITY);
        }
        let mut rows = 0;
        for (_, &pi) in self.index.range(lo..=hi) {
            let pane = &mut self.slab[pi];
            if pane.sorted != pane.keys.len() {
                pane.sort_by_key_order(keys, ncols, &mut acc.scratch);
            }
            rows += pane.keys.len();
        }
        let dense = rows * 4 >= n;
        for (_, &pi) in self.index.range(lo..=hi) {
            let pane = &self.slab[pi];
            for (r, &k) in pane.keys.iter().enumerate() {
                let a = keys.rank(k) as usize;
                let src = &pane.cols[r * ncols..(r + 1) * ncols];
                let dst = &mut acc.cols[a * ncols..(a + 1) * ncols];
                if dense {
                    acc.count[a] += pane.count[r];
                    if M2 {
                        combine_row::<true, _>(dst, src);
                    } else {
                        for (d, s) in dst.iter_mut().zip(src) {
                            d.combine_branchless(s);
                        }
                    }
                } else if acc.count[a] == 0 {
                    acc.touched.push(a as u32);
                    acc.count[a] = pane.count[r];
                    dst.copy_from_slice(src);
                } else {
                    acc.count[a] += pane.count[r];
                    combine_row::<M2, _>(dst, src);
                }
            }
        }
        dense
    }

    /// Emits a new revision of each `(start, key)` window from its current panes, ordered by
    /// start, then key value.
    fn emit_revisions(&mut self, windows: impl Iterator<Item = (i64, u32)>, keys: &KeyOrder, out: &mut WindowRows) {
        let mut list: Vec<(i64, u32)> = windows.collect();
        if list.is_empty() {
            return;
        }
        list.sort_unstable_by_key(|&(s, k)| (s, keys.rank(k)));
        let ncols = self.ncols;
        let mut cols = vec![P::IDENTITY; ncols];
        for (start, key) in list {
            let end = start + self.layout.size;
            let mut count = 0;
            cols.fill(P::IDENTITY);
            for (_, &pi) in self
                .index
                .range(self.layout.pane_of(start)..=self.layout.pane_of(end - 1))
            {
                let pane = &self.slab[pi];
                if let Some(r) = pane.get(key) {
                    count += pane.count[r];
                    combine_row::<true, _>(&mut cols, &pane.cols[r * ncols..(r + 1) * ncols]);
                }
            }
            if count == 0 {
                continue;
            }
            let rev = match self.fired.get(&(start, key)) {
                Some(r) => r + 1,
                None => 0,
            };
            self.fired.insert((start, key), rev);
            out.push(key, start, end, rev, count, &cols, 0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Assigns `ts`/`keys` in batches of `batch`, starting the stamps `start` below their wrap.
    fn slots_of(ts: &[i64], keys: &[u32], batch: usize, start: u32) -> Vec<(u32, i64)> {
        let mut a = PaneAssigner::<ColPartial>::new(PaneLayout::new(100, 100, 0), 50, 0);
        a.next_stamp = u32::MAX - start;
        let (mut slots, mut late, mut plan) = (vec![], vec![], PanePlan::default());
        let mut out = vec![];
        for (t, k) in ts.chunks(batch).zip(keys.chunks(batch)) {
            a.assign(t, k, &[] as &[Vec<f64>], 8, &mut slots, &mut late, &mut plan);
            assert!(late.is_empty());
            // each event's slot must name its own key and pane
            for (i, &s) in slots.iter().enumerate() {
                let s = s as usize;
                assert_eq!(plan.slot_key[s], k[i], "event {i}: slot of another key");
                assert_eq!(
                    plan.slot_pane[s],
                    a.layout.pane_of(t[i]),
                    "event {i}: slot of another pane"
                );
                out.push((plan.slot_key[s], plan.slot_pane[s]));
            }
        }
        out
    }

    #[test]
    fn slots_stay_right_when_table_stamps_wrap() {
        // up to 49 ms of disorder (the watermark delay is 50): events go back to older panes
        let ts: Vec<i64> = (0..4000).map(|i| i as i64 / 3 - (i as i64 * 37 % 50)).collect();
        let keys: Vec<u32> = (0..4000).map(|i| (i * 7 % 8) as u32).collect();
        // batches of 1000 events span 4 panes: the wrap comes while tables are in use
        let far = slots_of(&ts, &keys, 1000, 1_000_000);
        for start in 1..=12 {
            assert_eq!(slots_of(&ts, &keys, 1000, start), far, "stamps {start} below the wrap");
        }
    }
}

#[cfg(test)]
mod direct_tests {
    use super::*;
    use crate::backend::AggBackend;
    use crate::backend::reference::ReferenceBackend;
    use crate::batch::{KeyDict, KeyKind};

    /// The dense walks of one value column give the rows of the branchy merge and emit, on random
    /// key subsets from a single row to every key, ranks missing at either end, and destination
    /// buffers left longer or shorter by the case before.
    #[test]
    fn dense_walks_equal_the_branchy_merge_and_emit() {
        dense_walks_case::<false>();
        dense_walks_case::<true>();
    }

    fn dense_walks_case<const M2: bool>() {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        // (without variances `m2` is not kept, and not compared)
        let parts = |cols: &[ColPartial]| {
            cols.iter()
                .map(|p| (p.n, p.sum, p.min, p.max, if M2 { p.m2.to_bits() } else { 0 }))
                .collect::<Vec<_>>()
        };
        let (mut got, mut want) = (OrderedRows::default(), OrderedRows::default());
        let (mut got_out, mut want_out) = (WindowRows::new(1), WindowRows::new(1));
        let mut emitted = PaneScratch::default();
        for case in 0..400 {
            let n = 1 + (next() % 70) as usize;
            // ids in first-seen order, key values shuffled: rank order is not id order
            let mut dict = KeyDict::new(KeyKind::Int);
            while dict.len() < n {
                dict.encode_int((next() % 10_000) as i64).unwrap();
            }
            let mut order = KeyOrder::default();
            order.update(dict.values());
            let sorted = order.sorted().to_vec();
            // each side keeps a rank with its own probability (from almost none to all)
            fn side(next: &mut impl FnMut() -> u64, n: usize, p: u64) -> Vec<usize> {
                let mut ranks: Vec<usize> = (0..n).filter(|_| next() % 100 < p).collect();
                if ranks.is_empty() {
                    ranks.push((next() % n as u64) as usize);
                }
                ranks
            }
            let probs = [3, 50, 97, 100];
            let (pa, pb) = (probs[case % 4], probs[(case / 4) % 4]);
            let row = |r: usize, salt: u64| {
                let mut c = ColPartial::of::<M2>((r as u64 * 7 + salt) as f64 - 300.0);
                c.push::<M2>((salt % 13) as f64 * 0.37);
                (2 + salt % 3, c)
            };
            let (mut ak, mut ac, mut acols) = (vec![], vec![], vec![]);
            for r in side(&mut next, n, pa) {
                let (c, p) = row(r, next() % 1000);
                ak.push(sorted[r]);
                ac.push(c);
                acols.push(p);
            }
            let mut b = OrderedRows::default();
            for r in side(&mut next, n, pb) {
                let (c, p) = row(r, next() % 1000);
                push_row(&mut b, r as u32, c, &[p]);
            }
            merge_ordered::<M2, _>((&ak, &ac, &acols), &b, &order, 1, &mut want);
            merge_dense_one::<M2, _>((&ak, &ac, &acols), &b, &sorted, &mut got);
            let what = format!("m2 {M2} case {case}: {n} keys, {} and {} rows", ak.len(), b.len());
            assert_eq!(got.rank, want.rank, "{what}");
            assert_eq!(got.count, want.count, "{what}");
            assert_eq!(parts(&got.cols), parts(&want.cols), "{what}");

            // a window: suffix `b` (or none, a block-aligned window) and a dense prefix
            let mut acc = Accumulator {
                count: vec![0; n],
                cols: vec![ColPartial::IDENTITY; n],
                ..Default::default()
            };
            for r in side(&mut next, n, probs[(case / 16) % 4]) {
                let (c, p) = row(r, next() % 1000);
                acc.count[r] = c;
                acc.cols[r] = p;
                acc.touched.push(r as u32);
            }
            let s = if case % 5 == 0 { OrderedRows::default() } else { b };
            for out in [&mut got_out, &mut want_out] {
                out.clear();
                // rows of an earlier window stay in front of the new ones
                out.push(7, 0, 1, 0, 1, &[ColPartial::of::<M2>(1.0)], 0);
            }
            emit_dense_one::<M2, _>(&mut got_out, &s, &acc, &sorted, &mut emitted);
            let mut j = 0;
            for r in 0..n {
                emit_sliding::<M2, _>(&mut want_out, r, &s, &mut j, &acc, &sorted, 1);
            }
            assert_eq!(got_out.key, want_out.key, "{what}: window keys");
            assert_eq!(got_out.count, want_out.count, "{what}: window counts");
            assert_eq!(parts(&got_out.cols), parts(&want_out.cols), "{what}: window partials");
        }
    }

    /// Disordered events with stragglers far behind the watermark, integer values (sums are
    /// exact in any order), keys whose ids are not in value order.
    fn data(n: usize, nkeys: u64) -> (Vec<i64>, Vec<u32>, Vec<Vec<f64>>, KeyDict) {
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let mut dict = KeyDict::new(KeyKind::Int);
        let (mut ts, mut keys, mut v0, mut v1) = (vec![], vec![], vec![], vec![]);
        for i in 0..n {
            let r = next();
            let behind = if r % 50 == 0 {
                200 + (r >> 8) % 400
            } else {
                (r >> 8) % 60
            };
            ts.push(i as i64 - 300 - behind as i64);
            // new keys keep arriving (their ranks fall between the old ones')
            let k = (r >> 20) % nkeys.min(5 + i as u64);
            keys.push(dict.encode_int(((k * 7919) % 1_000_003) as i64).unwrap());
            v0.push(((r >> 30) % 1000) as f64 - 500.0);
            v1.push(if r % 7 == 0 {
                crate::agg::null_value()
            } else {
                ((r >> 40) % 100) as f64
            });
        }
        (ts, keys, vec![v0, v1], dict)
    }

    fn run(layout: PaneLayout, lateness: i64, batch: usize, direct: bool, m2: bool) -> WindowRows {
        run_with(layout, lateness, batch, direct, m2, 23, true, 2)
    }

    #[allow(clippy::too_many_arguments)]
    fn run_with(
        layout: PaneLayout,
        lateness: i64,
        batch: usize,
        direct: bool,
        m2: bool,
        nkeys: u64,
        sliding: bool,
        ncols: usize,
    ) -> WindowRows {
        run_state::<ColPartial>(layout, lateness, batch, direct, m2, nkeys, sliding, ncols)
    }

    /// [`run_with`] keeping state `P` per `(key, pane)`.
    #[allow(clippy::too_many_arguments)]
    fn run_state<P: RowStates>(
        layout: PaneLayout,
        lateness: i64,
        batch: usize,
        direct: bool,
        m2: bool,
        nkeys: u64,
        sliding: bool,
        ncols: usize,
    ) -> WindowRows {
        let (ts, keys, values, dict) = data(6000, nkeys);
        let values: Vec<Vec<f64>> = values.into_iter().take(ncols).collect();
        let mut order = KeyOrder::default();
        order.update(dict.values());
        let nk = order.len();
        let mut a = PaneAssigner::<P>::new(layout, 50, lateness);
        let mut s = PaneStore::<P>::new(layout, lateness, ncols, m2);
        if !sliding {
            s.sliding_max = 0;
        }
        if direct {
            let pool = PanePool::default();
            s.share_pool(pool.clone());
            a.reduce_in_place(ncols, m2, pool);
        }
        let (mut slots, mut late, mut plan, mut parts) = (vec![], vec![], PanePlan::default(), Partials::default());
        let mut out = WindowRows::new(ncols);
        for lo in (0..ts.len()).step_by(batch) {
            let hi = (lo + batch).min(ts.len());
            let vals: Vec<Vec<f64>> = values.iter().map(|v| v[lo..hi].to_vec()).collect();
            if batch != 37 {
                // (batches of 37 leave the key order to the store)
                a.note_keys(dict.values());
            }
            a.assign(&ts[lo..hi], &keys[lo..hi], &vals, nk, &mut slots, &mut late, &mut plan);
            let sb = crate::backend::SlotBatch {
                slots: &slots,
                values: &vals,
                num_slots: plan.num_slots(),
                want_m2: m2,
            };
            ReferenceBackend.reduce(&sb, ncols, &mut parts).unwrap();
            s.apply(&mut plan, &parts, &order, &mut out);
        }
        a.finish(&mut plan);
        s.apply(&mut plan, &Partials::default(), &order, &mut out);
        out
    }

    #[test]
    fn direct_mode_emits_the_rows_of_the_slot_path() {
        for layout in [
            PaneLayout::new(100, 100, 0),
            PaneLayout::new(300, 100, 0),
            PaneLayout::new(250, 100, 30),
        ] {
            for lateness in [0, 120] {
                for batch in [1, 37, 1000, 6000] {
                    for m2 in [false, true] {
                        let want = run(layout, lateness, batch, false, m2);
                        let got = run(layout, lateness, batch, true, m2);
                        let what = format!("{layout:?} lateness {lateness} batch {batch} m2 {m2}");
                        assert!(want.len() > 100, "{what}: too few rows to compare");
                        if lateness == 0 {
                            // one firing per window: every row the same, in the same order
                            assert_eq!(final_rows(&got, m2).len(), got.len(), "{what}");
                            assert_eq!(got.key, want.key, "{what}");
                            assert_eq!(got.start, want.start, "{what}");
                        }
                        // Within the allowed lateness the slot path's tumbling windows take a
                        // batch's updates into their first firing, the direct mode into a
                        // revision (as a batch of one event does): the last revisions agree.
                        assert_eq!(final_rows(&got, m2), final_rows(&want, m2), "{what}");
                    }
                }
            }
        }
    }

    #[test]
    fn sliding_prefixes_and_suffixes_equal_merging_every_pane() {
        let layouts = [
            PaneLayout::new(300, 100, 0),
            PaneLayout::new(250, 100, 30),
            PaneLayout::new(700, 100, 0),
        ];
        each_case(layouts, |nkeys, layout, lateness, batch| {
            // (one value column has merge and emit loops of its own)
            for (m2, ncols) in [(false, 1), (false, 2), (true, 1), (true, 2)] {
                let want = run_with(layout, lateness, batch, true, m2, nkeys, false, ncols);
                let got = run_with(layout, lateness, batch, true, m2, nkeys, true, ncols);
                let what = format!("{nkeys} keys {layout:?} lateness {lateness} batch {batch} m2 {m2} {ncols} columns");
                assert!(want.len() > 100, "{what}: too few rows to compare");
                // the same rows in the same order, revisions included
                assert_eq!(got.key, want.key, "{what}");
                assert_eq!(got.start, want.start, "{what}");
                assert_eq!(got.revision, want.revision, "{what}");
                assert_eq!(final_rows(&got, m2), final_rows(&want, m2), "{what}");
            }
        });
    }

    /// Calls `f` with every key count, layout, allowed lateness and batch size of the store's
    /// sweeps: 23 keys (dense windows, every rank walked), 150 (panes with about half the keys:
    /// the dense merges' coin toss), 50,000 (sparse windows: merges, most ranks sorted).
    fn each_case(layouts: [PaneLayout; 3], mut f: impl FnMut(u64, PaneLayout, i64, usize)) {
        for nkeys in [23, 150, 50_000] {
            for layout in layouts {
                for lateness in [0, 120] {
                    for batch in [1, 37, 6000] {
                        f(nkeys, layout, lateness, batch);
                    }
                }
            }
        }
    }

    #[test]
    fn count_and_sum_state_gives_the_full_states_rows() {
        // every path of the store: slots and direct mode, tumbling, sliding from prefixes and
        // suffixes (dense and sparse, one and two columns) and from every pane, revisions
        let layouts = [
            PaneLayout::new(100, 100, 0),
            PaneLayout::new(300, 100, 0),
            PaneLayout::new(250, 100, 30),
        ];
        each_case(layouts, |nkeys, layout, lateness, batch| {
            for (direct, sliding, ncols) in [(true, true, 1), (true, true, 2), (false, true, 1), (true, false, 1)] {
                let want = run_state::<ColPartial>(layout, lateness, batch, direct, false, nkeys, sliding, ncols);
                let got =
                    run_state::<crate::agg::SumPartial>(layout, lateness, batch, direct, false, nkeys, sliding, ncols);
                let what = format!(
                    "{nkeys} keys {layout:?} lateness {lateness} batch {batch} direct {direct} sliding {sliding} {ncols} columns"
                );
                assert!(want.len() > 100, "{what}: too few rows to compare");
                assert_eq!(got.key, want.key, "{what}");
                assert_eq!(got.start, want.start, "{what}");
                assert_eq!(got.end, want.end, "{what}");
                assert_eq!(got.revision, want.revision, "{what}");
                assert_eq!(got.count, want.count, "{what}");
                // the rows carry the narrow states as they are
                assert!(got.cols.is_empty() && want.sums.is_empty(), "{what}");
                assert_eq!(got.sums.len(), want.cols.len(), "{what}");
                for (g, w) in got.sums.iter().zip(&want.cols) {
                    // counts and sums bit for bit
                    assert_eq!((g.n, g.sum.to_bits()), (w.n, w.sum.to_bits()), "{what}");
                }
            }
        });
    }

    /// The last revision of every `(key, start)` window: end, count, and partials (m2 rounded).
    #[allow(clippy::type_complexity)]
    fn final_rows(r: &WindowRows, m2: bool) -> BTreeMap<(u32, i64), (i64, u64, Vec<(u64, f64, u64, u64, i64)>)> {
        let mut m = BTreeMap::new();
        for i in 0..r.len() {
            let cols = (0..r.ncols)
                .map(|c| {
                    let p = r.partial(i, c);
                    (
                        p.n,
                        p.sum,
                        p.min,
                        p.max,
                        if m2 { (p.m2 * 1e6).round() as i64 } else { 0 },
                    )
                })
                .collect();
            m.insert((r.key[i], r.start[i]), (r.end[i], r.count[i], cols));
        }
        m
    }
}
