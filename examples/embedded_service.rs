//! 4. Embedded service: a tokio service that receives events on a channel, aggregates them with
//!    a streaming pipeline, and answers queries about the latest windows while the stream runs.
//!
//! The pipeline's output stream feeds a small in-memory view (latest closed window per sensor);
//! a query handler reads that view concurrently. At the end every answer is checked against a
//! direct computation.
//!
//! `cargo run --release --example embedded_service`

use anyhow::{Result, anyhow, ensure};
use fenestra::stream::{Batch, StreamOptions};
use fenestra::{BackendChoice, Duration, Pipeline, WindowSpec};
use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::StreamExt;

/// The latest closed 1 s window of each sensor: (window start, mean).
type View = Arc<RwLock<HashMap<i64, (i64, f64)>>>;

enum Query {
    Latest {
        sensor: i64,
        reply: oneshot::Sender<Option<(i64, f64)>>,
    },
}

fn reading(sensor: i64, t: i64) -> f64 {
    20.0 + sensor as f64 + ((t / 1000) % 10) as f64 * 0.5
}

pub fn run() -> Result<()> {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    rt.block_on(async {
        let pipeline = Pipeline::builder()
            .window(WindowSpec::tumbling(Duration::from_secs(1)))
            .watermark_delay(Duration::from_millis(200))
            .value_columns(["celsius"])
            .aggregates("count,mean".parse()?)
            .backend(BackendChoice::Auto)
            .build()?;
        println!("{}", pipeline.backend_reason());
        let (events, mut results) = pipeline.into_stream(StreamOptions {
            input_capacity: 8,
            output_capacity: 8,
        });

        // The view, updated from the output stream.
        let view: View = Arc::default();
        let writer = {
            let view = view.clone();
            tokio::spawn(async move {
                let mut windows = 0usize;
                while let Some(out) = results.next().await {
                    let out = out?;
                    let rows = &out.rows;
                    let mut v = view.write().map_err(|_| anyhow!("view poisoned"))?;
                    for i in 0..rows.len() {
                        let sensor = rows.key[i] as i64; // ids of keys 0..N pushed in order below
                        let mean = rows.value(i, 0, fenestra::AggKind::Mean).unwrap_or(f64::NAN);
                        v.insert(sensor, (rows.start[i], mean));
                        windows += 1;
                    }
                }
                Ok::<usize, anyhow::Error>(windows)
            })
        };

        // The query handler.
        let (qtx, mut qrx) = mpsc::channel::<Query>(16);
        let server = {
            let view = view.clone();
            tokio::spawn(async move {
                while let Some(Query::Latest { sensor, reply }) = qrx.recv().await {
                    let ans = view.read().ok().and_then(|v| v.get(&sensor).copied());
                    let _ = reply.send(ans);
                }
            })
        };

        // A producer: 20 sensors, one reading every 10 ms each, for 30 s of event time. Sensor
        // ids are pushed in order 0..20 first, so key id == sensor id.
        let producer = tokio::spawn(async move {
            for chunk in 0..300i64 {
                let mut ts = vec![];
                let mut sensors = vec![];
                let mut vals = vec![];
                for step in 0..10 {
                    let t = chunk * 100 + step * 10;
                    for s in 0..20 {
                        ts.push(t);
                        sensors.push(s);
                        vals.push(reading(s, t));
                    }
                }
                events.send(Batch::int_keys(ts, sensors, vec![vals])).await?;
                tokio::task::yield_now().await;
            }
            Ok::<(), fenestra::Error>(())
        });

        // Queries while the stream runs.
        let mut answered = 0;
        while !producer.is_finished() {
            let (tx, rx) = oneshot::channel();
            qtx.send(Query::Latest { sensor: 7, reply: tx }).await?;
            if let Some((start, mean)) = rx.await? {
                ensure!((mean - reading(7, start)).abs() < 1e-9, "sensor 7 at {start}: {mean}");
                answered += 1;
            }
            tokio::time::sleep(std::time::Duration::from_millis(2)).await;
        }
        producer.await??;
        let windows = writer.await??;
        // After the end of input every window has fired: the last one is [29 s, 30 s).
        for s in 0..20 {
            let (tx, rx) = oneshot::channel();
            qtx.send(Query::Latest { sensor: s, reply: tx }).await?;
            let (start, mean) = rx.await?.ok_or_else(|| anyhow!("no window for sensor {s}"))?;
            ensure!(
                start == 29_000 && (mean - reading(s, start)).abs() < 1e-9,
                "sensor {s}: {start} {mean}"
            );
        }
        drop(qtx);
        server.await?;
        ensure!(windows == 20 * 30, "{windows} windows");
        println!(
            "{windows} windows from 20 sensors; {answered} queries answered while streaming; final answers checked"
        );
        Ok(())
    })
}

#[allow(dead_code)]
fn main() -> Result<()> {
    run()
}
