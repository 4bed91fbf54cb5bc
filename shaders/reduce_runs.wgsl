// reduce_runs.wgsl — per-slot partial records from slot-sorted events, one value column a pass.
//
// Thread t walks the sorted positions [t*chunk, (t+1)*chunk) in order (a segmented reduction
// with uniform work per thread, so one hot slot never serialises). A run that lies wholly in the
// chunk is final and written to out_recs[slot] (and, in the pass for column 0, its event count to
// out_counts[slot]); a run that continues into the previous or next chunk is written to the
// thread's carry pair (2t: the run at the chunk start, 2t+1: the run at its end) and merged on
// the host. Each slot has exactly one writer.
// Bindings: 0 perm, 1 slots, 2 values (f64 bits as (lo, hi) u32 pairs, column-major with
// `stride` events per column), 3 out_counts, 4 out_recs (num_slots records), 5 carry_slots,
// 6 carry_counts, 7 carry_recs, 8 params.
// CPU mirror: backend/cpu/mirror.rs `reduce_runs`.

#include "shared/record.wgsl"

#include "shared/params.wgsl"

@group(0) @binding(0) var<storage, read> perm: array<u32>;
@group(0) @binding(1) var<storage, read> slots: array<u32>;
@group(0) @binding(2) var<storage, read> values: array<u32>;
@group(0) @binding(3) var<storage, read_write> out_counts: array<u32>;
@group(0) @binding(4) var<storage, read_write> out_recs: array<Record>;
@group(0) @binding(5) var<storage, read_write> carry_slots: array<u32>;
@group(0) @binding(6) var<storage, read_write> carry_counts: array<u32>;
@group(0) @binding(7) var<storage, read_write> carry_recs: array<Record>;
@group(0) @binding(8) var<uniform> params: Params;

fn slot_at(p: u32) -> u32 {
    return slots[perm[p]];
}

fn emit(t: u32, slot: u32, st: RunState, count: u32, at_start: bool, at_end: bool) {
    let rec = run_record(st);
    if (!at_start && !at_end) {
        out_recs[slot * params.ncols + params.col] = rec;
        if (params.col == 0u) {
            out_counts[slot] = count;
        }
        return;
    }
    var c = 2u * t + 1u;
    if (at_start) {
        c = 2u * t;
    }
    carry_recs[c * params.ncols + params.col] = rec;
    if (params.col == 0u) {
        carry_slots[c] = slot;
        carry_counts[c] = count;
    }
}

@compute @workgroup_size(256)
fn reduce_runs(@builtin(global_invocation_id) gid3: vec3<u32>) {
    ONE = params.one;
    let t = gid3.x;
    let start = t * params.chunk;
    if (start >= params.n_sorted) {
        return;
    }
    if (params.col == 0u) {
        carry_slots[2u * t] = EMPTY;
        carry_slots[2u * t + 1u] = EMPTY;
    }
    let end = min(start + params.chunk, params.n_sorted);
    let base = params.col * params.stride * 2u;
    var cur = slot_at(start);
    var st = run_identity();
    var count = 0u;
    var first = true;
    let continues_left = start > 0u && slot_at(start - 1u) == cur;
    for (var p = start; p < end; p = p + 1u) {
        let i = perm[p];
        let s = slots[i];
        if (s != cur) {
            emit(t, cur, st, count, first && continues_left, false);
            st = run_identity();
            count = 0u;
            cur = s;
            first = false;
        }
        run_push(&st, values[base + 2u * i], values[base + 2u * i + 1u]);
        count = count + 1u;
    }
    let continues_right = end < params.n_sorted && slot_at(end) == cur;
    emit(t, cur, st, count, first && continues_left, continues_right);
}
