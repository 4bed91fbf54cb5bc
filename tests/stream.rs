//! The asynchronous API: same results as the sync API, backpressure, cancellation, errors
//! mid-stream, several pipelines in one runtime.

mod common;

use common::*;
use fenestra::backend::BackendChoice;
use fenestra::stream::{Batch, StreamOptions};
use fenestra::{Pipeline, WindowRows};
use std::time::Duration;
use tokio_stream::StreamExt;

fn pipeline(spec: &str) -> Pipeline {
    Pipeline::builder()
        .window(spec.parse().unwrap())
        .watermark_delay(fenestra::Duration::from_millis(300))
        .aggregates("count,sum,min,max,mean,std".parse().unwrap())
        .backend(BackendChoice::Cpu)
        .batch_size(500)
        .build()
        .unwrap()
}

fn batches(d: &Data, size: usize) -> Vec<Batch> {
    (0..d.len())
        .step_by(size)
        .map(|lo| {
            let hi = (lo + size).min(d.len());
            Batch::int_keys(
                d.ts[lo..hi].to_vec(),
                d.key[lo..hi].to_vec(),
                vec![d.values[0][lo..hi].to_vec()],
            )
        })
        .collect()
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn streaming_equals_the_sync_api() {
    let data = stream(&Shape {
        n: 6000,
        keys: 30,
        late_fraction: 0.05,
        ..Default::default()
    });
    for spec in ["tumble:1s", "hop:2s:500ms", "session:50ms"] {
        let mut sync = pipeline(spec);
        let mut expect = WindowRows::new(1);
        let mut expect_late = vec![];
        for b in batches(&data, 700) {
            sync.push_int_keys(
                &b.ts,
                match &b.keys {
                    fenestra::stream::Keys::Int(k) => k,
                    _ => unreachable!(),
                },
                &[&b.values[0]],
            )
            .unwrap();
            let o = sync.poll().unwrap();
            expect.append(&o.rows);
            expect_late.extend(o.late.row);
        }
        let o = sync.finish().unwrap();
        expect.append(&o.rows);
        expect_late.extend(o.late.row);

        let got = rt().block_on(async {
            let (tx, mut out) = pipeline(spec).into_stream(StreamOptions::default());
            let input = batches(&data, 700);
            let producer = tokio::spawn(async move {
                for b in input {
                    tx.send(b).await.unwrap();
                }
            });
            let mut rows = WindowRows::new(1);
            let mut late = vec![];
            while let Some(o) = out.next().await {
                let o = o.unwrap();
                rows.append(&o.rows);
                late.extend(o.late.row.iter().copied());
            }
            producer.await.unwrap();
            (rows, late)
        });
        assert_eq!(got.0, expect, "{spec}: rows differ from the sync API");
        assert_eq!(got.1, expect_late, "{spec}: late events differ");
    }
}

#[test]
fn a_consumer_that_never_reads_makes_the_producer_wait() {
    rt().block_on(async {
        let opts = StreamOptions {
            input_capacity: 2,
            output_capacity: 1,
        };
        let (tx, out) = pipeline("tumble:10ms").into_stream(opts);
        // every batch closes windows, so every batch produces output
        let mut sent = 0;
        let mut t = 0i64;
        loop {
            let ts: Vec<i64> = (0..1000).map(|i| t + i).collect();
            t += 1000;
            let b = Batch::int_keys(ts, vec![1; 1000], vec![vec![1.0; 1000]]);
            match tokio::time::timeout(Duration::from_millis(500), tx.send(b)).await {
                Ok(r) => {
                    r.unwrap();
                    sent += 1;
                }
                Err(_) => break, // the producer is blocked: backpressure
            }
            assert!(sent < 50, "the producer was never slowed down");
        }
        // input buffer + the batch the driver holds + the output buffer + the output it holds
        assert!(
            sent <= opts.input_capacity + opts.output_capacity + 3,
            "{sent} batches accepted"
        );
        drop(out);
    });
}

#[test]
fn dropping_the_output_stream_stops_the_pipeline() {
    rt().block_on(async {
        let (tx, out) = pipeline("tumble:1s").into_stream(StreamOptions::default());
        drop(out);
        let mut failed = false;
        for i in 0..100 {
            let b = Batch::int_keys(vec![i * 1000], vec![1], vec![vec![1.0]]);
            if tx.send(b).await.is_err() {
                failed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(failed, "sending into a cancelled pipeline must fail");
    });
}

#[test]
fn an_error_mid_stream_reaches_the_consumer_after_earlier_results() {
    rt().block_on(async {
        let (tx, mut out) = pipeline("tumble:1s").into_stream(StreamOptions::default());
        tx.send(Batch::int_keys(
            vec![0, 500, 5000],
            vec![1, 1, 1],
            vec![vec![1.0, 2.0, 3.0]],
        ))
        .await
        .unwrap();
        // a timestamp outside the supported range
        tx.send(Batch::int_keys(vec![i64::MAX], vec![1], vec![vec![1.0]]))
            .await
            .unwrap();
        let mut rows = 0;
        let mut error = None;
        while let Some(o) = out.next().await {
            match o {
                Ok(o) => rows += o.rows.len(),
                Err(e) => error = Some(e.to_string()),
            }
        }
        assert_eq!(rows, 1, "the window [0, 1s) fired before the error");
        let e = error.expect("the error must be delivered");
        assert!(e.contains("timestamp"), "{e}");
        assert!(
            tx.send(Batch::int_keys(vec![1], vec![1], vec![vec![1.0]]))
                .await
                .is_err()
        );
    });
}

#[test]
fn several_pipelines_share_one_runtime() {
    rt().block_on(async {
        let mut tasks = vec![];
        for k in 0..4 {
            tasks.push(tokio::spawn(async move {
                let data = stream(&Shape {
                    n: 3000,
                    keys: 5,
                    seed: k,
                    late_fraction: 0.0,
                    ..Default::default()
                });
                let (tx, mut out) = pipeline("tumble:1s").into_stream(StreamOptions::default());
                let feeder = tokio::spawn(async move {
                    for b in batches(&data, 250) {
                        tx.send(b).await.unwrap();
                    }
                });
                let mut count = 0u64;
                while let Some(o) = out.next().await {
                    count += o.unwrap().rows.count.iter().sum::<u64>();
                }
                feeder.await.unwrap();
                count
            }));
        }
        for t in tasks {
            assert_eq!(t.await.unwrap(), 3000, "every event counted once");
        }
    });
}

#[test]
fn run_stream_drives_from_a_stream_and_frames_work() {
    use polars::prelude::*;
    rt().block_on(async {
        let frames: Vec<DataFrame> = (0..5)
            .map(|i| df!("ts" => [i * 1000i64, i * 1000 + 10], "key" => [1i64, 2], "value" => [1.0, 2.0]).unwrap())
            .collect();
        let p = pipeline("tumble:1s");
        let mut out = p.run_stream(tokio_stream::iter(frames), StreamOptions::default());
        let mut n = 0;
        while let Some(o) = out.next().await {
            n += o.unwrap().rows.len();
        }
        assert_eq!(n, 10);
    });
}

#[test]
fn recycled_output_buffers_and_polled_pieces_change_nothing() {
    // Sessions with allowed lateness exercise every column, `merged` included; a buffer of the
    // wrong width handed back is ignored, and so is one with every column moved out; one with
    // some columns moved out (as the file writer hands them back) is filled again.
    let data = stream(&Shape {
        n: 20_000,
        keys: 40,
        late_fraction: 0.05,
        ..Default::default()
    });
    for spec in ["tumble:1s", "hop:2s:500ms", "session:50ms"] {
        // 0: poll; 1: poll and recycle; 2: poll_pieces and recycle what a writer leaves
        let run = |mode: u8| {
            let mut p = Pipeline::builder()
                .window(spec.parse().unwrap())
                .watermark_delay(fenestra::Duration::from_millis(300))
                .allowed_lateness(fenestra::Duration::from_millis(700))
                .aggregates("count,sum,min,max,mean,std".parse().unwrap())
                .backend(BackendChoice::Cpu)
                .batch_size(600)
                .build()
                .unwrap();
            let mut all = WindowRows::new(1);
            let mut late = vec![];
            for lo in (0..data.len()).step_by(900) {
                let hi = (lo + 900).min(data.len());
                p.push_int_keys(&data.ts[lo..hi], &data.key[lo..hi], &[&data.values[0][lo..hi]])
                    .unwrap();
                if mode == 2 {
                    let (pieces, l) = p.poll_pieces().unwrap();
                    late.extend(l.row);
                    for mut r in pieces {
                        assert!(!r.is_empty(), "{spec}: an empty piece handed out");
                        all.append(&r);
                        let (_key, _start) = (std::mem::take(&mut r.key), std::mem::take(&mut r.start));
                        r.clear();
                        p.recycle(r);
                    }
                    let mut gone = WindowRows::new(1);
                    gone.cols = vec![];
                    p.recycle(gone);
                    continue;
                }
                let o = p.poll().unwrap();
                all.append(&o.rows);
                late.extend(o.late.row);
                if mode == 1 {
                    p.recycle(o.rows);
                    p.recycle(WindowRows::new(3));
                }
            }
            let o = p.finish().unwrap();
            all.append(&o.rows);
            late.extend(o.late.row);
            (all, late)
        };
        let (plain, plain_late) = run(0);
        let (recycled, recycled_late) = run(1);
        let (pieces, pieces_late) = run(2);
        assert_eq!(plain, pieces, "{spec}: pieces");
        assert_eq!(plain_late, pieces_late, "{spec}: pieces");
        assert!(
            plain.len() > 100 && plain.revision.iter().any(|&r| r > 0),
            "{spec}: too easy"
        );
        if spec.starts_with("session") {
            assert!(!plain.merged.is_empty(), "{spec}: no merged sessions");
        }
        assert_eq!(plain, recycled, "{spec}");
        assert_eq!(plain_late, recycled_late, "{spec}");
    }
}
