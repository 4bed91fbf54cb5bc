// scatter_slots.wgsl — the permutation that sorts events by slot (a counting sort's scatter).
//
// Each workgroup folds its tile by slot in workgroup memory (one local rank per event), reserves
// one contiguous range per distinct slot with a single global atomic, then writes
// perm[offset[slot] + reserved + local rank] = event index.
// Bindings: 0 slots, 1 offsets (exclusive scan of counts), 2 cursor: array<atomic<u32>> (zeroed),
// 3 perm: array<u32> (n_sorted), 4 params.
// Order within a slot is not deterministic; every later step is order-insensitive up to rounding.
// CPU mirror: backend/cpu/mirror.rs `scatter_slots`.

#include "shared/slot_table.wgsl"

#include "shared/params.wgsl"

@group(0) @binding(0) var<storage, read> slots: array<u32>;
@group(0) @binding(1) var<storage, read> offsets: array<u32>;
@group(0) @binding(2) var<storage, read_write> cursor: array<atomic<u32>>;
@group(0) @binding(3) var<storage, read_write> perm: array<u32>;
@group(0) @binding(4) var<uniform> params: Params;

@compute @workgroup_size(256)
fn scatter_slots(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid3: vec3<u32>) {
    let lid = lid3.x;
    let base = wid3.x * TILE;
    table_clear(lid);
    workgroupBarrier();
    var entry: array<u32, 4>;
    var rank: array<u32, 4>;
    for (var j = 0u; j < TILE / WG; j = j + 1u) {
        entry[j] = SKIP;
        let i = base + j * WG + lid;
        if (i < params.n_events) {
            let s = slots[i];
            if (s != SKIP) {
                let e = table_insert(s);
                entry[j] = e;
                rank[j] = atomicAdd(&table_vals[e], 1u);
            }
        }
    }
    workgroupBarrier();
    // One global reservation per distinct slot; the entry's value becomes the range start.
    for (var j = 0u; j < TABLE / WG; j = j + 1u) {
        let e = lid + j * WG;
        let k = atomicLoad(&table_keys[e]);
        if (k != SKIP) {
            let c = atomicLoad(&table_vals[e]);
            let start = offsets[k] + atomicAdd(&cursor[k], c);
            atomicStore(&table_vals[e], start);
        }
    }
    workgroupBarrier();
    for (var j = 0u; j < TILE / WG; j = j + 1u) {
        if (entry[j] != SKIP) {
            let i = base + j * WG + lid;
            perm[atomicLoad(&table_vals[entry[j]]) + rank[j]] = i;
        }
    }
}
