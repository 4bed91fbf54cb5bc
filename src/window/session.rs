//! Session windows: per-key activity sessions that merge when they overlap or touch.
//!
//! **Assigner** (host, sequential, per event): keeps each key's open sessions (extent only),
//! decides lateness with the per-event watermark, merges sessions, and gives every on-time event
//! the slot of its session for this batch. It records what the store must replay: merges, final
//! extents, sessions whose firing time passed, and sessions purged.
//!
//! **Store** (host, plain data): holds each session's partial aggregate, replays merges, adds the
//! backend's per-slot partials, and emits rows.
//!
//! Semantics (DESIGN.md §3): an event opens `[ts, ts + gap)`; it is late when that window is
//! already past cleanup (`ts + gap - 1 + L <= W`) and it touches no kept session of its key. A
//! session is purged once `end - 1 + L <= W`; a later event near it starts a new session.

use super::watermark::Watermark;
use crate::agg::ColPartial;
use crate::backend::{Partials, SKIP_SLOT};
use crate::batch::{FxHashMap, KeyOrder};
use crate::output::WindowRows;
use std::cmp::Reverse;
use std::collections::BinaryHeap;

#[inline]
fn cleanup_time(end: i64, lateness: i64) -> i64 {
    end.saturating_sub(1).saturating_add(lateness)
}

/// A session's extent as of the end of a batch (or its purge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// The session's identity (stable across batches; the surviving identity after merges).
    pub serial: u64,
    /// Key id.
    pub key: u32,
    /// Start (inclusive).
    pub start: i64,
    /// End (exclusive).
    pub end: i64,
}

/// What the assigner tells the store about one batch.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SessionPlan {
    /// Session serial of each slot (as of the slot's first event).
    pub slot_session: Vec<u64>,
    /// `(absorbed, survivor)` merges, in order.
    pub merges: Vec<(u64, u64)>,
    /// Extents of sessions created, extended or purged in this batch.
    pub extents: Vec<Extent>,
    /// Sessions whose end passed the watermark in this batch (allowed lateness > 0 only).
    pub fire: Vec<u64>,
    /// Sessions purged in this batch.
    pub purge: Vec<u64>,
    /// The watermark after the batch.
    pub end_watermark: i64,
}

impl SessionPlan {
    fn clear(&mut self) {
        self.slot_session.clear();
        self.merges.clear();
        self.extents.clear();
        self.fire.clear();
        self.purge.clear();
    }

    /// Number of slots.
    pub fn num_slots(&self) -> usize {
        self.slot_session.len()
    }
}

#[derive(Clone, Copy, Debug, Default)]
struct Sess {
    serial: u64,
    key: u32,
    start: i64,
    end: i64,
    alive: bool,
    fired: bool,
    slot_stamp: u32,
    slot: u32,
    touched_stamp: u32,
}

/// The per-event half of session windows.
#[derive(Clone, Debug)]
pub struct SessionAssigner {
    gap: i64,
    lateness: i64,
    wm: Watermark,
    slab: Vec<Sess>,
    free: Vec<u32>,
    by_key: Vec<Vec<u32>>,
    purge_heap: BinaryHeap<Reverse<(i64, u32, u64)>>,
    fire_heap: BinaryHeap<Reverse<(i64, u32, u64)>>,
    next_serial: u64,
    stamp: u32,
    touched: Vec<u32>,
}

impl SessionAssigner {
    /// An assigner for sessions with inactivity `gap`, watermark delay and allowed lateness (ms).
    pub fn new(gap: i64, delay: i64, lateness: i64) -> Self {
        SessionAssigner {
            gap,
            lateness,
            wm: Watermark::new(delay),
            slab: vec![],
            free: vec![],
            by_key: vec![],
            purge_heap: BinaryHeap::new(),
            fire_heap: BinaryHeap::new(),
            next_serial: 0,
            stamp: 0,
            touched: vec![],
        }
    }

    /// The watermark that applies to the next event.
    pub fn watermark(&self) -> i64 {
        self.wm.current()
    }

    /// Open sessions (for metrics and the bounded-memory tests).
    pub fn open_sessions(&self) -> usize {
        self.slab.len() - self.free.len()
    }

    fn purge(&mut self, idx: u32, plan: &mut SessionPlan) {
        let s = &mut self.slab[idx as usize];
        s.alive = false;
        plan.extents.push(Extent {
            serial: s.serial,
            key: s.key,
            start: s.start,
            end: s.end,
        });
        plan.purge.push(s.serial);
        self.free.push(idx);
    }

    fn alloc(&mut self, key: u32, start: i64, end: i64) -> u32 {
        let serial = self.next_serial;
        self.next_serial += 1;
        let s = Sess {
            serial,
            key,
            start,
            end,
            alive: true,
            ..Default::default()
        };
        let idx = match self.free.pop() {
            Some(i) => {
                self.slab[i as usize] = s;
                i
            }
            None => {
                self.slab.push(s);
                (self.slab.len() - 1) as u32
            }
        };
        self.purge_heap
            .push(Reverse((cleanup_time(end, self.lateness), idx, serial)));
        if self.lateness > 0 {
            self.fire_heap.push(Reverse((end - 1, idx, serial)));
        }
        idx
    }

    /// Assigns one batch (see [`crate::window::panes::PaneAssigner::assign`]).
    pub fn assign(
        &mut self,
        ts: &[i64],
        keys: &[u32],
        num_keys: usize,
        slots: &mut Vec<u32>,
        late: &mut Vec<u32>,
        plan: &mut SessionPlan,
    ) {
        plan.clear();
        slots.clear();
        slots.reserve(ts.len());
        if self.by_key.len() < num_keys {
            self.by_key.resize_with(num_keys, Vec::new);
        }
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            for s in &mut self.slab {
                s.slot_stamp = 0;
                s.touched_stamp = 0;
            }
            self.stamp = 1;
        }
        let stamp = self.stamp;
        let gap = self.gap;
        let lateness = self.lateness;
        let mut max = self.wm.max_ts();
        let mut touching: Vec<u32> = Vec::with_capacity(4);
        for (i, (&t, &k)) in ts.iter().zip(keys).enumerate() {
            let w = self.wm.from_max(max);
            max = max.max(t);
            let (own_start, own_end) = (t, t + gap);
            // Purge this key's sessions that are past cleanup, and find the ones this event touches.
            touching.clear();
            let mut list = std::mem::take(&mut self.by_key[k as usize]);
            let mut j = 0;
            while j < list.len() {
                let idx = list[j];
                let s = self.slab[idx as usize];
                if cleanup_time(s.end, lateness) <= w {
                    self.purge(idx, plan);
                    list.swap_remove(j);
                    continue;
                }
                if s.start <= own_end && s.end >= own_start {
                    touching.push(idx);
                }
                j += 1;
            }
            let idx = if touching.is_empty() {
                if cleanup_time(own_end, lateness) <= w {
                    self.by_key[k as usize] = list;
                    late.push(i as u32);
                    slots.push(SKIP_SLOT);
                    continue;
                }
                let idx = self.alloc(k, own_start, own_end);
                list.push(idx);
                idx
            } else {
                // The earliest-created session survives; the others merge into it.
                let survivor = *touching
                    .iter()
                    .min_by_key(|&&x| self.slab[x as usize].serial)
                    .unwrap_or(&touching[0]);
                let (mut start, mut end) = (own_start, own_end);
                for &x in &touching {
                    let s = self.slab[x as usize];
                    start = start.min(s.start);
                    end = end.max(s.end);
                    if x != survivor {
                        plan.merges.push((s.serial, self.slab[survivor as usize].serial));
                        self.slab[x as usize].alive = false;
                        self.free.push(x);
                        if let Some(pos) = list.iter().position(|&y| y == x) {
                            list.swap_remove(pos);
                        }
                    }
                }
                let s = &mut self.slab[survivor as usize];
                if end != s.end {
                    // A later end must fire again once the watermark passes it.
                    s.fired = false;
                }
                s.start = start;
                s.end = end;
                survivor
            };
            self.by_key[k as usize] = list;
            let s = &mut self.slab[idx as usize];
            if s.touched_stamp != stamp {
                s.touched_stamp = stamp;
                self.touched.push(idx);
            }
            if s.slot_stamp != stamp {
                s.slot_stamp = stamp;
                s.slot = plan.slot_session.len() as u32;
                plan.slot_session.push(s.serial);
            }
            slots.push(s.slot);
        }
        self.wm.advance(max);
        self.end_batch(plan);
    }

    fn end_batch(&mut self, plan: &mut SessionPlan) {
        let w = self.wm.current();
        let lateness = self.lateness;
        while let Some(&Reverse((c, idx, serial))) = self.purge_heap.peek() {
            if c > w {
                break;
            }
            self.purge_heap.pop();
            let s = self.slab[idx as usize];
            if !s.alive || s.serial != serial {
                continue;
            }
            let now = cleanup_time(s.end, lateness);
            if now > w {
                // the session grew since this entry was pushed
                self.purge_heap.push(Reverse((now, idx, serial)));
                continue;
            }
            if let Some(list) = self.by_key.get_mut(s.key as usize)
                && let Some(pos) = list.iter().position(|&y| y == idx)
            {
                list.swap_remove(pos);
            }
            self.purge(idx, plan);
        }
        if lateness > 0 {
            while let Some(&Reverse((f, idx, serial))) = self.fire_heap.peek() {
                if f > w {
                    break;
                }
                self.fire_heap.pop();
                let s = self.slab[idx as usize];
                if !s.alive || s.serial != serial {
                    continue;
                }
                if s.end - 1 > w {
                    self.fire_heap.push(Reverse((s.end - 1, idx, serial)));
                    continue;
                }
                if !s.fired {
                    self.slab[idx as usize].fired = true;
                    plan.fire.push(serial);
                }
            }
        }
        for idx in std::mem::take(&mut self.touched) {
            let s = self.slab[idx as usize];
            if s.alive {
                plan.extents.push(Extent {
                    serial: s.serial,
                    key: s.key,
                    start: s.start,
                    end: s.end,
                });
                if lateness > 0 && !s.fired {
                    self.fire_heap.push(Reverse((s.end - 1, idx, s.serial)));
                }
            }
        }
        plan.end_watermark = w;
    }

    /// Ends the input: the plan that fires and purges every open session.
    pub fn finish(&mut self, plan: &mut SessionPlan) {
        plan.clear();
        self.wm.finish();
        self.end_batch(plan);
    }
}

#[derive(Clone, Debug)]
struct SessState {
    key: u32,
    start: i64,
    end: i64,
    count: u64,
    cols: Vec<ColPartial>,
    emitted: Option<u32>,
    dirty: bool,
}

/// The window state of session windows.
#[derive(Clone, Debug, Default)]
pub struct SessionStore {
    ncols: usize,
    sessions: FxHashMap<u64, SessState>,
    forward: FxHashMap<u64, u64>,
    dirty: Vec<u64>,
}

impl SessionStore {
    /// An empty store for `ncols` value columns.
    pub fn new(ncols: usize) -> Self {
        SessionStore {
            ncols,
            ..Default::default()
        }
    }

    /// Sessions currently held.
    pub fn open_sessions(&self) -> usize {
        self.sessions.len()
    }

    fn entry(&mut self, serial: u64) -> &mut SessState {
        let ncols = self.ncols;
        self.sessions.entry(serial).or_insert_with(|| SessState {
            key: 0,
            start: 0,
            end: 0,
            count: 0,
            cols: vec![ColPartial::IDENTITY; ncols],
            emitted: None,
            dirty: false,
        })
    }

    fn resolve(&self, mut serial: u64) -> u64 {
        while let Some(&next) = self.forward.get(&serial) {
            serial = next;
        }
        serial
    }

    /// Applies one batch and emits the sessions whose time has come.
    pub fn apply(&mut self, plan: &SessionPlan, partials: &Partials, keys: &KeyOrder, out: &mut WindowRows) {
        self.forward.clear();
        for &(from, into) in &plan.merges {
            let absorbed = self.sessions.remove(&from);
            self.forward.insert(from, into);
            if absorbed.as_ref().is_some_and(|a| a.emitted.is_some()) {
                out.merged.push((from, into));
            }
            let target = self.entry(into);
            if let Some(a) = absorbed {
                target.count += a.count;
                for (x, y) in target.cols.iter_mut().zip(&a.cols) {
                    x.combine(y);
                }
                target.emitted = target.emitted.max(a.emitted);
                target.dirty = true;
                if target.emitted.is_some() {
                    self.dirty.push(into);
                }
            }
        }
        for e in &plan.extents {
            let s = self.entry(e.serial);
            s.key = e.key;
            s.start = e.start;
            s.end = e.end;
        }
        for (slot, &serial) in plan.slot_session.iter().enumerate() {
            let target = self.resolve(serial);
            let s = self.entry(target);
            s.count += partials.count[slot];
            for (x, y) in s.cols.iter_mut().zip(partials.slot(slot)) {
                x.combine(y);
            }
            let newly_dirty = !s.dirty && s.emitted.is_some();
            s.dirty = true;
            if newly_dirty {
                self.dirty.push(target);
            }
        }
        let w = plan.end_watermark;
        let mut emit: Vec<u64> = Vec::new();
        let candidates = plan.fire.iter().chain(&plan.purge).chain(self.dirty.iter());
        for &serial in candidates {
            let serial = self.resolve(serial);
            if let Some(s) = self.sessions.get(&serial)
                && s.end - 1 <= w
                && (s.emitted.is_none() || s.dirty)
            {
                emit.push(serial);
            }
        }
        emit.sort_unstable();
        emit.dedup();
        let mut rows: Vec<(i64, u32, u64)> = emit
            .iter()
            .filter_map(|serial| self.sessions.get(serial).map(|s| (s.start, s.key, *serial)))
            .collect();
        rows.sort_unstable_by_key(|r| (r.0, keys.rank(r.1), r.2));
        for (_, _, serial) in rows {
            if let Some(s) = self.sessions.get_mut(&serial) {
                let rev = s.emitted.map_or(0, |r| r + 1);
                s.emitted = Some(rev);
                s.dirty = false;
                if s.count > 0 {
                    out.push(s.key, s.start, s.end, rev, s.count, &s.cols, serial);
                }
            }
        }
        for serial in &plan.purge {
            let serial = self.resolve(*serial);
            self.sessions.remove(&serial);
        }
        // Sessions still dirty wait for their (new) end to pass the watermark.
        let sessions = &self.sessions;
        self.dirty
            .retain(|serial| sessions.get(serial).is_some_and(|s| s.dirty));
        self.dirty.sort_unstable();
        self.dirty.dedup();
    }
}
