//! Property tests (proptest): results never depend on the micro-batch size, every event is either
//! on time or late, hop windows equal the merge of their panes, and the partial-state merge is
//! associative.

mod common;

use common::*;
use fenestra::agg::ColPartial;
use fenestra::backend::BackendChoice;
use proptest::prelude::*;

fn arb_data() -> impl Strategy<Value = Data> {
    (
        1usize..250,
        1u32..6,
        0i64..400,
        0.0f64..0.3,
        any::<u64>(),
        -5000i64..5000,
    )
        .prop_map(|(n, keys, disorder, late, seed, start)| {
            stream(&Shape {
                n,
                keys,
                disorder,
                late_fraction: late,
                seed,
                start,
                per_ms: 3,
                ..Default::default()
            })
        })
}

fn arb_spec() -> impl Strategy<Value = &'static str> {
    prop_oneof![
        Just("tumble:100ms"),
        Just("tumble:250ms:offset=40ms"),
        Just("hop:300ms:100ms"),
        Just("hop:250ms:100ms"),
        Just("session:20ms"),
        Just("session:60ms"),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    /// The final revision of every window and the late output are the same for batch sizes 1, 7,
    /// 1000 and the whole input (with every aggregate, or count, sum and mean alone); on-time +
    /// late = input for every run.
    #[test]
    fn batch_size_does_not_change_results(data in arb_data(), spec in arb_spec(), delay in 0i64..300, lateness in prop_oneof![Just(0i64), 1i64..400], sums_only in any::<bool>()) {
        let session = spec.starts_with("session");
        let mut reference: Option<(Vec<Row>, Vec<usize>)> = None;
        for batch in [1usize, 7, 1000, data.len().max(1)] {
            for pipelined in [true, false] {
                let mut run = Run::new(spec, delay, lateness);
                run.batch = batch;
                run.pipelined = pipelined;
                // count, sum and mean alone: tumbling and hop windows keep counts and sums only
                run.sums_only = sums_only;
                let res = run_backend(&data, &run, BackendChoice::Cpu);
                prop_assert_eq!(res.on_time as usize + res.late.len(), data.len());
                let mut late = res.late.clone();
                late.sort();
                let fin = final_view(&res, session);
                match &reference {
                    None => reference = Some((fin, late)),
                    Some((f0, l0)) => {
                        prop_assert_eq!(&late, l0, "late output differs at batch size {}", batch);
                        if let Err(e) = compare(&fin, f0, 1e-9, 1e-9) {
                            prop_assert!(false, "batch size {} pipelined {}: {}", batch, pipelined, e);
                        }
                    }
                }
            }
        }
    }

    /// Without late events, a hop window equals the merge of the tumbling panes it covers.
    #[test]
    fn hop_equals_merge_of_panes(data in arb_data(), k in 2i64..5, pane in prop_oneof![Just(50i64), Just(100)]) {
        let size = pane * k;
        let hop = Run::new(&format!("hop:{size}ms:{pane}ms"), 10_000, 0);
        let panes = Run::new(&format!("tumble:{pane}ms"), 10_000, 0);
        let h = run_backend(&data, &hop, BackendChoice::Cpu);
        let p = run_backend(&data, &panes, BackendChoice::Cpu);
        prop_assert!(h.late.is_empty() && p.late.is_empty());
        for row in &h.rows {
            let mut count = 0;
            let mut sum = 0.0;
            let mut min = f64::INFINITY;
            let mut max = f64::NEG_INFINITY;
            for pr in p.rows.iter().filter(|r| r.key == row.key && r.start >= row.start && r.end <= row.end) {
                count += pr.count;
                if let (Some(s), Some(lo), Some(hi)) = (pr.aggs[0][0], pr.aggs[0][1], pr.aggs[0][2]) {
                    sum += s;
                    min = min.min(lo);
                    max = max.max(hi);
                }
            }
            prop_assert_eq!(row.count, count);
            prop_assert_eq!(row.aggs[0][1], Some(min));
            prop_assert_eq!(row.aggs[0][2], Some(max));
            prop_assert!(close(row.aggs[0][0], Some(sum), 1e-9));
        }
        let total: u64 = p.rows.iter().map(|r| r.count).sum();
        prop_assert_eq!(total as usize, data.len());
    }

    /// The partial-state merge is associative (and commutative) up to rounding, with exact
    /// count/min/max.
    #[test]
    fn merge_is_associative(a in prop::collection::vec(-1e6f64..1e6, 0..40), b in prop::collection::vec(-1e3f64..1e3, 0..40), c in prop::collection::vec(-10f64..10.0, 0..40)) {
        let (pa, pb, pc) = (ColPartial::from_values(&a), ColPartial::from_values(&b), ColPartial::from_values(&c));
        let mut left = pa; left.combine(&pb); left.combine(&pc);
        let mut bc = pb; bc.combine(&pc);
        let mut right = pa; right.combine(&bc);
        let mut swapped = pc; swapped.combine(&pa); swapped.combine(&pb);
        for x in [&right, &swapped] {
            prop_assert_eq!(left.n, x.n);
            prop_assert_eq!(left.min, x.min);
            prop_assert_eq!(left.max, x.max);
            prop_assert!((left.sum - x.sum).abs() <= 1e-9 * left.sum.abs().max(1.0));
            prop_assert!((left.m2 - x.m2).abs() <= 1e-9 * left.m2.abs().max(1.0));
        }
        let all: Vec<f64> = a.iter().chain(&b).chain(&c).copied().collect();
        let direct = ColPartial::from_values(&all);
        prop_assert_eq!(left.n, direct.n);
        prop_assert!((left.m2 - direct.m2).abs() <= 1e-7 * direct.m2.abs().max(1.0));
    }
}
