//! The asynchronous API: a pipeline driven by a tokio channel or `Stream` of batches, yielding a
//! `Stream` of results, with bounded buffers on both sides.
//!
//! ```text
//!  producers ──► StreamSender ──[bounded: input_capacity]──► driver (blocking thread:
//!                                                             Pipeline::push / poll)
//!  consumer  ◄── OutputStream ◄──[bounded: output_capacity]──┘
//! ```
//!
//! Backpressure: a consumer that stops reading fills the output buffer, the driver then waits,
//! the input buffer fills, and `send` waits — memory stays bounded. Dropping every sender ends
//! the input: the driver flushes (every open window fires) and the stream ends after the last
//! output. Dropping the output stream stops the driver. An error is delivered on the stream as
//! `Err` and ends it. Each pipeline runs on its own blocking thread, so several pipelines share a
//! runtime without starving it.
//!
//! ```
//! use fenestra::{Pipeline, BackendChoice};
//! use fenestra::stream::{Batch, StreamOptions};
//! use tokio_stream::StreamExt;
//! # tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap().block_on(async {
//! let p = Pipeline::builder().window("tumble:1s".parse()?).backend(BackendChoice::Cpu).build()?;
//! let (tx, mut out) = p.into_stream(StreamOptions::default());
//! tx.send(Batch::int_keys(vec![10, 20, 1500], vec![1, 2, 1], vec![vec![1.0, 2.0, 3.0]])).await?;
//! drop(tx); // end of input: every window fires
//! let mut rows = 0;
//! while let Some(o) = out.next().await {
//!     rows += o?.rows.len();
//! }
//! assert_eq!(rows, 3);
//! # Ok::<(), fenestra::Error>(())
//! # }).unwrap();
//! ```

use crate::error::{Error, Result};
use crate::pipeline::{Metrics, Output, Pipeline};
use polars::prelude::DataFrame;
use std::pin::Pin;
use std::task::{Context, Poll};
use tokio::sync::mpsc;

/// Keys of an owned batch.
#[derive(Clone, Debug, PartialEq)]
pub enum Keys {
    /// No key column.
    None,
    /// Integer keys.
    Int(Vec<i64>),
    /// String keys (`None` = null key).
    Str(Vec<Option<String>>),
}

/// An owned columnar batch for the asynchronous API.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch {
    /// Event time, ms.
    pub ts: Vec<i64>,
    /// Keys.
    pub keys: Keys,
    /// One vector per value column.
    pub values: Vec<Vec<f64>>,
}

impl Batch {
    /// A batch with integer keys.
    pub fn int_keys(ts: Vec<i64>, keys: Vec<i64>, values: Vec<Vec<f64>>) -> Self {
        Batch {
            ts,
            keys: Keys::Int(keys),
            values,
        }
    }
    /// A batch with string keys.
    pub fn str_keys(ts: Vec<i64>, keys: Vec<Option<String>>, values: Vec<Vec<f64>>) -> Self {
        Batch {
            ts,
            keys: Keys::Str(keys),
            values,
        }
    }
    /// A batch without keys.
    pub fn unkeyed(ts: Vec<i64>, values: Vec<Vec<f64>>) -> Self {
        Batch {
            ts,
            keys: Keys::None,
            values,
        }
    }
}

/// What can be sent into a streaming pipeline.
#[derive(Clone, Debug)]
pub enum Input {
    /// Owned columns.
    Columns(Batch),
    /// A polars DataFrame with the configured columns.
    Frame(DataFrame),
}

impl From<Batch> for Input {
    fn from(b: Batch) -> Self {
        Input::Columns(b)
    }
}

impl From<DataFrame> for Input {
    fn from(df: DataFrame) -> Self {
        Input::Frame(df)
    }
}

/// Buffer sizes of a streaming pipeline.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StreamOptions {
    /// Batches that may wait for the driver.
    pub input_capacity: usize,
    /// Outputs that may wait for the consumer.
    pub output_capacity: usize,
}

impl Default for StreamOptions {
    fn default() -> Self {
        StreamOptions {
            input_capacity: 4,
            output_capacity: 4,
        }
    }
}

/// Sends batches into a streaming pipeline. Clone it for several producers; the input ends when
/// every clone is dropped.
#[derive(Clone, Debug)]
pub struct StreamSender {
    tx: mpsc::Sender<Input>,
}

impl StreamSender {
    /// Sends one batch, waiting while the input buffer is full (backpressure). Fails once the
    /// pipeline has stopped (an error was delivered on the output stream, or it was dropped).
    pub async fn send(&self, input: impl Into<Input>) -> Result<()> {
        self.tx.send(input.into()).await.map_err(|_| {
            Error::Closed("the streaming pipeline has stopped; see its output stream for the error".into())
        })
    }

    /// The blocking form of [`StreamSender::send`], for producers outside the runtime.
    pub fn blocking_send(&self, input: impl Into<Input>) -> Result<()> {
        self.tx.blocking_send(input.into()).map_err(|_| {
            Error::Closed("the streaming pipeline has stopped; see its output stream for the error".into())
        })
    }

    /// Batches that can be sent now without waiting.
    pub fn capacity(&self) -> usize {
        self.tx.capacity()
    }
}

/// One item of the output stream: window rows and late events (empty ones are not sent), with
/// the metrics at that point.
#[derive(Clone, Debug)]
pub struct StreamOutput {
    /// Rows and late events.
    pub output: Output,
    /// Counters and timings so far.
    pub metrics: Metrics,
}

impl std::ops::Deref for StreamOutput {
    type Target = Output;
    fn deref(&self) -> &Output {
        &self.output
    }
}

/// The results of a streaming pipeline, as a `futures` `Stream`.
#[derive(Debug)]
pub struct OutputStream {
    rx: mpsc::Receiver<Result<StreamOutput>>,
}

impl OutputStream {
    /// The next output, or `None` after the last.
    pub async fn recv(&mut self) -> Option<Result<StreamOutput>> {
        self.rx.recv().await
    }
}

impl tokio_stream::Stream for OutputStream {
    type Item = Result<StreamOutput>;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

fn push(p: &mut Pipeline, input: Input) -> Result<()> {
    match input {
        Input::Frame(df) => p.push_frame(&df),
        Input::Columns(b) => {
            let vals: Vec<&[f64]> = b.values.iter().map(|v| v.as_slice()).collect();
            match b.keys {
                Keys::None => p.push_unkeyed(&b.ts, &vals),
                Keys::Int(k) => p.push_int_keys(&b.ts, &k, &vals),
                Keys::Str(k) => {
                    let k: Vec<Option<&str>> = k.iter().map(|s| s.as_deref()).collect();
                    p.push_str_keys(&b.ts, &k, &vals)
                }
            }
        }
    }
}

fn deliver(out_tx: &mpsc::Sender<Result<StreamOutput>>, p: &Pipeline, output: Output) -> bool {
    if output.rows.is_empty() && output.late.is_empty() && output.rows.merged.is_empty() {
        return true;
    }
    out_tx
        .blocking_send(Ok(StreamOutput {
            output,
            metrics: p.metrics().clone(),
        }))
        .is_ok()
}

/// The driver loop, on a blocking thread.
///
/// Whenever it stops early, the input channel is closed before the output channel ends, so a
/// consumer that has seen the end of the output can rely on further sends failing.
fn drive(mut p: Pipeline, mut in_rx: mpsc::Receiver<Input>, out_tx: mpsc::Sender<Result<StreamOutput>>) {
    while let Some(input) = in_rx.blocking_recv() {
        let res = push(&mut p, input).and_then(|()| p.poll());
        match res {
            Ok(out) => {
                if !deliver(&out_tx, &p, out) {
                    in_rx.close();
                    return; // the consumer is gone
                }
            }
            Err(e) => {
                in_rx.close();
                // Deliver what was computed before the error, then the error.
                if let Ok(out) = p.flush() {
                    deliver(&out_tx, &p, out);
                }
                let _ = out_tx.blocking_send(Err(e));
                return;
            }
        }
    }
    // Input ended: fire everything.
    match p.finish() {
        Ok(out) => {
            deliver(&out_tx, &p, out);
        }
        Err(e) => {
            let _ = out_tx.blocking_send(Err(e));
        }
    }
}

impl Pipeline {
    /// Turns the pipeline into a streaming one on the current tokio runtime: a sender for input
    /// batches and a stream of outputs, with bounded buffers (see the module docs).
    ///
    /// Must be called from within a tokio runtime.
    pub fn into_stream(self, opts: StreamOptions) -> (StreamSender, OutputStream) {
        let (in_tx, in_rx) = mpsc::channel(opts.input_capacity.max(1));
        let (out_tx, out_rx) = mpsc::channel(opts.output_capacity.max(1));
        tokio::task::spawn_blocking(move || drive(self, in_rx, out_tx));
        (StreamSender { tx: in_tx }, OutputStream { rx: out_rx })
    }

    /// Drives the pipeline from a stream of batches; the returned stream yields its outputs.
    pub fn run_stream<S>(self, input: S, opts: StreamOptions) -> OutputStream
    where
        S: tokio_stream::Stream + Send + 'static,
        S::Item: Into<Input> + Send,
    {
        let (tx, out) = self.into_stream(opts);
        tokio::spawn(async move {
            use tokio_stream::StreamExt;
            let mut input = std::pin::pin!(input);
            while let Some(item) = input.next().await {
                if tx.send(item).await.is_err() {
                    break;
                }
            }
        });
        out
    }
}
