//! The GPU backend: keyed, paned window aggregation in WGSL compute shaders through wgpu.
//!
//! Per micro-batch, in one command buffer and one read-back:
//!
//! ```text
//!  upload slots + f64 values ─► count_slots ─► scan (exclusive, multi-level) ─► scatter_slots
//!     (16 B per event)          (histogram,      offsets per slot                (permutation:
//!                                privatised per                                    counting sort
//!                                workgroup)                                        by slot)
//!  ─► reduce_runs (one pass per value column; uniform work per thread; runs that cross a chunk
//!     boundary become carries) ─► read back per-slot records + carries ─► host: f64 partials
//! ```
//!
//! Numerics: `count`, `min`, `max` exact (order keys of the f64 bits); sums shifted by a value of
//! the run and accumulated in double-float, finished in f64 on the host (see
//! `shaders/shared/record.wgsl` and its Rust twin [`record`]).

pub mod device;
pub mod record;
pub mod shaders;

pub use device::{AdapterPreference, GpuBackend};
