//! 1. Clickstream sessions: session windows over user clicks.
//!
//! Users click in bursts separated by idle periods. A session window with a 30-minute gap groups
//! each user's clicks into visits; we report visits per user and visit length, and check both
//! against the ground truth the generator knows.
//!
//! `cargo run --release --example clickstream_sessions`

use anyhow::{Result, ensure};
use fenestra::generator::Rng;
use fenestra::{BackendChoice, Duration, KeyKind, Pipeline};
use std::collections::BTreeMap;

const MINUTE: i64 = 60_000;

/// Per user, the expected sessions: (start, end, clicks).
type Sessions = BTreeMap<String, Vec<(i64, i64, u64)>>;

/// Clicks of `users` users: each user makes a number of visits; clicks inside a visit are at
/// most 10 minutes apart, visits are at least 2 hours apart. Arrival order is shuffled a little
/// (up to 5 s), as a real collector would deliver them.
fn clicks(users: usize, rng: &mut Rng) -> (Vec<i64>, Vec<String>, Vec<f64>, Sessions) {
    let mut events: Vec<(i64, String, f64)> = vec![];
    let mut truth: Sessions = BTreeMap::new();
    for u in 0..users {
        let user = format!("user-{u:03}");
        let mut t = 1_700_000_000_000 + rng.below(60) as i64 * MINUTE;
        for _ in 0..1 + rng.below(5) {
            let start = t;
            let n = 1 + rng.below(20);
            for i in 0..n {
                if i > 0 {
                    t += 1_000 + rng.below(10 * MINUTE as u64 - 1_000) as i64;
                }
                let dwell = 1.0 + rng.next_f64() * 120.0; // seconds on the page
                events.push((t, user.clone(), dwell));
            }
            truth.entry(user.clone()).or_default().push((start, t, n));
            t += 2 * 60 * MINUTE + rng.below(6 * 60 * MINUTE as u64) as i64;
        }
    }
    let mut arrival: Vec<(i64, usize)> = events
        .iter()
        .enumerate()
        .map(|(i, e)| (e.0 + rng.below(5_000) as i64, i))
        .collect();
    arrival.sort();
    let events: Vec<(i64, String, f64)> = arrival.into_iter().map(|(_, i)| events[i].clone()).collect();
    let ts = events.iter().map(|e| e.0).collect();
    let users = events.iter().map(|e| e.1.clone()).collect();
    let dwell = events.iter().map(|e| e.2).collect();
    (ts, users, dwell, truth)
}

pub fn run() -> Result<()> {
    let mut rng = Rng::new(2024);
    let (ts, users, dwell, truth) = clicks(200, &mut rng);

    // Session windows with a 30-minute gap, 5 s of disorder, string keys, on the GPU if there is
    // one (`auto`).
    let mut p = Pipeline::builder()
        .window(fenestra::WindowSpec::session(Duration::from_millis(30 * MINUTE)))
        .watermark_delay(Duration::from_secs(5))
        .key_kind(KeyKind::Str)
        .value_columns(["dwell_s"])
        .aggregates("count,sum,mean".parse()?)
        .backend(BackendChoice::Auto)
        .build()?;
    println!("{}", p.backend_reason());
    let keys: Vec<Option<&str>> = users.iter().map(|u| Some(u.as_str())).collect();
    for lo in (0..ts.len()).step_by(1000) {
        let hi = (lo + 1000).min(ts.len());
        p.push_str_keys(&ts[lo..hi], &keys[lo..hi], &[&dwell[lo..hi]])?;
    }
    let out = p.finish_frames()?;
    ensure!(out.late.height() == 0, "no click is late with a 5 s watermark delay");

    // Visits per user and visit length (last click - first click = window length - gap).
    let w = &out.windows;
    let user = w.column("key")?.str()?.clone();
    let start = w.column("window_start")?.i64()?.clone();
    let end = w.column("window_end")?.i64()?.clone();
    let count = w.column("count")?.u64()?.clone();
    let mut found: Sessions = BTreeMap::new();
    for i in 0..w.height() {
        let (Some(u), Some(s), Some(e), Some(c)) = (user.get(i), start.get(i), end.get(i), count.get(i)) else {
            continue;
        };
        found.entry(u.to_string()).or_default().push((s, e - 30 * MINUTE, c));
    }
    for v in found.values_mut() {
        v.sort();
    }
    ensure!(found == truth, "sessions differ from the ground truth");

    let visits: usize = found.values().map(|v| v.len()).sum();
    let lengths: Vec<f64> = found
        .values()
        .flatten()
        .map(|(s, e, _)| (e - s) as f64 / MINUTE as f64)
        .collect();
    let mean_len = lengths.iter().sum::<f64>() / lengths.len() as f64;
    let top = found
        .iter()
        .max_by_key(|(_, v)| v.len())
        .map(|(u, v)| (u.clone(), v.len()))
        .unwrap_or_default();
    println!(
        "{} clicks, {} users, {visits} visits (all match the ground truth)",
        ts.len(),
        found.len()
    );
    println!(
        "mean visit length {mean_len:.1} min; most visits: {} with {}",
        top.0, top.1
    );
    println!("{}", w.head(Some(5)));
    Ok(())
}

#[allow(dead_code)]
fn main() -> Result<()> {
    run()
}
