//! Online learning throughput: training and inference samples/s of the linear model and a 2x32
//! MLP on burn's CPU backend (flex) and, when an adapter exists, its GPU backend (wgpu), on
//! mini-batches of 32 samples of 8 windows x 6 features — the shape `fenestra run --model`
//! trains on. The baseline in the same run is a plain-Rust online least-squares step (one
//! sample at a time, as River learns), so the ratio shows what batching on a tensor backend buys.

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use fenestra::BackendChoice;
use fenestra::generator::Rng;
use fenestra::ml::models::{Learner, Loss, device_for};

const D: usize = 8 * 6;
const BATCH: usize = 32;

fn data(n: usize) -> (Vec<f32>, Vec<f32>) {
    let mut rng = Rng::new(1);
    let x: Vec<f32> = (0..n * D).map(|_| (rng.next_f64() * 2.0 - 1.0) as f32).collect();
    let y: Vec<f32> = (0..n)
        .map(|i| x[i * D..(i + 1) * D].iter().take(8).sum::<f32>() * 0.3)
        .collect();
    (x, y)
}

/// One-sample-at-a-time SGD on a linear model: the shape of River's `LinearRegression.learn_one`.
fn sgd_one(w: &mut [f32], x: &[f32], y: f32, lr: f32) {
    let pred: f32 = w.iter().zip(x).map(|(a, b)| a * b).sum();
    let g = pred - y;
    for (wi, xi) in w.iter_mut().zip(x) {
        *wi -= lr * g * xi;
    }
}

fn bench(c: &mut Criterion) {
    let n = 4096;
    let (x, y) = data(n);
    let mut g = c.benchmark_group("ml");
    g.sample_size(10);
    g.throughput(Throughput::Elements(n as u64));
    g.bench_function(
        BenchmarkId::new("baseline_sgd_one_sample", format!("{D}features/{n}samples")),
        |b| {
            let mut w = vec![0f32; D];
            b.iter(|| {
                for i in 0..n {
                    sgd_one(&mut w, &x[i * D..(i + 1) * D], y[i], 1e-3);
                }
            })
        },
    );
    let mut backends = vec![BackendChoice::Cpu];
    if fenestra::backend::gpu::GpuBackend::new(fenestra::backend::gpu::AdapterPreference::AnyIncludingSoftware).is_ok()
    {
        backends.push(BackendChoice::Gpu);
    } else {
        println!("skipped: no adapter (GPU model benches)");
    }
    for backend in backends {
        let (device, desc) = device_for(backend).expect("device");
        for (name, hidden) in [("linear", vec![]), ("mlp2x32", vec![32, 32])] {
            let id = format!("{name}/{backend}/{D}inputs/batch{BATCH}/{n}samples");
            let mut learner = Learner::new(D, &hidden, Loss::Mse, 1e-3, 1, device.clone());
            g.bench_function(BenchmarkId::new("train", &id), |b| {
                b.iter(|| {
                    for s in (0..n).step_by(BATCH) {
                        learner
                            .train(&x[s * D..(s + BATCH) * D], &y[s..s + BATCH], BATCH)
                            .expect("train");
                    }
                })
            });
            g.bench_function(BenchmarkId::new("infer", &id), |b| {
                b.iter(|| {
                    for s in (0..n).step_by(256) {
                        learner.predict(&x[s * D..(s + 256) * D], 256).expect("infer");
                    }
                })
            });
            println!("{id} ran on {desc}");
        }
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
