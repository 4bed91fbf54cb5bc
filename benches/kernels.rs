//! The GPU backend's kernels against the CPU backend, in the same run: `reduce` of one micro-batch
//! of `(slot, value)` work as the window store would hand it over, for tumbling-like (one slot per
//! key) and hop-like (several panes per key) slot layouts, uniform and Zipf(1.1) keys. Reports
//! events/s; the GPU's split of upload / kernels / read-back is printed after each GPU group.
//!
//! Without an adapter the GPU cases print "skipped: no adapter". `FENESTRA_BENCH_EVENTS` sets the
//! batch size (default 4M events, cut to what the adapter takes at once).

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fenestra::backend::cpu::CpuBackend;
use fenestra::backend::gpu::{AdapterPreference, GpuBackend};
use fenestra::backend::{AggBackend, Partials, SlotBatch};
use fenestra::generator::{AliasTable, Rng};

struct Work {
    slots: Vec<u32>,
    values: Vec<Vec<f64>>,
    num_slots: usize,
}

/// Slots as the assigner numbers them: first-seen order over (key, pane).
fn work(n: usize, keys: u32, zipf: f64, panes: u32) -> Work {
    let mut rng = Rng::new(3);
    let table = (zipf > 0.0).then(|| AliasTable::zipf(keys, zipf));
    let mut ids = std::collections::HashMap::new();
    let mut slots = Vec::with_capacity(n);
    let mut values = Vec::with_capacity(n);
    for i in 0..n {
        let k = match &table {
            Some(t) => t.sample(&mut rng),
            None => rng.below(keys as u64) as u32,
        };
        let pane = (i as u64 * panes as u64 / n as u64) as u32;
        let next = ids.len() as u32;
        slots.push(*ids.entry((k, pane)).or_insert(next));
        values.push((rng.next_f64() * 1_000_000.0).floor() / 1000.0);
    }
    Work {
        num_slots: ids.len(),
        slots,
        values: vec![values],
    }
}

fn bench(c: &mut Criterion) {
    let n: usize = std::env::var("FENESTRA_BENCH_EVENTS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(4_000_000);
    let mut gpu = match GpuBackend::new(AdapterPreference::AnyIncludingSoftware) {
        Ok(g) => {
            println!("adapter: {}", g.describe());
            Some(g)
        }
        Err(e) => {
            println!("skipped: no adapter ({e}); only the CPU baseline runs");
            None
        }
    };
    // One batch must fit the device (lavapipe takes ~2.8M events of one column at once).
    let n = match &gpu {
        Some(g) if g.max_batch_events(1) < n => {
            println!(
                "batch cut from {n} to {} events, the most this adapter takes at once",
                g.max_batch_events(1)
            );
            g.max_batch_events(1)
        }
        _ => n,
    };
    let mut cpu = CpuBackend::new(0);
    let mut g = c.benchmark_group("kernels");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    for (layout, panes) in [("tumble", 2u32), ("hop", 20u32)] {
        for zipf in [0.0, 1.1] {
            let w = work(n, 10_000, zipf, panes);
            let dist = if zipf > 0.0 {
                "zipf1.1".to_string()
            } else {
                "uniform".into()
            };
            let id = format!("{layout}/{dist}/10000keys/{}slots/{n}events", w.num_slots);
            let batch = SlotBatch {
                slots: &w.slots,
                values: &w.values,
                num_slots: w.num_slots,
                want_m2: false,
            };
            let mut out = Partials::default();
            g.bench_with_input(BenchmarkId::new("cpu_reduce", &id), &batch, |b, batch| {
                b.iter(|| cpu.reduce(batch, 1, &mut out).expect("cpu"))
            });
            if let Some(gpu) = gpu.as_mut() {
                let before = gpu.stage_times();
                g.bench_with_input(BenchmarkId::new("gpu_reduce", &id), &batch, |b, batch| {
                    b.iter(|| gpu.reduce(batch, 1, &mut out).expect("gpu"))
                });
                let after = gpu.stage_times();
                let (u, k, r) = (
                    after.upload_s - before.upload_s,
                    after.kernel_s - before.kernel_s,
                    after.readback_s - before.readback_s,
                );
                let total = u + k + r;
                println!(
                    "gpu {id}: upload {:.0}%, kernels+transfers {:.0}%, read-back {:.0}% of {total:.2} s",
                    100.0 * u / total,
                    100.0 * k / total,
                    100.0 * r / total
                );
            }
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
