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

use super::cleanup_time;
use super::spec::PaneLayout;
use super::watermark::Watermark;
use crate::agg::ColPartial;
use crate::backend::{Partials, SKIP_SLOT};
use crate::batch::KeyOrder;
use crate::output::WindowRows;
use std::collections::{BTreeMap, BTreeSet};

const NONE: u32 = u32::MAX;

/// A watermark point inside a batch where windows fire or are purged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Epoch {
    /// Slots below this were allocated before the point.
    pub slot_end: u32,
    /// The watermark at the point.
    pub watermark: i64,
}

/// What the assigner tells the store about one batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct PanePlan {
    /// Key id of each slot.
    pub slot_key: Vec<u32>,
    /// Pane index of each slot.
    pub slot_pane: Vec<i64>,
    /// Watermark points inside the batch, in order.
    pub epochs: Vec<Epoch>,
    /// The watermark after the batch.
    pub end_watermark: i64,
}

impl PanePlan {
    fn clear(&mut self) {
        self.slot_key.clear();
        self.slot_pane.clear();
        self.epochs.clear();
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
pub struct PaneAssigner {
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
}

impl PaneAssigner {
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
        }
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
    /// `late`, slots (or [`SKIP_SLOT`]) to `slots`, the rest of the plan to `plan`.
    pub fn assign(
        &mut self,
        ts: &[i64],
        keys: &[u32],
        num_keys: usize,
        slots: &mut Vec<u32>,
        late: &mut Vec<u32>,
        plan: &mut PanePlan,
    ) {
        plan.clear();
        slots.clear();
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

    /// Ends the input: the plan that fires every open window.
    pub fn finish(&mut self, plan: &mut PanePlan) {
        plan.clear();
        self.wm.finish();
        plan.end_watermark = self.wm.current();
    }
}

/// The partial state of one pane for every key that has data in it.
#[derive(Clone, Debug, Default)]
struct Pane {
    index: Vec<u32>,
    keys: Vec<u32>,
    count: Vec<u64>,
    cols: Vec<ColPartial>,
    /// Rows `..sorted` are in key order (rows appended later, by late updates, are not).
    sorted: usize,
}

impl Pane {
    /// Puts the rows in key-value order (ranks never reorder existing keys, so it stays valid
    /// as keys arrive).
    fn sort_by_key_order(&mut self, keys: &KeyOrder, ncols: usize, scratch: &mut PaneScratch) {
        scratch.keys.clear();
        scratch.keys.extend_from_slice(&self.keys);
        let index = &self.index;
        keys.order_ids(&mut scratch.keys, |k| index.get(k as usize).is_some_and(|&r| r != NONE));
        scratch.count.clear();
        scratch.cols.clear();
        for &k in &scratch.keys {
            let r = self.index[k as usize] as usize;
            scratch.count.push(self.count[r]);
            scratch.cols.extend_from_slice(&self.cols[r * ncols..(r + 1) * ncols]);
        }
        for (r, &k) in scratch.keys.iter().enumerate() {
            self.index[k as usize] = r as u32;
        }
        std::mem::swap(&mut self.keys, &mut scratch.keys);
        std::mem::swap(&mut self.count, &mut scratch.count);
        std::mem::swap(&mut self.cols, &mut scratch.cols);
        self.sorted = self.keys.len();
    }

    fn get(&self, key: u32) -> Option<usize> {
        self.index
            .get(key as usize)
            .copied()
            .filter(|r| *r != NONE)
            .map(|r| r as usize)
    }

    fn reset(&mut self) {
        for &k in &self.keys {
            self.index[k as usize] = NONE;
        }
        self.keys.clear();
        self.count.clear();
        self.cols.clear();
        self.sorted = 0;
    }
}

/// Scratch space to merge the panes of one window for every key, indexed by key rank (a count
/// of 0 marks an untouched rank).
#[derive(Clone, Debug, Default)]
struct Accumulator {
    touched: Vec<u32>,
    count: Vec<u64>,
    cols: Vec<ColPartial>,
    scratch: PaneScratch,
}

/// Buffers re-used when a pane is put in key order.
#[derive(Clone, Debug, Default)]
struct PaneScratch {
    keys: Vec<u32>,
    count: Vec<u64>,
    cols: Vec<ColPartial>,
}

#[inline(always)]
fn combine_row<const M2: bool>(dst: &mut [ColPartial], src: &[ColPartial]) {
    for (a, b) in dst.iter_mut().zip(src) {
        a.combine_with::<M2>(b);
    }
}

/// The window state of tumbling and sliding windows: per-pane partials, fired-window revisions.
#[derive(Clone, Debug)]
pub struct PaneStore {
    layout: PaneLayout,
    lateness: i64,
    ncols: usize,
    want_m2: bool,
    wm: i64,
    /// Pane index -> position in `slab`.
    index: BTreeMap<i64, usize>,
    slab: Vec<Pane>,
    free: Vec<usize>,
    /// Windows that fired and are still kept (`allowed lateness > 0`): `(start, key) -> revision`.
    fired: BTreeMap<(i64, u32), u32>,
    /// Fired, kept windows updated since their last firing.
    dirty: BTreeSet<(i64, u32)>,
    acc: Accumulator,
    order: Vec<u32>,
}

impl PaneStore {
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
        }
    }

    /// Panes currently held (for metrics and the bounded-memory tests).
    pub fn open_panes(&self) -> usize {
        self.index.len()
    }

    /// `(key, pane)` states currently held.
    pub fn open_states(&self) -> usize {
        self.index.values().map(|&i| self.slab[i].keys.len()).sum()
    }

    /// Applies one batch's partials and fires what the watermark allows.
    pub fn apply(&mut self, plan: &PanePlan, partials: &Partials, keys: &KeyOrder, out: &mut WindowRows) {
        let mut s = 0usize;
        for ep in &plan.epochs {
            self.merge(plan, partials, s..ep.slot_end as usize);
            s = ep.slot_end as usize;
            self.advance_to(ep.watermark, keys, out);
        }
        self.merge(plan, partials, s..plan.num_slots());
        self.advance_to(plan.end_watermark, keys, out);
        let dirty = std::mem::take(&mut self.dirty);
        self.emit_revisions(dirty.into_iter(), keys, out);
    }

    fn pane_slot(&mut self, p: i64) -> usize {
        if let Some(&i) = self.index.get(&p) {
            return i;
        }
        let i = match self.free.pop() {
            Some(i) => i,
            None => {
                self.slab.push(Pane::default());
                self.slab.len() - 1
            }
        };
        self.index.insert(p, i);
        i
    }

    fn merge(&mut self, plan: &PanePlan, partials: &Partials, range: std::ops::Range<usize>) {
        if self.want_m2 {
            self.merge_impl::<true>(plan, partials, range)
        } else {
            self.merge_impl::<false>(plan, partials, range)
        }
    }

    fn merge_impl<const M2: bool>(&mut self, plan: &PanePlan, partials: &Partials, range: std::ops::Range<usize>) {
        let ncols = self.ncols;
        // Slots alternate between a few panes; remember the last ones.
        let mut cache: [(i64, usize); 4] = [(i64::MIN, 0); 4];
        let mut next = 0;
        for s in range {
            let p = plan.slot_pane[s];
            let pi = match cache.iter().find(|c| c.0 == p) {
                Some(c) => c.1,
                None => {
                    let i = self.pane_slot(p);
                    cache[next] = (p, i);
                    next = (next + 1) % cache.len();
                    i
                }
            };
            let key = plan.slot_key[s];
            let pn = &mut self.slab[pi];
            let k = key as usize;
            if k >= pn.index.len() {
                pn.index.resize((k + 1).max(pn.index.len() * 2), NONE);
            }
            let r = pn.index[k];
            if r == NONE {
                pn.index[k] = pn.keys.len() as u32;
                pn.keys.push(key);
                pn.count.push(partials.count[s]);
                for c in partials.slot(s) {
                    pn.cols.push(*c);
                }
            } else {
                let r = r as usize;
                pn.count[r] += partials.count[s];
                combine_row::<M2>(&mut pn.cols[r * ncols..(r + 1) * ncols], partials.slot(s));
            }
            if self.lateness > 0 {
                let start = self.layout.pane_start(p);
                for ws in self.layout.windows_of(start) {
                    let end = ws + self.layout.size;
                    if end - 1 <= self.wm && cleanup_time(end, self.lateness) > self.wm {
                        self.dirty.insert((ws, key));
                    }
                }
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
            self.slab[i].reset();
            self.free.push(i);
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
            acc.cols[r * ncols..(r + 1) * ncols].fill(ColPartial::IDENTITY);
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
            acc.cols.resize(n * ncols, ColPartial::IDENTITY);
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
                        combine_row::<true>(dst, src);
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
                    combine_row::<M2>(dst, src);
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
        let mut cols = vec![ColPartial::IDENTITY; ncols];
        for (start, key) in list {
            let end = start + self.layout.size;
            let mut count = 0;
            cols.fill(ColPartial::IDENTITY);
            for (_, &pi) in self
                .index
                .range(self.layout.pane_of(start)..=self.layout.pane_of(end - 1))
            {
                let pane = &self.slab[pi];
                if let Some(r) = pane.get(key) {
                    count += pane.count[r];
                    combine_row::<true>(&mut cols, &pane.cols[r * ncols..(r + 1) * ncols]);
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
        let mut a = PaneAssigner::new(PaneLayout::new(100, 100, 0), 50, 0);
        a.next_stamp = u32::MAX - start;
        let (mut slots, mut late, mut plan) = (vec![], vec![], PanePlan::default());
        let mut out = vec![];
        for (t, k) in ts.chunks(batch).zip(keys.chunks(batch)) {
            a.assign(t, k, 8, &mut slots, &mut late, &mut plan);
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
