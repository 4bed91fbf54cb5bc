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
//! Sessions are named in plans by a *handle*, an index into the assigner's slab that both halves
//! use to index plain arrays. A handle freed in one batch is reused only from the next batch on,
//! so within a batch a handle means one session.
//!
//! Semantics (DESIGN.md §3): an event opens `[ts, ts + gap)`; it is late when that window is
//! already past cleanup (`ts + gap - 1 + L <= W`) and it touches no kept session of its key. A
//! session is purged once `end - 1 + L <= W`; a later event near it starts a new session.

use super::cleanup_time;
use super::watermark::Watermark;
use crate::agg::ColPartial;
use crate::backend::{Partials, SKIP_SLOT};
use crate::batch::KeyOrder;
use crate::output::WindowRows;
use std::collections::BTreeMap;

const NONE: u32 = u32::MAX;

/// A session's extent as of the end of a batch (or its purge).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// The session's handle.
    pub handle: u32,
    /// The session's identity (stable across batches and revisions; the survivor's after merges).
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
    /// Session handle of each slot (as of the slot's first event).
    pub slot_session: Vec<u32>,
    /// `(absorbed, survivor)` handle merges, in order.
    pub merges: Vec<(u32, u32)>,
    /// Extents of sessions created, extended or purged in this batch.
    pub extents: Vec<Extent>,
    /// Sessions whose end passed the watermark in this batch (allowed lateness > 0 only).
    pub fire: Vec<u32>,
    /// Sessions purged in this batch.
    pub purge: Vec<u32>,
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

/// Timers by due time in fixed-width buckets: `O(1)`-ish pushes, whole buckets popped at once.
/// Entries carry the session's serial so that stale ones (the session merged away or purged)
/// are recognised; due times that moved later are re-pushed by the caller.
#[derive(Clone, Debug)]
struct Timers {
    width: i64,
    buckets: BTreeMap<i64, Vec<(u32, u64)>>,
}

impl Timers {
    fn new(width: i64) -> Self {
        Timers {
            width: width.max(1),
            buckets: BTreeMap::new(),
        }
    }

    fn push(&mut self, due: i64, handle: u32, serial: u64) {
        let b = due.div_euclid(self.width);
        if let Some(mut last) = self.buckets.last_entry()
            && *last.key() == b
        {
            last.get_mut().push((handle, serial));
            return;
        }
        self.buckets.entry(b).or_default().push((handle, serial));
    }

    /// Removes every bucket that may hold an entry due at or before `w`.
    fn pop_due(&mut self, w: i64, out: &mut Vec<(u32, u64)>) {
        let last = w.div_euclid(self.width);
        while let Some(e) = self.buckets.first_entry() {
            if *e.key() > last {
                break;
            }
            out.extend(e.remove());
        }
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
    /// Handles freed in this batch, reusable from the next.
    freed: Vec<u32>,
    by_key: Vec<Vec<u32>>,
    purge_timers: Timers,
    fire_timers: Timers,
    next_serial: u64,
    stamp: u32,
    touched: Vec<u32>,
    due: Vec<(u32, u64)>,
}

impl SessionAssigner {
    /// An assigner for sessions with inactivity `gap`, watermark delay and allowed lateness (ms).
    pub fn new(gap: i64, delay: i64, lateness: i64) -> Self {
        // Timer buckets: about the gap wide, but at most ~4096 buckets across the horizon.
        let width = gap
            .max((delay.saturating_add(gap).saturating_add(lateness)) / 4096)
            .max(1);
        SessionAssigner {
            gap,
            lateness,
            wm: Watermark::new(delay),
            slab: vec![],
            free: vec![],
            freed: vec![],
            by_key: vec![],
            purge_timers: Timers::new(width),
            fire_timers: Timers::new(width),
            next_serial: 0,
            stamp: 0,
            touched: vec![],
            due: vec![],
        }
    }

    /// The watermark that applies to the next event.
    pub fn watermark(&self) -> i64 {
        self.wm.current()
    }

    /// Open sessions (for metrics and the bounded-memory tests).
    pub fn open_sessions(&self) -> usize {
        self.slab.len() - self.free.len() - self.freed.len()
    }

    fn release(&mut self, idx: u32) {
        self.slab[idx as usize].alive = false;
        self.freed.push(idx);
    }

    fn purge(&mut self, idx: u32, plan: &mut SessionPlan) {
        let s = self.slab[idx as usize];
        plan.extents.push(Extent {
            handle: idx,
            serial: s.serial,
            key: s.key,
            start: s.start,
            end: s.end,
        });
        plan.purge.push(idx);
        self.release(idx);
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
        self.purge_timers.push(cleanup_time(end, self.lateness), idx, serial);
        if self.lateness > 0 {
            self.fire_timers.push(end - 1, idx, serial);
        }
        idx
    }

    fn begin_batch(&mut self) -> u32 {
        self.free.append(&mut self.freed);
        self.stamp = self.stamp.wrapping_add(1);
        if self.stamp == 0 {
            for s in &mut self.slab {
                s.slot_stamp = 0;
                s.touched_stamp = 0;
            }
            self.stamp = 1;
        }
        self.stamp
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
        let stamp = self.begin_batch();
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
                let mut survivor = touching[0];
                for &x in &touching[1..] {
                    if self.slab[x as usize].serial < self.slab[survivor as usize].serial {
                        survivor = x;
                    }
                }
                let (mut start, mut end) = (own_start, own_end);
                for &x in &touching {
                    let s = self.slab[x as usize];
                    start = start.min(s.start);
                    end = end.max(s.end);
                    if x != survivor {
                        plan.merges.push((x, survivor));
                        self.release(x);
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
                plan.slot_session.push(idx);
            }
            slots.push(s.slot);
        }
        self.wm.advance(max);
        self.end_batch(plan);
    }

    fn end_batch(&mut self, plan: &mut SessionPlan) {
        let w = self.wm.current();
        let lateness = self.lateness;
        let mut due = std::mem::take(&mut self.due);
        due.clear();
        self.purge_timers.pop_due(w, &mut due);
        for &(idx, serial) in &due {
            let s = self.slab[idx as usize];
            if !s.alive || s.serial != serial {
                continue;
            }
            let now = cleanup_time(s.end, lateness);
            if now > w {
                // the session grew since this timer was set
                self.purge_timers.push(now, idx, serial);
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
            due.clear();
            self.fire_timers.pop_due(w, &mut due);
            for &(idx, serial) in &due {
                let s = self.slab[idx as usize];
                if !s.alive || s.serial != serial {
                    continue;
                }
                if s.end - 1 > w {
                    self.fire_timers.push(s.end - 1, idx, serial);
                    continue;
                }
                if !s.fired {
                    self.slab[idx as usize].fired = true;
                    plan.fire.push(idx);
                }
            }
        }
        self.due = due;
        for idx in std::mem::take(&mut self.touched) {
            let s = self.slab[idx as usize];
            if s.alive {
                plan.extents.push(Extent {
                    handle: idx,
                    serial: s.serial,
                    key: s.key,
                    start: s.start,
                    end: s.end,
                });
                if lateness > 0 && !s.fired {
                    self.fire_timers.push(s.end - 1, idx, s.serial);
                }
            }
        }
        plan.end_watermark = w;
    }

    /// Ends the input: the plan that fires and purges every open session.
    pub fn finish(&mut self, plan: &mut SessionPlan) {
        plan.clear();
        self.begin_batch();
        self.wm.finish();
        self.end_batch(plan);
    }
}

/// The window state of session windows, in plain arrays indexed by session handle.
#[derive(Clone, Debug, Default)]
pub struct SessionStore {
    ncols: usize,
    want_m2: bool,
    alive: Vec<bool>,
    serial: Vec<u64>,
    key: Vec<u32>,
    start: Vec<i64>,
    end: Vec<i64>,
    count: Vec<u64>,
    cols: Vec<ColPartial>,
    /// Last revision emitted, `NONE` if none yet.
    emitted: Vec<u32>,
    /// Updated since the last emission.
    dirty: Vec<bool>,
    /// Emitted sessions updated since, waiting for their end to pass the watermark.
    dirty_list: Vec<u32>,
    forward: Vec<u32>,
    forwarded: Vec<u32>,
    open: usize,
}

impl SessionStore {
    /// An empty store for `ncols` value columns; `want_m2` says whether variances are requested.
    pub fn new(ncols: usize, want_m2: bool) -> Self {
        SessionStore {
            ncols,
            want_m2,
            ..Default::default()
        }
    }

    /// Sessions currently held.
    pub fn open_sessions(&self) -> usize {
        self.open
    }

    fn grow(&mut self, h: usize) {
        if h < self.alive.len() {
            return;
        }
        let n = (h + 1).max(self.alive.len() * 2);
        self.alive.resize(n, false);
        self.serial.resize(n, 0);
        self.key.resize(n, 0);
        self.start.resize(n, 0);
        self.end.resize(n, 0);
        self.count.resize(n, 0);
        self.cols.resize(n * self.ncols, ColPartial::IDENTITY);
        self.emitted.resize(n, NONE);
        self.dirty.resize(n, false);
        self.forward.resize(n, NONE);
    }

    /// Makes `h` a live session (a fresh one if it was not).
    fn touch(&mut self, h: u32) {
        let h = h as usize;
        self.grow(h);
        if !self.alive[h] {
            self.alive[h] = true;
            self.open += 1;
            self.count[h] = 0;
            self.cols[h * self.ncols..(h + 1) * self.ncols].fill(ColPartial::IDENTITY);
            self.emitted[h] = NONE;
            self.dirty[h] = false;
        }
    }

    fn kill(&mut self, h: usize) {
        if self.alive[h] {
            self.alive[h] = false;
            self.open -= 1;
        }
    }

    fn resolve(&self, mut h: u32) -> u32 {
        while let Some(&next) = self.forward.get(h as usize) {
            if next == NONE {
                break;
            }
            h = next;
        }
        h
    }

    fn add(&mut self, into: usize, count: u64, cols: &[ColPartial]) {
        self.count[into] += count;
        let n = self.ncols;
        let dst = &mut self.cols[into * n..(into + 1) * n];
        if self.want_m2 {
            dst.iter_mut().zip(cols).for_each(|(a, b)| a.combine_with::<true>(b));
        } else {
            dst.iter_mut().zip(cols).for_each(|(a, b)| a.combine_with::<false>(b));
        }
    }

    fn mark_dirty(&mut self, h: usize) {
        if !self.dirty[h] && self.emitted[h] != NONE {
            self.dirty_list.push(h as u32);
        }
        self.dirty[h] = true;
    }

    /// Applies one batch and emits the sessions whose time has come.
    pub fn apply(&mut self, plan: &SessionPlan, partials: &Partials, keys: &KeyOrder, out: &mut WindowRows) {
        let n = self.ncols;
        for &(from, into) in &plan.merges {
            let (f, i) = (from as usize, into as usize);
            self.touch(into);
            self.grow(f);
            if self.alive[f] {
                if self.emitted[f] != NONE {
                    out.merged.push((self.serial[f], self.serial[i]));
                    self.emitted[i] = if self.emitted[i] == NONE {
                        self.emitted[f]
                    } else {
                        self.emitted[i].max(self.emitted[f])
                    };
                }
                let cols: Vec<ColPartial> = self.cols[f * n..(f + 1) * n].to_vec();
                self.add(i, self.count[f], &cols);
                self.mark_dirty(i);
                self.kill(f);
            }
            self.forward[f] = into;
            self.forwarded.push(from);
        }
        for e in &plan.extents {
            self.touch(e.handle);
            let h = e.handle as usize;
            self.serial[h] = e.serial;
            self.key[h] = e.key;
            self.start[h] = e.start;
            self.end[h] = e.end;
        }
        for (slot, &handle) in plan.slot_session.iter().enumerate() {
            let h = self.resolve(handle);
            self.touch(h);
            self.add(h as usize, partials.count[slot], partials.slot(slot));
            self.mark_dirty(h as usize);
        }
        let w = plan.end_watermark;
        let mut emit: Vec<u32> = Vec::new();
        for &h in plan.fire.iter().chain(&plan.purge).chain(self.dirty_list.iter()) {
            let h = self.resolve(h) as usize;
            if h < self.alive.len()
                && self.alive[h]
                && self.end[h] - 1 <= w
                && (self.emitted[h] == NONE || self.dirty[h])
            {
                emit.push(h as u32);
            }
        }
        emit.sort_unstable();
        emit.dedup();
        emit.sort_unstable_by_key(|&h| {
            (
                self.start[h as usize],
                keys.rank(self.key[h as usize]),
                self.serial[h as usize],
            )
        });
        out.reserve(emit.len());
        for h in emit {
            let h = h as usize;
            let rev = if self.emitted[h] == NONE {
                0
            } else {
                self.emitted[h] + 1
            };
            self.emitted[h] = rev;
            self.dirty[h] = false;
            if self.count[h] > 0 {
                out.push(
                    self.key[h],
                    self.start[h],
                    self.end[h],
                    rev,
                    self.count[h],
                    &self.cols[h * n..(h + 1) * n],
                    self.serial[h],
                );
            }
        }
        for &h in &plan.purge {
            let h = self.resolve(h) as usize;
            self.kill(h);
        }
        for h in std::mem::take(&mut self.forwarded) {
            self.forward[h as usize] = NONE;
        }
        // Emitted sessions that are still dirty wait for their (new) end to pass the watermark.
        let (alive, dirty) = (&self.alive, &self.dirty);
        self.dirty_list.retain(|&h| alive[h as usize] && dirty[h as usize]);
        self.dirty_list.sort_unstable();
        self.dirty_list.dedup();
    }
}
