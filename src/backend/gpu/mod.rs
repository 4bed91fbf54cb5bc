//! The GPU backend (WGSL compute shaders through wgpu).

pub mod device;

pub use device::{AdapterPreference, GpuBackend};
