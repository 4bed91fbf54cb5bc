// shared/params.wgsl — the per-dispatch uniform block; twin of `Params` in
// src/backend/gpu/device.rs (48 bytes, bound with a dynamic offset).
//   n_events: events in the batch (late ones have slot SKIP)   n_sorted: on-time events
//   num_slots: distinct slots                                   col: value column of this pass
//   len: elements of this scan level                            chunk: sorted positions per thread
//   stride: events per value column in the values buffer        ncols: value columns
//   one: 1.0 (keeps error-free float transformations opaque to the compiler)

struct Params {
    n_events: u32,
    n_sorted: u32,
    num_slots: u32,
    col: u32,
    len: u32,
    chunk: u32,
    stride: u32,
    ncols: u32,
    one: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}
