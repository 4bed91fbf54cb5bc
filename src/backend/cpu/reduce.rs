//! The CPU backend's kernels: a direct reduction into slot-indexed state (a CPU has caches
//! where a GPU has atomics, so it needs no sort). The GPU's kernels are mirrored in
//! [`super::mirror`].

use crate::agg::ColPartial;
use crate::backend::{Partials, SKIP_SLOT, SlotBatch};
use std::ops::Range;

/// Reduces events `range` of `batch` into `out` (already reset to the batch's slot count).
pub fn reduce_slots(batch: &SlotBatch<'_>, range: Range<usize>, out: &mut Partials) {
    let ncols = out.ncols;
    match (ncols, batch.want_m2) {
        (1, false) => reduce_one::<false>(batch.slots, &batch.values[0], range, out),
        (1, true) => reduce_one::<true>(batch.slots, &batch.values[0], range, out),
        (_, false) => reduce_many::<false>(batch, range, out),
        (_, true) => reduce_many::<true>(batch, range, out),
    }
}

#[inline(never)]
fn reduce_one<const M2: bool>(slots: &[u32], values: &[f64], range: Range<usize>, out: &mut Partials) {
    let slots = &slots[range.clone()];
    let values = &values[range];
    let count = &mut out.count[..];
    let cols = &mut out.cols[..];
    for (&s, &v) in slots.iter().zip(values) {
        if s == SKIP_SLOT {
            continue;
        }
        let s = s as usize;
        count[s] += 1;
        cols[s].push::<M2>(v);
    }
}

#[inline(never)]
fn reduce_many<const M2: bool>(batch: &SlotBatch<'_>, range: Range<usize>, out: &mut Partials) {
    let ncols = out.ncols;
    for i in range {
        let s = batch.slots[i];
        if s == SKIP_SLOT {
            continue;
        }
        let s = s as usize;
        out.count[s] += 1;
        let row: &mut [ColPartial] = &mut out.cols[s * ncols..(s + 1) * ncols];
        for (c, p) in row.iter_mut().enumerate() {
            p.push::<M2>(batch.values[c][i]);
        }
    }
}

/// Merges `part` into `out` slot by slot.
pub fn merge_partials(out: &mut Partials, part: &Partials) {
    out.combine(part);
}
