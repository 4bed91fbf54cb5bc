// count_slots.wgsl — events per slot (the histogram of a counting sort by slot).
//
// Bindings: 0 slots: array<u32> (per event; SKIP for late events), 1 counts: array<atomic<u32>>
// (per slot, zeroed by the host), 2 params (uniform).
// Workgroup: 256 threads, a tile of 1024 events, folded in a workgroup hash table first.
// CPU mirror: backend/cpu/mirror.rs `count_slots`.

#include "shared/slot_table.wgsl"

#include "shared/params.wgsl"

@group(0) @binding(0) var<storage, read> slots: array<u32>;
@group(0) @binding(1) var<storage, read_write> counts: array<atomic<u32>>;
@group(0) @binding(2) var<uniform> params: Params;

@compute @workgroup_size(256)
fn count_slots(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid3: vec3<u32>) {
    let lid = lid3.x;
    let base = wid3.x * TILE;
    table_clear(lid);
    workgroupBarrier();
    for (var j = 0u; j < TILE / WG; j = j + 1u) {
        let i = base + j * WG + lid;
        if (i < params.n_events) {
            let s = slots[i];
            if (s != SKIP) {
                let e = table_insert(s);
                atomicAdd(&table_vals[e], 1u);
            }
        }
    }
    workgroupBarrier();
    for (var j = 0u; j < TABLE / WG; j = j + 1u) {
        let e = lid + j * WG;
        let k = atomicLoad(&table_keys[e]);
        if (k != SKIP) {
            atomicAdd(&counts[k], atomicLoad(&table_vals[e]));
        }
    }
}
