//! # fenestra
//!
//! Event-time window aggregation over high-rate event streams: tumbling, sliding (hopping) and
//! session windows per key under a bounded-out-of-orderness watermark, with allowed lateness and
//! a late side output, computed by WGSL compute shaders through `wgpu` or by a multi-threaded CPU
//! backend that gives the same answers.
//!
//! Follow one event through the crate: [`batch`] (columnar micro-batches, key dictionary) →
//! [`window`] (watermark, lateness, panes and sessions) → [`backend`] (per-slot reduction on the
//! CPU or GPU) → [`window`] stores (merge, fire, purge) → [`output`] → [`io`] (polars files).
//!
//! ```
//! use fenestra::{Pipeline, BackendChoice};
//! let mut p = Pipeline::builder()
//!     .window("hop:10s:5s".parse()?)
//!     .backend(BackendChoice::Cpu)
//!     .build()?;
//! p.push_int_keys(&[1_000, 6_000, 12_000], &[1, 1, 2], &[&[1.0, 3.0, 5.0]])?;
//! let out = p.finish()?;
//! // key 1: windows [-5s,5s) {1}, [0s,10s) {1,3}, [5s,15s) {3}; key 2: [5s,15s), [10s,20s)
//! assert_eq!(out.rows.len(), 5);
//! # Ok::<(), fenestra::Error>(())
//! ```

#![warn(missing_docs)]

pub mod agg;
pub mod alloc;
pub mod backend;
pub mod batch;
pub mod error;
pub mod generator;
pub mod io;
pub mod ml;
pub mod output;
pub mod pipeline;
pub mod stream;
pub mod time;
pub mod window;

pub use agg::{AggKind, Aggregates};
pub use backend::{BackendChoice, BackendKind};
pub use batch::{EventBatch, KeyDict, KeyKind};
pub use error::{Error, Result};
pub use io::Frames;
pub use output::WindowRows;
pub use pipeline::{LateEvents, Metrics, Output, Pipeline, PipelineBuilder, PipelineConfig};
pub use time::Duration;
pub use window::WindowSpec;
