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

/// The live sessions of one key: almost always one, so the first handle is kept inline and the
/// others (rare: a key with sessions waiting for the watermark) in a shared pool. Eight bytes a
/// key, so that the per-event lookup stays in cache. A list with `swap_remove` semantics; order
/// carries no meaning.
#[derive(Clone, Copy, Debug)]
struct KeySessions {
    /// The first handle, `NONE` when the list is empty.
    one: u32,
    /// The pool list with the other handles, `NONE` when there are none.
    more: u32,
}

impl Default for KeySessions {
    fn default() -> Self {
        KeySessions { one: NONE, more: NONE }
    }
}

/// Lists of extra session handles, re-used.
#[derive(Clone, Debug, Default)]
struct MorePool {
    lists: Vec<Vec<u32>>,
    free: Vec<u32>,
}

impl KeySessions {
    #[inline]
    fn len(&self, pool: &MorePool) -> usize {
        (self.one != NONE) as usize
            + if self.more == NONE {
                0
            } else {
                pool.lists[self.more as usize].len()
            }
    }

    #[inline]
    fn get(&self, j: usize, pool: &MorePool) -> u32 {
        if j == 0 {
            self.one
        } else {
            pool.lists[self.more as usize][j - 1]
        }
    }

    /// Removes entry `j`, moving the last entry into its place.
    #[inline]
    fn swap_remove(&mut self, j: usize, pool: &mut MorePool) {
        if self.more == NONE {
            debug_assert_eq!(j, 0);
            self.one = NONE;
            return;
        }
        let list = &mut pool.lists[self.more as usize];
        if j == 0 {
            self.one = list.pop().unwrap_or(NONE);
        } else {
            list.swap_remove(j - 1);
        }
        if list.is_empty() {
            pool.free.push(self.more);
            self.more = NONE;
        }
    }

    #[inline]
    fn push(&mut self, h: u32, pool: &mut MorePool) {
        if self.one == NONE {
            self.one = h;
            return;
        }
        if self.more == NONE {
            self.more = match pool.free.pop() {
                Some(m) => m,
                None => {
                    pool.lists.push(vec![]);
                    (pool.lists.len() - 1) as u32
                }
            };
        }
        pool.lists[self.more as usize].push(h);
    }

    fn position(&self, h: u32, pool: &MorePool) -> Option<usize> {
        (0..self.len(pool)).find(|&j| self.get(j, pool) == h)
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
    by_key: Vec<KeySessions>,
    more: MorePool,
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
            more: MorePool::default(),
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
            self.by_key.resize_with(num_keys, KeySessions::default);
        }
        let stamp = self.begin_batch();
        let gap = self.gap;
        let lateness = self.lateness;
        let mut max = self.wm.max_ts();
        let mut touching: Vec<u32> = Vec::with_capacity(4);
        const AHEAD: usize = 16;
        for (i, (&t, &k)) in ts.iter().zip(keys).enumerate() {
            // Two-stage prefetch: the key's session list 16 events ahead, the session it names 8
            // events ahead (its list is in cache by then).
            if let Some(&k2) = keys.get(i + AHEAD)
                && let Some(ks) = self.by_key.get(k2 as usize)
            {
                super::prefetch(ks);
            }
            if let Some(&k1) = keys.get(i + AHEAD / 2)
                && let Some(ks) = self.by_key.get(k1 as usize)
                && let Some(s) = self.slab.get(ks.one as usize)
            {
                super::prefetch_whole(s);
            }
            // The entries the next sessions created will reuse (about two events in five open
            // one): they were purged long ago and are no longer in cache.
            if let Some(&f) = self.free.len().checked_sub(3).and_then(|j| self.free.get(j))
                && let Some(s) = self.slab.get(f as usize)
            {
                super::prefetch_whole(s);
            }
            let w = self.wm.from_max(max);
            max = max.max(t);
            let (own_start, own_end) = (t, t + gap);
            // Purge this key's sessions that are past cleanup, and find the ones this event touches.
            touching.clear();
            let mut list = self.by_key[k as usize];
            let mut j = 0;
            while j < list.len(&self.more) {
                let idx = list.get(j, &self.more);
                let s = self.slab[idx as usize];
                if cleanup_time(s.end, lateness) <= w {
                    self.purge(idx, plan);
                    list.swap_remove(j, &mut self.more);
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
                list.push(idx, &mut self.more);
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
                        if let Some(pos) = list.position(x, &self.more) {
                            list.swap_remove(pos, &mut self.more);
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
        for (i, &(idx, serial)) in due.iter().enumerate() {
            // sessions due were last touched a while ago: fetch ahead
            if let Some(s) = due.get(i + 8).and_then(|&(a, _)| self.slab.get(a as usize)) {
                super::prefetch_whole(s);
            }
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
                && let Some(pos) = list.position(idx, &self.more)
            {
                list.swap_remove(pos, &mut self.more);
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

/// One session's state apart from its partials.
#[derive(Clone, Copy, Debug)]
struct Meta {
    serial: u64,
    start: i64,
    end: i64,
    count: u64,
    key: u32,
    /// Last revision emitted, `NONE` if none yet.
    emitted: u32,
    /// The session this one was merged into during the current batch, `NONE` if none.
    forward: u32,
    alive: bool,
    /// Updated since the last emission.
    dirty: bool,
}

impl Default for Meta {
    fn default() -> Self {
        Meta {
            serial: 0,
            start: 0,
            end: 0,
            count: 0,
            key: 0,
            emitted: NONE,
            forward: NONE,
            alive: false,
            dirty: false,
        }
    }
}

/// The window state of session windows, in plain arrays indexed by session handle: one record
/// per session (a session's scalars share a cache line) and its partials beside.
#[derive(Clone, Debug, Default)]
pub struct SessionStore {
    ncols: usize,
    want_m2: bool,
    meta: Vec<Meta>,
    cols: Vec<ColPartial>,
    /// Emitted sessions updated since, waiting for their end to pass the watermark.
    dirty_list: Vec<u32>,
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
        if h < self.meta.len() {
            return;
        }
        let n = (h + 1).max(self.meta.len() * 2);
        self.meta.resize(n, Meta::default());
        self.cols.resize(n * self.ncols, ColPartial::IDENTITY);
    }

    /// Makes `h` a live session (a fresh one if it was not).
    #[inline]
    fn touch(&mut self, h: u32) {
        let h = h as usize;
        self.grow(h);
        let m = &mut self.meta[h];
        if !m.alive {
            m.alive = true;
            m.count = 0;
            m.emitted = NONE;
            m.dirty = false;
            self.open += 1;
            self.cols[h * self.ncols..(h + 1) * self.ncols].fill(ColPartial::IDENTITY);
        }
    }

    fn kill(&mut self, h: usize) {
        if self.meta[h].alive {
            self.meta[h].alive = false;
            self.open -= 1;
        }
    }

    #[inline]
    fn resolve(&self, mut h: u32) -> u32 {
        while let Some(m) = self.meta.get(h as usize) {
            if m.forward == NONE {
                break;
            }
            h = m.forward;
        }
        h
    }

    #[inline]
    fn add(&mut self, into: usize, count: u64, cols: &[ColPartial]) {
        self.meta[into].count += count;
        let n = self.ncols;
        let dst = &mut self.cols[into * n..(into + 1) * n];
        if self.want_m2 {
            dst.iter_mut().zip(cols).for_each(|(a, b)| a.combine_with::<true>(b));
        } else {
            dst.iter_mut().zip(cols).for_each(|(a, b)| a.combine_with::<false>(b));
        }
    }

    #[inline]
    fn mark_dirty(&mut self, h: usize) {
        let m = &mut self.meta[h];
        if !m.dirty && m.emitted != NONE {
            self.dirty_list.push(h as u32);
        }
        m.dirty = true;
    }

    /// Prefetches session `h`'s record and partials (for a loop that reaches them a few steps on).
    #[inline]
    fn prefetch(&self, h: usize) {
        if let Some(m) = self.meta.get(h) {
            super::prefetch_whole(m);
        }
        if let Some(c) = self.cols.get(h * self.ncols) {
            super::prefetch_whole(c);
        }
    }

    /// Applies one batch and emits the sessions whose time has come.
    pub fn apply(&mut self, plan: &SessionPlan, partials: &Partials, keys: &KeyOrder, out: &mut WindowRows) {
        let n = self.ncols;
        for &(from, into) in &plan.merges {
            let (f, i) = (from as usize, into as usize);
            self.touch(into);
            self.grow(f);
            if self.meta[f].alive {
                let (ef, ei) = (self.meta[f].emitted, self.meta[i].emitted);
                if ef != NONE {
                    out.merged.push((self.meta[f].serial, self.meta[i].serial));
                    self.meta[i].emitted = if ei == NONE { ef } else { ei.max(ef) };
                }
                let cols: Vec<ColPartial> = self.cols[f * n..(f + 1) * n].to_vec();
                self.add(i, self.meta[f].count, &cols);
                self.mark_dirty(i);
                self.kill(f);
            }
            self.meta[f].forward = into;
            self.forwarded.push(from);
        }
        const AHEAD: usize = 8;
        for (i, e) in plan.extents.iter().enumerate() {
            // new sessions reuse handles of long-purged ones: not in cache
            if let Some(a) = plan.extents.get(i + AHEAD) {
                self.prefetch(a.handle as usize);
            }
            self.touch(e.handle);
            let m = &mut self.meta[e.handle as usize];
            m.serial = e.serial;
            m.key = e.key;
            m.start = e.start;
            m.end = e.end;
        }
        let handles = &plan.slot_session;
        for (slot, &handle) in handles.iter().enumerate() {
            if let Some(&ahead) = handles.get(slot + AHEAD) {
                self.prefetch(ahead as usize);
            }
            let h = self.resolve(handle);
            self.touch(h);
            self.add(h as usize, partials.count[slot], partials.slot(slot));
            self.mark_dirty(h as usize);
        }
        let w = plan.end_watermark;
        // Order by (start, key rank): one packed sort key per session (start with its sign bit
        // flipped, so that unsigned order is signed order), handle last. Two live sessions of one
        // key never share a start, so the handle only makes the order total.
        let mut order: Vec<u128> = Vec::new();
        let due = || plan.fire.iter().chain(&plan.purge).chain(&self.dirty_list).copied();
        // The sessions due are scattered over the store: fetch ahead.
        let mut ahead = due().skip(AHEAD);
        for h in due() {
            if let Some(a) = ahead.next()
                && let Some(m) = self.meta.get(a as usize)
            {
                super::prefetch_whole(m);
            }
            let h = self.resolve(h) as usize;
            if let Some(m) = self.meta.get(h)
                && m.alive
                && m.end - 1 <= w
                && (m.emitted == NONE || m.dirty)
            {
                let start = (m.start as u64) ^ (1 << 63);
                order.push(((start as u128) << 64) | ((keys.rank(m.key) as u128) << 32) | h as u128);
            }
        }
        order.sort_unstable();
        order.dedup();
        out.reserve(order.len());
        for (i, &o) in order.iter().enumerate() {
            if let Some(&a) = order.get(i + AHEAD) {
                self.prefetch((a as u32) as usize);
            }
            let h = (o as u32) as usize;
            let m = &mut self.meta[h];
            let rev = if m.emitted == NONE { 0 } else { m.emitted + 1 };
            m.emitted = rev;
            m.dirty = false;
            if m.count > 0 {
                out.push(
                    m.key,
                    m.start,
                    m.end,
                    rev,
                    m.count,
                    &self.cols[h * n..(h + 1) * n],
                    m.serial,
                );
            }
        }
        for &h in &plan.purge {
            let h = self.resolve(h) as usize;
            self.kill(h);
        }
        for h in std::mem::take(&mut self.forwarded) {
            self.meta[h as usize].forward = NONE;
        }
        // Emitted sessions that are still dirty wait for their (new) end to pass the watermark.
        let meta = &self.meta;
        self.dirty_list
            .retain(|&h| meta[h as usize].alive && meta[h as usize].dirty);
        self.dirty_list.sort_unstable();
        self.dirty_list.dedup();
    }
}
