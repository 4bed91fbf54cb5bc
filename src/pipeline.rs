//! The pipeline: builder and synchronous driver.
//!
//! ```text
//!  push ─► micro-batches ─► key ids ─► Assigner (watermark, late, slots) ─┬─► late side output
//!                                                                         └─► [worker thread]
//!                                       backend.reduce ─► Store::apply (merge, fire, purge) ─► rows
//! ```
//!
//! The assigner runs on the caller's thread and the backend plus window store on a worker thread
//! one batch behind (a bounded channel of two batches gives backpressure), so ingest and
//! aggregation overlap. Results are taken with [`Pipeline::poll`] and [`Pipeline::finish`].

use crate::agg::Aggregates;
use crate::backend::{
    self, AggBackend, BackendChoice, BackendKind, BatchPolicy, Partials, SlotBatch, StageTimes, Submitted,
};
use crate::batch::{EventBatch, KeyDict, KeyKind, KeyOrder, KeyValues, ingest_values};
use crate::error::{Error, Result};
use crate::output::WindowRows;
use crate::time::{Duration, MAX_ABS_TIMESTAMP_MS, MAX_DURATION_MS};
use crate::window::{Assigner, Plan, Store, WindowSpec};
use std::sync::mpsc::{Receiver, SyncSender, sync_channel};
use std::thread::JoinHandle;
use std::time::Instant;

/// Default micro-batch size (events) on the CPU. A batch's columns (~20 bytes an event) and the
/// pane rows it touches stay in the caches, and the window store's thread gets work in smaller
/// steps: on 2 cores 65,536 events ran tumbling windows ~20% faster than 262,144, sliding ~20%
/// and session windows ~50% (`fenestra bench`, interleaved runs).
pub const DEFAULT_BATCH_SIZE: usize = 1 << 16;

/// Everything that defines a pipeline. Built with [`Pipeline::builder`].
#[derive(Clone, Debug, PartialEq)]
pub struct PipelineConfig {
    /// Window kind and size.
    pub window: WindowSpec,
    /// Bounded out-of-orderness of the watermark.
    pub watermark_delay: Duration,
    /// How long fired windows are kept for late updates.
    pub allowed_lateness: Duration,
    /// Aggregates per value column.
    pub aggregates: Aggregates,
    /// Names of the value columns (used for output column names).
    pub value_columns: Vec<String>,
    /// The key column's kind.
    pub key_kind: KeyKind,
    /// Which backend.
    pub backend: BackendChoice,
    /// Events per micro-batch (a tuning knob; results do not depend on it). `None`: the
    /// backend's preferred size ([`DEFAULT_BATCH_SIZE`] on the CPU; on the GPU the smallest size
    /// whose fixed submit/read-back cost is under 10% of the batch time, measured at start).
    pub batch_size: Option<usize>,
    /// Threads of the cpu backend's reduce (0 = every core, less the window store's when pipelined).
    pub threads: usize,
    /// Run the backend and window store on a worker thread.
    pub pipelined: bool,
    /// Event-time column of pushed DataFrames.
    pub time_column: String,
    /// Key column of pushed DataFrames (`None`: one global group).
    pub key_column: Option<String>,
    /// Online learning on the closed windows (none by default).
    pub model: Option<crate::ml::MlConfig>,
    /// Start the model from one saved by [`Pipeline::save_model`].
    pub model_in: Option<std::path::PathBuf>,
}

impl Default for PipelineConfig {
    fn default() -> Self {
        PipelineConfig {
            window: WindowSpec::tumbling(Duration::from_secs(1)),
            watermark_delay: Duration::from_millis(500),
            allowed_lateness: Duration::ZERO,
            aggregates: Aggregates::default_set(),
            value_columns: vec!["value".into()],
            key_kind: KeyKind::Int,
            backend: BackendChoice::Auto,
            batch_size: None,
            threads: 0,
            pipelined: true,
            time_column: "ts".into(),
            key_column: Some("key".into()),
            model: None,
            model_in: None,
        }
    }
}

impl PipelineConfig {
    /// Checks every option; the error names the option and the value.
    pub fn validate(&self) -> Result<()> {
        self.window.validate()?;
        let d = self.watermark_delay.as_millis();
        if !(0..=MAX_DURATION_MS).contains(&d) {
            return Err(Error::config(format!(
                "watermark delay must be between 0 and {MAX_DURATION_MS} ms, got {}",
                self.watermark_delay
            )));
        }
        let l = self.allowed_lateness.as_millis();
        if !(0..=MAX_DURATION_MS).contains(&l) {
            return Err(Error::config(format!(
                "allowed lateness must be between 0 and {MAX_DURATION_MS} ms, got {}",
                self.allowed_lateness
            )));
        }
        if self.batch_size == Some(0) {
            return Err(Error::config("batch size must be at least 1"));
        }
        let mut names = self.value_columns.clone();
        names.sort();
        names.dedup();
        if names.len() != self.value_columns.len() {
            return Err(Error::config(format!(
                "value columns are listed twice: {:?}",
                self.value_columns
            )));
        }
        Ok(())
    }
}

/// Builds a [`Pipeline`].
///
/// ```
/// use fenestra::{Pipeline, WindowSpec, Duration, BackendChoice};
/// let mut p = Pipeline::builder()
///     .window("tumble:1s".parse::<WindowSpec>()?)
///     .watermark_delay(Duration::from_millis(0))
///     .value_columns(["value"])
///     .backend(BackendChoice::Cpu)
///     .build()?;
/// p.push_int_keys(&[100, 200, 1500], &[7, 7, 7], &[&[1.0, 2.0, 4.0]])?;
/// let out = p.finish()?;
/// assert_eq!(out.rows.len(), 2); // windows [0, 1000) and [1000, 2000) of key 7
/// assert_eq!(out.rows.count, vec![2, 1]);
/// # Ok::<(), fenestra::Error>(())
/// ```
#[derive(Clone, Debug, Default)]
pub struct PipelineBuilder {
    config: PipelineConfig,
}

impl PipelineBuilder {
    /// The window kind (default `tumble:1s`).
    pub fn window(mut self, w: WindowSpec) -> Self {
        self.config.window = w;
        self
    }
    /// Bounded out-of-orderness (default 500 ms).
    pub fn watermark_delay(mut self, d: Duration) -> Self {
        self.config.watermark_delay = d;
        self
    }
    /// Allowed lateness (default 0).
    pub fn allowed_lateness(mut self, d: Duration) -> Self {
        self.config.allowed_lateness = d;
        self
    }
    /// Aggregates per value column (default `count,sum,min,max,mean,std`).
    pub fn aggregates(mut self, a: Aggregates) -> Self {
        self.config.aggregates = a;
        self
    }
    /// Names of the value columns, in push order (default `["value"]`).
    pub fn value_columns<I: IntoIterator<Item = S>, S: Into<String>>(mut self, cols: I) -> Self {
        self.config.value_columns = cols.into_iter().map(Into::into).collect();
        self
    }
    /// Integer, string or no keys (default integer).
    pub fn key_kind(mut self, k: KeyKind) -> Self {
        self.config.key_kind = k;
        self
    }
    /// Backend choice (default `auto`).
    pub fn backend(mut self, b: BackendChoice) -> Self {
        self.config.backend = b;
        self
    }
    /// Events per micro-batch.
    pub fn batch_size(mut self, n: usize) -> Self {
        self.config.batch_size = Some(n);
        self
    }

    /// Threads of the cpu backend's reduce (0 = every core, less the window store's when pipelined).
    pub fn threads(mut self, n: usize) -> Self {
        self.config.threads = n;
        self
    }
    /// Whether the backend runs on a worker thread (default true).
    pub fn pipelined(mut self, on: bool) -> Self {
        self.config.pipelined = on;
        self
    }
    /// Event-time column of pushed DataFrames (default `ts`).
    pub fn time_column(mut self, name: impl Into<String>) -> Self {
        self.config.time_column = name.into();
        self
    }
    /// Key column of pushed DataFrames (default `key`).
    pub fn key_column(mut self, name: impl Into<String>) -> Self {
        self.config.key_column = Some(name.into());
        self
    }
    /// No key column: every event is in one global group.
    pub fn no_key(mut self) -> Self {
        self.config.key_column = None;
        self.config.key_kind = KeyKind::None;
        self
    }
    /// Online learning on the closed windows: each window is scored by the model, then used to
    /// train it (see [`crate::ml`]).
    pub fn model(mut self, m: crate::ml::MlConfig) -> Self {
        self.config.model = Some(m);
        self
    }
    /// Starts the model from one saved with [`Pipeline::save_model`].
    pub fn model_from(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.config.model_in = Some(path.into());
        self
    }
    /// Replaces the whole configuration.
    pub fn config(mut self, c: PipelineConfig) -> Self {
        self.config = c;
        self
    }
    /// Validates the configuration, opens the backend and returns the pipeline.
    pub fn build(self) -> Result<Pipeline> {
        Pipeline::new(self.config)
    }
}

/// Late events: the side output. Nothing is dropped silently.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LateEvents {
    /// 0-based position of each late event among all events pushed into the pipeline.
    pub row: Vec<u64>,
    /// Event time.
    pub ts: Vec<i64>,
    /// Key id (see [`Pipeline::keys`]).
    pub key: Vec<u32>,
    /// Values per value column.
    pub values: Vec<Vec<f64>>,
}

impl LateEvents {
    fn new(ncols: usize) -> Self {
        LateEvents {
            values: vec![vec![]; ncols],
            ..Default::default()
        }
    }
    /// Number of late events.
    pub fn len(&self) -> usize {
        self.row.len()
    }
    /// True when there are none.
    pub fn is_empty(&self) -> bool {
        self.row.is_empty()
    }
    fn take(&mut self) -> LateEvents {
        let ncols = self.values.len();
        std::mem::replace(self, LateEvents::new(ncols))
    }
}

/// Counters and timings of a pipeline.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize)]
pub struct Metrics {
    /// Events pushed.
    pub events_in: u64,
    /// Events aggregated.
    pub on_time: u64,
    /// Events sent to the late side output.
    pub late: u64,
    /// Window rows emitted with revision 0.
    pub windows_fired: u64,
    /// Window rows emitted with revision > 0.
    pub revisions: u64,
    /// Micro-batches processed.
    pub batches: u64,
    /// The current watermark (ms; `i64::MIN` before any event, `i64::MAX` after finish).
    pub watermark: i64,
    /// Window states held (`(key, pane)` or sessions).
    pub open_states: u64,
    /// Seconds spent encoding keys and copying values.
    pub ingest_s: f64,
    /// Seconds spent assigning windows (watermark, lateness, slots).
    pub assign_s: f64,
    /// Backend stage times (upload, kernels, read-back).
    pub backend: StageTimes,
    /// Seconds spent merging partials, firing and purging windows.
    pub store_s: f64,
    /// Seconds spent in the model (scoring and training).
    pub ml_s: f64,
}

/// One batch on its way from the first stage (assign + reduce) to the window store.
struct Work {
    plan: Plan,
    partials: Partials,
    keys_tail: KeyValues,
    /// Slot per event (kept until the backend has completed the batch).
    slots: Vec<u32>,
    /// The batch's value columns (likewise).
    values: Vec<Vec<f64>>,
}

impl Work {
    fn new(plan: Plan, keys_tail: KeyValues) -> Work {
        Work {
            plan,
            partials: Partials::default(),
            keys_tail,
            slots: vec![],
            values: vec![],
        }
    }
}

struct Done {
    rows: WindowRows,
    store_s: f64,
    open_states: u64,
    recycled: Option<Work>,
}

/// The window store: the second pipeline stage (merge partials, fire, purge).
struct Stage2 {
    store: Store,
    keys: KeyValues,
    order: KeyOrder,
    ncols: usize,
    last_rows: usize,
    /// Emptied output buffers handed back ([`Pipeline::recycle`]), filled again before new ones
    /// are allocated: their memory is already mapped, so emitting rows takes no page faults.
    spare: RowsPool,
}

/// Output buffers shared between the pipeline and its window store.
type RowsPool = std::sync::Arc<std::sync::Mutex<Vec<WindowRows>>>;

/// Spare output buffers kept at most.
const SPARE_ROWS: usize = 4;

impl Stage2 {
    fn run(&mut self, work: &mut Work) -> Result<Done> {
        let t0 = Instant::now();
        self.keys.append_tail(&work.keys_tail);
        self.order.update(&self.keys);
        // the pool holds only emptied buffers of this width (`Pipeline::recycle` checks)
        let spare = self.spare.lock().ok().and_then(|mut p| p.pop());
        let mut rows = spare.unwrap_or_else(|| WindowRows::new(self.ncols));
        self.store.reserve_rows(&mut rows, self.last_rows + self.last_rows / 4);
        self.store.apply(&mut work.plan, &work.partials, &self.order, &mut rows);
        self.last_rows = rows.len();
        Ok(Done {
            rows,
            store_s: t0.elapsed().as_secs_f64(),
            open_states: self.store.open_states() as u64,
            recycled: None,
        })
    }
}

enum Stage {
    Inline(Box<Stage2>),
    Thread {
        tx: Option<SyncSender<Work>>,
        rx: Receiver<Result<Done>>,
        handle: Option<JoinHandle<()>>,
        in_flight: usize,
    },
}

/// Output taken from a pipeline: window rows in firing order and late events.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Output {
    /// Emitted window rows.
    pub rows: WindowRows,
    /// Late events.
    pub late: LateEvents,
    /// Model outputs aligned with `rows`, when the pipeline has a model.
    pub ml: Option<crate::ml::MlOutput>,
}

/// Rejects times outside the supported range, naming the column and the input row of the first
/// (`ts[0]` is row `first_row`).
pub(crate) fn check_timestamps(ts: &[i64], column: &str, first_row: u64) -> Result<()> {
    let bad = |t: &i64| !(-MAX_ABS_TIMESTAMP_MS..=MAX_ABS_TIMESTAMP_MS).contains(t);
    // blocks checked whole without an early exit (vectorised), the position found in a bad one
    const BLOCK: usize = 256;
    let found = ts.chunks(BLOCK).enumerate().find_map(|(b, c)| {
        let any = c.iter().fold(false, |any, t| any | bad(t));
        any.then(|| c.iter().position(bad)).flatten().map(|i| b * BLOCK + i)
    });
    match found {
        Some(i) => Err(Error::InvalidTimestamp {
            column: column.into(),
            row: first_row + i as u64,
            reason: format!(
                "{} ms is outside the supported range of ±{MAX_ABS_TIMESTAMP_MS} ms",
                ts[i]
            ),
        }),
        None => Ok(()),
    }
}

/// Whether `v` holds a NaN (blocks checked whole, without an early exit: vectorised).
fn has_nan(v: &[f64]) -> bool {
    v.chunks(256).any(|c| c.iter().fold(false, |b, x| b | x.is_nan()))
}

/// An event-time window aggregation pipeline. See [`PipelineBuilder`] for an example.
pub struct Pipeline {
    config: PipelineConfig,
    backend: Box<dyn AggBackend>,
    dict: KeyDict,
    assigner: Assigner,
    keys_sent: usize,
    stage: Stage,
    /// Rows taken from the store and not yet handed out, one piece per batch.
    rows: Vec<WindowRows>,
    /// Emptied output buffers for the window store to fill again.
    spare_rows: RowsPool,
    late: LateEvents,
    metrics: Metrics,
    backend_kind: BackendKind,
    backend_desc: String,
    backend_reason: String,
    failed: Option<String>,
    finished: bool,
    spare: Vec<Work>,
    /// A batch the backend is still computing (pipelined backends: the GPU).
    pending: Option<Work>,
    /// Buffers of a processed batch, for the next push.
    batch_pool: Option<EventBatch>,
    late_idx: Vec<u32>,
    batch_size: usize,
    /// How the key column is written back to DataFrames (set by the first pushed frame).
    pub(crate) key_output: Option<crate::io::KeyOutput>,
    model: Option<crate::ml::OnlineModel>,
}

impl Pipeline {
    /// A builder with the defaults.
    pub fn builder() -> PipelineBuilder {
        PipelineBuilder::default()
    }

    /// A pipeline for `config` (validated; the backend is opened here).
    pub fn new(config: PipelineConfig) -> Result<Self> {
        config.validate()?;
        // With the window store on its own thread, a CPU backend left to choose takes the other
        // cores for its reduce: on 2 cores the reduce of 10M uniform-key events took 0.12 s on 2
        // threads competing with the store and 0.065 s on 1.
        let threads = match config.threads {
            0 if config.pipelined => std::thread::available_parallelism()
                .map(|n| n.get().saturating_sub(1))
                .unwrap_or(1)
                .max(1),
            t => t,
        };
        let selected = backend::select(config.backend, threads)?;
        let reason = if config.pipelined {
            format!("{}; window store on its own thread", selected.reason)
        } else {
            selected.reason
        };
        Self::with_backend(config, selected.backend, reason)
    }

    /// A pipeline that uses an already opened backend.
    pub fn with_backend(config: PipelineConfig, backend: Box<dyn AggBackend>, reason: String) -> Result<Self> {
        config.validate()?;
        let ncols = config.value_columns.len();
        let lateness = config.allowed_lateness.as_millis();
        let model = match (&config.model, &config.model_in) {
            (Some(m), Some(path)) => Some(crate::ml::OnlineModel::load(
                m.clone(),
                &config.value_columns,
                &config.aggregates,
                path,
            )?),
            (Some(m), None) => Some(crate::ml::OnlineModel::new(
                m.clone(),
                &config.value_columns,
                &config.aggregates,
            )?),
            (None, Some(_)) => return Err(Error::config("a model file was given but no model task (--model)")),
            (None, None) => None,
        };
        let aggs = &config.aggregates;
        let mut assigner = Assigner::new(&config.window, config.watermark_delay.as_millis(), lateness, aggs);
        let mut store = Store::new(&config.window, lateness, ncols, aggs);
        let backend_kind = backend.kind();
        let mut backend_desc = backend.describe();
        if backend.reduces_in_place() && assigner.reduce_in_place(&mut store, ncols, config.aggregates.needs_m2()) {
            backend_desc = format!("{backend_desc} (tumbling/sliding windows: reduced while assigned, in one pass)");
        }
        let mut backend = backend;
        let batch_size = match config.batch_size {
            Some(n) => n,
            None => backend.preferred_batch_events(ncols)?,
        }
        .min(backend.max_batch_events(ncols))
        .max(1);
        let spare = RowsPool::default();
        let stage2 = Stage2 {
            store,
            keys: KeyValues::new(config.key_kind),
            order: KeyOrder::default(),
            ncols,
            last_rows: 0,
            spare: spare.clone(),
        };
        let stage = if config.pipelined {
            let (tx, work_rx) = sync_channel::<Work>(2);
            let (done_tx, rx) = sync_channel::<Result<Done>>(4);
            let mut s2 = stage2;
            let handle = std::thread::Builder::new()
                .name("fenestra-stage2".into())
                .spawn(move || {
                    while let Ok(mut work) = work_rx.recv() {
                        let res = s2.run(&mut work).map(|mut d| {
                            d.recycled = Some(work);
                            d
                        });
                        let failed = res.is_err();
                        if done_tx.send(res).is_err() || failed {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::config(format!("cannot start the worker thread: {e}")))?;
            Stage::Thread {
                tx: Some(tx),
                rx,
                handle: Some(handle),
                in_flight: 0,
            }
        } else {
            Stage::Inline(Box::new(stage2))
        };
        Ok(Pipeline {
            backend,
            dict: KeyDict::new(config.key_kind),
            assigner,
            keys_sent: if config.key_kind == KeyKind::None { 1 } else { 0 },
            stage,
            rows: vec![],
            spare_rows: spare,
            late: LateEvents::new(ncols),
            metrics: Metrics {
                watermark: i64::MIN,
                ..Default::default()
            },
            backend_kind,
            backend_desc,
            backend_reason: reason,
            failed: None,
            finished: false,
            spare: vec![],
            pending: None,
            batch_pool: None,
            late_idx: vec![],
            batch_size,
            key_output: None,
            model,
            config,
        })
    }

    /// The configuration.
    pub fn config(&self) -> &PipelineConfig {
        &self.config
    }

    /// The micro-batch size in use: the configured one, or the backend's preferred size, cut to
    /// what the backend takes at once. Pushes larger than this are split.
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// How the backend chose its batch size (the GPU: fixed cost, cost per event, share), when
    /// the size was left to it.
    pub fn batch_policy(&self) -> Option<BatchPolicy> {
        if self.config.batch_size.is_some() {
            return None;
        }
        self.backend.batch_policy()
    }

    /// The backend in use.
    pub fn backend_kind(&self) -> BackendKind {
        self.backend_kind
    }

    /// A description of the backend (adapter name, driver, software/hardware for the GPU).
    pub fn backend_description(&self) -> &str {
        &self.backend_desc
    }

    /// Why this backend was chosen (for `auto`: what was looked for and found).
    pub fn backend_reason(&self) -> &str {
        &self.backend_reason
    }

    /// The key dictionary (ids in output rows and late events refer to it).
    pub fn keys(&self) -> &KeyDict {
        &self.dict
    }

    /// The key dictionary, to encode keys for [`Pipeline::push_encoded`].
    pub fn keys_mut(&mut self) -> &mut KeyDict {
        &mut self.dict
    }

    /// Counters and timings so far.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    pub(crate) fn check_open(&self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(Error::Closed(format!("an earlier error stopped the pipeline: {e}")));
        }
        if self.finished {
            return Err(Error::Closed("finish() was already called".into()));
        }
        Ok(())
    }

    /// Pushes events whose keys are integers.
    pub fn push_int_keys(&mut self, ts: &[i64], keys: &[i64], values: &[&[f64]]) -> Result<()> {
        let (t0, mut batch) = self.begin_push(ts, "ts", self.metrics.events_in)?;
        if keys.len() != ts.len() {
            return Err(Error::RaggedBatch(format!(
                "ts has {} rows, keys {}",
                ts.len(),
                keys.len()
            )));
        }
        self.dict.encode_int_slice(keys, &mut batch.keys)?;
        self.fill_and_push(ts, batch, values, t0)
    }

    /// Pushes events whose keys are strings (`None` = null key).
    pub fn push_str_keys(&mut self, ts: &[i64], keys: &[Option<&str>], values: &[&[f64]]) -> Result<()> {
        let (t0, mut batch) = self.begin_push(ts, "ts", self.metrics.events_in)?;
        if keys.len() != ts.len() {
            return Err(Error::RaggedBatch(format!(
                "ts has {} rows, keys {}",
                ts.len(),
                keys.len()
            )));
        }
        self.dict.encode_strs(keys.iter().copied(), &mut batch.keys)?;
        self.fill_and_push(ts, batch, values, t0)
    }

    /// Pushes events without keys (one global group).
    pub fn push_unkeyed(&mut self, ts: &[i64], values: &[&[f64]]) -> Result<()> {
        let (t0, mut batch) = self.begin_push(ts, "ts", self.metrics.events_in)?;
        self.dict.encode_none(ts.len(), &mut batch.keys)?;
        self.fill_and_push(ts, batch, values, t0)
    }

    /// An empty batch with the buffers of one already processed (when there is one), to fill
    /// and hand to [`Pipeline::push_encoded`]: a stream of batches then needs no fresh memory
    /// per batch (see [`crate::io::frame_to_batch_into`]).
    pub fn recycled_batch(&mut self) -> EventBatch {
        let mut b = self.batch_pool.take().unwrap_or_default();
        b.ts.clear();
        b.keys.clear();
        for v in &mut b.values {
            v.clear();
        }
        b
    }

    /// The start of a push of the caller's slices: the pipeline is open and the times (column
    /// `column`, the first at input row `first_row`) are in range, checked before any key is
    /// encoded so that a rejected push changes nothing; then the push's clock and a batch.
    pub(crate) fn begin_push(&mut self, ts: &[i64], column: &str, first_row: u64) -> Result<(Instant, EventBatch)> {
        self.check_open()?;
        check_timestamps(ts, column, first_row)?;
        Ok((Instant::now(), self.recycled_batch()))
    }

    /// Pushes `ts` (checked by [`Self::begin_push`]) with `batch`'s encoded keys and `values`:
    /// assigned where they lie when the direct mode allows it, else copied into `batch`.
    pub(crate) fn fill_and_push(
        &mut self,
        ts: &[i64],
        mut batch: EventBatch,
        values: &[&[f64]],
        t0: Instant,
    ) -> Result<()> {
        if values.len() != self.config.value_columns.len() {
            return Err(Error::RaggedBatch(format!(
                "{} value columns pushed, the pipeline has {} ({:?})",
                values.len(),
                self.config.value_columns.len(),
                self.config.value_columns
            )));
        }
        if self.assigner.reduces_in_place()
            && values.iter().all(|v| v.len() == ts.len())
            && !values.iter().any(|v| has_nan(v))
        {
            // Nothing to canonicalise (no NaN) or mark (the null marker is a NaN), and the
            // direct mode folds values into pane rows as it assigns them: no copy is needed.
            self.metrics.ingest_s += t0.elapsed().as_secs_f64();
            let res = self.push_borrowed(ts, &batch.keys, values);
            self.batch_pool = Some(batch);
            return res;
        }
        batch.ts.extend_from_slice(ts);
        batch.values.resize_with(values.len(), Vec::new);
        for (out, v) in batch.values.iter_mut().zip(values) {
            ingest_values(v, None, out);
        }
        self.metrics.ingest_s += t0.elapsed().as_secs_f64();
        // (checked whole again, which also finds value columns of the wrong length)
        self.push_encoded(batch)
    }

    /// Pushes a batch whose keys were encoded with [`Pipeline::keys_mut`] and whose values went
    /// through [`crate::batch::ingest_values`] (NaN canonical, nulls marked). Timestamps are
    /// checked first; a batch with a bad timestamp is rejected whole and changes nothing.
    pub fn push_encoded(&mut self, batch: EventBatch) -> Result<()> {
        self.check_open()?;
        batch.check()?;
        if batch.values.len() != self.config.value_columns.len() {
            return Err(Error::RaggedBatch(format!(
                "{} value columns pushed, the pipeline has {}",
                batch.values.len(),
                self.config.value_columns.len()
            )));
        }
        if let Some(bad) = batch.keys.iter().position(|&k| k as usize >= self.dict.len()) {
            return Err(Error::config(format!(
                "key id {} at row {bad} was not produced by this pipeline's key dictionary",
                batch.keys[bad]
            )));
        }
        check_timestamps(&batch.ts, "ts", self.metrics.events_in)?;
        let n = batch.len();
        let bs = self.batch_size;
        if n <= bs {
            return self.process(batch);
        }
        let mut lo = 0;
        while lo < n {
            let hi = (lo + bs).min(n);
            let chunk = EventBatch {
                ts: batch.ts[lo..hi].to_vec(),
                keys: batch.keys[lo..hi].to_vec(),
                values: batch.values.iter().map(|v| v[lo..hi].to_vec()).collect(),
            };
            self.process(chunk)?;
            lo = hi;
        }
        Ok(())
    }

    /// Pushes events the caller owns without copying them (direct mode, times checked, values
    /// without NaN or null markers, keys just encoded by this pipeline's dictionary), in
    /// micro-batches.
    fn push_borrowed(&mut self, ts: &[i64], keys: &[u32], values: &[&[f64]]) -> Result<()> {
        let mut lo = 0;
        while lo < ts.len() {
            let hi = (lo + self.batch_size).min(ts.len());
            let part: Vec<&[f64]> = values.iter().map(|v| &v[lo..hi]).collect();
            self.process_borrowed(&ts[lo..hi], &keys[lo..hi], &part)?;
            lo = hi;
        }
        Ok(())
    }

    /// One micro-batch through the assigner, then to the second stage.
    fn process(&mut self, mut batch: EventBatch) -> Result<()> {
        if batch.is_empty() {
            return Ok(());
        }
        let mut work = self.assign_batch(&batch.ts, &batch.keys, &batch.values);
        // The values travel with the batch's work; the work's previous buffers come back here
        // for the next push (no fresh pages per batch).
        std::mem::swap(&mut work.values, &mut batch.values);
        self.batch_pool = Some(batch);
        self.submit_work(work)
    }

    /// [`Self::process`] for events the caller still owns (direct mode, whose store reads no
    /// values: they are folded into pane rows while assigned, so nothing is copied).
    fn process_borrowed(&mut self, ts: &[i64], keys: &[u32], values: &[&[f64]]) -> Result<()> {
        if ts.is_empty() {
            return Ok(());
        }
        let mut work = self.assign_batch(ts, keys, values);
        for v in &mut work.values {
            v.clear();
        }
        self.submit_work(work)
    }

    /// Assigns one micro-batch (late events to the side output) into a work item for the
    /// backend and the store.
    fn assign_batch<V: AsRef<[f64]>>(&mut self, ts: &[i64], keys: &[u32], values: &[V]) -> Work {
        let n = ts.len();
        let t0 = Instant::now();
        let mut work = self.spare.pop().unwrap_or_else(|| {
            Work::new(
                Plan::for_spec(&self.config.window),
                KeyValues::new(self.config.key_kind),
            )
        });
        self.late_idx.clear();
        self.assigner.note_keys(self.dict.values());
        self.assigner.assign(
            ts,
            keys,
            values,
            self.dict.len(),
            &mut work.slots,
            &mut self.late_idx,
            &mut work.plan,
        );
        // Late events go to the side output, with their position in the whole input.
        let base = self.metrics.events_in;
        for &i in &self.late_idx {
            let i = i as usize;
            self.late.row.push(base + i as u64);
            self.late.ts.push(ts[i]);
            self.late.key.push(keys[i]);
            for (c, v) in values.iter().enumerate() {
                self.late.values[c].push(v.as_ref()[i]);
            }
        }
        self.metrics.events_in += n as u64;
        self.metrics.late += self.late_idx.len() as u64;
        self.metrics.on_time += (n - self.late_idx.len()) as u64;
        self.metrics.batches += 1;
        self.metrics.watermark = self.assigner.watermark();
        work.keys_tail = self.dict.values().tail(self.keys_sent);
        self.keys_sent = self.dict.len();
        self.metrics.assign_s += t0.elapsed().as_secs_f64();
        work
    }

    /// Hands an assigned work item to the backend, then (in order) to the store.
    fn submit_work(&mut self, mut work: Work) -> Result<()> {
        let slot_batch = SlotBatch {
            slots: &work.slots,
            values: &work.values,
            num_slots: work.plan.num_slots(),
            want_m2: self.config.aggregates.needs_m2(),
        };
        let ncols = self.config.value_columns.len();
        let res = if slot_batch.num_slots > 0 {
            self.backend.submit(&slot_batch, ncols, &mut work.partials)
        } else {
            work.partials.reset(0, ncols);
            Ok(Submitted::Ready)
        };
        let submitted = self.record_failure(res)?;
        // The batch before this one, if the device still has it: its turn comes first. The
        // device meanwhile works on this one.
        self.complete_pending()?;
        self.metrics.backend = self.backend.stage_times();
        match submitted {
            Submitted::Ready => self.dispatch(work),
            Submitted::InFlight => {
                self.pending = Some(work);
                Ok(())
            }
        }
    }

    /// Waits for the batch the backend still computes, if any, and hands it to the store.
    fn complete_pending(&mut self) -> Result<()> {
        let Some(mut work) = self.pending.take() else {
            return Ok(());
        };
        let slot_batch = SlotBatch {
            slots: &work.slots,
            values: &work.values,
            num_slots: work.plan.num_slots(),
            want_m2: self.config.aggregates.needs_m2(),
        };
        let res = self
            .backend
            .complete(&slot_batch, self.config.value_columns.len(), &mut work.partials);
        self.record_failure(res)?;
        self.metrics.backend = self.backend.stage_times();
        self.dispatch(work)
    }

    fn dispatch(&mut self, work: Work) -> Result<()> {
        match &mut self.stage {
            Stage::Inline(s2) => {
                let mut work = work;
                let res = s2.run(&mut work);
                self.spare.push(work);
                let done = self.record_failure(res)?;
                self.absorb(done);
                Ok(())
            }
            Stage::Thread { tx, in_flight, .. } => {
                let Some(sender) = tx.as_ref() else {
                    return Err(Error::Closed("worker stopped".into()));
                };
                if sender.send(work).is_err() {
                    return self.worker_gone();
                }
                *in_flight += 1;
                self.drain(false)
            }
        }
    }

    fn record_failure<T>(&mut self, res: Result<T>) -> Result<T> {
        if let Err(e) = &res {
            self.failed = Some(e.to_string());
        }
        res
    }

    fn worker_gone(&mut self) -> Result<()> {
        // The worker stopped: it sent its error before exiting; surface it.
        self.drain(true)?;
        let msg = "the worker thread stopped unexpectedly".to_string();
        self.failed = Some(msg.clone());
        Err(Error::Closed(msg))
    }

    /// Collects finished batches from the worker; with `block`, waits for all in flight.
    fn drain(&mut self, block: bool) -> Result<()> {
        loop {
            let (res, in_flight_now) = match &mut self.stage {
                Stage::Inline(_) => return Ok(()),
                Stage::Thread { rx, in_flight, .. } => {
                    if *in_flight == 0 {
                        return Ok(());
                    }
                    let r = if block {
                        match rx.recv() {
                            Ok(r) => r,
                            Err(_) => {
                                *in_flight = 0;
                                return Err(Error::Closed("the worker thread stopped unexpectedly".into()));
                            }
                        }
                    } else {
                        match rx.try_recv() {
                            Ok(r) => r,
                            Err(_) => return Ok(()),
                        }
                    };
                    *in_flight -= 1;
                    (r, *in_flight)
                }
            };
            let mut done = self.record_failure(res)?;
            if let Some(w) = done.recycled.take() {
                self.spare.push(w);
            }
            self.absorb(done);
            if in_flight_now == 0 && block {
                return Ok(());
            }
        }
    }

    fn absorb(&mut self, done: Done) {
        for &r in &done.rows.revision {
            if r == 0 {
                self.metrics.windows_fired += 1;
            } else {
                self.metrics.revisions += 1;
            }
        }
        self.metrics.store_s += done.store_s;
        self.metrics.open_states = done.open_states + self.assigner.open_states() as u64;
        if !done.rows.is_empty() || !done.rows.merged.is_empty() {
            self.rows.push(done.rows);
        } else {
            // nothing emitted: the (possibly recycled) buffer goes back for the next batch
            self.recycle(done.rows);
        }
    }

    /// Takes the rows and late events produced so far. With the store on its worker thread
    /// (the default) it does not wait for batches in flight; with `pipelined(false)` everything
    /// pushed so far is complete, the batch a GPU still holds included.
    pub fn poll(&mut self) -> Result<Output> {
        self.collect_ready()?;
        self.take_output()
    }

    /// Gathers the rows and late events of every batch done so far, without waiting.
    fn collect_ready(&mut self) -> Result<()> {
        if let Some(e) = &self.failed {
            return Err(Error::Closed(format!("an earlier error stopped the pipeline: {e}")));
        }
        if matches!(self.stage, Stage::Inline(_)) {
            self.complete_pending()?;
        }
        self.drain(false)
    }

    /// [`Pipeline::poll`] without joining the rows into one buffer: the pieces as the window
    /// store emitted them, in firing order, and the late events. For a consumer that takes rows
    /// piece by piece (the file writer does): joining them was a copy of every row on the
    /// calling thread (~3% of a hop run's CPU). A pipeline with a model scores the rows of a
    /// poll together: use [`Pipeline::poll`] there (this is an error).
    pub fn poll_pieces(&mut self) -> Result<(Vec<WindowRows>, LateEvents)> {
        if self.model.is_some() {
            return Err(Error::config(
                "a pipeline with a model hands its rows out through poll()",
            ));
        }
        self.collect_ready()?;
        Ok((std::mem::take(&mut self.rows), self.late.take()))
    }

    /// Waits for every batch in flight, then takes the output so far.
    pub fn flush(&mut self) -> Result<Output> {
        self.check_open()?;
        self.complete_pending()?;
        self.drain(true)?;
        self.take_output()
    }

    /// Hands an output buffer back once its rows are used (e.g. [`Output::rows`] after they were
    /// written out, or [`crate::io::RowFileWriter::spent`]): the window store fills it again
    /// instead of allocating a new one, which saves a page fault per 4 KiB of rows (a buffer
    /// allocated on the store's thread and freed on another is not reused by the allocator
    /// soon enough). A buffer with some of its columns moved out is fine: those grow again.
    /// Optional; a few are kept.
    pub fn recycle(&mut self, mut rows: WindowRows) {
        if rows.ncols != self.config.value_columns.len() || rows.key.capacity() + rows.states_capacity() == 0 {
            return;
        }
        rows.clear();
        if let Ok(mut pool) = self.spare_rows.lock()
            && pool.len() < SPARE_ROWS
        {
            pool.push(rows);
        }
    }

    fn take_output(&mut self) -> Result<Output> {
        let ncols = self.config.value_columns.len();
        let rows = WindowRows::concat(&mut self.rows, ncols);
        // pieces copied into `rows`: their buffers can be filled again
        for p in std::mem::take(&mut self.rows) {
            self.recycle(p);
        }
        let ml = match &mut self.model {
            Some(m) => {
                let t0 = Instant::now();
                let res = m.process(&rows, self.dict.values());
                self.metrics.ml_s += t0.elapsed().as_secs_f64();
                Some(self.record_failure(res)?)
            }
            None => None,
        };
        Ok(Output {
            rows,
            late: self.late.take(),
            ml,
        })
    }

    /// The model's prequential metrics, when the pipeline has a model.
    pub fn model_report(&self) -> Option<crate::ml::MlReport> {
        self.model.as_ref().map(|m| m.report())
    }

    /// Saves the model (weights, optimiser state, running statistics, per-key history) so that
    /// a later pipeline built with [`PipelineBuilder::model_from`] continues from it.
    pub fn save_model(&self, path: &std::path::Path) -> Result<()> {
        match &self.model {
            Some(m) => m.save(path, self.dict.values()),
            None => Err(Error::config("this pipeline has no model to save")),
        }
    }

    /// Ends the input: the watermark becomes +∞, every open window fires, and the remaining
    /// output is returned.
    pub fn finish(&mut self) -> Result<Output> {
        self.check_open()?;
        self.complete_pending()?;
        let plan = self.assigner.finish();
        self.metrics.watermark = self.assigner.watermark();
        let mut work = Work::new(plan, self.dict.values().tail(self.keys_sent));
        work.partials.reset(0, self.config.value_columns.len());
        self.keys_sent = self.dict.len();
        self.dispatch(work)?;
        self.drain(true)?;
        self.finished = true;
        if let Stage::Thread { tx, handle, .. } = &mut self.stage {
            tx.take();
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
        self.take_output()
    }
}

impl Drop for Pipeline {
    fn drop(&mut self) {
        if let Stage::Thread { tx, handle, .. } = &mut self.stage {
            tx.take();
            if let Some(h) = handle.take() {
                let _ = h.join();
            }
        }
    }
}

#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>() {}
    is_send::<Pipeline>();
    is_send::<Output>();
}
