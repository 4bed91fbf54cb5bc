//! Window aggregation on the CPU backend over in-memory batches: tumbling 1 s, hop 10 s / 1 s,
//! 10,000 keys uniform and Zipf(1.1), 500 ms disorder, count+sum+min+max+mean. Throughput is in
//! events/s. The baseline, measured in the same run, is a plain hash-map group-by over
//! `(key, window_start)` that knows nothing of watermarks (the usual first implementation).
//!
//! `FENESTRA_BENCH_EVENTS` overrides the number of events (default 10M).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fenestra::backend::BackendChoice;
use fenestra::generator::{Events, GenConfig, generate};
use fenestra::window::spec::tumbling_start;
use fenestra::{Aggregates, Duration, Pipeline, WindowSpec};
use std::collections::HashMap;
use std::hint::black_box;

fn events(zipf: f64) -> Events {
    let n = std::env::var("FENESTRA_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(10_000_000);
    generate(
        &GenConfig {
            events: n,
            keys: 10_000,
            zipf,
            disorder_ms: 500,
            ..Default::default()
        },
        |_| {},
    )
    .expect("generate")
}

fn run_engine(ev: &Events, window: WindowSpec) -> u64 {
    let mut p = Pipeline::builder()
        .window(window)
        .watermark_delay(Duration::from_millis(500))
        .aggregates("count,sum,min,max,mean".parse().expect("aggs"))
        .backend(BackendChoice::Cpu)
        .build()
        .expect("pipeline");
    let bs = fenestra::pipeline::DEFAULT_BATCH_SIZE;
    let mut rows = 0u64;
    let mut lo = 0;
    while lo < ev.len() {
        let hi = (lo + bs).min(ev.len());
        p.push_int_keys(&ev.ts[lo..hi], &ev.key[lo..hi], &[&ev.value[lo..hi]])
            .expect("push");
        let out = p.poll().expect("poll");
        rows += out.rows.len() as u64;
        // counted, not kept: hand the buffer back, as an embedding that writes rows out would
        p.recycle(out.rows);
        lo = hi;
    }
    rows + p.finish().expect("finish").rows.len() as u64
}

/// Baseline: one hash map from (key, window start) to (count, sum, min, max), every window of an
/// event updated directly (no panes, no watermark, no late handling).
fn run_hashmap(ev: &Events, size: i64, slide: i64) -> u64 {
    let mut m: HashMap<(i64, i64), (u64, f64, f64, f64)> = HashMap::new();
    for i in 0..ev.len() {
        let t = ev.ts[i];
        let mut s = tumbling_start(t, slide, 0);
        while s > t - size {
            let e = m
                .entry((ev.key[i], s))
                .or_insert((0, 0.0, f64::INFINITY, f64::NEG_INFINITY));
            e.0 += 1;
            e.1 += ev.value[i];
            e.2 = e.2.min(ev.value[i]);
            e.3 = e.3.max(ev.value[i]);
            s -= slide;
        }
    }
    m.len() as u64
}

fn bench(c: &mut Criterion) {
    let _ = Aggregates::default_set();
    let mut g = c.benchmark_group("window_agg");
    g.sample_size(10);
    for zipf in [0.0, 1.1] {
        let ev = events(zipf);
        g.throughput(Throughput::Elements(ev.len() as u64));
        let dist = if zipf > 0.0 {
            format!("zipf{zipf}")
        } else {
            "uniform".to_string()
        };
        for (spec, size, slide) in [("tumble:1s", 1000, 1000), ("hop:10s:1s", 10_000, 1000)] {
            let w: WindowSpec = spec.parse().expect("spec");
            let id = format!("{}/{}/{}keys/{}events", w, dist, 10_000, ev.len());
            g.bench_with_input(BenchmarkId::new("cpu", &id), &ev, |b, ev| {
                b.iter(|| black_box(run_engine(ev, w)))
            });
            g.bench_with_input(BenchmarkId::new("baseline_hashmap", &id), &ev, |b, ev| {
                b.iter(|| black_box(run_hashmap(ev, size, slide)))
            });
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
