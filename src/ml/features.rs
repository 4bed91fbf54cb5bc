//! Feature rows from closed windows, running standardisation, and per-key history.

use crate::agg::{AggKind, Aggregates};
use crate::batch::{KeyKind, KeyValues};
use crate::error::{Error, Result};
use crate::output::WindowRows;
use std::collections::{HashMap, VecDeque};

/// Which aggregate of which value column a feature or target is (`count` has no column).
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct FeatureSpec {
    /// Output-style names, e.g. `log_count`, `mean_value`.
    pub names: Vec<String>,
    /// `(value column index, aggregate)` of every feature after `log_count`.
    #[serde(skip)]
    parts: Vec<(usize, AggKind)>,
    #[serde(skip)]
    log_count: bool,
}

impl FeatureSpec {
    /// Features of a window: `log_count = ln(1 + count)`, then every requested aggregate of every
    /// value column except `exclude` (a label column).
    pub fn new(value_columns: &[String], aggs: &Aggregates, exclude: Option<usize>) -> Self {
        let mut names = vec!["log_count".to_string()];
        let mut parts = vec![];
        for (c, col) in value_columns.iter().enumerate() {
            if Some(c) == exclude {
                continue;
            }
            for &k in aggs.kinds() {
                names.push(format!("{}_{}", k.name(), col));
                parts.push((c, k));
            }
        }
        FeatureSpec {
            names,
            parts,
            log_count: true,
        }
    }

    /// Keeps only the named features (in the order given); an unknown name is an error that
    /// lists the available ones.
    pub fn select(mut self, names: &[String]) -> Result<Self> {
        let mut keep_names = vec![];
        let mut keep_parts = vec![];
        let mut log_count = false;
        for n in names {
            match self.names.iter().position(|x| x == n) {
                Some(0) => log_count = true,
                Some(i) => {
                    keep_names.push(n.clone());
                    keep_parts.push(self.parts[i - 1]);
                }
                None => {
                    return Err(Error::Model(format!(
                        "unknown feature '{n}'; available: {}",
                        self.names.join(", ")
                    )));
                }
            }
        }
        if keep_names.is_empty() && !log_count {
            return Err(Error::Model("no features selected".into()));
        }
        self.names = if log_count {
            std::iter::once("log_count".to_string()).chain(keep_names).collect()
        } else {
            keep_names
        };
        self.parts = keep_parts;
        self.log_count = log_count;
        Ok(self)
    }

    /// Number of features.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// True when there are no features (never: `log_count` is always there).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The raw feature vector of row `r` (nulls become 0).
    pub fn extract(&self, rows: &WindowRows, r: usize, out: &mut Vec<f64>) {
        out.clear();
        if self.log_count {
            out.push((rows.count[r] as f64).ln_1p());
        }
        for &(c, k) in &self.parts {
            let v = rows.value(r, c, k).unwrap_or(0.0);
            out.push(if v.is_finite() { v } else { 0.0 });
        }
    }
}

/// A value to predict: `count` or `<agg>_<column>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// Events in the window.
    Count,
    /// An aggregate of a value column.
    Agg(usize, AggKind),
}

impl Target {
    /// Parses `count` or `<agg>_<column>` against the pipeline's columns and aggregates.
    pub fn parse(name: &str, value_columns: &[String], aggs: &Aggregates) -> Result<Target> {
        if name == "count" {
            return Ok(Target::Count);
        }
        for (c, col) in value_columns.iter().enumerate() {
            for &k in aggs.kinds() {
                if name == format!("{}_{}", k.name(), col) {
                    return Ok(Target::Agg(c, k));
                }
            }
        }
        let mut avail = vec!["count".to_string()];
        for col in value_columns {
            avail.extend(aggs.column_names(col));
        }
        Err(Error::Model(format!(
            "target '{name}' is not an output column; available: {}",
            avail.join(", ")
        )))
    }

    /// The target's value in row `r` (`None` when null).
    pub fn value(&self, rows: &WindowRows, r: usize) -> Option<f64> {
        match *self {
            Target::Count => Some(rows.count[r] as f64),
            Target::Agg(c, k) => rows.value(r, c, k).filter(|v| v.is_finite()),
        }
    }
}

/// Running mean and variance (Welford), for online standardisation.
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Running {
    /// Observations.
    pub n: u64,
    /// Mean.
    pub mean: f64,
    /// Sum of squared deviations.
    pub m2: f64,
}

impl Running {
    /// Adds one observation.
    pub fn push(&mut self, x: f64) {
        self.n += 1;
        let d = x - self.mean;
        self.mean += d / self.n as f64;
        self.m2 += d * (x - self.mean);
    }

    /// Standard deviation (1 until two observations, never below 1e-9).
    pub fn std(&self) -> f64 {
        if self.n < 2 {
            1.0
        } else {
            (self.m2 / (self.n - 1) as f64).sqrt().max(1e-9)
        }
    }

    /// `(x - mean) / std`.
    pub fn scale(&self, x: f64) -> f64 {
        (x - self.mean) / self.std()
    }

    /// Inverse of [`Running::scale`].
    pub fn unscale(&self, z: f64) -> f64 {
        z * self.std() + self.mean
    }
}

/// The last `history` raw feature vectors of every key.
#[derive(Clone, Debug, Default)]
pub struct History {
    len: usize,
    per_key: HashMap<u32, VecDeque<Vec<f64>>>,
    saved: HashMap<String, VecDeque<Vec<f64>>>,
}

impl History {
    /// Keeps the last `len` windows per key.
    pub fn new(len: usize) -> Self {
        History {
            len,
            per_key: HashMap::new(),
            saved: HashMap::new(),
        }
    }

    /// Whether `key` has a full history.
    pub fn full(&self, key: u32) -> bool {
        self.per_key.get(&key).is_some_and(|h| h.len() >= self.len)
    }

    /// Appends a window's features for `key`.
    pub fn push(&mut self, key: u32, f: &[f64]) {
        let h = self.per_key.entry(key).or_default();
        if h.len() == self.len {
            h.pop_front();
        }
        h.push_back(f.to_vec());
    }

    /// The model input of `key`: its history, oldest first, each feature standardised; `None`
    /// without a full history.
    pub fn input(&self, key: u32, stats: &[Running], out: &mut Vec<f32>) -> bool {
        let Some(h) = self.per_key.get(&key).filter(|h| h.len() >= self.len) else {
            return false;
        };
        for f in h {
            for (x, s) in f.iter().zip(stats) {
                out.push(s.scale(*x).clamp(-50.0, 50.0) as f32);
            }
        }
        true
    }

    /// The forecasting input of `key`: each feature of each history window minus that feature's
    /// mean over the key's history, divided by the feature's running deviation (per-key
    /// centring: the model learns the shape of a key's recent past, not its level). Stored
    /// vectors hold `features` values and then the window's target; returns the mean target of
    /// the history (the level a prediction is relative to), or `None` without a full history.
    pub fn input_centred(&self, key: u32, stats: &[Running], features: usize, out: &mut Vec<f32>) -> Option<f64> {
        let h = self.per_key.get(&key).filter(|h| h.len() >= self.len)?;
        let n = h.len() as f64;
        let mut means = vec![0.0; features + 1];
        for f in h {
            for (m, x) in means.iter_mut().zip(f) {
                *m += x / n;
            }
        }
        for f in h {
            for j in 0..features {
                out.push(((f[j] - means[j]) / stats[j].std()).clamp(-50.0, 50.0) as f32);
            }
        }
        Some(means[features])
    }

    /// Keys with any history.
    pub fn keys(&self) -> usize {
        self.per_key.len()
    }

    /// The history of every key, by key *value* (ids differ between runs), for saving.
    pub fn export(&self, keys: &KeyValues) -> Vec<(String, Vec<Vec<f64>>)> {
        let mut v: Vec<(String, Vec<Vec<f64>>)> = self
            .per_key
            .iter()
            .map(|(&k, h)| (key_name(keys, k), h.iter().cloned().collect()))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    /// Takes over histories saved by [`History::export`]; they are matched to key ids as the
    /// keys appear ([`History::adopt`]).
    pub fn import(&mut self, saved: Vec<(String, Vec<Vec<f64>>)>) {
        self.saved = saved.into_iter().map(|(k, h)| (k, h.into_iter().collect())).collect();
    }

    /// Gives `key` its saved history, if it has one and no history yet.
    pub fn adopt(&mut self, key: u32, keys: &KeyValues) {
        if self.saved.is_empty() || self.per_key.contains_key(&key) {
            return;
        }
        if let Some(h) = self.saved.remove(&key_name(keys, key)) {
            self.per_key.insert(key, h);
        }
    }
}

/// A key value as text: the integer, the string, or `\u{0}null`.
pub fn key_name(keys: &KeyValues, id: u32) -> String {
    if keys.is_null(id) {
        return "\u{0}null".into();
    }
    match keys.kind() {
        KeyKind::Int => keys.int_value(id).map(|v| v.to_string()).unwrap_or_default(),
        KeyKind::Str => keys.str_value(id).unwrap_or_default().to_string(),
        KeyKind::None => String::new(),
    }
}
