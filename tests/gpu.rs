//! GPU backend against the CPU backend, kernel level: random and adversarial batches (skew, many
//! keys, one hot window of 1M events, several dispatch levels, nulls, NaN, infinities, values
//! beyond f32), with the tolerances of DESIGN.md §4 and a negative control.
//!
//! This file has its own harness so that a machine without a GPU adapter reports the cases as
//! *skipped*, never as passed. With FENESTRA_REQUIRE_GPU=1 (CI) a missing adapter is a failure.

use fenestra::agg::null_value;
use fenestra::backend::cpu::CpuBackend;
use fenestra::backend::gpu::{AdapterPreference, GpuBackend};
use fenestra::backend::{AggBackend, Partials, SKIP_SLOT, SlotBatch, Tolerance, check_parity};
use fenestra::generator::{AliasTable, Rng};

struct Case {
    name: &'static str,
    run: fn(&mut GpuBackend) -> Result<(), String>,
}

fn reduce(b: &mut dyn AggBackend, slots: &[u32], values: &[Vec<f64>], num_slots: usize) -> Result<Partials, String> {
    let mut out = Partials::default();
    let batch = SlotBatch {
        slots,
        values,
        num_slots,
        want_m2: true,
    };
    b.reduce(&batch, values.len(), &mut out).map_err(|e| e.to_string())?;
    Ok(out)
}

fn parity(gpu: &mut GpuBackend, slots: &[u32], values: &[Vec<f64>], num_slots: usize) -> Result<(), String> {
    let g = reduce(gpu, slots, values, num_slots)?;
    let c = reduce(&mut CpuBackend::new(1), slots, values, num_slots)?;
    check_parity(&g, &c, Tolerance::GPU)
}

/// Slots numbered in first-seen order, as the host assigns them.
fn renumber(raw: &[u32]) -> (Vec<u32>, usize) {
    let mut map = std::collections::HashMap::new();
    let slots = raw
        .iter()
        .map(|r| {
            if *r == SKIP_SLOT {
                SKIP_SLOT
            } else {
                let n = map.len() as u32;
                *map.entry(*r).or_insert(n)
            }
        })
        .collect();
    (slots, map.len())
}

fn values(rng: &mut Rng, n: usize, base: f64, spread: f64) -> Vec<f64> {
    (0..n).map(|_| base + (rng.next_f64() - 0.5) * spread).collect()
}

fn uniform(g: &mut GpuBackend) -> Result<(), String> {
    let mut rng = Rng::new(1);
    for (n, keys) in [(1usize, 1u64), (100, 7), (5000, 300), (100_000, 10_000)] {
        let raw: Vec<u32> = (0..n).map(|_| rng.below(keys) as u32).collect();
        let (slots, s) = renumber(&raw);
        let v = vec![values(&mut rng, n, 500.0, 1000.0)];
        parity(g, &slots, &v, s).map_err(|e| format!("n={n}: {e}"))?;
    }
    Ok(())
}

fn zipf_skew(g: &mut GpuBackend) -> Result<(), String> {
    let mut rng = Rng::new(2);
    let t = AliasTable::zipf(100_000, 1.1);
    let n = 400_000;
    let raw: Vec<u32> = (0..n).map(|_| t.sample(&mut rng)).collect();
    let hot = raw.iter().filter(|&&k| k == 0).count();
    if hot < n / 20 {
        return Err(format!("the hot key has only {hot} events"));
    }
    let (slots, s) = renumber(&raw);
    parity(g, &slots, &[values(&mut rng, n, 0.0, 2000.0)], s)
}

fn many_keys_and_scan_levels(g: &mut GpuBackend) -> Result<(), String> {
    // more distinct slots than a workgroup table holds, and a three-level scan (> 1024^2 slots)
    let mut rng = Rng::new(3);
    let n = 1_300_000;
    let raw: Vec<u32> = (0..n)
        .map(|i| if i % 13 == 0 { rng.below(50) as u32 } else { i as u32 })
        .collect();
    let (slots, s) = renumber(&raw);
    if s <= 1 << 20 {
        return Err(format!("only {s} slots"));
    }
    parity(g, &slots, &[values(&mut rng, n, -250.0, 100.0)], s)
}

fn one_hot_window(g: &mut GpuBackend) -> Result<(), String> {
    // 1M events into one window: sums and variance against f64
    let mut rng = Rng::new(4);
    let n = 1_000_000;
    let slots = vec![0u32; n];
    let v = vec![values(&mut rng, n, 1000.0, 1.0)];
    let got = reduce(g, &slots, &v, 1)?;
    let sum: f64 = v[0].iter().sum();
    let mean = sum / n as f64;
    let m2: f64 = v[0].iter().map(|x| (x - mean) * (x - mean)).sum();
    let p = &got.cols[0];
    if got.count[0] != n as u64 || ((p.sum - sum) / sum).abs() > 1e-9 || ((p.m2 - m2) / m2).abs() > 1e-5 {
        return Err(format!(
            "count {} sum {} vs {sum}, m2 {} vs {m2}",
            got.count[0], p.sum, p.m2
        ));
    }
    parity(g, &slots, &v, 1)
}

fn large_mean_small_variance(g: &mut GpuBackend) -> Result<(), String> {
    let mut rng = Rng::new(5);
    let n = 200_000;
    let raw: Vec<u32> = (0..n).map(|_| rng.below(64) as u32).collect();
    let (slots, s) = renumber(&raw);
    parity(g, &slots, &[values(&mut rng, n, 1.7e9, 0.01)], s)
}

fn nulls_nan_infinities_and_late(g: &mut GpuBackend) -> Result<(), String> {
    let mut rng = Rng::new(6);
    let n = 50_000;
    let raw: Vec<u32> = (0..n)
        .map(|i| if i % 9 == 0 { SKIP_SLOT } else { rng.below(500) as u32 })
        .collect();
    let (slots, s) = renumber(&raw);
    let mut a = values(&mut rng, n, 10.0, 50.0);
    let mut b = values(&mut rng, n, -1e4, 10.0);
    for i in 0..n {
        if i % 7 == 0 {
            a[i] = null_value();
        }
        if i % 1001 == 0 {
            b[i] = f64::NAN;
        }
        if i % 2003 == 0 {
            a[i] = f64::INFINITY;
        }
        if i % 3001 == 0 {
            b[i] = f64::NEG_INFINITY;
        }
    }
    parity(g, &slots, &[a, b], s)
}

fn beyond_f32_falls_back_to_f64(g: &mut GpuBackend) -> Result<(), String> {
    let mut rng = Rng::new(7);
    let n = 10_000;
    let raw: Vec<u32> = (0..n).map(|_| rng.below(10) as u32).collect();
    let (slots, s) = renumber(&raw);
    let mut v = values(&mut rng, n, 0.0, 1.0);
    v[17] = 1e300;
    v[18] = -3e200;
    parity(g, &slots, &[v], s)
}

fn empty_and_all_late(g: &mut GpuBackend) -> Result<(), String> {
    let p = reduce(g, &[], &[vec![]], 0)?;
    if !p.is_empty() {
        return Err("an empty batch gave slots".into());
    }
    let p = reduce(g, &[SKIP_SLOT; 5000], &[vec![1.0; 5000]], 0)?;
    if !p.is_empty() {
        return Err("an all-late batch gave slots".into());
    }
    // and the backend still works afterwards
    parity(g, &[0, 1, 0], &[vec![1.0, 2.0, 3.0]], 2)
}

fn negative_control(g: &mut GpuBackend) -> Result<(), String> {
    let mut rng = Rng::new(8);
    let n = 20_000;
    let raw: Vec<u32> = (0..n).map(|_| rng.below(100) as u32).collect();
    let (slots, s) = renumber(&raw);
    let v = vec![values(&mut rng, n, 100.0, 10.0)];
    parity(g, &slots, &v, s)?;
    g.corrupt_next_result(0.5);
    match parity(g, &slots, &v, s) {
        Err(e) if e.contains("sum") => Ok(()),
        Err(e) => Err(format!("the corrupted partial failed for another reason: {e}")),
        Ok(()) => Err("a corrupted GPU partial passed the parity check".into()),
    }
}

fn main() {
    let cases = [
        Case {
            name: "uniform",
            run: uniform,
        },
        Case {
            name: "zipf_skew",
            run: zipf_skew,
        },
        Case {
            name: "many_keys_and_scan_levels",
            run: many_keys_and_scan_levels,
        },
        Case {
            name: "one_hot_window",
            run: one_hot_window,
        },
        Case {
            name: "large_mean_small_variance",
            run: large_mean_small_variance,
        },
        Case {
            name: "nulls_nan_infinities_and_late",
            run: nulls_nan_infinities_and_late,
        },
        Case {
            name: "beyond_f32_falls_back_to_f64",
            run: beyond_f32_falls_back_to_f64,
        },
        Case {
            name: "empty_and_all_late",
            run: empty_and_all_late,
        },
        Case {
            name: "negative_control",
            run: negative_control,
        },
    ];
    let filter: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with('-')).collect();
    let selected: Vec<&Case> = cases
        .iter()
        .filter(|c| filter.is_empty() || filter.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    let mut gpu = match GpuBackend::new(AdapterPreference::AnyIncludingSoftware) {
        Ok(g) => g,
        Err(e) => {
            for c in &selected {
                println!("test {} ... skipped: no adapter", c.name);
            }
            println!(
                "\ntest result: ok. 0 passed; 0 failed; {} skipped (no adapter: {e})",
                selected.len()
            );
            if std::env::var("FENESTRA_REQUIRE_GPU").is_ok_and(|v| v == "1") {
                eprintln!("FENESTRA_REQUIRE_GPU=1 but no adapter was found");
                std::process::exit(1);
            }
            return;
        }
    };
    println!("adapter: {}", gpu.describe());
    let (mut passed, mut failed) = (0, 0);
    for c in selected {
        let t = std::time::Instant::now();
        match (c.run)(&mut gpu) {
            Ok(()) => {
                passed += 1;
                println!("test {} ... ok ({:.2} s)", c.name, t.elapsed().as_secs_f64());
            }
            Err(e) => {
                failed += 1;
                println!("test {} ... FAILED: {e}", c.name);
            }
        }
    }
    println!(
        "\ntest result: {}. {passed} passed; {failed} failed; 0 skipped",
        if failed == 0 { "ok" } else { "FAILED" }
    );
    if failed > 0 {
        std::process::exit(1);
    }
}
