//! Adapter selection and the GPU backend (placeholder until the kernels land).

use crate::backend::{AggBackend, BackendKind, Partials, SlotBatch};
use crate::error::{Error, Result};

/// Which adapters are acceptable.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AdapterPreference {
    /// Only a hardware GPU (used by `auto`).
    HardwareOnly,
    /// Any adapter, software ones (lavapipe/llvmpipe) included (used by `gpu`).
    AnyIncludingSoftware,
}

/// The GPU backend.
pub struct GpuBackend {}

impl GpuBackend {
    /// Opens an adapter.
    pub fn new(_pref: AdapterPreference) -> Result<Self> {
        Err(Error::NoAdapter("the GPU backend is not available in this build".into()))
    }
}

impl AggBackend for GpuBackend {
    fn kind(&self) -> BackendKind {
        BackendKind::Gpu
    }
    fn describe(&self) -> String {
        "gpu".into()
    }
    fn reduce(&mut self, _batch: &SlotBatch<'_>, _ncols: usize, _out: &mut Partials) -> Result<()> {
        Err(Error::NoAdapter("the GPU backend is not available in this build".into()))
    }
}
