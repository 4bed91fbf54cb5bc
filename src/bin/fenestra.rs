//! `fenestra`: event-time window aggregation from the command line.
//!
//! * `fenestra gen`   — write a synthetic event file (Parquet or CSV).
//! * `fenestra run`   — aggregate a file into window rows (Parquet or CSV).
//! * `fenestra bench` — the main job on built-in data: throughput of the engine.

use anyhow::{Context, Result, bail};
use clap::{Args, Parser, Subcommand};
use fenestra::backend::BackendChoice;
use fenestra::generator::{GenConfig, generate};
use fenestra::io::{self, InputColumns};
use fenestra::{Aggregates, Duration, KeyKind, Pipeline, WindowSpec};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use polars::prelude::*;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// mimalloc keeps freed memory for re-use instead of handing large blocks back to the OS at
/// every free (glibc unmaps them): a `run` over 5M events took ~100k page faults (~0.25 s of
/// kernel time on 2 cores) with glibc and ~2.4k with mimalloc (Q1 whole process 0.42 -> 0.31 s).
/// The library itself does not choose an allocator; embedders pick their own. Large blocks go
/// through [`fenestra::alloc::LargeBlocks`] first, which re-uses a block freed by any thread.
#[global_allocator]
static GLOBAL: fenestra::alloc::LargeBlocks<mimalloc::MiMalloc> = fenestra::alloc::LargeBlocks::new(mimalloc::MiMalloc);

#[derive(Parser, Debug)]
#[command(name = "fenestra", version, about = "Event-time window aggregation on the GPU (wgpu) or CPU", long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// parsed once per process: not worth boxing the larger argument sets
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand, Debug)]
enum Command {
    /// Write a synthetic event file (columns ts, key, value) as Parquet or CSV.
    Gen(GenArgs),
    /// Aggregate an event file into window rows.
    Run(RunArgs),
    /// Measure the engine on generated in-memory events.
    Bench(BenchArgs),
}

#[derive(Args, Debug)]
struct GenArgs {
    /// Number of events.
    #[arg(long, default_value_t = 1_000_000)]
    events: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// Zipf exponent of the key distribution (0 = uniform).
    #[arg(long, default_value_t = 0.0)]
    zipf: f64,
    /// Maximum event-time disorder in ms.
    #[arg(long = "disorder-ms", default_value_t = 500)]
    disorder_ms: i64,
    /// Fraction of events delayed beyond the disorder bound (mostly late).
    #[arg(long = "late-fraction", default_value_t = 0.0)]
    late_fraction: f64,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Output file (.parquet or .csv).
    #[arg(long)]
    output: PathBuf,
}

#[derive(Args, Debug)]
struct RunArgs {
    /// Input file (.parquet or .csv).
    #[arg(long)]
    input: PathBuf,
    /// Output file (.parquet or .csv).
    #[arg(long)]
    output: PathBuf,
    /// Window: tumble:SIZE, hop:SIZE:SLIDE or session:GAP (e.g. tumble:1s, hop:10s:1s, session:100ms).
    #[arg(long)]
    window: String,
    /// Aggregates per value column.
    #[arg(long, default_value = "count,sum,min,max,mean,std")]
    aggs: String,
    /// Event-time column (integer ms since the epoch, datetime, or float ms).
    #[arg(long = "time-col", default_value = "ts")]
    time_col: String,
    /// Key column (integer or string).
    #[arg(long = "key-col", default_value = "key", conflicts_with = "no_key")]
    key_col: String,
    /// No key column: one global group.
    #[arg(long = "no-key")]
    no_key: bool,
    /// Value columns, comma-separated.
    #[arg(long = "value-cols", default_value = "value", value_delimiter = ',')]
    value_cols: Vec<String>,
    /// Bounded out-of-orderness of the watermark (with events at most M out of order, M makes no
    /// event late; session windows equal a batch engine's from M + 1ms, docs/SEMANTICS.md).
    #[arg(long = "watermark-delay", default_value = "500ms")]
    watermark_delay: String,
    /// How long fired windows accept late updates (as new revisions).
    #[arg(long = "allowed-lateness", default_value = "0ms")]
    allowed_lateness: String,
    /// Write late events (with all input columns) to this file.
    #[arg(long = "late-output")]
    late_output: Option<PathBuf>,
    /// Parquet output compression: uncompressed | snappy | lz4 | zstd [default: lz4]. Applies
    /// to --output and --late-output; CSV is never compressed.
    #[arg(long)]
    compression: Option<String>,
    /// Float columns of Parquet output: auto (PLAIN or BYTE_STREAM_SPLIT per column, whichever
    /// compresses at less cost) | plain (for readers that predate BYTE_STREAM_SPLIT) [default:
    /// auto]. Applies to --output and --late-output.
    #[arg(long = "float-encoding")]
    float_encoding: Option<String>,
    /// auto | cpu | gpu | reference.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Events per micro-batch [default: chosen by the backend: 65536 on the CPU; on a GPU the
    /// smallest size whose fixed submit/read-back cost stays under 10% of the batch time]
    #[arg(long = "batch-size")]
    batch_size: Option<usize>,
    /// Threads of the cpu backend's reduce (0 = every core but the one the window store runs on).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
    /// Also print the time spent in each phase (read, aggregate, write) and pipeline stage.
    #[arg(long)]
    verbose: bool,
    #[command(flatten)]
    ml: MlArgs,
}

/// Online learning on the closed windows.
#[derive(Args, Debug)]
struct MlArgs {
    /// TASK:KIND with TASK forecast|anomaly|classify and KIND linear|mlp (e.g. forecast:mlp).
    #[arg(long)]
    model: Option<String>,
    /// Forecast/anomaly target: count or an output column such as mean_value.
    #[arg(long)]
    target: Option<String>,
    /// Classify: the label column (aggregated per window by max; > 0.5 is positive).
    #[arg(long = "label-col")]
    label_col: Option<String>,
    /// Windows of history per input (default 8 for forecast/anomaly, 1 for classify).
    #[arg(long)]
    history: Option<usize>,
    /// Hidden layer sizes of the MLP.
    #[arg(long, default_value = "32,32", value_delimiter = ',')]
    hidden: Vec<usize>,
    /// Adam learning rate.
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Training mini-batch size (windows).
    #[arg(long = "train-batch", default_value_t = 32)]
    train_batch: usize,
    /// Save the trained model here: weights (burnpack; `.bpk` is appended when FILE has no
    /// extension), optimiser state FILE.adam and metadata FILE.json.
    #[arg(long = "model-out")]
    model_out: Option<PathBuf>,
    /// Start from a model saved with --model-out.
    #[arg(long = "model-in")]
    model_in: Option<PathBuf>,
    /// Write the model's metrics as JSON here.
    #[arg(long = "metrics-output")]
    metrics_output: Option<PathBuf>,
    /// Features per window, comma-separated (default: log_count and every aggregate).
    #[arg(long, value_delimiter = ',')]
    features: Option<Vec<String>>,
    /// Anomaly: keep windows scoring above this many deviations out of the forecast history.
    #[arg(long = "anomaly-gate")]
    anomaly_gate: Option<f64>,
    /// Where the model runs: auto | cpu | gpu (default: the aggregation backend's choice).
    #[arg(long = "model-backend")]
    model_backend: Option<String>,
}

#[derive(Args, Debug)]
struct BenchArgs {
    /// Number of events.
    #[arg(long, default_value_t = 10_000_000)]
    events: usize,
    /// Number of distinct keys.
    #[arg(long, default_value_t = 10_000)]
    keys: u32,
    /// Zipf exponent of the key distribution (0 = uniform).
    #[arg(long, default_value_t = 0.0)]
    zipf: f64,
    /// Window spec.
    #[arg(long, default_value = "tumble:1s")]
    window: String,
    /// auto | cpu | gpu | reference.
    #[arg(long, default_value = "auto")]
    backend: String,
    /// Aggregates per value column.
    #[arg(long, default_value = "count,sum,min,max,mean")]
    aggs: String,
    /// Maximum event-time disorder of the generated events, ms.
    #[arg(long = "disorder-ms", default_value_t = 500)]
    disorder_ms: i64,
    /// Fraction of events delayed beyond the disorder bound.
    #[arg(long = "late-fraction", default_value_t = 0.0)]
    late_fraction: f64,
    /// Watermark delay (default: the disorder).
    #[arg(long = "watermark-delay")]
    watermark_delay: Option<String>,
    /// Events per micro-batch [default: chosen by the backend: 65536 on the CPU; on a GPU the
    /// smallest size whose fixed submit/read-back cost stays under 10% of the batch time]
    #[arg(long = "batch-size")]
    batch_size: Option<usize>,
    /// Threads of the cpu backend's reduce (0 = every core but the one the window store runs on).
    #[arg(long, default_value_t = 0)]
    threads: usize,
    /// Random seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Print one JSON object instead of text (no progress bar).
    #[arg(long)]
    json: bool,
}

/// `mi_option_purge_delay` in mimalloc's option enum (15 in the mimalloc.h of both v2 and v3, as
/// bundled by libmimalloc-sys 0.1.49; the Rust bindings name only some options). Check it when
/// that crate is upgraded.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Freed memory stays with the process for re-use instead of being handed back to the OS after
/// mimalloc's purge delay: every page handed back is zeroed by the kernel again on its next use,
/// which cost a session run (Q3, 5M events) ~0.2-0.6 s of kernel time; with purging off, ~0.08 s.
/// Memory held stays at the run's peak, which the streaming pipeline bounds.
fn keep_freed_memory() {
    // SAFETY: plain option setter of the allocator, called before any other thread exists.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    quiet_vulkan_loader();
    if let Command::Run(a) = &cli.command
        && a.ml.model_in.is_some()
        && std::env::var_os("BURN_DEVICE").is_none()
        && !fenestra::ml::models::any_wgpu_adapter()
    {
        // burn restores optimiser state on its default device, which is wgpu unless BURN_DEVICE
        // names another; with no adapter at all, the CPU backend is the only one that can.
        // SAFETY: no other thread exists yet.
        unsafe { std::env::set_var("BURN_DEVICE", "flex") };
    }
    let res = match cli.command {
        Command::Gen(a) => cmd_gen(a),
        Command::Run(a) => cmd_run(a),
        Command::Bench(a) => cmd_bench(a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn progress(len: u64, msg: &str, hidden: bool) -> ProgressBar {
    if hidden {
        return ProgressBar::hidden();
    }
    let pb = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    pb.set_style(
        ProgressStyle::with_template("{msg:>10} [{bar:40}] {human_pos}/{human_len} ({per_sec}, {eta})")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    pb.set_message(msg.to_string());
    pb
}

fn cmd_gen(a: GenArgs) -> Result<()> {
    let cfg = GenConfig {
        events: a.events,
        keys: a.keys,
        zipf: a.zipf,
        disorder_ms: a.disorder_ms,
        late_fraction: a.late_fraction,
        seed: a.seed,
        ..Default::default()
    };
    cfg.validate()?;
    io::Format::of(&a.output)?;
    let pb = progress(a.events as u64, "generating", false);
    let ev = generate(&cfg, |done| pb.set_position(done as u64))?;
    pb.finish_and_clear();
    let keys: Vec<u32> = ev.key.iter().map(|&k| k as u32).collect();
    let mut df = DataFrame::new_infer_height(vec![
        Int64Chunked::from_vec("ts".into(), ev.ts).into_column(),
        UInt32Chunked::from_vec("key".into(), keys).into_column(),
        Float64Chunked::from_vec("value".into(), ev.value).into_column(),
    ])?;
    io::write_frame(&mut df, &a.output)?;
    eprintln!("wrote {} events to {}", a.events, a.output.display());
    Ok(())
}

/// The value of Parquet-output option `--flag` (its default when not given); an error when no
/// output is Parquet.
fn parquet_option<T>(value: Option<&str>, flag: &str, any_parquet: bool) -> Result<T>
where
    T: Default + std::str::FromStr<Err = fenestra::Error>,
{
    match value {
        None => Ok(T::default()),
        Some(_) if !any_parquet => bail!("--{flag} applies to Parquet output only; no output here is Parquet"),
        Some(v) => Ok(v.parse()?),
    }
}

fn parse_dur(s: &str, what: &str) -> Result<Duration> {
    s.parse::<Duration>().with_context(|| format!("--{what}"))
}

fn cmd_run(a: RunArgs) -> Result<()> {
    let t_start = Instant::now();
    // Everything that can be checked before reading the input is checked first.
    let window: WindowSpec = a.window.parse()?;
    let aggs: Aggregates = a.aggs.parse()?;
    let delay = parse_dur(&a.watermark_delay, "watermark-delay")?;
    let lateness = parse_dur(&a.allowed_lateness, "allowed-lateness")?;
    let backend: BackendChoice = a.backend.parse()?;
    let out_format = io::Format::of(&a.output)?;
    let late_format = a.late_output.as_deref().map(io::Format::of).transpose()?;
    let any_parquet = out_format == io::Format::Parquet || late_format == Some(io::Format::Parquet);
    let parquet = io::ParquetOptions {
        compression: parquet_option(a.compression.as_deref(), "compression", any_parquet)?,
        floats: parquet_option(a.float_encoding.as_deref(), "float-encoding", any_parquet)?,
    };
    let mut value_cols: Vec<String> = a
        .value_cols
        .iter()
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect();
    if value_cols.is_empty() {
        bail!("--value-cols names no column");
    }
    let mut aggs = aggs;
    let ml_cfg = ml_config(&a.ml, backend, &mut value_cols, &mut aggs)?;
    if (a.ml.model_out.is_some() || a.ml.model_in.is_some() || a.ml.metrics_output.is_some()) && ml_cfg.is_none() {
        bail!("--model-out, --model-in and --metrics-output need --model");
    }
    let cols = InputColumns {
        time: a.time_col.clone(),
        key: (!a.no_key).then(|| a.key_col.clone()),
        values: value_cols.clone(),
    };

    let spinner = if a.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new_spinner()
    };
    spinner.set_message(format!("reading {}", a.input.display()));
    // The input is read a chunk at a time on a reader thread (whole Parquet row groups, or CSV
    // blocks cut at record ends): decoding overlaps aggregation and memory holds a few chunks.
    // `read` below is the time to the first chunk; later chunks decode during aggregation.
    // Only the columns the job reads are decoded, unless late events go out with all of theirs.
    let needed: Vec<String> = std::iter::once(cols.time.clone())
        .chain(cols.key.clone())
        .chain(cols.values.iter().cloned())
        .collect();
    let only = a.late_output.is_none().then_some(needed.as_slice());
    // Parquet columns of the usual types are decoded straight into event columns (io::scan);
    // anything else, and every column when late rows go out whole, through polars' frames.
    let mut input = match only
        .map(|_| io::EventReader::open(&a.input, &cols))
        .transpose()?
        .flatten()
    {
        Some(r) => Input::Scan(r),
        None => Input::Frames(io::ChunkReader::open_columns(&a.input, &cols.values, only)?),
    };
    let first = match input.next() {
        Some(c) => c?,
        None => return Err(fenestra::Error::EmptyInput(format!("'{}'", a.input.display())).into()),
    };
    spinner.finish_and_clear();
    let read_s = t_start.elapsed().as_secs_f64();
    let source = a.input.display().to_string();
    let schema = match (&input, &first) {
        (Input::Scan(r), _) => r.schema_frame().schema().clone(),
        (Input::Frames(_), io::EventChunk::Frame(df)) => df.schema().clone(),
        (Input::Frames(_), io::EventChunk::Columns(_)) => {
            return Err(fenestra::Error::config("a frame reader delivered decoded columns").into());
        }
    };
    // (not `first.clear()`: polars builds each cleared column from its global zero buffer,
    // 8 MiB the kernel faults in and zeroes on first use, ~2,000 page faults at start-up)
    let empty_input = polars::prelude::DataFrame::empty_with_schema(&schema);
    let key_out = io::check_schema(&empty_input, &cols, &source)?;

    let pipeline = Pipeline::builder()
        .window(window)
        .watermark_delay(delay)
        .allowed_lateness(lateness)
        .aggregates(aggs.clone())
        .value_columns(value_cols.clone())
        .key_kind(key_out.kind())
        .backend(backend)
        .threads(a.threads);
    let pipeline = match a.batch_size {
        Some(n) => pipeline.batch_size(n),
        None => pipeline,
    };
    let mut pipeline = match &ml_cfg {
        Some(m) => {
            let b = pipeline.model(m.clone());
            match &a.ml.model_in {
                Some(p) => b.model_from(p),
                None => b,
            }
        }
        None => pipeline,
    }
    .build()?;
    if !a.quiet {
        eprintln!("backend: {}", pipeline.backend_reason());
        eprintln!("micro-batch: {}", batch_line(&pipeline));
        if let Some(r) = pipeline.model_report() {
            eprintln!(
                "model: {} on {}",
                ml_cfg.as_ref().map(|m| format!("{}", m.model.task)).unwrap_or_default(),
                r.backend
            );
        }
    }
    let n = input.total_rows();
    let pb = progress(n as u64, "events", a.quiet);
    // Rows go to a writer thread as they are emitted: encoding overlaps aggregation.
    let mut writer = io::RowFileWriter::create_with(
        &a.output,
        key_out.clone(),
        key_out.kind(),
        value_cols.clone(),
        aggs.clone(),
        ml_cfg.as_ref().map(|m| m.model.task),
        parquet,
    )?;
    let mut late = fenestra::LateEvents::default();
    let mut late_frames: Vec<DataFrame> = vec![];
    let mut late_taken = 0usize;
    let bs = pipeline.batch_size();
    let mut chunk_start = 0usize;
    let mut next = Some(first);
    let mut key_ids = io::KeyIds::default();
    while let Some(chunk) = next.take() {
        let h = match &chunk {
            io::EventChunk::Frame(df) => df.height(),
            io::EventChunk::Columns(c) => {
                // each of the file's distinct keys encoded once, as its chunk brings it
                key_ids.extend(c, pipeline.keys_mut())?;
                c.len()
            }
        };
        let mut local = 0usize;
        while local < h {
            let len = bs.min(h - local);
            let row = (chunk_start + local) as u64;
            match &chunk {
                io::EventChunk::Frame(df) => pipeline.push_frame_columns(&df.slice(local as i64, len), &cols, row)?,
                io::EventChunk::Columns(c) => {
                    pipeline.push_event_columns(c, &key_ids, local..local + len, &cols.time, row)?
                }
            }
            let late_now = if ml_cfg.is_some() {
                let out = pipeline.poll()?;
                writer.write(out.rows, out.ml, pipeline.keys().values())?;
                out.late
            } else {
                // the rows as the store emitted them: no join on this thread
                let (pieces, late_now) = pipeline.poll_pieces()?;
                for rows in pieces {
                    writer.write(rows, None, pipeline.keys().values())?;
                }
                late_now
            };
            for rows in writer.spent() {
                pipeline.recycle(rows);
            }
            append_late(&mut late, late_now);
            local += len;
            pb.set_position((chunk_start + local) as u64);
        }
        // Late events are known as soon as their batch is assigned: keep their input rows
        // while the chunk is at hand (late output reads frames: all the input's columns).
        if let io::EventChunk::Frame(df) = &chunk
            && a.late_output.is_some()
            && late.row.len() > late_taken
        {
            late_frames.push(io::late_rows(df, &late.row[late_taken..], chunk_start as u64)?);
            late_taken = late.row.len();
        }
        chunk_start += h;
        // freed (or handed back) before waiting for the next chunk, for the reader to reuse
        input.recycle(chunk);
        next = input.next().transpose()?;
        // a CSV file's row count is an estimate until its end is reached
        pb.set_length(input.total_rows().max(chunk_start) as u64);
    }
    let out = pipeline.finish()?;
    writer.write(out.rows, out.ml, pipeline.keys().values())?;
    append_late(&mut late, out.late);
    pb.finish_and_clear();
    let agg_s = t_start.elapsed().as_secs_f64() - read_s;
    let wt = writer.finish(pipeline.keys().values())?;
    let (frame_s, write_s, write_wait_s) = (wt.build_s, wt.write_s, wt.wait_s);
    if let Some(path) = &a.late_output {
        let mut lf = empty_input;
        for f in late_frames {
            lf.vstack_mut_owned(f)?;
        }
        io::write_frame_with(&mut lf, path, parquet)?;
    } else if !late.is_empty() && !a.quiet {
        eprintln!(
            "note: {} late events were counted but not written; pass --late-output FILE to keep them",
            late.len()
        );
    }
    if let Some(path) = &a.ml.model_out {
        pipeline.save_model(path)?;
    }
    if let Some(report) = pipeline.model_report() {
        let text = serde_json::to_string_pretty(&report)?;
        if let Some(path) = &a.ml.metrics_output {
            write_atomic(path, text.as_bytes())?;
        }
        if !a.quiet {
            let quality = match (report.mae, report.auc) {
                (Some(mae), _) => format!("MAE {mae:.4}, RMSE {:.4}", report.rmse.unwrap_or(f64::NAN)),
                (None, auc) => format!(
                    "log-loss {:.4}, accuracy {:.4}, AUC {}",
                    report.logloss.unwrap_or(f64::NAN),
                    report.accuracy.unwrap_or(f64::NAN),
                    auc.map(|a| format!("{a:.4}")).unwrap_or("-".into())
                ),
            };
            eprintln!(
                "model {}: {} samples scored, {quality}, train {:.0} samples/s, infer {:.0} samples/s on {}",
                report.task, report.samples, report.train_samples_per_sec, report.infer_samples_per_sec, report.backend
            );
        }
    }
    let m = pipeline.metrics();
    let secs = t_start.elapsed().as_secs_f64();
    eprintln!(
        "events read {}, on-time {}, late {}, windows emitted {}, seconds {:.3}, events/s {:.0}",
        m.events_in,
        m.on_time,
        m.late,
        wt.rows,
        secs,
        m.events_in as f64 / secs
    );
    if a.verbose {
        eprintln!(
            "phases (s): first chunk read {read_s:.3}, aggregate {agg_s:.3} (later chunks decoded alongside; ingest {:.3}, assign {:.3}, upload {:.3}, kernels {:.3}, read-back {:.3}, store {:.3}, ml {:.3}), then waited {write_wait_s:.3} for the writer thread (build output {frame_s:.3}, encode+write {write_s:.3}, overlapped with aggregation)",
            m.ingest_s, m.assign_s, m.backend.upload_s, m.backend.kernel_s, m.backend.readback_s, m.store_s, m.ml_s
        );
        eprintln!(
            "metrics: {} batches ({} overlapped on the device), windows fired {}, revisions {}, final watermark {}, open window states {}",
            m.batches,
            m.backend.overlapped,
            m.windows_fired,
            m.revisions,
            if m.watermark == i64::MAX {
                "+inf".to_string()
            } else {
                m.watermark.to_string()
            },
            m.open_states
        );
    }
    Ok(())
}

fn write_atomic(path: &std::path::Path, bytes: &[u8]) -> Result<()> {
    let tmp = path.with_extension("fenestra.tmp");
    std::fs::write(&tmp, bytes).with_context(|| format!("cannot write '{}'", tmp.display()))?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write '{}'", path.display()))?;
    Ok(())
}

/// The model settings from the command line; a label column and the max aggregate it needs are
/// added when missing.
fn ml_config(
    a: &MlArgs,
    backend: BackendChoice,
    value_cols: &mut Vec<String>,
    aggs: &mut Aggregates,
) -> Result<Option<fenestra::ml::MlConfig>> {
    use fenestra::ml::{MlConfig, ModelSpec, Task};
    let Some(model) = &a.model else { return Ok(None) };
    let model: ModelSpec = model.parse()?;
    if model.task == Task::Classify {
        let Some(label) = &a.label_col else {
            bail!("--model classify:... needs --label-col")
        };
        if !value_cols.contains(label) {
            value_cols.push(label.clone());
        }
        if !aggs.kinds().contains(&fenestra::AggKind::Max) {
            let mut k = aggs.kinds().to_vec();
            k.push(fenestra::AggKind::Max);
            *aggs = Aggregates::new(k);
        }
    }
    let model_backend = match &a.model_backend {
        Some(b) => b.parse()?,
        None => backend,
    };
    Ok(Some(MlConfig {
        model,
        target: a.target.clone(),
        label: a.label_col.clone(),
        history: a.history.unwrap_or(if model.task == Task::Classify { 1 } else { 8 }),
        hidden: a.hidden.clone(),
        lr: a.lr,
        batch: a.train_batch,
        features: a.features.clone(),
        anomaly_gate: a.anomaly_gate,
        backend: model_backend,
        ..MlConfig::default()
    }))
}

/// Where `run` reads its events from.
enum Input {
    /// Parquet decoded straight into event columns (chunks that need polars come as frames).
    Scan(io::EventReader),
    /// Frames from polars (CSV, other column types, or every column for the late output).
    Frames(io::ChunkReader),
}

impl Input {
    fn next(&mut self) -> Option<fenestra::Result<io::EventChunk>> {
        match self {
            Input::Scan(r) => r.next_chunk(),
            Input::Frames(r) => r.next_chunk().map(|c| c.map(io::EventChunk::Frame)),
        }
    }

    fn total_rows(&self) -> usize {
        match self {
            Input::Scan(r) => r.total_rows(),
            Input::Frames(r) => r.total_rows(),
        }
    }

    /// Hands a processed chunk's buffers back to the reader (a frame is dropped).
    fn recycle(&self, chunk: io::EventChunk) {
        if let (Input::Scan(r), io::EventChunk::Columns(c)) = (self, chunk) {
            r.recycle(c);
        }
    }
}

fn append_late(acc: &mut fenestra::LateEvents, more: fenestra::LateEvents) {
    if acc.values.is_empty() {
        *acc = more;
        return;
    }
    acc.row.extend(more.row);
    acc.ts.extend(more.ts);
    acc.key.extend(more.key);
    for (a, b) in acc.values.iter_mut().zip(more.values) {
        a.extend(b);
    }
}

fn cmd_bench(a: BenchArgs) -> Result<()> {
    let window: WindowSpec = a.window.parse()?;
    let aggs: Aggregates = a.aggs.parse()?;
    let backend: BackendChoice = a.backend.parse()?;
    let delay = match &a.watermark_delay {
        Some(s) => parse_dur(s, "watermark-delay")?,
        None => Duration::from_millis(a.disorder_ms),
    };
    let cfg = GenConfig {
        events: a.events,
        keys: a.keys,
        zipf: a.zipf,
        disorder_ms: a.disorder_ms,
        late_fraction: a.late_fraction,
        seed: a.seed,
        ..Default::default()
    };
    let pb = progress(a.events as u64, "generating", a.json);
    let t_gen = Instant::now();
    let ev = generate(&cfg, |d| pb.set_position(d as u64))?;
    let gen_s = t_gen.elapsed().as_secs_f64();
    pb.finish_and_clear();

    let pipeline = Pipeline::builder()
        .window(window)
        .watermark_delay(delay)
        .aggregates(aggs.clone())
        .value_columns(["value"])
        .key_kind(KeyKind::Int)
        .backend(backend)
        .threads(a.threads);
    let mut pipeline = match a.batch_size {
        Some(n) => pipeline.batch_size(n),
        None => pipeline,
    }
    .build()?;
    if !a.json {
        eprintln!("backend: {}", pipeline.backend_reason());
    }
    let pb = progress(a.events as u64, "events", a.json);
    let t0 = Instant::now();
    let mut windows = 0u64;
    let bs = pipeline.batch_size();
    let mut lo = 0;
    while lo < ev.len() {
        let hi = (lo + bs).min(ev.len());
        pipeline.push_int_keys(&ev.ts[lo..hi], &ev.key[lo..hi], &[&ev.value[lo..hi]])?;
        let out = pipeline.poll()?;
        windows += out.rows.len() as u64;
        // the rows are counted, not kept: their buffer can be filled again
        pipeline.recycle(out.rows);
        lo = hi;
        pb.set_position(lo as u64);
    }
    windows += pipeline.finish()?.rows.len() as u64;
    let secs = t0.elapsed().as_secs_f64();
    pb.finish_and_clear();
    let m = pipeline.metrics().clone();
    let eps = a.events as f64 / secs;
    if a.json {
        let j = serde_json::json!({
            "backend": pipeline.backend_kind().to_string(),
            "backend_description": pipeline.backend_description(),
            "backend_reason": pipeline.backend_reason(),
            "events": a.events,
            "seconds": secs,
            "events_per_sec": eps,
            "windows": windows,
            "late": m.late,
            "window": window.to_string(),
            "keys": a.keys,
            "zipf": a.zipf,
            "disorder_ms": a.disorder_ms,
            "batch_size": pipeline.batch_size(),
            "batch_policy": pipeline.batch_policy(),
            "batches": m.batches,
            "overlapped_batches": m.backend.overlapped,
            "aggs": aggs.to_string(),
            "generate_seconds": gen_s,
            "stages": {
                "ingest_s": m.ingest_s,
                "assign_s": m.assign_s,
                "upload_s": m.backend.upload_s,
                "kernel_s": m.backend.kernel_s,
                "readback_s": m.backend.readback_s,
                "store_s": m.store_s,
            },
        });
        println!("{j}");
    } else {
        println!(
            "fenestra bench: {} events, {} keys ({}), {}, watermark delay {}, aggs {}",
            a.events,
            a.keys,
            if a.zipf > 0.0 {
                format!("zipf {}", a.zipf)
            } else {
                "uniform".into()
            },
            window,
            delay,
            aggs
        );
        println!("  backend        {}", pipeline.backend_description());
        println!("  micro-batch    {}", batch_line(&pipeline));
        println!("  generated in   {gen_s:.2} s (not timed)");
        println!("  processed in   {secs:.3} s  =>  {:.2} M events/s", eps / 1e6);
        println!("  windows        {windows} emitted, {} late events", m.late);
        println!(
            "  stages (s)     ingest {:.3}, assign {:.3}, upload {:.3}, kernels {:.3}, read-back {:.3}, store {:.3}",
            m.ingest_s, m.assign_s, m.backend.upload_s, m.backend.kernel_s, m.backend.readback_s, m.store_s
        );
        if m.backend.batches > 0 {
            println!(
                "  device         {} batches, {} submitted while the previous one was still on the device (kernels = time waited for it)",
                m.backend.batches, m.backend.overlapped
            );
        }
    }
    Ok(())
}

/// The micro-batch size and, when the backend chose it, why.
fn batch_line(p: &Pipeline) -> String {
    match p.batch_policy() {
        Some(b) => format!(
            "{} events (chosen by the backend: fixed cost {:.2} ms per batch, {:.1} ns per event, fixed share {:.1}%)",
            p.batch_size(),
            b.fixed_s * 1e3,
            b.per_event_s * 1e9,
            b.fixed_share * 100.0
        ),
        None => format!("{} events", p.batch_size()),
    }
}

/// Mesa's Vulkan drivers print "error: XDG_RUNTIME_DIR is invalid or not set" on every adapter
/// probe when the variable is missing (containers, CI, ssh sessions); point it at a private
/// directory so that the only errors a user sees are real ones.
fn quiet_vulkan_loader() {
    #[cfg(target_os = "linux")]
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        use std::os::unix::fs::PermissionsExt;
        let user = std::env::var("USER").unwrap_or_else(|_| "user".into());
        let dir = std::env::temp_dir().join(format!("fenestra-runtime-{user}"));
        if std::fs::create_dir_all(&dir).is_ok()
            && std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).is_ok()
        {
            // SAFETY: called first thing in main, before any other thread exists.
            unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
        }
    }
}
