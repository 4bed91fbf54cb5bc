// scan.wgsl — exclusive prefix sum of u32 counts, in place, 1024 elements per workgroup.
//
// `scan_blocks` scans each block and writes the block's total to `sums[workgroup]`; the host
// scans `sums` the same way (recursively) and `add_offsets` adds each block's offset back.
// Bindings: 0 data: array<u32> (read_write), 1 sums: array<u32>, 2 params (uniform; `len`).
// CPU mirror: backend/cpu/mirror.rs `scan_blocks`, `add_offsets`.

#include "shared/params.wgsl"

const WG: u32 = 256u;
const PER: u32 = 4u;

@group(0) @binding(0) var<storage, read_write> data: array<u32>;
@group(0) @binding(1) var<storage, read_write> sums: array<u32>;
@group(0) @binding(2) var<uniform> params: Params;

var<workgroup> partial: array<u32, WG>;

@compute @workgroup_size(256)
fn scan_blocks(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid3: vec3<u32>) {
    let lid = lid3.x;
    let base = wid3.x * WG * PER + lid * PER;
    var v: array<u32, PER>;
    var total = 0u;
    for (var j = 0u; j < PER; j = j + 1u) {
        let i = base + j;
        var x = 0u;
        if (i < params.len) {
            x = data[i];
        }
        v[j] = total;
        total = total + x;
    }
    partial[lid] = total;
    workgroupBarrier();
    // Hillis-Steele inclusive scan of the per-thread totals.
    for (var off = 1u; off < WG; off = off * 2u) {
        var add = 0u;
        if (lid >= off) {
            add = partial[lid - off];
        }
        workgroupBarrier();
        partial[lid] = partial[lid] + add;
        workgroupBarrier();
    }
    let before = partial[lid] - total;
    for (var j = 0u; j < PER; j = j + 1u) {
        let i = base + j;
        if (i < params.len) {
            data[i] = before + v[j];
        }
    }
    if (lid == WG - 1u) {
        sums[wid3.x] = partial[lid];
    }
}

@compute @workgroup_size(256)
fn add_offsets(@builtin(local_invocation_id) lid3: vec3<u32>, @builtin(workgroup_id) wid3: vec3<u32>) {
    let add = sums[wid3.x];
    let base = wid3.x * WG * PER + lid3.x * PER;
    for (var j = 0u; j < PER; j = j + 1u) {
        let i = base + j;
        if (i < params.len) {
            data[i] = data[i] + add;
        }
    }
}
