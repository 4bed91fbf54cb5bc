//! Shared test support: data generators with disorder, late events and edge cases; an
//! independent, naive model of DESIGN.md §2–3 (the semantic oracle); runners for every backend;
//! and row comparison with explicit tolerances.
#![allow(dead_code)]

use fenestra::agg::{AggKind, Aggregates, is_null_value, null_value};
use fenestra::backend::{AggBackend, BackendChoice};
use fenestra::generator::Rng;
use fenestra::{Duration, KeyKind, Pipeline, PipelineConfig, WindowSpec};
use std::collections::{BTreeMap, HashMap};

/// A test data set: events in arrival order.
#[derive(Clone, Debug, Default)]
pub struct Data {
    pub ts: Vec<i64>,
    pub key: Vec<i64>,
    pub values: Vec<Vec<f64>>,
}

impl Data {
    pub fn len(&self) -> usize {
        self.ts.len()
    }
}

/// Parameters of a synthetic stream.
#[derive(Clone, Debug)]
pub struct Shape {
    pub n: usize,
    pub keys: u32,
    pub zipf: f64,
    /// Base clock step per event, ms (may be fractional through `per_ms`).
    pub per_ms: i64,
    pub disorder: i64,
    pub late_fraction: f64,
    pub start: i64,
    pub ncols: usize,
    pub null_fraction: f64,
    /// Insert quiet gaps of this many ms every `gap_every` events (empty windows between bursts).
    pub gap_ms: i64,
    pub gap_every: usize,
    pub seed: u64,
}

impl Default for Shape {
    fn default() -> Self {
        Shape {
            n: 5000,
            keys: 20,
            zipf: 0.0,
            per_ms: 1,
            disorder: 300,
            late_fraction: 0.05,
            start: 1_000_000,
            ncols: 1,
            null_fraction: 0.0,
            gap_ms: 0,
            gap_every: 0,
            seed: 7,
        }
    }
}

/// Generates a stream: base time advances `per_ms` ms per event, jitter up to `disorder`, a
/// fraction of events pushed far back (late), optional nulls, Zipf keys, quiet gaps.
pub fn stream(s: &Shape) -> Data {
    let mut rng = Rng::new(s.seed);
    let table = (s.zipf > 0.0).then(|| fenestra::generator::AliasTable::zipf(s.keys, s.zipf));
    let mut d = Data {
        values: vec![vec![]; s.ncols],
        ..Default::default()
    };
    let mut base = s.start;
    for i in 0..s.n {
        if s.gap_every > 0 && i > 0 && i % s.gap_every == 0 {
            base += s.gap_ms;
        }
        base += s.per_ms;
        let mut t = base - rng.below(s.disorder as u64 + 1) as i64;
        if rng.next_f64() < s.late_fraction {
            t -= s.disorder + 1 + rng.below(3 * (s.disorder as u64 + 1000)) as i64;
        }
        let k = match &table {
            Some(tb) => tb.sample(&mut rng) as i64,
            None => rng.below(s.keys as u64) as i64,
        };
        d.ts.push(t);
        d.key.push(k);
        for c in 0..s.ncols {
            let v = if rng.next_f64() < s.null_fraction {
                null_value()
            } else {
                ((rng.next_f64() * 2000.0 - 500.0) * 1000.0).round() / 1000.0 + c as f64 * 1e6
            };
            d.values[c].push(v);
        }
    }
    d
}

/// One row of expected or actual output, with aggregates evaluated.
#[derive(Clone, Debug, PartialEq)]
pub struct Row {
    pub key: Option<i64>,
    pub start: i64,
    pub end: i64,
    pub revision: u32,
    pub count: u64,
    /// Per column: sum, min, max, mean, var, std.
    pub aggs: Vec<[Option<f64>; 6]>,
    pub lineage: u64,
}

pub fn aggs_of(values: &[f64]) -> [Option<f64>; 6] {
    let v: Vec<f64> = values.iter().copied().filter(|x| !is_null_value(*x)).collect();
    if v.is_empty() {
        return [None; 6];
    }
    let n = v.len() as f64;
    let sum: f64 = v.iter().sum();
    let mean = sum / n;
    let min = v
        .iter()
        .copied()
        .fold(f64::INFINITY, |a, b| if b.is_nan() { a } else { a.min(b) });
    let max = v.iter().copied().fold(f64::NEG_INFINITY, |a, b| {
        if a.is_nan() || b.is_nan() { f64::NAN } else { a.max(b) }
    });
    let min = if v.iter().all(|x| x.is_nan()) { f64::NAN } else { min };
    let var = if v.len() > 1 {
        Some(v.iter().map(|x| (x - mean) * (x - mean)).sum::<f64>() / (n - 1.0))
    } else {
        None
    };
    [Some(sum), Some(min), Some(max), Some(mean), var, var.map(f64::sqrt)]
}

/// Which window kind the model simulates.
#[derive(Clone, Copy, Debug)]
pub struct ModelSpec {
    pub spec: WindowSpec,
    pub delay: i64,
    pub lateness: i64,
}

/// The naive semantic model: processes events one at a time exactly as DESIGN.md §2–3 reads,
/// with brute-force window enumeration. Returns the *final* content of every window (one row per
/// window, revision unset) and the indices of late events.
pub fn model(data: &Data, m: ModelSpec) -> (Vec<Row>, Vec<usize>) {
    let mut late = vec![];
    let mut max_ts: Option<i64> = None;
    let ncols = data.values.len();
    let row_of = |key: i64, start: i64, end: i64, idx: &[usize]| -> Row {
        let aggs = (0..ncols)
            .map(|c| aggs_of(&idx.iter().map(|&i| data.values[c][i]).collect::<Vec<_>>()))
            .collect();
        Row {
            key: Some(key),
            start,
            end,
            revision: 0,
            count: idx.len() as u64,
            aggs,
            lineage: 0,
        }
    };
    match m.spec {
        WindowSpec::Tumbling { .. } | WindowSpec::Sliding { .. } => {
            let (size, slide, offset) = match m.spec {
                WindowSpec::Tumbling { size, offset } => (size.as_millis(), size.as_millis(), offset.as_millis()),
                WindowSpec::Sliding { size, slide, offset } => {
                    (size.as_millis(), slide.as_millis(), offset.as_millis())
                }
                _ => unreachable!(),
            };
            let mut windows: BTreeMap<(i64, i64), Vec<usize>> = BTreeMap::new();
            for i in 0..data.len() {
                let w = max_ts.map_or(i64::MIN, |mx| mx - m.delay - 1);
                let t = data.ts[i];
                // brute force: every aligned start s with s <= t < s + size
                let mut s = offset + ((t - offset - size) as f64 / slide as f64).floor() as i64 * slide - slide;
                let mut mine = vec![];
                while s <= t {
                    if t < s + size {
                        mine.push(s);
                    }
                    s += slide;
                }
                let kept: Vec<i64> = mine.into_iter().filter(|s| s + size - 1 + m.lateness > w).collect();
                if kept.is_empty() {
                    late.push(i);
                } else {
                    for s in kept {
                        windows.entry((data.key[i], s)).or_default().push(i);
                    }
                }
                max_ts = Some(max_ts.map_or(t, |mx| mx.max(t)));
            }
            let rows = windows
                .into_iter()
                .map(|((k, s), idx)| row_of(k, s, s + size, &idx))
                .collect();
            (rows, late)
        }
        WindowSpec::Session { gap } => {
            let gap = gap.as_millis();
            // per key: open sessions (start, end, events)
            let mut open: HashMap<i64, Vec<(i64, i64, Vec<usize>)>> = HashMap::new();
            let mut done: Vec<Row> = vec![];
            for i in 0..data.len() {
                let w = max_ts.map_or(i64::MIN, |mx| mx - m.delay - 1);
                let t = data.ts[i];
                let k = data.key[i];
                let list = open.entry(k).or_default();
                let (keep, purged): (Vec<_>, Vec<_>) = list.drain(..).partition(|(_, e, _)| e - 1 + m.lateness > w);
                for (s, e, idx) in purged {
                    done.push(row_of(k, s, e, &idx));
                }
                let (touch, mut rest): (Vec<_>, Vec<_>) =
                    keep.into_iter().partition(|(s, e, _)| *s <= t + gap && *e >= t);
                if touch.is_empty() && t + gap - 1 + m.lateness <= w {
                    late.push(i);
                    *list = rest;
                } else {
                    let mut s0 = t;
                    let mut e0 = t + gap;
                    let mut idx = vec![i];
                    for (s, e, ix) in touch {
                        s0 = s0.min(s);
                        e0 = e0.max(e);
                        idx.extend(ix);
                    }
                    idx.sort();
                    rest.push((s0, e0, idx));
                    *list = rest;
                }
                max_ts = Some(max_ts.map_or(t, |mx| mx.max(t)));
            }
            for (k, list) in open {
                for (s, e, idx) in list {
                    done.push(row_of(k, s, e, &idx));
                }
            }
            (done, late)
        }
    }
}

/// How to run the engine in a test.
#[derive(Clone, Debug)]
pub struct Run {
    pub spec: WindowSpec,
    pub delay: i64,
    pub lateness: i64,
    pub batch: usize,
    pub pipelined: bool,
    pub key_kind: KeyKind,
    /// Whether var/std are asked for (without them the engine keeps no second moment, and takes
    /// merge paths of its own); rows still report all six aggregates, var/std then meaningless.
    pub variances: bool,
    /// Only count, sum and mean asked for: tumbling and sliding windows then keep counts and sums
    /// alone; rows still report all six aggregates, only count, sum and mean meaningful
    /// ([`blank_extremes`]).
    pub sums_only: bool,
}

impl Run {
    pub fn new(spec: &str, delay: i64, lateness: i64) -> Self {
        Run {
            spec: spec.parse().unwrap(),
            delay,
            lateness,
            batch: 1000,
            pipelined: true,
            key_kind: KeyKind::Int,
            variances: true,
            sums_only: false,
        }
    }
    pub fn model_spec(&self) -> ModelSpec {
        ModelSpec {
            spec: self.spec,
            delay: self.delay,
            lateness: self.lateness,
        }
    }
    pub fn config(&self, ncols: usize, backend: BackendChoice) -> PipelineConfig {
        PipelineConfig {
            window: self.spec,
            watermark_delay: Duration::from_millis(self.delay),
            allowed_lateness: Duration::from_millis(self.lateness),
            aggregates: if self.sums_only {
                "count,sum,mean".parse().unwrap()
            } else if self.variances {
                Aggregates::all()
            } else {
                "count,sum,min,max,mean".parse().unwrap()
            },
            value_columns: (0..ncols).map(|c| format!("v{c}")).collect(),
            key_kind: self.key_kind,
            backend,
            batch_size: Some(self.batch),
            threads: 2,
            pipelined: self.pipelined,
            ..PipelineConfig::default()
        }
    }
}

/// Engine output: every row in emission order, and the late event indices.
#[derive(Clone, Debug)]
pub struct Result {
    pub rows: Vec<Row>,
    /// Session lineages absorbed into another after emitting.
    pub merged: Vec<(u64, u64)>,
    pub late: Vec<usize>,
    pub on_time: u64,
}

/// Runs `data` through a pipeline with the given backend instance, pushing `run.batch` events at
/// a time.
pub fn run_with(data: &Data, run: &Run, backend: Box<dyn AggBackend>) -> Result {
    let cfg = run.config(data.values.len(), BackendChoice::Cpu);
    let mut p = Pipeline::with_backend(cfg, backend, "test".into()).expect("pipeline");
    drive(data, run, &mut p)
}

pub fn run_backend(data: &Data, run: &Run, backend: BackendChoice) -> Result {
    let cfg = run.config(data.values.len(), backend);
    let mut p = Pipeline::new(cfg).expect("pipeline");
    drive(data, run, &mut p)
}

fn drive(data: &Data, run: &Run, p: &mut Pipeline) -> Result {
    let aggs = Aggregates::all();
    let mut rows = vec![];
    let mut late = vec![];
    let mut merged = vec![];
    let collect = |p: &Pipeline,
                   out: fenestra::Output,
                   rows: &mut Vec<Row>,
                   late: &mut Vec<usize>,
                   merged: &mut Vec<(u64, u64)>| {
        let r = &out.rows;
        merged.extend_from_slice(&r.merged);
        for i in 0..r.len() {
            let vals = r.values(i, &aggs);
            let aggs6: Vec<[Option<f64>; 6]> = vals.chunks(6).map(|c| [c[0], c[1], c[2], c[3], c[4], c[5]]).collect();
            rows.push(Row {
                key: match run.key_kind {
                    KeyKind::Int => p.keys().int_value(r.key[i]),
                    KeyKind::Str => p.keys().str_value(r.key[i]).map(|s| s.parse::<i64>().unwrap_or(-1)),
                    KeyKind::None => Some(0),
                },
                start: r.start[i],
                end: r.end[i],
                revision: r.revision[i],
                count: r.count[i],
                aggs: aggs6,
                lineage: r.lineage(i),
            });
        }
        late.extend(out.late.row.iter().map(|&x| x as usize));
    };
    let n = data.len();
    let mut lo = 0;
    let strs: Vec<String> = data.key.iter().map(|k| k.to_string()).collect();
    while lo < n {
        let hi = (lo + run.batch).min(n);
        let vals: Vec<&[f64]> = data.values.iter().map(|v| &v[lo..hi]).collect();
        match run.key_kind {
            KeyKind::Int => p.push_int_keys(&data.ts[lo..hi], &data.key[lo..hi], &vals).unwrap(),
            KeyKind::Str => {
                let ks: Vec<Option<&str>> = strs[lo..hi].iter().map(|s| Some(s.as_str())).collect();
                p.push_str_keys(&data.ts[lo..hi], &ks, &vals).unwrap()
            }
            KeyKind::None => p.push_unkeyed(&data.ts[lo..hi], &vals).unwrap(),
        }
        let out = p.poll().unwrap();
        collect(p, out, &mut rows, &mut late, &mut merged);
        lo = hi;
    }
    let out = p.finish().unwrap();
    collect(p, out, &mut rows, &mut late, &mut merged);
    let on_time = p.metrics().on_time;
    Result {
        rows,
        merged,
        late,
        on_time,
    }
}

/// `rows` with min, max, variance and deviation of every column set to null: what a
/// [`Run::sums_only`] run's rows are compared on.
pub fn blank_extremes(mut rows: Vec<Row>) -> Vec<Row> {
    for r in &mut rows {
        for a in &mut r.aggs {
            // (order: sum, min, max, mean, var, std)
            for i in [1, 2, 4, 5] {
                a[i] = None;
            }
        }
    }
    rows
}

/// The last revision of every window: for sessions per lineage (lineages merged into another
/// session are dropped), otherwise per (key, start).
pub fn final_view(res: &Result, session: bool) -> Vec<Row> {
    let absorbed: std::collections::HashSet<u64> = res.merged.iter().map(|m| m.0).collect();
    let mut last: BTreeMap<(Option<i64>, i64, u64), Row> = BTreeMap::new();
    for r in &res.rows {
        if session && absorbed.contains(&r.lineage) {
            continue;
        }
        let id = if session {
            (None, 0, r.lineage)
        } else {
            (r.key, r.start, 0)
        };
        last.insert(id, r.clone());
    }
    sorted(last.into_values().collect())
}

pub fn sorted(mut rows: Vec<Row>) -> Vec<Row> {
    rows.sort_by_key(|r| (r.key, r.start, r.end));
    rows
}

/// Relative tolerance check for one optional float.
pub fn close(a: Option<f64>, b: Option<f64>, rel: f64) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(x), Some(y)) => {
            if x.is_nan() || y.is_nan() {
                return x.is_nan() && y.is_nan();
            }
            (x - y).abs() <= rel * x.abs().max(y.abs()) + 1e-9
        }
        _ => false,
    }
}

/// Compares two row sets (same order expected): keys, bounds and counts exactly; min/max exactly;
/// sum/mean/var within `rel`, std within `rel_std`. Returns a description of the first mismatch.
pub fn compare(actual: &[Row], expected: &[Row], rel: f64, rel_std: f64) -> std::result::Result<(), String> {
    if actual.len() != expected.len() {
        let a: Vec<_> = actual
            .iter()
            .map(|r| (r.key, r.start, r.end, r.count))
            .take(10)
            .collect();
        let e: Vec<_> = expected
            .iter()
            .map(|r| (r.key, r.start, r.end, r.count))
            .take(10)
            .collect();
        return Err(format!(
            "row count {} != {} (first actual {a:?}, first expected {e:?})",
            actual.len(),
            expected.len()
        ));
    }
    for (a, e) in actual.iter().zip(expected) {
        if (a.key, a.start, a.end, a.count) != (e.key, e.start, e.end, e.count) {
            return Err(format!(
                "row {:?} != {:?}",
                (a.key, a.start, a.end, a.count),
                (e.key, e.start, e.end, e.count)
            ));
        }
        for (ca, ce) in a.aggs.iter().zip(&e.aggs) {
            let names = ["sum", "min", "max", "mean", "var", "std"];
            for j in 0..6 {
                let ok = match j {
                    1 | 2 => ca[j].map(f64::to_bits) == ce[j].map(f64::to_bits) || (ca[j] == ce[j]),
                    5 => close(ca[j], ce[j], rel_std),
                    _ => close(ca[j], ce[j], rel),
                };
                if !ok {
                    return Err(format!(
                        "{} of {:?} window [{}, {}): {:?} vs {:?}",
                        names[j], a.key, a.start, a.end, ca[j], ce[j]
                    ));
                }
            }
        }
    }
    Ok(())
}

pub const AGG_ORDER: [AggKind; 6] = AggKind::ALL;

/// Whether a GPU adapter (software ones included) exists. Without one, a GPU test says
/// "skipped: no adapter" and returns; with `FENESTRA_REQUIRE_GPU=1` (CI) a missing adapter fails.
pub fn gpu_adapter_or_skip() -> bool {
    use fenestra::backend::gpu::{AdapterPreference, GpuBackend};
    match GpuBackend::new(AdapterPreference::AnyIncludingSoftware) {
        Ok(_) => true,
        Err(e) => {
            assert!(
                std::env::var("FENESTRA_REQUIRE_GPU").map_or(true, |v| v != "1"),
                "FENESTRA_REQUIRE_GPU=1 but no adapter: {e}"
            );
            eprintln!("skipped: no adapter ({e})");
            false
        }
    }
}
