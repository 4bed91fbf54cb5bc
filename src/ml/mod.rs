//! Online learning on closed windows (DESIGN.md §6): features from each closed window, burn
//! models on the GPU (wgpu) or CPU (flex), trained **test-then-train** (prequential): every
//! window is scored by the current model before it is used for training.
//!
//! ```text
//!  closed windows ─► features (log count + aggregates) ─► running standardisation ─┐
//!      (one firing = one group)                           per-key history (W)      │
//!  ┌──────────────────────────────────────────────────────────────────────────────┘
//!  └► score with the current model (prediction / anomaly score / probability, metrics)
//!     └► then train on the group (Adam, mini-batches) ─► next group
//! ```
//!
//! Tasks: `forecast` (a key's next value of a target aggregate from its last W windows),
//! `anomaly` (the forecast residual, standardised by its running deviation), `classify` (a label
//! column aggregated per window by max, logistic model).

pub mod features;
pub mod metrics;
pub mod models;

use crate::agg::{AggKind, Aggregates};
use crate::backend::BackendChoice;
use crate::batch::KeyValues;
use crate::error::{Error, Result};
use crate::output::WindowRows;
use features::{FeatureSpec, History, Running, Target};
use metrics::Prequential;
use models::{Learner, Loss};
use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Instant;

/// What the model learns.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Task {
    /// Predict a key's next-window value of the target.
    Forecast,
    /// Score windows by their standardised forecast residual.
    Anomaly,
    /// Predict a binary label (the max of a label column in the window).
    Classify,
}

/// Consecutive windows of one key that may be kept out as anomalous.
pub const MAX_GATED_RUN: u8 = 3;

/// The model family.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelKind {
    /// One linear layer.
    Linear,
    /// ReLU hidden layers, then a linear output.
    Mlp,
}

/// `--model TASK:KIND`, e.g. `forecast:mlp`, `anomaly:linear`, `classify:mlp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ModelSpec {
    /// The task.
    pub task: Task,
    /// The family.
    pub kind: ModelKind,
}

impl FromStr for ModelSpec {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::config(format!(
                "invalid model '{s}': expected TASK:KIND with TASK forecast|anomaly|classify and KIND linear|mlp, e.g. forecast:mlp"
            ))
        };
        let (t, k) = s.split_once(':').unwrap_or((s, "mlp"));
        let task = match t.trim().to_ascii_lowercase().as_str() {
            "forecast" => Task::Forecast,
            "anomaly" => Task::Anomaly,
            "classify" => Task::Classify,
            _ => return Err(bad()),
        };
        let kind = match k.trim().to_ascii_lowercase().as_str() {
            "linear" => ModelKind::Linear,
            "mlp" => ModelKind::Mlp,
            _ => return Err(bad()),
        };
        Ok(ModelSpec { task, kind })
    }
}

impl fmt::Display for Task {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Task::Forecast => "forecast",
            Task::Anomaly => "anomaly",
            Task::Classify => "classify",
        })
    }
}

/// Settings of the online-learning stage.
#[derive(Clone, Debug, PartialEq)]
pub struct MlConfig {
    /// Task and model family.
    pub model: ModelSpec,
    /// Forecast/anomaly target, `count` or `<agg>_<column>` (default `mean_<first value column>`).
    pub target: Option<String>,
    /// Classify: the value column holding the label (aggregated per window by max; > 0.5 is
    /// positive).
    pub label: Option<String>,
    /// Windows of history per input (default 8; classify uses the last W windows including the
    /// one being classified).
    pub history: usize,
    /// Hidden layer sizes of the MLP (default 32,32; ignored by `linear`).
    pub hidden: Vec<usize>,
    /// Adam learning rate (default 1e-3).
    pub lr: f64,
    /// Mini-batch size for training (default 32).
    pub batch: usize,
    /// Anomaly: windows scoring above this many residual deviations are kept out of their key's
    /// history and the residual statistics (at most [`MAX_GATED_RUN`] in a row), so that one
    /// fault does not make the following windows look anomalous. Off by default; useful when
    /// faults are rare, short level shifts.
    pub anomaly_gate: Option<f64>,
    /// Features to use, by name (`log_count`, `mean_value`, ...); all by default.
    pub features: Option<Vec<String>>,
    /// Seed of the weight initialisation.
    pub seed: u64,
    /// Where the model runs (`auto` follows the adapter: wgpu on a hardware GPU, flex otherwise).
    pub backend: BackendChoice,
}

impl Default for MlConfig {
    fn default() -> Self {
        MlConfig {
            model: ModelSpec {
                task: Task::Forecast,
                kind: ModelKind::Mlp,
            },
            target: None,
            label: None,
            history: 8,
            hidden: vec![32, 32],
            lr: 1e-3,
            batch: 32,
            features: None,
            anomaly_gate: None,
            seed: 7,
            backend: BackendChoice::Auto,
        }
    }
}

/// Per-row outputs of the stage, aligned with the window rows they came with.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct MlOutput {
    /// Forecast/anomaly: the prediction made for the window before it closed (null until the
    /// key has a full history, and for revisions).
    pub prediction: Vec<Option<f64>>,
    /// Anomaly: `|actual - prediction| / running std of residuals`; classify: the probability of
    /// the positive class.
    pub score: Vec<Option<f64>>,
    /// Optimiser steps of the model that made the prediction.
    pub model_version: Vec<Option<u64>>,
}

impl MlOutput {
    /// Outputs for `n` rows the model said nothing about (all null).
    pub fn nulls(n: usize) -> MlOutput {
        MlOutput {
            prediction: vec![None; n],
            score: vec![None; n],
            model_version: vec![None; n],
        }
    }

    /// Whether every column has one entry for each of `rows` rows.
    pub fn covers(&self, rows: usize) -> bool {
        self.prediction.len() == rows && self.score.len() == rows && self.model_version.len() == rows
    }

    /// Appends the outputs of the rows after these.
    pub fn append(&mut self, other: MlOutput) {
        self.prediction.extend(other.prediction);
        self.score.extend(other.score);
        self.model_version.extend(other.model_version);
    }
}

/// The metrics file (`--metrics-output`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct MlReport {
    /// The task.
    pub task: Task,
    /// Scored (tested) samples.
    pub samples: u64,
    /// Samples trained on.
    pub train_samples: u64,
    /// Forecast/anomaly: prequential mean absolute error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mae: Option<f64>,
    /// Forecast/anomaly: prequential root mean squared error.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rmse: Option<f64>,
    /// Classify: prequential log-loss.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub logloss: Option<f64>,
    /// Classify: accuracy at 0.5.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
    /// Classify: ROC AUC.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub auc: Option<f64>,
    /// Training throughput.
    pub train_samples_per_sec: f64,
    /// Inference throughput.
    pub infer_samples_per_sec: f64,
    /// Where the model ran.
    pub backend: String,
    /// Optimiser steps so far.
    pub model_version: u64,
    /// Feature names (per window; the input repeats them for each of the `history` windows).
    pub features: Vec<String>,
    /// Windows of history per input.
    pub history: usize,
}

/// What is saved next to the weights, to refuse a model trained on other features and to
/// continue exactly where the saved run stopped.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
struct Meta {
    format: u32,
    task: Task,
    kind: ModelKind,
    hidden: Vec<usize>,
    history: usize,
    features: Vec<String>,
    target: Option<String>,
    label: Option<String>,
    stats: Vec<Running>,
    target_stats: Running,
    resid: Running,
    steps: u64,
    seed: u64,
    /// Per-key history by key value.
    history_by_key: Vec<(String, Vec<Vec<f64>>)>,
}

/// The online-learning stage.
pub struct OnlineModel {
    cfg: MlConfig,
    spec: FeatureSpec,
    target: Option<Target>,
    target_name: Option<String>,
    label: Option<usize>,
    stats: Vec<Running>,
    target_stats: Running,
    resid: Running,
    history: History,
    learner: Learner,
    metrics: Prequential,
    backend: String,
    train_s: f64,
    train_n: u64,
    infer_s: f64,
    infer_n: u64,
    f: Vec<f64>,
    gated_run: std::collections::HashMap<u32, u8>,
}

impl OnlineModel {
    /// A fresh model for a pipeline with these value columns and aggregates.
    pub fn new(cfg: MlConfig, value_columns: &[String], aggs: &Aggregates) -> Result<Self> {
        if cfg.history == 0 {
            return Err(Error::config("--history must be at least 1"));
        }
        if !(cfg.lr > 0.0 && cfg.lr.is_finite()) {
            return Err(Error::config(format!("--lr must be a positive number, got {}", cfg.lr)));
        }
        if cfg.batch == 0 {
            return Err(Error::config("the training mini-batch must hold at least one sample"));
        }
        let task = cfg.model.task;
        let label = match (task, &cfg.label) {
            (Task::Classify, None) => return Err(Error::config("classify needs a label column (--label-col)")),
            (Task::Classify, Some(l)) => {
                let c = value_columns.iter().position(|v| v == l).ok_or_else(|| {
                    Error::config(format!(
                        "label column '{l}' must be one of the value columns {value_columns:?}"
                    ))
                })?;
                if !aggs.kinds().contains(&AggKind::Max) {
                    return Err(Error::config(format!(
                        "classify aggregates the label '{l}' by max; add max to the aggregates"
                    )));
                }
                Some(c)
            }
            _ => None,
        };
        let mut spec = FeatureSpec::new(value_columns, aggs, label);
        if let Some(names) = &cfg.features {
            spec = spec.select(names)?;
        }
        let (target, target_name) = match task {
            Task::Classify => (None, None),
            _ => {
                let name = cfg.target.clone().unwrap_or_else(|| match value_columns.first() {
                    Some(c) if aggs.kinds().contains(&AggKind::Mean) => format!("mean_{c}"),
                    _ => "count".into(),
                });
                (Some(Target::parse(&name, value_columns, aggs)?), Some(name))
            }
        };
        let (device, backend) = models::device_for(cfg.backend)?;
        let hidden = if cfg.model.kind == ModelKind::Linear {
            vec![]
        } else {
            cfg.hidden.clone()
        };
        let loss = if task == Task::Classify {
            Loss::Logistic
        } else {
            Loss::Mse
        };
        let d_in = spec.len() * cfg.history;
        let learner = Learner::new(d_in, &hidden, loss, cfg.lr, cfg.seed, device);
        Ok(OnlineModel {
            stats: vec![Running::default(); spec.len()],
            history: History::new(cfg.history),
            cfg,
            spec,
            target,
            target_name,
            label,
            target_stats: Running::default(),
            resid: Running::default(),
            learner,
            metrics: Prequential::default(),
            backend,
            train_s: 0.0,
            train_n: 0,
            infer_s: 0.0,
            infer_n: 0,
            f: vec![],
            gated_run: Default::default(),
        })
    }

    /// The names of the per-window features.
    pub fn features(&self) -> &[String] {
        &self.spec.names
    }

    /// Where the model runs.
    pub fn backend(&self) -> &str {
        &self.backend
    }

    /// Scores, then trains on, a batch of emitted window rows (in emission order); returns one
    /// output per row.
    pub fn process(&mut self, rows: &WindowRows, keys: &KeyValues) -> Result<MlOutput> {
        for &k in &rows.key {
            self.history.adopt(k, keys);
        }
        let n = rows.len();
        let mut out = MlOutput::nulls(n);
        // One firing (rows with the same window end) is one test-then-train step.
        let mut lo = 0;
        while lo < n {
            let mut hi = lo + 1;
            while hi < n && rows.end[hi] == rows.end[lo] {
                hi += 1;
            }
            let group: Vec<usize> = (lo..hi).filter(|&r| rows.revision[r] == 0).collect();
            self.step(rows, &group, &mut out)?;
            lo = hi;
        }
        Ok(out)
    }

    fn step(&mut self, rows: &WindowRows, group: &[usize], out: &mut MlOutput) -> Result<()> {
        let d = self.learner.d_in();
        let classify = self.cfg.model.task == Task::Classify;
        if classify {
            // The input includes the window being classified.
            for &r in group {
                self.spec.extract(rows, r, &mut self.f);
                self.history.push(rows.key[r], &self.f);
            }
        }
        // Test: score every row whose key has a full history, with the current model.
        let nf = self.spec.len();
        let mut xs: Vec<f32> = Vec::with_capacity(group.len() * d);
        let mut scored: Vec<(usize, f64)> = vec![];
        for &r in group {
            let key = rows.key[r];
            if classify {
                if self.history.input(key, &self.stats, &mut xs) {
                    scored.push((r, 0.0));
                }
            } else if let Some(level) = self.history.input_centred(key, &self.stats, nf, &mut xs) {
                scored.push((r, level));
            }
        }
        let t0 = Instant::now();
        let preds = self.learner.predict(&xs, scored.len())?;
        self.infer_s += t0.elapsed().as_secs_f64();
        self.infer_n += scored.len() as u64;
        let version = self.learner.steps;
        let mut ys: Vec<f32> = Vec::with_capacity(scored.len());
        let mut gated: Vec<usize> = vec![];
        let mut train_x: Vec<f32> = Vec::with_capacity(xs.len());
        for (j, &(r, level)) in scored.iter().enumerate() {
            out.model_version[r] = Some(version);
            if classify {
                let p = preds[j] as f64;
                out.score[r] = Some(p);
                let Some(lc) = self.label else { continue };
                let label = rows.value(r, lc, AggKind::Max).unwrap_or(0.0) > 0.5;
                self.metrics.classification(p, label);
                ys.push(if label { 1.0 } else { 0.0 });
            } else {
                // The model predicts the target's departure from the key's recent level.
                let pred = level + self.target_stats.unscale(preds[j] as f64);
                out.prediction[r] = Some(pred);
                let Some(y) = self.target.as_ref().and_then(|t| t.value(rows, r)) else {
                    continue;
                };
                self.metrics.regression(pred, y);
                if self.cfg.model.task == Task::Anomaly {
                    let z = ((y - pred) / self.resid.std()).abs();
                    out.score[r] = Some(z);
                    let run = self.gated_run.entry(rows.key[r]).or_insert(0);
                    let gate = self.cfg.anomaly_gate.unwrap_or(f64::INFINITY);
                    if self.resid.n >= 200 && z > gate && *run < MAX_GATED_RUN {
                        // Keep a flagged window out of the residual statistics and the key's
                        // history, so one fault does not make its successors look faulty. A level
                        // that persists for MAX_GATED_RUN windows is taken as the new normal.
                        *run += 1;
                        gated.push(r);
                    } else {
                        *run = 0;
                        self.resid.push(y - pred);
                    }
                }
                ys.push(self.target_stats.scale(y - level).clamp(-50.0, 50.0) as f32);
                self.target_stats.push(y - level);
            }
            train_x.extend_from_slice(&xs[j * d..(j + 1) * d]);
        }
        // Train on the group, in mini-batches.
        let t1 = Instant::now();
        let m = ys.len();
        let mut s = 0;
        while s < m {
            let e = (s + self.cfg.batch).min(m);
            self.learner.train(&train_x[s * d..e * d], &ys[s..e], e - s)?;
            s = e;
        }
        self.train_s += t1.elapsed().as_secs_f64();
        self.train_n += m as u64;
        // Then let the group update the running statistics (and the history for forecasts).
        for &r in group {
            self.spec.extract(rows, r, &mut self.f);
            for (st, x) in self.stats.iter_mut().zip(&self.f) {
                st.push(*x);
            }
            if !classify && !gated.contains(&r) {
                let y = self.target.as_ref().and_then(|t| t.value(rows, r)).unwrap_or(f64::NAN);
                self.f.push(y);
                self.history.push(rows.key[r], &self.f);
            }
        }
        Ok(())
    }

    /// The metrics so far.
    pub fn report(&self) -> MlReport {
        let classify = self.cfg.model.task == Task::Classify;
        let rate = |n: u64, s: f64| if s > 0.0 { n as f64 / s } else { 0.0 };
        MlReport {
            task: self.cfg.model.task,
            samples: self.metrics.samples,
            train_samples: self.train_n,
            mae: (!classify).then(|| self.metrics.mae()),
            rmse: (!classify).then(|| self.metrics.rmse()),
            logloss: classify.then(|| self.metrics.logloss()),
            accuracy: classify.then(|| self.metrics.accuracy()),
            auc: if classify { self.metrics.auc() } else { None },
            train_samples_per_sec: rate(self.train_n, self.train_s),
            infer_samples_per_sec: rate(self.infer_n, self.infer_s),
            backend: self.backend.clone(),
            model_version: self.learner.steps,
            features: self.spec.names.clone(),
            history: self.cfg.history,
        }
    }

    fn meta(&self, keys: &KeyValues) -> Meta {
        Meta {
            format: 1,
            task: self.cfg.model.task,
            kind: self.cfg.model.kind,
            hidden: if self.cfg.model.kind == ModelKind::Linear {
                vec![]
            } else {
                self.cfg.hidden.clone()
            },
            history: self.cfg.history,
            features: self.spec.names.clone(),
            target: self.target_name.clone(),
            label: self.cfg.label.clone(),
            stats: self.stats.clone(),
            target_stats: self.target_stats,
            resid: self.resid,
            steps: self.learner.steps,
            seed: self.cfg.seed,
            history_by_key: self.history.export(keys),
        }
    }

    /// Saves the model: weights (`path`), optimiser state (`path.adam`) and what it was trained
    /// on, with its running statistics and each key's recent windows by key value
    /// (`path.json`), so that a later run continues exactly where this one stopped.
    pub fn save(&self, path: &Path, keys: &KeyValues) -> Result<()> {
        let meta = serde_json::to_vec_pretty(&self.meta(keys)).map_err(|e| Error::Model(e.to_string()))?;
        self.learner.save(path)?;
        let mp = meta_path(path);
        std::fs::write(&mp, meta).map_err(|e| Error::Io {
            action: "cannot write",
            path: mp,
            source: e,
        })
    }

    /// Loads a model saved by [`OnlineModel::save`] for a job with these columns and aggregates;
    /// a model trained on other features, another task or another shape is refused with a
    /// message that says what differs.
    pub fn load(cfg: MlConfig, value_columns: &[String], aggs: &Aggregates, path: &Path) -> Result<Self> {
        let mp = meta_path(path);
        let text = std::fs::read(&mp).map_err(|e| Error::Io {
            action: "cannot read",
            path: mp.clone(),
            source: e,
        })?;
        let meta: Meta = serde_json::from_slice(&text)
            .map_err(|e| Error::Model(format!("'{}' is not a fenestra model description: {e}", mp.display())))?;
        let mut fresh = Self::new(cfg, value_columns, aggs)?;
        let mine = fresh.meta(&KeyValues::new(crate::batch::KeyKind::None));
        let differ = |what: &str, a: String, b: String| {
            Error::Model(format!(
                "the model in '{}' was trained with {what} {a}, this job has {b}",
                path.display()
            ))
        };
        if meta.features != mine.features {
            return Err(differ(
                "features",
                format!("{:?}", meta.features),
                format!("{:?}", mine.features),
            ));
        }
        if meta.task != mine.task || meta.kind != mine.kind {
            return Err(differ(
                "model",
                format!("{}:{:?}", meta.task, meta.kind),
                format!("{}:{:?}", mine.task, mine.kind),
            ));
        }
        if meta.hidden != mine.hidden || meta.history != mine.history {
            return Err(differ(
                "shape (hidden, history)",
                format!("{:?}, {}", meta.hidden, meta.history),
                format!("{:?}, {}", mine.hidden, mine.history),
            ));
        }
        if meta.target != mine.target || meta.label != mine.label {
            return Err(differ(
                "target/label",
                format!("{:?}/{:?}", meta.target, meta.label),
                format!("{:?}/{:?}", mine.target, mine.label),
            ));
        }
        fresh.learner = fresh.learner.load(path)?;
        fresh.learner.steps = meta.steps;
        fresh.stats = meta.stats;
        fresh.target_stats = meta.target_stats;
        fresh.resid = meta.resid;
        fresh.history.import(meta.history_by_key);
        Ok(fresh)
    }
}

fn meta_path(path: &Path) -> std::path::PathBuf {
    let mut p = path.as_os_str().to_owned();
    p.push(".json");
    p.into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn model_specs_parse() {
        let m: ModelSpec = "forecast:mlp".parse().unwrap();
        assert_eq!((m.task, m.kind), (Task::Forecast, ModelKind::Mlp));
        let m: ModelSpec = "classify:linear".parse().unwrap();
        assert_eq!((m.task, m.kind), (Task::Classify, ModelKind::Linear));
        assert!(
            "predict:mlp"
                .parse::<ModelSpec>()
                .unwrap_err()
                .to_string()
                .contains("TASK:KIND")
        );
    }
}
