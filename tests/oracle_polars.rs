//! An independent oracle: polars computes the per-window aggregates of the on-time events for
//! tumbling and hop windows, and the engine's final revisions must match (count/min/max exactly,
//! floats within 1e-9 relative on the CPU).

mod common;

use common::*;
use fenestra::backend::BackendChoice;
use polars::prelude::*;
use std::collections::BTreeSet;

/// Expected rows from polars: explode every on-time event into its windows with polars
/// expressions, keep the (event, window) pairs whose window was not yet purged when the event
/// arrived (`wm` is the event's watermark, DESIGN.md §3), then group by (key, window_start).
fn polars_expected(
    data: &Data,
    on_time: &[usize],
    size: i64,
    slide: i64,
    offset: i64,
    delay: i64,
    lateness: i64,
) -> DataFrame {
    let mut wm_all = Vec::with_capacity(data.len());
    let mut max = i64::MIN;
    for &t in &data.ts {
        wm_all.push(if max == i64::MIN { i64::MIN } else { max - delay - 1 });
        max = max.max(t);
    }
    let ts: Vec<i64> = on_time.iter().map(|&i| data.ts[i]).collect();
    let key: Vec<i64> = on_time.iter().map(|&i| data.key[i]).collect();
    let val: Vec<f64> = on_time.iter().map(|&i| data.values[0][i]).collect();
    let wm: Vec<i64> = on_time.iter().map(|&i| wm_all[i]).collect();
    let df = df!("ts" => ts, "key" => key, "value" => val, "wm" => wm).unwrap();
    let k = (size + slide - 1) / slide;
    let mut parts = vec![];
    for j in 0..k {
        // last_start = ts - ((ts - offset) mod slide) with a floored modulo, then step back j slides
        let rem = ((col("ts") - lit(offset)) % lit(slide) + lit(slide)) % lit(slide);
        let start = col("ts") - rem - lit(j * slide);
        parts.push(
            df.clone()
                .lazy()
                .with_column(start.alias("window_start"))
                .filter(col("ts").lt(col("window_start") + lit(size)))
                .filter((col("window_start") + lit(size - 1 + lateness)).gt(col("wm"))),
        );
    }
    concat(parts, UnionArgs::default())
        .unwrap()
        .group_by([col("key"), col("window_start")])
        .agg([
            len().alias("count"),
            col("value").sum().alias("sum"),
            col("value").min().alias("min"),
            col("value").max().alias("max"),
            col("value").mean().alias("mean"),
            col("value").std(1).alias("std"),
        ])
        .sort(["key", "window_start"], SortMultipleOptions::default())
        .collect()
        .unwrap()
}

fn check(data: &Data, spec: &str, size: i64, slide: i64, offset: i64, delay: i64, lateness: i64) {
    check_run(data, spec, size, slide, offset, Run::new(spec, delay, lateness));
}

fn check_run(data: &Data, spec: &str, size: i64, slide: i64, offset: i64, run: Run) {
    let (delay, lateness) = (run.delay, run.lateness);
    let res = run_backend(data, &run, BackendChoice::Cpu);
    let late: BTreeSet<usize> = res.late.iter().copied().collect();
    assert!(!late.is_empty(), "{spec}: the data should have late events");
    let on_time: Vec<usize> = (0..data.len()).filter(|i| !late.contains(i)).collect();
    let exp = polars_expected(data, &on_time, size, slide, offset, delay, lateness);
    let fin = final_view(&res, false);
    assert_eq!(fin.len(), exp.height(), "{spec}: number of windows");
    let c = |name: &str| exp.column(name).unwrap().clone();
    let keys = c("key");
    let keys = keys.i64().unwrap();
    let starts = c("window_start");
    let starts = starts.i64().unwrap();
    let count = c("count").cast(&DataType::UInt64).unwrap();
    let count = count.u64().unwrap();
    let f = |name: &str| c(name).f64().unwrap().clone();
    let (sum, min, max, mean, std) = (f("sum"), f("min"), f("max"), f("mean"), f("std"));
    for (i, r) in fin.iter().enumerate() {
        assert_eq!(
            (r.key, r.start, r.count),
            (keys.get(i), starts.get(i).unwrap(), count.get(i).unwrap()),
            "{spec} row {i}"
        );
        let a = &r.aggs[0];
        assert_eq!(a[1], min.get(i), "{spec} min row {i}");
        assert_eq!(a[2], max.get(i), "{spec} max row {i}");
        assert!(
            close(a[0], sum.get(i), 1e-9),
            "{spec} sum row {i}: {:?} vs {:?}",
            a[0],
            sum.get(i)
        );
        assert!(close(a[3], mean.get(i), 1e-9), "{spec} mean row {i}");
        assert!(
            !run.variances || close(a[5], std.get(i), 1e-9),
            "{spec} std row {i}: {:?} vs {:?}",
            a[5],
            std.get(i)
        );
    }
}

#[test]
fn tumbling_matches_polars() {
    let data = stream(&Shape {
        n: 20_000,
        keys: 50,
        disorder: 500,
        late_fraction: 0.03,
        seed: 21,
        ..Default::default()
    });
    check(&data, "tumble:1s", 1000, 1000, 0, 300, 0);
    check(&data, "tumble:700ms:offset=100ms", 700, 700, 100, 200, 400);
}

#[test]
fn hop_matches_polars() {
    let data = stream(&Shape {
        n: 20_000,
        keys: 40,
        zipf: 1.1,
        disorder: 500,
        late_fraction: 0.03,
        seed: 22,
        ..Default::default()
    });
    check(&data, "hop:5s:1s", 5000, 1000, 0, 300, 0);
    check(&data, "hop:3s:2s", 3000, 2000, 0, 300, 0);
    check(&data, "hop:2s:500ms", 2000, 500, 0, 100, 800);
}

/// Without var/std the sliding store merges and emits windows that hold most keys with a walk
/// over every key rank: dense windows (few keys, one value column) and sparse ones (many Zipf
/// keys), with disorder, lateness and late events.
#[test]
fn hop_without_variances_matches_polars() {
    for (keys, zipf, seed) in [(40, 0.0, 24), (60, 1.1, 25), (3000, 1.1, 26)] {
        let data = stream(&Shape {
            n: 30_000,
            keys,
            zipf,
            disorder: 500,
            late_fraction: 0.03,
            ncols: 1,
            seed,
            ..Default::default()
        });
        for (spec, size, slide, delay, lateness) in [
            ("hop:5s:1s", 5000, 1000, 300, 0),
            ("hop:3s:1s", 3000, 1000, 300, 0),
            ("hop:2s:500ms", 2000, 500, 100, 800),
        ] {
            let mut run = Run::new(spec, delay, lateness);
            run.variances = false;
            check_run(&data, &format!("{spec} {keys} keys zipf {zipf}"), size, slide, 0, run);
        }
    }
}

#[test]
fn negative_time_matches_polars() {
    let data = stream(&Shape {
        n: 8000,
        keys: 9,
        start: -6000,
        disorder: 400,
        late_fraction: 0.05,
        seed: 23,
        ..Default::default()
    });
    check(&data, "tumble:1s", 1000, 1000, 0, 100, 0);
    check(&data, "hop:2s:1s", 2000, 1000, 0, 100, 0);
}
