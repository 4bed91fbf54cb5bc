//! Online learning on streams with known structure. Seeds are fixed and the checks are on
//! numbers, so these tests can fail: a forecast must learn a per-key seasonal pattern, the
//! anomaly score must rank injected faults at the top, the classifier must learn a separable
//! label, GPU and CPU must agree, and save -> load -> continue must equal an uninterrupted run.

mod common;

use fenestra::backend::BackendChoice;
use fenestra::generator::Rng;
use fenestra::ml::{MlConfig, ModelKind, ModelSpec, Task};
use fenestra::{AggKind, Duration, Pipeline, WindowSpec};

const PERIOD: f64 = 10.0;
const AMP: f64 = 10.0;

fn normal(rng: &mut Rng) -> f64 {
    let u1 = rng.next_f64().max(1e-12);
    let u2 = rng.next_f64();
    (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()
}

/// `keys` keys, one window per second for `windows` seconds, `per` events per key and window:
/// value = offset_k + AMP sin(2 pi t / PERIOD + phase_k) + window noise (sd 0.5) + event noise
/// (sd 0.1). Returns the events (in time order), the true pattern per (key, window), and the
/// windows made anomalous (+8 on every event) when `anomalies > 0`.
struct Season {
    ts: Vec<i64>,
    key: Vec<i64>,
    value: Vec<f64>,
    label: Vec<f64>,
    pattern: Vec<Vec<f64>>,
    anomalous: Vec<(i64, i64)>,
}

fn season(keys: usize, windows: usize, per: usize, anomalies: f64, seed: u64) -> Season {
    let mut rng = Rng::new(seed);
    let offset: Vec<f64> = (0..keys).map(|_| rng.next_f64() * 100.0).collect();
    let phase: Vec<f64> = (0..keys).map(|_| rng.next_f64() * 2.0 * std::f64::consts::PI).collect();
    let mut s = Season {
        ts: vec![],
        key: vec![],
        value: vec![],
        label: vec![],
        pattern: vec![vec![0.0; windows]; keys],
        anomalous: vec![],
    };
    for t in 0..windows {
        for k in 0..keys {
            let p = offset[k] + AMP * (2.0 * std::f64::consts::PI * t as f64 / PERIOD + phase[k]).sin();
            s.pattern[k][t] = p;
            let mut level = p + 0.5 * normal(&mut rng);
            if anomalies > 0.0 && t > windows / 2 && rng.next_f64() < anomalies {
                level += 8.0;
                s.anomalous.push((k as i64, t as i64 * 1000));
            }
            for e in 0..per {
                s.ts.push(t as i64 * 1000 + ((k * per + e) * 1000 / (keys * per + 1)) as i64);
                s.key.push(k as i64);
                s.value.push(level + 0.1 * normal(&mut rng));
                s.label.push(if p > 50.0 { 1.0 } else { 0.0 });
            }
        }
    }
    s
}

struct Run {
    key: Vec<i64>,
    start: Vec<i64>,
    mean: Vec<f64>,
    prediction: Vec<Option<f64>>,
    score: Vec<Option<f64>>,
    version: Vec<Option<u64>>,
    report: fenestra::ml::MlReport,
}

fn ml(task: Task, kind: ModelKind, backend: BackendChoice) -> MlConfig {
    MlConfig {
        model: ModelSpec { task, kind },
        history: if task == Task::Classify { 1 } else { 16 },
        lr: 3e-3,
        label: (task == Task::Classify).then(|| "label".to_string()),
        // the label column is only for the classifier
        features: (task != Task::Classify).then(|| {
            [
                "log_count",
                "sum_value",
                "min_value",
                "max_value",
                "mean_value",
                "std_value",
            ]
            .iter()
            .map(|s| s.to_string())
            .collect()
        }),
        backend,
        ..MlConfig::default()
    }
}

fn run(
    s: &Season,
    range: std::ops::Range<usize>,
    cfg: MlConfig,
    model_in: Option<&std::path::Path>,
    model_out: Option<&std::path::Path>,
) -> Run {
    let mut b = Pipeline::builder()
        .window(WindowSpec::tumbling(Duration::from_secs(1)))
        .watermark_delay(Duration::ZERO)
        .value_columns(["value", "label"])
        .aggregates("count,sum,min,max,mean,std".parse().unwrap())
        .backend(BackendChoice::Cpu)
        .batch_size(5000)
        .model(cfg);
    if let Some(p) = model_in {
        b = b.model_from(p);
    }
    let mut p = b.build().unwrap();
    let mut r = Run {
        key: vec![],
        start: vec![],
        mean: vec![],
        prediction: vec![],
        score: vec![],
        version: vec![],
        report: p.model_report().unwrap(),
    };
    let take = |p: &Pipeline, out: fenestra::Output, r: &mut Run| {
        let ml = out.ml.unwrap();
        for i in 0..out.rows.len() {
            r.key.push(p.keys().int_value(out.rows.key[i]).unwrap());
            r.start.push(out.rows.start[i]);
            r.mean.push(out.rows.value(i, 0, AggKind::Mean).unwrap());
        }
        r.prediction.extend(ml.prediction);
        r.score.extend(ml.score);
        r.version.extend(ml.model_version);
    };
    for lo in range.clone().step_by(5000) {
        let hi = (lo + 5000).min(range.end);
        p.push_int_keys(&s.ts[lo..hi], &s.key[lo..hi], &[&s.value[lo..hi], &s.label[lo..hi]])
            .unwrap();
        let out = p.poll().unwrap();
        take(&p, out, &mut r);
    }
    let out = p.finish().unwrap();
    take(&p, out, &mut r);
    if let Some(path) = model_out {
        p.save_model(path).unwrap();
    }
    r.report = p.model_report().unwrap();
    r
}

/// MAE of the model, of the true pattern (the noise floor) and of "repeat the last window", over
/// windows in the second half.
fn maes(s: &Season, r: &Run, from: i64) -> (f64, f64, f64, usize) {
    let mut last: std::collections::HashMap<i64, f64> = Default::default();
    let (mut m, mut floor, mut base, mut n, mut nb) = (0.0, 0.0, 0.0, 0, 0);
    let mut order: Vec<usize> = (0..r.key.len()).collect();
    order.sort_by_key(|&i| (r.start[i], r.key[i]));
    for i in order {
        let (k, t) = (r.key[i], r.start[i]);
        if t >= from {
            if let Some(p) = r.prediction[i] {
                m += (p - r.mean[i]).abs();
                floor += (s.pattern[k as usize][(t / 1000) as usize] - r.mean[i]).abs();
                n += 1;
            }
            if let Some(l) = last.get(&k) {
                base += (l - r.mean[i]).abs();
                nb += 1;
            }
        }
        last.insert(k, r.mean[i]);
    }
    (m / n as f64, floor / n as f64, base / nb as f64, n)
}

#[test]
fn a_pipeline_with_a_model_does_not_hand_out_unscored_pieces() {
    let mut p = Pipeline::builder()
        .window(WindowSpec::tumbling(Duration::from_secs(1)))
        .backend(BackendChoice::Cpu)
        .model(ml(Task::Forecast, ModelKind::Linear, BackendChoice::Cpu))
        .build()
        .unwrap();
    p.push_int_keys(&[0, 1500, 3000], &[1, 1, 1], &[&[1.0, 2.0, 3.0]])
        .unwrap();
    let err = p.poll_pieces().unwrap_err().to_string();
    assert!(err.contains("poll()"), "{err}");
    // the rows are still there for poll, scored
    let out = p.finish().unwrap();
    assert_eq!(out.rows.len(), 3);
    assert_eq!(out.ml.unwrap().model_version.len(), 3);
}

#[test]
fn forecast_learns_a_seasonal_pattern() {
    let s = season(100, 600, 4, 0.0, 1);
    for kind in [ModelKind::Linear, ModelKind::Mlp] {
        let r = run(
            &s,
            0..s.ts.len(),
            ml(Task::Forecast, kind, BackendChoice::Cpu),
            None,
            None,
        );
        let (model, floor, baseline, n) = maes(&s, &r, 300_000);
        eprintln!("{kind:?}: MAE {model:.4} on {n} windows; noise floor {floor:.4}; repeat-last {baseline:.4}");
        assert!(n > 15_000, "{n} scored windows");
        assert!(
            model <= 0.5 * baseline,
            "{kind:?}: MAE {model} is not half of the baseline {baseline}"
        );
        if kind == ModelKind::Linear {
            assert!(
                model <= 1.2 * floor,
                "{kind:?}: MAE {model} is not within 1.2x of the noise floor {floor}"
            );
        }
        assert!(r.report.samples as usize >= n && r.report.mae.is_some() && r.report.train_samples_per_sec > 0.0);
    }
}

#[test]
fn anomalies_rank_at_the_top() {
    let s = season(100, 400, 4, 0.005, 2);
    assert!(s.anomalous.len() > 50, "{} anomalies", s.anomalous.len());
    let r = run(
        &s,
        0..s.ts.len(),
        ml(Task::Anomaly, ModelKind::Linear, BackendChoice::Cpu),
        None,
        None,
    );
    let mut scored: Vec<(f64, (i64, i64))> = (0..r.key.len())
        .filter(|&i| r.start[i] > 200_000)
        .filter_map(|i| r.score[i].map(|sc| (sc, (r.key[i], r.start[i]))))
        .collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top: std::collections::HashSet<(i64, i64)> = scored.iter().take(scored.len() / 100).map(|x| x.1).collect();
    let injected: Vec<&(i64, i64)> = s.anomalous.iter().filter(|a| a.1 > 200_000).collect();
    let found = injected.iter().filter(|a| top.contains(a)).count();
    eprintln!(
        "{found} of {} injected anomalies in the top 1% of {} scores",
        injected.len(),
        scored.len()
    );
    assert!(
        found as f64 >= 0.9 * injected.len() as f64,
        "only {found} of {} anomalies in the top 1%",
        injected.len()
    );
}

#[test]
fn classifier_learns_a_separable_label() {
    let s = season(60, 300, 3, 0.0, 3);
    let r = run(
        &s,
        0..s.ts.len(),
        ml(Task::Classify, ModelKind::Mlp, BackendChoice::Cpu),
        None,
        None,
    );
    let auc = r.report.auc.expect("both classes present");
    eprintln!(
        "AUC {auc:.4}, accuracy {:.4}, log-loss {:.4}",
        r.report.accuracy.unwrap(),
        r.report.logloss.unwrap()
    );
    assert!(auc >= 0.95, "AUC {auc}");
    assert!(r.score.iter().flatten().all(|p| (0.0..=1.0).contains(p)));
}

#[test]
fn gpu_and_cpu_reach_the_same_metrics() {
    if !common::gpu_adapter_or_skip() {
        return;
    }
    let s = season(30, 120, 2, 0.0, 4);
    let cpu = run(
        &s,
        0..s.ts.len(),
        ml(Task::Forecast, ModelKind::Mlp, BackendChoice::Cpu),
        None,
        None,
    );
    let gpu = run(
        &s,
        0..s.ts.len(),
        ml(Task::Forecast, ModelKind::Mlp, BackendChoice::Gpu),
        None,
        None,
    );
    assert!(gpu.report.backend.contains("wgpu"), "{}", gpu.report.backend);
    let (mc, mg) = (cpu.report.mae.unwrap(), gpu.report.mae.unwrap());
    eprintln!("MAE cpu {mc:.5} gpu {mg:.5}");
    assert_eq!(cpu.report.samples, gpu.report.samples);
    assert!((mc - mg).abs() <= 0.02 * mc, "cpu {mc} vs gpu {mg}");
}

#[test]
fn save_load_continue_equals_an_uninterrupted_run() {
    let s = season(20, 120, 2, 0.0, 5);
    let split = s.ts.iter().position(|&t| t >= 60_000).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model");
    let whole = run(
        &s,
        0..s.ts.len(),
        ml(Task::Forecast, ModelKind::Mlp, BackendChoice::Cpu),
        None,
        None,
    );
    let first = run(
        &s,
        0..split,
        ml(Task::Forecast, ModelKind::Mlp, BackendChoice::Cpu),
        None,
        Some(&path),
    );
    let second = run(
        &s,
        split..s.ts.len(),
        ml(Task::Forecast, ModelKind::Mlp, BackendChoice::Cpu),
        Some(&path),
        None,
    );
    assert_eq!(first.key.len() + second.key.len(), whole.key.len());
    let offset = first.key.len();
    let mut compared = 0;
    for i in 0..second.key.len() {
        let j = offset + i;
        assert_eq!((second.key[i], second.start[i]), (whole.key[j], whole.start[j]));
        assert_eq!(second.version[i], whole.version[j], "model version at row {j}");
        match (second.prediction[i], whole.prediction[j]) {
            (Some(a), Some(b)) => {
                assert!((a - b).abs() <= 1e-4 * b.abs().max(1.0), "row {j}: {a} vs {b}");
                compared += 1;
            }
            (a, b) => assert_eq!(a.is_some(), b.is_some(), "row {j}"),
        }
    }
    assert!(compared > 500, "{compared} predictions compared");

    // a model trained on other features is refused, naming the difference
    let mut other = ml(Task::Forecast, ModelKind::Mlp, BackendChoice::Cpu);
    other.features = None;
    let err = Pipeline::builder()
        .value_columns(["value", "label"])
        .aggregates("count,sum,min,max,mean,std".parse().unwrap())
        .backend(BackendChoice::Cpu)
        .model(other)
        .model_from(&path)
        .build()
        .err()
        .expect("loading must fail");
    assert!(err.to_string().contains("trained with features"), "{err}");
}
