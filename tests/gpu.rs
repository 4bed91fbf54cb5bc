//! GPU backend against the CPU backend, kernel level: random and adversarial batches (skew, many
//! keys, one hot window of 1M events, several dispatch levels, nulls, NaN, infinities, values
//! beyond f32), with the tolerances of DESIGN.md §4 and a negative control.
//!
//! This file has its own harness so that a machine without a GPU adapter reports the cases as
//! *skipped*, never as passed. With FENESTRA_REQUIRE_GPU=1 (CI) a missing adapter is a failure.

use fenestra::agg::null_value;
use fenestra::backend::cpu::CpuBackend;
use fenestra::backend::cpu::mirror;
use fenestra::backend::gpu::{AdapterPreference, GpuBackend};
use fenestra::backend::{AggBackend, BatchPolicy, Partials, SKIP_SLOT, SlotBatch, Submitted, Tolerance, check_parity};
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

/// Two batches in flight at once (the second uploaded while the first computes), completed in
/// submission order, each equal to the CPU's answer; misuse is an error, not a wrong answer.
fn pipelined_submissions(g: &mut GpuBackend) -> Result<(), String> {
    let mut rng = Rng::new(9);
    let batches: Vec<(Vec<u32>, usize, Vec<Vec<f64>>)> =
        [(50_000usize, 3_000u64), (70_000, 20), (1, 1), (90_000, 60_000)]
            .iter()
            .map(|&(n, keys)| {
                let raw: Vec<u32> = (0..n).map(|_| rng.below(keys) as u32).collect();
                let (slots, s) = renumber(&raw);
                (
                    slots,
                    s,
                    vec![values(&mut rng, n, 10.0, 4.0), values(&mut rng, n, -1e3, 1.0)],
                )
            })
            .collect();
    let sb = |i: usize| SlotBatch {
        slots: &batches[i].0,
        values: &batches[i].2,
        num_slots: batches[i].1,
        want_m2: true,
    };
    let expect = |i: usize| reduce(&mut CpuBackend::new(1), &batches[i].0, &batches[i].2, batches[i].1);
    let before = g.stage_times();
    let mut outs: Vec<Partials> = (0..batches.len()).map(|_| Partials::default()).collect();
    let st = |r: fenestra::Result<Submitted>| r.map_err(|e| e.to_string());
    if st(g.submit(&sb(0), 2, &mut outs[0]))? != Submitted::InFlight {
        return Err("the GPU answered a batch synchronously".into());
    }
    st(g.submit(&sb(1), 2, &mut outs[1]))?;
    if g.submit(&sb(2), 2, &mut outs[2]).is_ok() {
        return Err("a third batch in flight was accepted".into());
    }
    if g.reduce(&sb(2), 2, &mut outs[2]).is_ok() {
        return Err("reduce() while batches are in flight was accepted".into());
    }
    for i in 0..batches.len() {
        g.complete(&sb(i), 2, &mut outs[i])
            .map_err(|e| format!("complete {i}: {e}"))?;
        check_parity(&outs[i], &expect(i)?, Tolerance::GPU).map_err(|e| format!("batch {i}: {e}"))?;
        if i + 2 < batches.len() {
            st(g.submit(&sb(i + 2), 2, &mut outs[i + 2]))?;
        }
    }
    if g.complete(&sb(0), 2, &mut outs[0]).is_ok() {
        return Err("complete() with nothing in flight was accepted".into());
    }
    let after = g.stage_times();
    if after.batches - before.batches != batches.len() as u64 || after.overlapped - before.overlapped < 3 {
        return Err(format!("stage counters: {before:?} -> {after:?}"));
    }
    Ok(())
}

/// The device against its CPU mirror (`backend::cpu::mirror`, the same algorithm step by step).
fn device_matches_its_cpu_mirror(g: &mut GpuBackend) -> Result<(), String> {
    let mut rng = Rng::new(10);
    let t = AliasTable::zipf(5_000, 1.1);
    for n in [1usize, 1023, 1025, 200_000] {
        let raw: Vec<u32> = (0..n)
            .map(|_| {
                if rng.below(50) == 0 {
                    SKIP_SLOT
                } else {
                    t.sample(&mut rng)
                }
            })
            .collect();
        let (slots, s) = renumber(&raw);
        let v = vec![values(&mut rng, n, 1e5, 3.0)];
        let batch = SlotBatch {
            slots: &slots,
            values: &v,
            num_slots: s,
            want_m2: true,
        };
        let mut m = Partials::default();
        mirror::reduce_sorted(&batch, 1, &mut m).map_err(|e| e.to_string())?;
        let d = reduce(g, &slots, &v, s)?;
        check_parity(&d, &m, Tolerance::GPU).map_err(|e| format!("n={n}: {e}"))?;
    }
    Ok(())
}

/// The batch-size policy: measured costs are positive and the chosen size keeps the fixed
/// share of a batch under 10% (or is the largest batch the device takes).
fn batch_policy(g: &mut GpuBackend) -> Result<(), String> {
    let p = g.calibrate(1).map_err(|e| e.to_string())?;
    let max = g.max_batch_events(1);
    println!(
        "    batch policy: fixed {:.3} ms, {:.2} ns/event -> {} events, fixed share {:.1}%",
        p.fixed_s * 1e3,
        p.per_event_s * 1e9,
        p.batch_events,
        p.fixed_share * 100.0
    );
    if !(p.fixed_s > 0.0 && p.per_event_s > 0.0) {
        return Err(format!("costs not measured: {p:?}"));
    }
    if !p.batch_events.is_power_of_two() || p.batch_events < 1 << 16 || p.batch_events > max {
        return Err(format!("batch size {} outside [65536, {max}]", p.batch_events));
    }
    if p.fixed_share > BatchPolicy::MAX_FIXED_SHARE && p.batch_events != max {
        return Err(format!(
            "fixed share {} above 10% below the maximum batch",
            p.fixed_share
        ));
    }
    let again = g.preferred_batch_events(1).map_err(|e| e.to_string())?;
    if again != p.batch_events {
        return Err("the policy changed on a second call".into());
    }
    Ok(())
}

/// Counts only (no value column): the counts still match the CPU.
fn counts_without_value_columns(g: &mut GpuBackend) -> Result<(), String> {
    let mut rng = Rng::new(11);
    let raw: Vec<u32> = (0..30_000).map(|_| rng.below(700) as u32).collect();
    let (slots, s) = renumber(&raw);
    let got = reduce(g, &slots, &[], s)?;
    let want = reduce(&mut CpuBackend::new(1), &slots, &[], s)?;
    if got.count != want.count || got.ncols != 0 {
        return Err("counts differ with no value columns".into());
    }
    Ok(())
}

/// With the store inline (`pipelined(false)`), `poll()` returns every window the pushes so far
/// closed, the batch the GPU still held included; rows equal the CPU's.
fn inline_poll_is_complete(_: &mut GpuBackend) -> Result<(), String> {
    use fenestra::backend::BackendChoice;
    use fenestra::{Duration, Pipeline, WindowSpec};
    let mut rows = vec![];
    for backend in [BackendChoice::Gpu, BackendChoice::Cpu] {
        let mut p = Pipeline::builder()
            .window(WindowSpec::tumbling(Duration::from_millis(100)))
            .watermark_delay(Duration::from_millis(0))
            .backend(backend)
            .batch_size(1000)
            .pipelined(false)
            .build()
            .map_err(|e| e.to_string())?;
        let ts: Vec<i64> = (0..5000).map(|i| i as i64).collect();
        let keys: Vec<i64> = (0..5000).map(|i| i % 7).collect();
        let vals: Vec<f64> = (0..5000).map(|i| i as f64 * 0.25).collect();
        p.push_int_keys(&ts, &keys, &[&vals]).map_err(|e| e.to_string())?;
        let out = p.poll().map_err(|e| e.to_string())?;
        // every window ending at or before 4999 has fired: 49 windows x 7 keys
        if out.rows.len() != 49 * 7 {
            return Err(format!(
                "{backend}: poll returned {} rows, expected {}",
                out.rows.len(),
                49 * 7
            ));
        }
        rows.push(out.rows);
    }
    if rows[0].count != rows[1].count || rows[0].start != rows[1].start || rows[0].key != rows[1].key {
        return Err("gpu and cpu rows differ".into());
    }
    Ok(())
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
        Case {
            name: "pipelined_submissions",
            run: pipelined_submissions,
        },
        Case {
            name: "device_matches_its_cpu_mirror",
            run: device_matches_its_cpu_mirror,
        },
        Case {
            name: "batch_policy",
            run: batch_policy,
        },
        Case {
            name: "counts_without_value_columns",
            run: counts_without_value_columns,
        },
        Case {
            name: "inline_poll_is_complete",
            run: inline_poll_is_complete,
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
