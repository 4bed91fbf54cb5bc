//! Prequential (test-then-train) metrics.

/// Running regression and classification metrics.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Prequential {
    /// Scored samples.
    pub samples: u64,
    sum_abs: f64,
    sum_sq: f64,
    sum_logloss: f64,
    correct: u64,
    /// `(score, label)` pairs for the AUC (classification only).
    #[serde(skip)]
    scored: Vec<(f32, bool)>,
}

impl Prequential {
    /// A regression sample: prediction and truth.
    pub fn regression(&mut self, pred: f64, truth: f64) {
        self.samples += 1;
        let e = pred - truth;
        self.sum_abs += e.abs();
        self.sum_sq += e * e;
    }

    /// A classification sample: probability of the positive class and the label.
    pub fn classification(&mut self, p: f64, label: bool) {
        self.samples += 1;
        let p = p.clamp(1e-7, 1.0 - 1e-7);
        self.sum_logloss -= if label { p.ln() } else { (1.0 - p).ln() };
        if (p >= 0.5) == label {
            self.correct += 1;
        }
        self.scored.push((p as f32, label));
    }

    /// Mean absolute error.
    pub fn mae(&self) -> f64 {
        self.sum_abs / self.samples.max(1) as f64
    }

    /// Root mean squared error.
    pub fn rmse(&self) -> f64 {
        (self.sum_sq / self.samples.max(1) as f64).sqrt()
    }

    /// Mean log-loss.
    pub fn logloss(&self) -> f64 {
        self.sum_logloss / self.samples.max(1) as f64
    }

    /// Accuracy at threshold 0.5.
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.samples.max(1) as f64
    }

    /// Area under the ROC curve (ties count half); `None` without both classes.
    pub fn auc(&self) -> Option<f64> {
        auc(&self.scored)
    }
}

/// ROC AUC of `(score, label)` pairs by the rank-sum formula.
pub fn auc(scored: &[(f32, bool)]) -> Option<f64> {
    let pos = scored.iter().filter(|s| s.1).count();
    let neg = scored.len() - pos;
    if pos == 0 || neg == 0 {
        return None;
    }
    let mut v: Vec<(f32, bool)> = scored.to_vec();
    v.sort_by(|a, b| a.0.total_cmp(&b.0));
    let mut rank_sum = 0.0;
    let mut i = 0;
    while i < v.len() {
        let mut j = i;
        while j < v.len() && v[j].0 == v[i].0 {
            j += 1;
        }
        let avg_rank = (i + j + 1) as f64 / 2.0; // ranks are 1-based
        rank_sum += avg_rank * v[i..j].iter().filter(|s| s.1).count() as f64;
        i = j;
    }
    Some((rank_sum - (pos * (pos + 1)) as f64 / 2.0) / (pos * neg) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_of_known_rankings() {
        assert_eq!(auc(&[(0.1, false), (0.9, true)]), Some(1.0));
        assert_eq!(auc(&[(0.9, false), (0.1, true)]), Some(0.0));
        assert_eq!(auc(&[(0.5, false), (0.5, true)]), Some(0.5));
        assert_eq!(auc(&[(0.5, true)]), None);
        let mut m = Prequential::default();
        m.regression(3.0, 1.0);
        m.regression(1.0, 1.0);
        assert_eq!(m.mae(), 1.0);
        assert!((m.rmse() - 2f64.sqrt()).abs() < 1e-12);
    }
}
