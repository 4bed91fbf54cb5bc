//! 2. Sensor anomalies: hop windows over IoT sensor readings with injected faults; an online
//!    anomaly model flags them.
//!
//! 40 sensors report every 50 ms a temperature that follows a daily-like cycle. A few times a
//! sensor misbehaves for two seconds (a stuck-high reading). Hop windows of 4 s every 2 s give
//! each sensor's mean; the `anomaly` task forecasts each window from the sensor's last 12
//! windows and scores the standardised residual. The faulty windows must be the top-scored.
//!
//! `cargo run --release --example sensor_anomalies`

use anyhow::{Result, ensure};
use fenestra::generator::Rng;
use fenestra::ml::{MlConfig, ModelKind, ModelSpec, Task};
use fenestra::{BackendChoice, Duration, Pipeline, WindowSpec};
use std::collections::HashSet;

pub fn run() -> Result<()> {
    let mut rng = Rng::new(11);
    let sensors = 40i64;
    let seconds = 600i64;
    let base: Vec<f64> = (0..sensors).map(|_| 15.0 + rng.next_f64() * 10.0).collect();
    // faults: (sensor, first second), each lasting 2 s, after a warm-up of 200 s
    let mut faults = vec![];
    for _ in 0..12 {
        faults.push((rng.below(sensors as u64) as i64, 200 + 2 * rng.below(190) as i64));
    }
    let (mut ts, mut key, mut celsius) = (vec![], vec![], vec![]);
    for ms in (0..seconds * 1000).step_by(50) {
        for s in 0..sensors {
            let t = ms as f64 / 1000.0;
            let mut v = base[s as usize]
                + 3.0 * (2.0 * std::f64::consts::PI * t / 120.0 + s as f64).sin()
                + 0.3 * (rng.next_f64() - 0.5);
            if faults
                .iter()
                .any(|&(fs, f0)| fs == s && (f0 * 1000..(f0 + 2) * 1000).contains(&ms))
            {
                v += 12.0; // stuck high
            }
            ts.push(ms + rng.below(40) as i64);
            key.push(s);
            celsius.push(v);
        }
    }

    check(&ts, &key, &celsius, &faults)
}

/// Runs the pipeline collecting every output, then checks that the top-scored windows are the
/// faulty ones.
fn check(ts: &[i64], key: &[i64], celsius: &[f64], faults: &[(i64, i64)]) -> Result<()> {
    let mut p = Pipeline::builder()
        .window(WindowSpec::sliding(Duration::from_secs(4), Duration::from_secs(2)))
        .watermark_delay(Duration::from_millis(100))
        .value_columns(["celsius"])
        .aggregates("count,mean,std".parse()?)
        .backend(BackendChoice::Auto)
        .model(MlConfig {
            model: ModelSpec {
                task: Task::Anomaly,
                kind: ModelKind::Linear,
            },
            history: 12,
            lr: 3e-3,
            features: Some(vec!["mean_celsius".into()]),
            // faults are rare level shifts: keep them out of the forecast history
            anomaly_gate: Some(4.0),
            ..MlConfig::default()
        })
        .build()?;
    let mut scored: Vec<(f64, i64, i64)> = vec![];
    let mut collect = |p: &Pipeline, out: fenestra::Output| {
        let Some(ml) = out.ml else { return };
        for i in 0..out.rows.len() {
            if let Some(s) = ml.score[i] {
                let sensor = p.keys().int_value(out.rows.key[i]).unwrap_or(-1);
                scored.push((s, sensor, out.rows.start[i]));
            }
        }
    };
    for lo in (0..ts.len()).step_by(20_000) {
        let hi = (lo + 20_000).min(ts.len());
        p.push_int_keys(&ts[lo..hi], &key[lo..hi], &[&celsius[lo..hi]])?;
        let out = p.poll()?;
        collect(&p, out);
    }
    let out = p.finish()?;
    collect(&p, out);
    let report = p.model_report().ok_or_else(|| anyhow::anyhow!("no model"))?;
    println!("{}; model on {}", p.backend_reason(), report.backend);

    // A window is faulty if it overlaps a fault of its sensor.
    let faulty = |s: i64, start: i64| {
        faults
            .iter()
            .any(|&(fs, f0)| fs == s && f0 * 1000 < start + 4000 && (f0 + 2) * 1000 > start)
    };
    let scored: Vec<_> = scored.into_iter().filter(|x| x.2 >= 200_000).collect();
    let truth: HashSet<(i64, i64)> = scored.iter().filter(|x| faulty(x.1, x.2)).map(|x| (x.1, x.2)).collect();
    let mut ranked = scored.clone();
    ranked.sort_by(|a, b| b.0.total_cmp(&a.0));
    let top: Vec<_> = ranked.iter().take(truth.len()).collect();
    let hits = top.iter().filter(|x| truth.contains(&(x.1, x.2))).count();
    let precision = hits as f64 / truth.len().max(1) as f64;
    println!(
        "{} windows scored (prequential MAE {:.3}); {} faulty windows; precision of the top {}: {:.0}%",
        scored.len(),
        report.mae.unwrap_or(f64::NAN),
        truth.len(),
        truth.len(),
        precision * 100.0
    );
    for (score, sensor, start) in top.iter().take(5) {
        println!(
            "  sensor {sensor:>2} window at {:>4} s: score {score:.1}{}",
            start / 1000,
            if faulty(*sensor, *start) {
                "  (injected fault)"
            } else {
                ""
            }
        );
    }
    ensure!(truth.len() >= 12, "faults overlap fewer windows than expected");
    ensure!(
        precision >= 0.8,
        "only {hits} of the top {} windows are faults",
        truth.len()
    );
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<()> {
    run()
}
