//! Files ⇄ batches through polars: Parquet and CSV in, Parquet and CSV out (atomically).
//! Parquet input of the usual column types is decoded here instead, straight into event columns
//! ([`EventReader`], `scan.rs`); float pages under LZ4 are compressed by our own block encoder
//! (`lz4.rs`).
//!
//! Input columns are checked up front: a missing column, a column of the wrong type, a null, NaN
//! or out-of-range timestamp, an unreadable or truncated file and an empty file each give an
//! [`Error`] that names the problem. Output is written to a temporary file beside the target and
//! renamed into place only when complete, so a failed job never leaves a partial file. Output
//! files are written past the page cache where the OS allows it ([`OutFile`], `direct.rs`).

use crate::agg::{AggKind, Aggregates, Partial, null_value};
use crate::batch::{EventBatch, KeyDict, KeyKind, KeyValues, ingest_values};
use crate::error::{Error, Result};
use crate::output::WindowRows;
use crate::pipeline::LateEvents;
use crate::time::MAX_ABS_TIMESTAMP_MS;
use polars::prelude::*;
use polars_arrow::bitmap::Bitmap;
use std::fs::File;
use std::path::{Path, PathBuf};

mod direct;
mod lz4;
mod pages;
mod scan;
pub use direct::OutFile;
pub use scan::{EventChunk, EventColumns, EventReader, KeyIds};

/// A supported file format.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Format {
    /// Apache Parquet (`.parquet`, `.pq`).
    Parquet,
    /// Comma-separated values with a header line (`.csv`).
    Csv,
}

impl Format {
    /// The format a path's extension names.
    pub fn of(path: &Path) -> Result<Format> {
        match path
            .extension()
            .and_then(|e| e.to_str())
            .map(|e| e.to_ascii_lowercase())
            .as_deref()
        {
            Some("parquet") | Some("pq") => Ok(Format::Parquet),
            Some("csv") => Ok(Format::Csv),
            _ => Err(Error::UnsupportedFormat {
                path: path.to_path_buf(),
            }),
        }
    }

    fn name(self) -> &'static str {
        match self {
            Format::Parquet => "Parquet",
            Format::Csv => "CSV",
        }
    }
}

/// Reads a whole Parquet or CSV file (format by extension).
pub fn read_frame(path: &Path) -> Result<DataFrame> {
    let format = Format::of(path)?;
    let (file, _) = open_input(path)?;
    let bad = format_error(path, format.name());
    let df = match format {
        Format::Parquet => ParquetReader::new(file).finish().map_err(bad)?,
        Format::Csv => CsvReadOptions::default()
            .with_has_header(true)
            .with_infer_schema_length(Some(10_000))
            .into_reader_with_file_handle(file)
            .finish()
            .map_err(bad)?,
    };
    if df.height() == 0 {
        return Err(Error::EmptyInput(format!("'{}'", path.display())));
    }
    Ok(df)
}

/// An input file read in chunks on a reader thread, so that decoding overlaps aggregation and
/// memory holds a few chunks rather than the whole file: whole Parquet row groups (the first
/// chunk in two parts, [`ChunkReader::FIRST_SLICE`]), or blocks of
/// about [`ChunkReader::CSV_BLOCK_BYTES`] of CSV cut at record ends (a newline outside quotes),
/// parsed with the column types the first block inferred.
pub struct ChunkReader {
    total_rows: usize,
    /// Set after an error: every later call repeats it.
    failed: Option<String>,
    /// Whether `total_rows` is exact (Parquet footer) or an estimate (CSV).
    exact: bool,
    format: &'static str,
    delivered: usize,
    path: PathBuf,
    first: Option<DataFrame>,
    end: ReaderEnd<DataFrame>,
}

impl ChunkReader {
    /// Rows per chunk at least (whole row groups are taken until a chunk has this many). Half a
    /// million: a file written in the usual row groups of 1M rows is read one row group at a
    /// time (2M-row chunks held ~15% more memory: Q1 of the peer workload peaked at 227 MB
    /// instead of 195 MB, with 16% more page faults and no gain in speed).
    pub const CHUNK_ROWS: usize = 1 << 19;
    /// Bytes of CSV per chunk, about.
    pub const CSV_BLOCK_BYTES: usize = 32 << 20;

    /// Opens `path` (format by extension) with the checks of [`read_frame`]: a missing,
    /// unreadable, truncated or empty file is an error here or, for a row group that turns out
    /// damaged, from [`ChunkReader::next_chunk`].
    ///
    /// `float_columns` (the value columns) are read from CSV as floats even where the first rows
    /// hold only integers, so that a `2.5` after 10,000 integer values is not a type error.
    pub fn open(path: &Path, float_columns: &[String]) -> Result<ChunkReader> {
        Self::open_columns(path, float_columns, None)
    }

    /// [`ChunkReader::open`], reading only the columns `only` names (all of them with `None`):
    /// Parquet stores each column apart, so a job that needs 3 columns of a 20-column file
    /// decodes 3; CSV blocks after the first (which fixes the types of every column) parse only
    /// those. When the file lacks one of the names, every column is read, for the caller's
    /// schema check to report the missing one with the columns the file has.
    pub fn open_columns(path: &Path, float_columns: &[String], only: Option<&[String]>) -> Result<ChunkReader> {
        let format = Format::of(path)?;
        if format == Format::Csv {
            return Self::open_csv(path, Self::CSV_BLOCK_BYTES, float_columns, only);
        }
        Self::open_parquet(path, only, Self::FIRST_SLICE)
    }

    /// Rows of a Parquet file's first chunk decoded apart: when the chunk holds more than twice
    /// as many, its first `FIRST_SLICE` rows and the rest are decoded side by side.
    pub const FIRST_SLICE: usize = 1 << 18;

    /// Opens a Parquet file: chunks of whole row groups decoded on the reader thread, except the
    /// first chunk, when it holds more than twice `first_slice` rows: its first `first_slice`
    /// rows and the rest are decoded side by side (the rest on a helper thread), and handed over
    /// in that order. polars decodes a row group on one thread, and nothing else has work until
    /// the first chunk is there: a 1M-row group took ~20 ms with the other core idle; the first
    /// 256k rows are ready in ~10 (5M peer workload, alternating runs: Q1 0.206 -> 0.197 s, Q2
    /// 0.241 -> 0.230 s, Q3 unchanged, for 12-17 MB more peak memory: the two slices in flight).
    fn open_parquet(path: &Path, only: Option<&[String]>, first_slice: usize) -> Result<ChunkReader> {
        let format = Format::Parquet;
        let (file, _) = open_input(path)?;
        let bad = format_error(path, format.name());
        let mut reader = ParquetReader::new(file);
        let projection = match only {
            None => None,
            Some(names) => projection(reader.schema().map_err(bad.clone())?.iter_names(), names),
        };
        let meta = reader.get_metadata().map_err(bad.clone())?.clone();
        let total_rows = meta.num_rows;
        if total_rows == 0 {
            return Err(Error::EmptyInput(format!("'{}'", path.display())));
        }
        // Chunks of whole row groups: (first row, rows).
        let mut chunks = vec![];
        let (mut at, mut len) = (0usize, 0usize);
        for rg in &meta.row_groups {
            len += rg.num_rows();
            if len >= Self::CHUNK_ROWS {
                chunks.push((at, len));
                at += len;
                len = 0;
            }
        }
        if len > 0 {
            chunks.push((at, len));
        }
        let target = path.to_path_buf();
        let mut chunks = chunks.into_iter();
        let read = std::sync::Arc::new(move |at: usize, len: usize| -> Result<DataFrame> {
            File::open(&target).map_err(cannot_read(&target)).and_then(|f| {
                let mut r = ParquetReader::new(f)
                    .with_slice(Some((at, len)))
                    .with_projection(projection.clone());
                r.set_metadata(meta.clone());
                r.finish().map_err(bad.clone())
            })
        });
        let mut first = true;
        // the rest of the first chunk, being decoded on the helper thread
        let mut rest = Joined(None);
        let source = path.to_path_buf();
        let thread = reader_thread(move || {
            if let Some(h) = rest.0.take() {
                return Some(h.join().unwrap_or_else(|_| {
                    Err(Error::FileFormat {
                        path: source.clone(),
                        format: format.name(),
                        reason: format!("the second reader thread stopped (it panicked) after row {first_slice}"),
                    })
                }));
            }
            let (at, len) = chunks.next()?;
            if std::mem::take(&mut first) && len > first_slice.saturating_mul(2) {
                let read_rest = read.clone();
                rest.0 = std::thread::Builder::new()
                    .name("fenestra-reader-2".into())
                    .spawn(move || read_rest(at + first_slice, len - first_slice))
                    .ok();
                if rest.0.is_some() {
                    return Some(read(at, first_slice));
                }
            }
            Some(read(at, len))
        })?;
        Ok(ChunkReader::new(path, format, total_rows, true, None, Some(thread)))
    }

    fn new(
        path: &Path,
        format: Format,
        total_rows: usize,
        exact: bool,
        first: Option<DataFrame>,
        thread: Option<ReaderThread>,
    ) -> ChunkReader {
        ChunkReader {
            total_rows,
            failed: None,
            exact,
            format: format.name(),
            delivered: 0,
            path: path.to_path_buf(),
            first,
            end: ReaderEnd::new(thread),
        }
    }

    /// Rows in the whole file: exact for Parquet (from its footer), estimated for CSV from the
    /// first block's bytes per row, and exact once the reader has reached the end.
    pub fn total_rows(&self) -> usize {
        self.total_rows
    }

    /// Opens a CSV file: the first block is read and parsed here (its errors come at once, and it
    /// fixes the column types), the rest on the reader thread.
    fn open_csv(path: &Path, block: usize, float_columns: &[String], only: Option<&[String]>) -> Result<ChunkReader> {
        let cannot = cannot_read(path);
        let (mut file, size) = open_input(path)?;
        let bad = format_error(path, Format::Csv.name());
        // The first block decides the column types: it holds at least the rows `read_frame`
        // infers them from (10,000), more blocks joined if need be.
        let mut carry = vec![];
        let mut first_bytes: Vec<u8> = vec![];
        while csv_records(&first_bytes) <= INFER_ROWS {
            match csv_block(&mut file, &mut carry, block).map_err(&cannot)? {
                Some(b) => first_bytes.extend_from_slice(&b),
                None => break,
            }
        }
        let first_len = first_bytes.len().max(1);
        let parse_first = |overwrite: Option<SchemaRef>| {
            CsvReadOptions::default()
                .with_has_header(true)
                .with_infer_schema_length(Some(INFER_ROWS))
                .with_schema_overwrite(overwrite)
                .into_reader_with_file_handle(std::io::Cursor::new(first_bytes.clone()))
                .finish()
                .map_err(bad.clone())
        };
        let mut first = parse_first(None)?;
        let widen: Vec<Field> = float_columns
            .iter()
            .filter(|c| first.schema().get(c.as_str()).is_some_and(|dt| dt.is_integer()))
            .map(|c| Field::new(c.as_str().into(), DataType::Float64))
            .collect();
        if !widen.is_empty() {
            first = parse_first(Some(std::sync::Arc::new(Schema::from_iter(widen))))?;
        }
        drop(first_bytes);
        if first.height() == 0 && first_len as u64 >= size {
            return Err(Error::EmptyInput(format!("'{}'", path.display())));
        }
        // later blocks parse the projected columns alone; the first keeps those
        let schema = first.schema().clone();
        let projection = only.and_then(|names| projection(schema.iter_names(), names));
        if let Some(p) = &projection {
            let keep = p.iter().filter_map(|&i| schema.get_at_index(i).map(|(n, _)| n.clone()));
            first = first.select(keep).map_err(bad.clone())?;
        }
        if first_len as u64 >= size {
            // the whole file was one block
            return Ok(ChunkReader::new(
                path,
                Format::Csv,
                first.height(),
                true,
                Some(first),
                None,
            ));
        }
        let mut rest = file;
        let projection = projection.map(std::sync::Arc::new);
        let estimate = (first.height() as f64 * size as f64 / first_len as f64).round() as usize;
        let target = path.to_path_buf();
        // where the next block starts, for error messages (polars counts within the block)
        let (mut offset, mut row) = (first_len as u64, first.height() as u64);
        let thread = reader_thread(move || {
            let bytes = match csv_block(&mut rest, &mut carry, block) {
                Ok(b) => b?,
                Err(e) => return Some(Err(cannot_read(&target)(e))),
            };
            let len = bytes.len() as u64;
            let res = CsvReadOptions::default()
                .with_has_header(false)
                .with_schema(Some(schema.clone()))
                .with_projection(projection.clone())
                .into_reader_with_file_handle(std::io::Cursor::new(bytes))
                .finish()
                .map_err(|e| Error::FileFormat {
                    path: target.clone(),
                    format: Format::Csv.name(),
                    reason: format!(
                        "in the block that starts at byte {offset} (data row {row}; offsets below count from there): {e}"
                    ),
                });
            if let Ok(df) = &res {
                row += df.height() as u64;
            }
            offset += len;
            Some(res)
        })?;
        let total = estimate.max(first.height());
        Ok(ChunkReader::new(
            path,
            Format::Csv,
            total,
            false,
            Some(first),
            Some(thread),
        ))
    }

    /// The next chunk, in file order; `None` at the end. A reader that stops before it has
    /// delivered every row of the file is an error, never a silently shorter input.
    pub fn next_chunk(&mut self) -> Option<Result<DataFrame>> {
        if let Some(e) = &self.failed {
            return Some(Err(Error::FileFormat {
                path: self.path.clone(),
                format: self.format,
                reason: format!("reading stopped at an earlier error: {e}"),
            }));
        }
        let res = self.next_inner();
        if let Some(Err(e)) = &res {
            self.failed = Some(e.to_string());
        }
        res
    }

    fn next_inner(&mut self) -> Option<Result<DataFrame>> {
        if let Some(df) = self.first.take() {
            self.delivered += df.height();
            return Some(Ok(df));
        }
        match self.end.next()? {
            Received::Chunk(df) => {
                self.delivered += df.height();
                Some(Ok(df))
            }
            Received::Failed(e) => Some(Err(e)),
            Received::Ended { panicked } => {
                if panicked || (self.exact && self.delivered != self.total_rows) {
                    let total = format!("{}{}", if self.exact { "" } else { "about " }, self.total_rows);
                    return Some(Err(stopped_early(
                        &self.path,
                        self.format,
                        self.delivered,
                        &total,
                        panicked,
                    )));
                }
                self.total_rows = self.delivered;
                if self.delivered == 0 {
                    return Some(Err(Error::EmptyInput(format!("'{}'", self.path.display()))));
                }
                None
            }
        }
    }
}

/// The consuming end of a reader thread: its chunks in file order, then how it ended. Dropping
/// it stops the thread (its next send fails) and joins it.
struct ReaderEnd<T> {
    rx: Option<std::sync::mpsc::Receiver<Result<T>>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

/// What a [`ReaderEnd`] received.
enum Received<T> {
    Chunk(T),
    /// The thread's error (it sends nothing after one).
    Failed(Error),
    /// The thread ended, by a panic or not.
    Ended {
        panicked: bool,
    },
}

impl<T> ReaderEnd<T> {
    /// The end of `thread` (of nothing, with `None`: a reader whose input was read at once).
    fn new(thread: Option<(std::sync::mpsc::Receiver<Result<T>>, std::thread::JoinHandle<()>)>) -> Self {
        let (rx, handle) = thread.unzip();
        ReaderEnd { rx, handle }
    }

    /// The next chunk, error or end; `None` once the thread has failed or ended.
    fn next(&mut self) -> Option<Received<T>> {
        let rx = self.rx.as_ref()?;
        Some(match rx.recv() {
            Ok(Ok(c)) => Received::Chunk(c),
            Ok(Err(e)) => {
                self.rx = None;
                Received::Failed(e)
            }
            Err(_) => {
                self.rx = None;
                Received::Ended {
                    panicked: self.handle.take().is_some_and(|h| h.join().is_err()),
                }
            }
        })
    }
}

impl<T> Drop for ReaderEnd<T> {
    fn drop(&mut self) {
        self.rx.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

/// The error of a reader that ended before it delivered every row (`total`, as the caller words
/// it), or by a panic.
fn stopped_early(path: &Path, format: &'static str, delivered: usize, total: &str, panicked: bool) -> Error {
    Error::FileFormat {
        path: path.to_path_buf(),
        format,
        reason: format!(
            "the reader stopped after {delivered} of {total} rows{}",
            if panicked { " (it failed on damaged data)" } else { "" }
        ),
    }
}

/// Rows the column types of a CSV file are inferred from.
const INFER_ROWS: usize = 10_000;

/// Record ends (newlines outside double quotes) in `bytes`.
fn csv_records(bytes: &[u8]) -> usize {
    let (mut quotes, mut n) = (0usize, 0usize);
    for &b in bytes {
        if b == b'"' {
            quotes += 1;
        } else if b == b'\n' && quotes % 2 == 0 {
            n += 1;
        }
    }
    n
}

/// The next block of whole CSV records from `r`: about `block` bytes (more when one record is
/// longer), cut after the last newline that is outside double quotes. `carry` holds the bytes
/// read past the cut, for the next call; at the end of the input the rest is returned whole.
/// `None` when nothing is left.
fn csv_block(r: &mut impl std::io::Read, carry: &mut Vec<u8>, block: usize) -> std::io::Result<Option<Vec<u8>>> {
    let block = block.max(1);
    let mut buf = std::mem::take(carry);
    let (mut eof, mut scanned, mut quotes, mut cut) = (false, 0usize, 0usize, None);
    loop {
        let want = if buf.len() >= block { buf.len() + block } else { block };
        while !eof && buf.len() < want {
            let filled = buf.len();
            buf.resize(want, 0);
            let n = r.read(&mut buf[filled..])?;
            buf.truncate(filled + n);
            eof = n == 0;
        }
        for (i, &b) in buf.iter().enumerate().skip(scanned) {
            if b == b'"' {
                quotes += 1;
            } else if b == b'\n' && quotes % 2 == 0 {
                cut = Some(i + 1);
            }
        }
        scanned = buf.len();
        if buf.is_empty() {
            return Ok(None);
        }
        if eof {
            return Ok(Some(buf));
        }
        if let Some(c) = cut {
            *carry = buf.split_off(c);
            return Ok(Some(buf));
        }
        // no record end in the block yet (one very long record): read on
    }
}

/// The positions, in the file's column order, of the columns `names` names; `None` when the
/// file lacks one of them, so that every column is read and the caller's schema check reports
/// the missing one with the columns the file has.
fn projection<'a>(file_columns: impl Iterator<Item = &'a PlSmallStr>, names: &[String]) -> Option<Vec<usize>> {
    let mut found = vec![false; names.len()];
    let mut positions = vec![];
    for (i, c) in file_columns.enumerate() {
        let mut wanted = false;
        for (f, n) in found.iter_mut().zip(names) {
            if n.as_str() == c.as_str() {
                (*f, wanted) = (true, true);
            }
        }
        if wanted {
            positions.push(i);
        }
    }
    found.iter().all(|&f| f).then_some(positions)
}

/// A thread joined when this is dropped (the second reader thread of a Parquet file's first
/// chunk: a reader stopped early, or dropped, does not leave it decoding on its own).
struct Joined<T>(Option<std::thread::JoinHandle<T>>);

impl<T> Drop for Joined<T> {
    fn drop(&mut self) {
        if let Some(h) = self.0.take() {
            let _ = h.join();
        }
    }
}

type ReaderThread = (
    std::sync::mpsc::Receiver<Result<DataFrame>>,
    std::thread::JoinHandle<()>,
);

/// Runs `next` on a reader thread until it returns `None` or an error, handing each chunk over
/// through a channel of one (the reader stays one chunk ahead of its consumer).
fn reader_thread(mut next: impl FnMut() -> Option<Result<DataFrame>> + Send + 'static) -> Result<ReaderThread> {
    // (a rendezvous: the next chunk is decoded while this one is processed, not two ahead)
    let (tx, rx) = std::sync::mpsc::sync_channel::<Result<DataFrame>>(0);
    let handle = std::thread::Builder::new()
        .name("fenestra-reader".into())
        .spawn(move || {
            while let Some(res) = next() {
                let failed = res.is_err();
                if tx.send(res).is_err() || failed {
                    return;
                }
            }
        })
        .map_err(|e| Error::config(format!("cannot start the reader thread: {e}")))?;
    Ok((rx, handle))
}

/// Opens an input file and checks it is not empty; returns it with its size.
fn open_input(path: &Path) -> Result<(File, u64)> {
    let cannot = cannot_read(path);
    let file = File::open(path).map_err(&cannot)?;
    let size = file.metadata().map_err(&cannot)?.len();
    if size == 0 {
        return Err(Error::EmptyInput(format!("'{}' (0 bytes)", path.display())));
    }
    Ok((file, size))
}

/// Maps a polars reader error to an error naming the file and its format.
fn format_error(path: &Path, format: &'static str) -> impl Fn(PolarsError) -> Error + Clone + Send + 'static {
    let path = path.to_path_buf();
    move |e| Error::FileFormat {
        path: path.clone(),
        format,
        reason: e.to_string(),
    }
}

/// Compression of Parquet output pages.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Compression {
    /// No compression: the fastest to write, the largest file.
    Uncompressed,
    /// Snappy (DuckDB's and Spark's default).
    Snappy,
    /// LZ4 (raw block format): fast and compact; the default.
    #[default]
    Lz4,
    /// Zstandard, level 3 (Polars' default): the smallest file, the slowest to write.
    Zstd,
}

impl Compression {
    fn parquet(self) -> ParquetCompression {
        match self {
            Compression::Uncompressed => ParquetCompression::Uncompressed,
            Compression::Snappy => ParquetCompression::Snappy,
            Compression::Lz4 => ParquetCompression::Lz4Raw,
            Compression::Zstd => ParquetCompression::Zstd(None),
        }
    }

    /// The name its `FromStr` takes.
    pub fn name(self) -> &'static str {
        match self {
            Compression::Uncompressed => "uncompressed",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

impl std::str::FromStr for Compression {
    type Err = Error;

    /// `uncompressed` (or `none`), `snappy`, `lz4` or `zstd`, in any case.
    fn from_str(s: &str) -> Result<Compression> {
        match s.to_ascii_lowercase().as_str() {
            "uncompressed" | "none" => Ok(Compression::Uncompressed),
            "snappy" => Ok(Compression::Snappy),
            "lz4" => Ok(Compression::Lz4),
            "zstd" => Ok(Compression::Zstd),
            _ => Err(Error::config(format!(
                "unknown compression '{s}': expected uncompressed, snappy, lz4 or zstd"
            ))),
        }
    }
}

/// How the float columns of Parquet output lay out their values.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum FloatEncoding {
    /// `PLAIN` or `BYTE_STREAM_SPLIT` per column, whichever samples of it favour (split where it
    /// compresses to at most a fifth more bytes, its compressor then ~2.5x faster); the default.
    #[default]
    Auto,
    /// `PLAIN` only, for readers that predate `BYTE_STREAM_SPLIT` (parquet-mr before 1.12, Arrow
    /// before 0.17, DuckDB before 0.10).
    Plain,
}

impl FloatEncoding {
    /// Every layout choice, by name.
    const ALL: [(FloatEncoding, &'static str); 2] = [(FloatEncoding::Auto, "auto"), (FloatEncoding::Plain, "plain")];

    /// The name its `FromStr` takes.
    pub fn name(self) -> &'static str {
        Self::ALL.iter().find(|(e, _)| *e == self).map_or("auto", |(_, n)| n)
    }
}

impl std::str::FromStr for FloatEncoding {
    type Err = Error;

    /// `auto` or `plain`, in any case.
    fn from_str(s: &str) -> Result<FloatEncoding> {
        Self::ALL
            .iter()
            .find(|(_, n)| n.eq_ignore_ascii_case(s))
            .map(|(e, _)| *e)
            .ok_or_else(|| Error::config(format!("unknown float encoding '{s}': expected auto or plain")))
    }
}

/// How Parquet output is written: its compression and its float columns' layout.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ParquetOptions {
    /// Page compression.
    pub compression: Compression,
    /// Float columns' layout.
    pub floats: FloatEncoding,
}

impl From<Compression> for ParquetOptions {
    fn from(compression: Compression) -> Self {
        ParquetOptions {
            compression,
            ..ParquetOptions::default()
        }
    }
}

fn cannot_read(path: &Path) -> impl Fn(std::io::Error) -> Error + '_ {
    move |e| Error::Io {
        action: "cannot read",
        path: path.to_path_buf(),
        source: e,
    }
}

/// Writes `df` to `path` (format by extension) through a temporary file and a rename; Parquet
/// pages are LZ4-compressed.
pub fn write_frame(df: &mut DataFrame, path: &Path) -> Result<()> {
    write_frame_with(df, path, Compression::default())
}

/// [`write_frame`] with the given Parquet compression, or [`ParquetOptions`] (CSV output takes
/// none).
pub fn write_frame_with(df: &mut DataFrame, path: &Path, options: impl Into<ParquetOptions>) -> Result<()> {
    let options = options.into();
    let format = Format::of(path)?;
    let tmp = temp_path(path);
    let res = (|| -> Result<()> {
        let mut w = OutFile::create(&tmp).map_err(|e| Error::Io {
            action: "cannot write",
            path: tmp.clone(),
            source: e,
        })?;
        let werr = |e: PolarsError| Error::Polars(format!("writing '{}': {e}", path.display()));
        match format {
            Format::Parquet => {
                // the same encoder and row groups as the streamed window output
                let mut out = ParquetOut::new(&mut w, df.schema(), options, IntEncoding::Polars).map_err(werr)?;
                for (at, len) in row_groups(df.height()) {
                    let mut part = df.slice(at as i64, len);
                    // one row group per slice, however many pieces the frame was stacked from
                    part.rechunk_mut();
                    out.write(&part).map_err(werr)?;
                }
                out.finish().map_err(werr)?;
            }
            Format::Csv => CsvWriter::new(&mut w).include_header(true).finish(df).map_err(werr)?,
        }
        w.finish().map_err(|e| Error::Io {
            action: "cannot write",
            path: tmp.clone(),
            source: e,
        })?;
        std::fs::rename(&tmp, path).map_err(|e| Error::Io {
            action: "cannot write",
            path: path.to_path_buf(),
            source: e,
        })
    })();
    if res.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    res
}

/// Parquet output through polars' Parquet encoder (`polars-parquet`), with three differences from
/// polars' `ParquetWriter`: the window output's integer columns are delta-encoded
/// ([`IntEncoding::Delta`]), float columns are written `PLAIN` or `BYTE_STREAM_SPLIT` at once,
/// as their values favour ([`pages::FloatLayout`]; polars tries a dictionary for every numeric
/// column, which for float aggregates means a cardinality estimate of every row group before
/// falling back to plain: ~4% of a Q1 run's CPU), and the columns of a row
/// group are encoded and compressed on two threads (the writer's tail after the last window is
/// the part of a run nothing else overlaps). Other columns keep polars' choice (dictionary
/// where it pays). Statistics (min, max, null count) as polars.
struct ParquetOut<W: std::io::Write> {
    writer: polars_parquet::write::FileWriter<W>,
    columns: ColumnEncoder,
    /// Columns `..split` are encoded on the writer thread, `split..` on a second one: about half
    /// the work each.
    split: usize,
    /// The second thread, started with the first row group that has columns for it and kept for
    /// the rest of the file (one thread and allocator heap per file, not per row group).
    helper: Option<EncodeHelper>,
    /// A row group whose first columns are encoded and whose last ones are with the helper:
    /// `(rows, pages of columns ..split)`. It is written once the next row group's columns are
    /// handed over (or at the end), so that the helper encodes while this thread writes pages and
    /// builds the next frame instead of waiting for each other.
    pending: Option<(u64, EncodedColumns)>,
}

/// How a [`ParquetOut`] encodes its 32- and 64-bit integer columns.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum IntEncoding {
    /// polars' choice: a dictionary where the values repeat enough, `PLAIN` otherwise (any frame).
    Polars,
    /// `DELTA_BINARY_PACKED`, for the window output: its keys ascend within a firing and its
    /// window bounds, revisions and model versions come in runs, so the deltas take a few bits
    /// (or none) where a dictionary's indices take 10-14 and cost a hash per value to build.
    /// Q1 of the peer workload: the key column 262 KB -> 77 KB compressed per row group, the
    /// file 33.0 -> 31.0 MB; Q2 38.1 -> 31.0 MB and ~13% less wall time.
    Delta,
}

/// What encodes a row group's columns into compressed pages: the Parquet fields, encodings and
/// options of every column.
#[derive(Clone)]
struct ColumnEncoder {
    fields: Vec<polars_parquet::write::ParquetType>,
    encodings: Vec<Vec<polars_parquet::write::Encoding>>,
    options: polars_parquet::write::WriteOptions,
    /// Each column's float layout (used by float columns only; each column is encoded on one
    /// thread, so each thread's copy keeps its own columns' state).
    floats: Vec<pages::FloatLayout>,
    /// The LZ4 match table of plain float pages (each thread's copy its own).
    lz4: lz4::Table,
}

/// Compressed pages of each Parquet column of a row group's arrays.
type EncodedColumns = Vec<Vec<polars_parquet::write::CompressedPage>>;

/// A row group's arrays of one column, in row order: one per chunk of the frame.
type ColumnParts = Vec<Box<dyn polars_arrow::array::Array>>;

impl ColumnEncoder {
    /// Encodes and compresses `columns`, the row group's columns `first..`, each in one or more
    /// parts: pages of each part in turn, so that a frame stacked from pieces is written without
    /// joining them. A column with a dictionary encoding is joined first (a column chunk holds
    /// one dictionary page at most).
    fn encode(&mut self, first: usize, columns: &[ColumnParts]) -> PolarsResult<EncodedColumns> {
        use polars_parquet::write::{Encoding, ParquetType, array_to_columns, compress};
        let mut out = vec![];
        for (i, parts) in (first..).zip(columns) {
            let dictionary = self.encodings[i]
                .iter()
                .any(|e| matches!(e, Encoding::RleDictionary | Encoding::PlainDictionary));
            let joined;
            let parts: &[Box<dyn polars_arrow::array::Array>] = if dictionary && parts.len() > 1 {
                let refs: Vec<&dyn polars_arrow::array::Array> = parts.iter().map(|a| a.as_ref()).collect();
                joined = [polars_arrow::compute::concatenate::concatenate(&refs)?];
                &joined
            } else {
                parts
            };
            // pages per leaf column (one for the flat columns of the window output)
            let mut leaves: Vec<Vec<polars_parquet::write::CompressedPage>> = vec![];
            let add = |leaves: &mut Vec<Vec<_>>, l: usize, page| {
                if leaves.len() <= l {
                    leaves.resize_with(l + 1, Vec::new);
                }
                leaves[l].push(page);
            };
            for array in parts {
                if let ParquetType::PrimitiveType(t) = &self.fields[i]
                    && let Some(page) = pages::try_page(
                        array.as_ref(),
                        t,
                        &self.encodings[i],
                        self.options,
                        &mut self.floats[i],
                        &mut self.lz4,
                    )
                {
                    add(&mut leaves, 0, page?);
                    continue;
                }
                for (l, pages) in array_to_columns(array, self.fields[i].clone(), self.options, &self.encodings[i])?
                    .into_iter()
                    .enumerate()
                {
                    for page in pages {
                        add(&mut leaves, l, compress(page?, vec![], self.options.compression)?);
                    }
                }
            }
            out.extend(leaves);
        }
        Ok(out)
    }
}

/// The second encoder thread of a [`ParquetOut`]: takes the columns `split..` of one row group at
/// a time and hands back their pages.
struct EncodeHelper {
    jobs: Option<std::sync::mpsc::Sender<Vec<ColumnParts>>>,
    done: std::sync::mpsc::Receiver<PolarsResult<EncodedColumns>>,
    handle: Option<std::thread::JoinHandle<()>>,
}

impl EncodeHelper {
    /// Starts the thread; `None` when the system refuses one (the writer then encodes alone).
    fn start(mut encoder: ColumnEncoder, first: usize) -> Option<EncodeHelper> {
        let (jobs, job_rx) = std::sync::mpsc::channel::<Vec<ColumnParts>>();
        let (done_tx, done) = std::sync::mpsc::channel();
        let handle = std::thread::Builder::new()
            .name("fenestra-encoder".into())
            .spawn(move || {
                for columns in job_rx {
                    if done_tx.send(encoder.encode(first, &columns)).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(EncodeHelper {
            jobs: Some(jobs),
            done,
            handle: Some(handle),
        })
    }

    fn lost() -> PolarsError {
        PolarsError::ComputeError("the Parquet encoder thread stopped (it panicked)".into())
    }

    /// Hands `columns` to the thread (`jobs` is only taken by `drop`).
    fn submit(&self, columns: Vec<ColumnParts>) -> PolarsResult<()> {
        let tx = self.jobs.as_ref().ok_or_else(Self::lost)?;
        tx.send(columns).map_err(|_| Self::lost())
    }

    /// The pages of the last submitted columns.
    fn receive(&self) -> PolarsResult<EncodedColumns> {
        self.done.recv().map_err(|_| Self::lost())?
    }
}

impl Drop for EncodeHelper {
    fn drop(&mut self) {
        self.jobs.take();
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl<W: std::io::Write> ParquetOut<W> {
    fn new(w: W, schema: &Schema, parquet: ParquetOptions, ints: IntEncoding) -> PolarsResult<Self> {
        use polars_parquet::write::{
            Encoding, FileWriter, StatisticsOptions, Version, WriteOptions, get_dtype_encoding, to_parquet_schema,
        };
        let arrow = polars::io::schema_to_arrow_checked(schema, CompatLevel::newest(), "parquet")?;
        let parquet_schema = to_parquet_schema(&arrow)?;
        use polars_arrow::datatypes::ArrowDataType as T;
        let (mut encodings, mut weights) = (vec![], vec![]);
        for f in arrow.iter_values() {
            // encoding cost per value: plain floats go through the compressor in full, twice
            // the weight of their bytes
            let (encoding, weight) = match &f.dtype {
                T::Float64 => (vec![Encoding::Plain], 16),
                T::Float32 => (vec![Encoding::Plain], 8),
                T::Int64 | T::UInt64 if ints == IntEncoding::Delta => (vec![Encoding::DeltaBinaryPacked], 8),
                T::Int32 | T::UInt32 if ints == IntEncoding::Delta => (vec![Encoding::DeltaBinaryPacked], 4),
                T::Int64 | T::UInt64 => (get_dtype_encoding(&f.dtype), 8),
                T::Utf8View | T::BinaryView => (get_dtype_encoding(&f.dtype), 16),
                _ => (get_dtype_encoding(&f.dtype), 4),
            };
            encodings.push(encoding);
            weights.push(weight);
        }
        // the first column whose weight would take the prefix past half (never the first)
        let total: usize = weights.iter().sum();
        let mut acc = 0;
        let split = weights
            .iter()
            .position(|w| {
                acc += w;
                2 * acc > total
            })
            .map_or(weights.len(), |i| i.max(1));
        let options = WriteOptions {
            statistics: StatisticsOptions::default(),
            compression: parquet.compression.parquet().into(),
            version: Version::V1,
            data_page_size: None,
        };
        let fields = parquet_schema.fields().to_vec();
        Ok(ParquetOut {
            writer: FileWriter::new_with_parquet_schema(w, arrow, parquet_schema, options),
            columns: ColumnEncoder {
                floats: vec![
                    match parquet.floats {
                        FloatEncoding::Auto => pages::FloatLayout::default(),
                        FloatEncoding::Plain => pages::FloatLayout::plain(),
                    };
                    fields.len()
                ],
                fields,
                encodings,
                options,
                lz4: lz4::Table::default(),
            },
            split,
            helper: None,
            pending: None,
        })
    }

    /// Writes `df` as one row group, each column's chunks as pages of its column chunk in turn
    /// (the chunks of all columns aligned, as a frame stacked from pieces has them).
    fn write(&mut self, df: &DataFrame) -> PolarsResult<()> {
        let mut n = 0;
        let mut columns: Vec<ColumnParts> = vec![];
        for batch in df.iter_chunks(CompatLevel::newest(), false) {
            if batch.is_empty() {
                continue;
            }
            n += batch.len();
            let (_, arrays) = batch.into_schema_and_arrays();
            if columns.is_empty() {
                columns = arrays.into_iter().map(|a| vec![a]).collect();
            } else {
                for (parts, a) in columns.iter_mut().zip(arrays) {
                    parts.push(a);
                }
            }
        }
        if n == 0 {
            return Ok(());
        }
        // the schema fixes `split`: a helper, once started, has columns in every row group
        let split = self.split;
        if split < columns.len() && self.helper.is_none() {
            self.helper = EncodeHelper::start(self.columns.clone(), split);
        }
        let Some(helper) = &self.helper else {
            let pages = self.columns.encode(0, &columns)?;
            return self.write_group(n as u64, pages);
        };
        // hand this group's last columns over first: the helper (FIFO) goes on to them as soon
        // as the pending group's are done, while this thread writes that group
        helper.submit(columns.split_off(split))?;
        self.write_pending()?;
        match self.columns.encode(0, &columns) {
            Ok(first) => {
                self.pending = Some((n as u64, first));
                Ok(())
            }
            Err(e) => {
                // collect the helper's answer all the same, so that nothing is left in flight
                let _ = self.helper.as_ref().map(EncodeHelper::receive);
                Err(e)
            }
        }
    }

    /// Completes the pending row group with the helper's pages and writes it.
    fn write_pending(&mut self) -> PolarsResult<()> {
        let Some((n, mut first)) = self.pending.take() else {
            return Ok(());
        };
        let second = self.helper.as_ref().ok_or_else(EncodeHelper::lost)?.receive()?;
        first.extend(second);
        self.write_group(n, first)
    }

    /// Writes one row group of `n` rows from the pages of every column.
    fn write_group(&mut self, n: u64, encoded: EncodedColumns) -> PolarsResult<()> {
        use polars_parquet::write::{DynIter, DynStreamingIterator, fallible_streaming_iterator};
        let rg = DynIter::new(encoded.iter().map(|pages| {
            Ok(DynStreamingIterator::new(fallible_streaming_iterator::convert(
                pages.iter().map(PolarsResult::Ok),
            )))
        }));
        self.writer.write(n, rg)
    }

    /// Writes the pending row group and the footer (with the Arrow schema, as polars does).
    fn finish(&mut self) -> PolarsResult<u64> {
        self.write_pending()?;
        self.helper.take();
        self.writer.end(None)
    }
}

/// `(first row, rows)` of the row groups `rows` rows are written in: [`RowFileWriter::ROW_GROUP`]
/// rows each, a short tail joining the group before it (so a group holds up to twice that).
fn row_groups(rows: usize) -> impl Iterator<Item = (usize, usize)> {
    let g = RowFileWriter::ROW_GROUP;
    let mut at = 0;
    std::iter::from_fn(move || {
        if at >= rows {
            return None;
        }
        let len = if rows - at < 2 * g { rows - at } else { g };
        at += len;
        Some((at - len, len))
    })
}

fn temp_path(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "out".into());
    path.with_file_name(format!(".{name}.fenestra-{}.tmp", std::process::id()))
}

/// Which input columns a job uses.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InputColumns {
    /// Event-time column (integer ms since the epoch, a Datetime, or float ms).
    pub time: String,
    /// Key column (integer or string), or `None` for one global group.
    pub key: Option<String>,
    /// Numeric value columns.
    pub values: Vec<String>,
}

/// How the key column is written back: with its input type.
#[derive(Clone, Debug, PartialEq)]
pub enum KeyOutput {
    /// No key column.
    None,
    /// Integer keys, written with this dtype.
    Int(DataType),
    /// String keys.
    Str,
}

impl KeyOutput {
    /// The dictionary kind for this key.
    pub fn kind(&self) -> KeyKind {
        match self {
            KeyOutput::None => KeyKind::None,
            KeyOutput::Int(_) => KeyKind::Int,
            KeyOutput::Str => KeyKind::Str,
        }
    }
}

fn column<'a>(df: &'a DataFrame, name: &str, source: &str) -> Result<&'a Column> {
    df.column(name).map_err(|_| Error::MissingColumn {
        column: name.to_string(),
        source_name: source.to_string(),
        available: df
            .get_column_names()
            .iter()
            .map(|c| c.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    })
}

/// Checks that every column exists with a usable type; returns how keys are written back.
pub fn check_schema(df: &DataFrame, cols: &InputColumns, source: &str) -> Result<KeyOutput> {
    let t = column(df, &cols.time, source)?;
    match t.dtype() {
        dt if dt.is_integer() || dt.is_float() => {}
        DataType::Datetime(_, _) => {}
        other => {
            return Err(Error::ColumnType {
                column: cols.time.clone(),
                found: other.to_string(),
                expected: "integer milliseconds since the epoch, a datetime, or float milliseconds".into(),
            });
        }
    }
    for v in &cols.values {
        let c = column(df, v, source)?;
        let dt = c.dtype();
        if !(dt.is_integer() || dt.is_float() || matches!(dt, DataType::Null)) {
            return Err(Error::ColumnType {
                column: v.clone(),
                found: dt.to_string(),
                expected: "a numeric type".into(),
            });
        }
    }
    match &cols.key {
        None => Ok(KeyOutput::None),
        Some(k) => {
            let c = column(df, k, source)?;
            match c.dtype() {
                dt if dt.is_integer() => Ok(KeyOutput::Int(dt.clone())),
                DataType::String => Ok(KeyOutput::Str),
                DataType::Null => Ok(KeyOutput::Int(DataType::Int64)),
                other => Err(Error::ColumnType {
                    column: k.clone(),
                    found: other.to_string(),
                    expected: "an integer or string type".into(),
                }),
            }
        }
    }
}

/// Event times of a column as i64 ms; `row_offset` numbers rows in error messages.
pub fn timestamps(c: &Column, name: &str, row_offset: u64) -> Result<Vec<i64>> {
    let mut out = Vec::with_capacity(c.len());
    timestamps_into(c, name, row_offset, &mut out)?;
    Ok(out)
}

/// [`timestamps`] appended to `out` (re-using its buffer).
pub fn timestamps_into(c: &Column, name: &str, row_offset: u64, out: &mut Vec<i64>) -> Result<()> {
    let base = out.len();
    let bad = |row: usize, reason: String| Error::InvalidTimestamp {
        column: name.to_string(),
        row: row_offset + row as u64,
        reason,
    };
    let ints: Column = match c.dtype() {
        DataType::Datetime(_, tz) => c
            .cast(&DataType::Datetime(TimeUnit::Milliseconds, tz.clone()))
            .and_then(|c| c.cast(&DataType::Int64))
            .map_err(Error::from)?,
        dt if dt.is_float() => {
            let f = c.cast(&DataType::Float64).map_err(Error::from)?;
            let ca = f.f64().map_err(Error::from)?;
            out.reserve(ca.len());
            for (i, v) in ca.iter().enumerate() {
                match v {
                    None => return Err(bad(i, "null timestamp".into())),
                    Some(x) if x.is_nan() => return Err(bad(i, "NaN timestamp".into())),
                    Some(x) if !x.is_finite() || x.abs() > MAX_ABS_TIMESTAMP_MS as f64 => {
                        return Err(bad(
                            i,
                            format!("{x} ms is outside the supported range of ±{MAX_ABS_TIMESTAMP_MS} ms"),
                        ));
                    }
                    Some(x) => out.push(x.floor() as i64),
                }
            }
            return Ok(());
        }
        dt if dt.is_integer() => {
            if matches!(dt, DataType::UInt64) {
                let ca = c.u64().map_err(Error::from)?;
                if let Some((i, v)) = ca
                    .iter()
                    .enumerate()
                    .find(|(_, v)| v.is_some_and(|v| v > MAX_ABS_TIMESTAMP_MS as u64))
                {
                    return Err(bad(
                        i,
                        format!(
                            "{} ms is outside the supported range of ±{MAX_ABS_TIMESTAMP_MS} ms",
                            v.unwrap_or(0)
                        ),
                    ));
                }
            }
            c.cast(&DataType::Int64).map_err(Error::from)?
        }
        other => {
            return Err(Error::ColumnType {
                column: name.into(),
                found: other.to_string(),
                expected: "integer, datetime or float milliseconds".into(),
            });
        }
    };
    let ca = ints.i64().map_err(Error::from)?;
    if ca.null_count() > 0 {
        let i = ca.iter().position(|v| v.is_none()).unwrap_or(0);
        return Err(bad(i, "null timestamp".into()));
    }
    out.reserve(ca.len());
    for arr in ca.downcast_iter() {
        out.extend_from_slice(arr.values());
    }
    crate::pipeline::check_timestamps(&out[base..], name, row_offset)
}

/// A numeric column as f64 in the engine's representation (NaN canonical, nulls marked).
pub fn values_f64(c: &Column, out: &mut Vec<f64>) -> Result<()> {
    if matches!(c.dtype(), DataType::Null) {
        out.extend(std::iter::repeat_n(null_value(), c.len()));
        return Ok(());
    }
    let f = c.cast(&DataType::Float64).map_err(Error::from)?;
    let ca = f.f64().map_err(Error::from)?;
    out.reserve(ca.len());
    for arr in ca.downcast_iter() {
        match arr.validity() {
            None => ingest_values(arr.values(), None, out),
            Some(bits) => {
                let valid: Vec<bool> = bits.iter().collect();
                ingest_values(arr.values(), Some(&valid), out)
            }
        }
    }
    Ok(())
}

/// Encodes the key column of `df` with `dict` into `out`.
pub fn encode_keys(df: &DataFrame, key: Option<&str>, dict: &mut KeyDict, out: &mut Vec<u32>) -> Result<()> {
    match (key, dict.kind()) {
        (None, _) | (_, KeyKind::None) => dict.encode_none(df.height(), out),
        (Some(k), KeyKind::Int) => {
            let c = df.column(k).map_err(Error::from)?;
            // 32-bit keys are encoded as they are (a cast would copy the column first)
            match c.dtype() {
                DataType::UInt32 if c.null_count() == 0 => encode_int_chunks(c.u32().map_err(Error::from)?, dict, out),
                DataType::Int32 if c.null_count() == 0 => encode_int_chunks(c.i32().map_err(Error::from)?, dict, out),
                _ => {
                    let c = c.cast(&DataType::Int64).map_err(Error::from)?;
                    let ca = c.i64().map_err(Error::from)?;
                    if ca.null_count() == 0 {
                        encode_int_chunks(ca, dict, out)
                    } else {
                        dict.encode_ints(ca.iter(), out)
                    }
                }
            }
        }
        (Some(k), KeyKind::Str) => {
            let c = df.column(k).map_err(Error::from)?;
            let ca = c.str().map_err(Error::from)?;
            dict.encode_strs(ca.iter(), out)
        }
    }
}

/// Encodes a null-free integer key column into `out`, chunk by chunk.
fn encode_int_chunks<T>(ca: &ChunkedArray<T>, dict: &mut KeyDict, out: &mut Vec<u32>) -> Result<()>
where
    T: PolarsNumericType,
    T::Native: Into<i64>,
{
    out.reserve(ca.len());
    for arr in ca.downcast_iter() {
        dict.encode_int_iter(arr.values().iter().map(|&v| v.into()), out)?;
    }
    Ok(())
}

/// The time and value columns of `df` as slices of their own buffers, when each is one chunk
/// without nulls of `Int64` (times) or `Float64` (values).
fn borrowed_columns<'a>(df: &'a DataFrame, cols: &InputColumns) -> Option<(&'a [i64], Vec<&'a [f64]>)> {
    let ts = df.column(&cols.time).ok()?;
    if ts.dtype() != &DataType::Int64 || ts.null_count() > 0 {
        return None;
    }
    let ts = ts.i64().ok()?.cont_slice().ok()?;
    let values = cols
        .values
        .iter()
        .map(|v| {
            let c = df.column(v).ok()?;
            if c.dtype() != &DataType::Float64 || c.null_count() > 0 {
                return None;
            }
            c.f64().ok()?.cont_slice().ok()
        })
        .collect::<Option<Vec<_>>>()?;
    Some((ts, values))
}

/// Converts a frame (or a slice of one) to an engine batch. `row_offset` is the frame's first
/// row within the whole input, for error messages.
pub fn frame_to_batch(df: &DataFrame, cols: &InputColumns, dict: &mut KeyDict, row_offset: u64) -> Result<EventBatch> {
    let mut batch = EventBatch::default();
    frame_to_batch_into(df, cols, dict, row_offset, &mut batch)?;
    Ok(batch)
}

/// [`frame_to_batch`] into `batch`, which is cleared first and whose buffers are re-used (take
/// one from [`crate::Pipeline::recycled_batch`] to avoid fresh memory per batch).
pub fn frame_to_batch_into(
    df: &DataFrame,
    cols: &InputColumns,
    dict: &mut KeyDict,
    row_offset: u64,
    batch: &mut EventBatch,
) -> Result<()> {
    batch.ts.clear();
    batch.keys.clear();
    timestamps_into(
        df.column(&cols.time).map_err(Error::from)?,
        &cols.time,
        row_offset,
        &mut batch.ts,
    )?;
    encode_keys(df, cols.key.as_deref(), dict, &mut batch.keys)?;
    batch.values.resize_with(cols.values.len(), Vec::new);
    for (v, out) in cols.values.iter().zip(batch.values.iter_mut()) {
        out.clear();
        values_f64(df.column(v).map_err(Error::from)?, out)?;
    }
    Ok(())
}

/// The key column of output rows, with the key's input type.
pub fn key_column(ids: &[u32], keys: &KeyValues, out: &KeyOutput, name: &str) -> Result<Option<Column>> {
    Ok(match out {
        KeyOutput::None => None,
        // the key type of generated and peer files: built at its width, without an i64 column
        // and a cast
        KeyOutput::Int(DataType::UInt32) => {
            let (vals, validity) = int_keys(ids, keys, |v| u32::try_from(v).ok())?;
            Some(UInt32Chunked::from_vec_validity(name.into(), vals, validity).into_column())
        }
        KeyOutput::Int(dt) => {
            let (vals, validity) = int_keys(ids, keys, Some)?;
            let c = Int64Chunked::from_vec_validity(name.into(), vals, validity).into_column();
            Some(if dt == &DataType::Int64 {
                c
            } else {
                c.strict_cast(dt).map_err(Error::from)?
            })
        }
        KeyOutput::Str => {
            let v: Vec<Option<&str>> = ids.iter().map(|&k| keys.str_value(k)).collect();
            Some(Column::new(name.into(), v))
        }
    })
}

/// Integer key values of `ids` converted by `conv` (0 under a null key), with a validity bitmap
/// only when the null key occurs. A value `conv` refuses (a key that does not fit the output
/// type, which a key read from a column of that type never is) is an error.
fn int_keys<T: Copy + Default>(
    ids: &[u32],
    keys: &KeyValues,
    conv: impl Fn(i64) -> Option<T>,
) -> Result<(Vec<T>, Option<Bitmap>)> {
    let mut vals = Vec::with_capacity(ids.len());
    let mut nulls = false;
    for &k in ids {
        match keys.int_value(k) {
            Some(v) => {
                vals.push(conv(v).ok_or_else(|| Error::config(format!("key {v} does not fit the key column's type")))?)
            }
            None => {
                nulls = true;
                vals.push(T::default());
            }
        }
    }
    let validity = nulls.then(|| ids.iter().map(|&k| !keys.is_null(k)).collect::<Bitmap>());
    Ok((vals, validity))
}

/// A float column from per-row optional values; the validity bitmap is only built when a value
/// is null.
fn f64_column(name: String, n: usize, value: impl Fn(usize) -> Option<f64> + Clone) -> Column {
    f64_column_iter(name, n, (0..n).map(value))
}

/// A float column of `n` optional values; `values` is walked a second time (for the validity
/// bitmap) only when one of them is null.
fn f64_column_iter(name: String, n: usize, values: impl Iterator<Item = Option<f64>> + Clone) -> Column {
    let mut vals = Vec::with_capacity(n);
    let mut nulls = false;
    for v in values.clone() {
        match v {
            Some(v) => vals.push(v),
            None => {
                nulls = true;
                vals.push(f64::NAN);
            }
        }
    }
    let validity = nulls.then(|| values.map(|v| v.is_some()).collect::<Bitmap>());
    Float64Chunked::from_vec_validity(name.into(), vals, validity).into_column()
}

/// The column of aggregate `kind` over value column `c` of every piece's rows: one loop per
/// piece and aggregate, the validity only where some row has too few values (a row at a time
/// through [`WindowRows::value`] was ~4% of a Q1 run's CPU).
fn agg_column(name: String, pieces: &[WindowRows], n: usize, c: usize, kind: AggKind) -> Column {
    let mut vals: Vec<f64> = Vec::with_capacity(n);
    let min = kind.min_values();
    let mut nulls = false;
    for p in pieces {
        if p.carries_sums() {
            agg_values(&p.sums, c, p.ncols, kind, &mut vals, &mut nulls);
        } else {
            agg_values(&p.cols, c, p.ncols, kind, &mut vals, &mut nulls);
        }
    }
    let validity = nulls.then(|| {
        pieces
            .iter()
            .flat_map(|p| (0..p.len()).map(move |r| p.partial(r, c).n >= min))
            .collect::<Bitmap>()
    });
    Float64Chunked::from_vec_validity(name.into(), vals, validity).into_column()
}

/// Appends the values of aggregate `kind` over column `c` of `states` (`ncols` per row) to
/// `vals`; `nulls` is set when a row has too few values for it.
fn agg_values<P: Partial>(states: &[P], c: usize, ncols: usize, kind: AggKind, vals: &mut Vec<f64>, nulls: &mut bool) {
    let min = kind.min_values();
    let parts = states.get(c..).unwrap_or_default();
    let step = ncols.max(1);
    macro_rules! fill {
        ($k:expr) => {
            if step == 1 {
                vals.extend(parts.iter().map(|q| {
                    let q = q.to_full();
                    *nulls |= q.n < min;
                    $k.value_of(&q)
                }))
            } else {
                vals.extend(parts.iter().step_by(step).map(|q| {
                    let q = q.to_full();
                    *nulls |= q.n < min;
                    $k.value_of(&q)
                }))
            }
        };
    }
    match kind {
        AggKind::Sum => fill!(AggKind::Sum),
        AggKind::Min => fill!(AggKind::Min),
        AggKind::Max => fill!(AggKind::Max),
        AggKind::Mean => fill!(AggKind::Mean),
        AggKind::Var => fill!(AggKind::Var),
        AggKind::Std => fill!(AggKind::Std),
    }
}

/// Window rows as a DataFrame with the columns of DESIGN.md §4:
/// `key, window_start, window_end, revision, count, <agg>_<col>...`. Consumes the rows (their
/// columns move into the frame without a copy).
pub fn rows_to_frame(
    rows: WindowRows,
    keys: &KeyValues,
    key_out: &KeyOutput,
    value_cols: &[String],
    aggs: &Aggregates,
) -> Result<DataFrame> {
    pieces_to_frame(&mut [rows], keys, key_out, value_cols, aggs)
}

/// Rows handed over in pieces as one DataFrame (the columns of [`rows_to_frame`]) with a chunk
/// per piece that has rows, aligned across the columns: every piece's plain columns move into
/// the frame without a copy. The file writer's frame: its Parquet encoder writes the chunks as
/// pages of one row group (joining them was ~3% of a run's CPU). Pieces left: the aggregate
/// states' buffers, to be filled again.
pub fn pieces_to_stacked_frame(
    pieces: &mut [WindowRows],
    keys: &KeyValues,
    key_out: &KeyOutput,
    value_cols: &[String],
    aggs: &Aggregates,
) -> Result<DataFrame> {
    let mut live = pieces.iter_mut().filter(|p| !p.is_empty());
    let Some(first) = live.next() else {
        return pieces_to_frame(pieces, keys, key_out, value_cols, aggs);
    };
    let mut df = pieces_to_frame(std::slice::from_mut(first), keys, key_out, value_cols, aggs)?;
    for p in live {
        let next = pieces_to_frame(std::slice::from_mut(p), keys, key_out, value_cols, aggs)?;
        df.vstack_mut_owned(next).map_err(Error::from)?;
    }
    Ok(df)
}

/// Rows handed over in pieces as one DataFrame (the columns of [`rows_to_frame`]), in one
/// chunk per column: each column is built once over all the pieces (a single piece's plain
/// columns move without a copy), instead of a frame per piece, a stack and a rechunk. The
/// pieces are left with what was copied rather than moved: their buffers can be filled again
/// ([`crate::Pipeline::recycle`]).
pub fn pieces_to_frame(
    pieces: &mut [WindowRows],
    keys: &KeyValues,
    key_out: &KeyOutput,
    value_cols: &[String],
    aggs: &Aggregates,
) -> Result<DataFrame> {
    /// One column over every piece: moved when there is one piece, concatenated otherwise.
    fn gather<T: Copy>(pieces: &mut [WindowRows], n: usize, col: impl Fn(&mut WindowRows) -> &mut Vec<T>) -> Vec<T> {
        if let [one] = pieces {
            return std::mem::take(col(one));
        }
        let mut out = Vec::with_capacity(n);
        for p in pieces.iter_mut() {
            out.extend_from_slice(col(p));
        }
        out
    }
    let n: usize = pieces.iter().map(WindowRows::len).sum();
    let mut columns: Vec<Column> = Vec::with_capacity(5 + value_cols.len() * aggs.kinds().len());
    // the aggregates first: they read every piece's rows, which the moves below empty
    let mut agg_cols = Vec::with_capacity(value_cols.len() * aggs.kinds().len());
    for (c, name) in value_cols.iter().enumerate() {
        for &kind in aggs.kinds() {
            agg_cols.push(agg_column(format!("{}_{}", kind.name(), name), pieces, n, c, kind));
        }
    }
    let ids = gather(pieces, n, |p| &mut p.key);
    if let Some(k) = key_column(&ids, keys, key_out, "key")? {
        columns.push(k);
    }
    drop(ids);
    let start = gather(pieces, n, |p| &mut p.start);
    columns.push(Int64Chunked::from_vec("window_start".into(), start).into_column());
    let end = gather(pieces, n, |p| &mut p.end);
    columns.push(Int64Chunked::from_vec("window_end".into(), end).into_column());
    let revision = gather(pieces, n, |p| &mut p.revision);
    columns.push(UInt32Chunked::from_vec("revision".into(), revision).into_column());
    let count = gather(pieces, n, |p| &mut p.count);
    columns.push(UInt64Chunked::from_vec("count".into(), count).into_column());
    columns.extend(agg_cols);
    DataFrame::new_infer_height(columns).map_err(Error::from)
}

/// The late events as rows of the original input frame (all its columns).
pub fn late_frame(input: &DataFrame, late: &LateEvents) -> Result<DataFrame> {
    late_rows(input, &late.row, 0)
}

/// The rows of `chunk` (whose first row is row `chunk_start` of the whole input) named by the
/// input row numbers `rows`, all of which lie in the chunk.
pub fn late_rows(chunk: &DataFrame, rows: &[u64], chunk_start: u64) -> Result<DataFrame> {
    let mut idx = Vec::with_capacity(rows.len());
    for &r in rows {
        let i = r
            .checked_sub(chunk_start)
            .filter(|i| (*i as usize) < chunk.height())
            .ok_or_else(|| Error::config(format!("late row {r} is not in this chunk of the input")))?;
        idx.push(i as IdxSize);
    }
    let idx = IdxCa::from_vec("idx".into(), idx);
    chunk.take(&idx).map_err(Error::from)
}

/// Names of the output columns for `value_cols` and `aggs` (after `count`).
pub fn agg_column_names(value_cols: &[String], aggs: &Aggregates) -> Vec<String> {
    value_cols
        .iter()
        .flat_map(|c| {
            aggs.kinds()
                .iter()
                .map(move |k: &AggKind| format!("{}_{}", k.name(), c))
        })
        .collect()
}

/// The model's output columns: `prediction` and `model_version` for forecasts, plus
/// `anomaly_score` for anomaly detection; `probability` and `model_version` for classification.
pub fn ml_columns(ml: &crate::ml::MlOutput, task: crate::ml::Task) -> Vec<Column> {
    use crate::ml::Task;
    let n = ml.model_version.len();
    let version = Column::new("model_version".into(), ml.model_version.clone());
    match task {
        Task::Forecast => vec![f64_column("prediction".into(), n, |i| ml.prediction[i]), version],
        Task::Anomaly => vec![
            f64_column("prediction".into(), n, |i| ml.prediction[i]),
            f64_column("anomaly_score".into(), n, |i| ml.score[i]),
            version,
        ],
        Task::Classify => vec![f64_column("probability".into(), n, |i| ml.score[i]), version],
    }
}

/// Output taken from a pipeline as DataFrames.
#[derive(Clone, Debug)]
pub struct Frames {
    /// Window rows with the columns of DESIGN.md §4.
    pub windows: DataFrame,
    /// Late events: the time, key and value columns.
    pub late: DataFrame,
}

impl crate::pipeline::Pipeline {
    fn key_output(&self) -> KeyOutput {
        self.key_output.clone().unwrap_or(match self.keys().kind() {
            KeyKind::None => KeyOutput::None,
            KeyKind::Int => KeyOutput::Int(DataType::Int64),
            KeyKind::Str => KeyOutput::Str,
        })
    }

    /// Pushes a polars DataFrame with the configured time, key and value columns. The schema is
    /// checked first (a missing column or a wrong type is an error that names it) and the whole
    /// frame is rejected on a bad timestamp, so nothing is half-applied.
    ///
    /// ```
    /// use fenestra::{Pipeline, BackendChoice};
    /// use polars::prelude::*;
    /// let mut p = Pipeline::builder().window("tumble:1s".parse()?).backend(BackendChoice::Cpu).build()?;
    /// let df = df!("ts" => [100i64, 900, 1500], "key" => ["a", "b", "a"], "value" => [1.0, 2.0, 3.0]).unwrap();
    /// // string keys need a pipeline built for them
    /// assert!(p.push_frame(&df).unwrap_err().to_string().contains("string"));
    /// let mut p = Pipeline::builder().key_kind(fenestra::KeyKind::Str).backend(BackendChoice::Cpu).build()?;
    /// p.push_frame(&df)?;
    /// let out = p.finish_frames()?;
    /// assert_eq!(out.windows.height(), 3);
    /// # Ok::<(), fenestra::Error>(())
    /// ```
    pub fn push_frame(&mut self, df: &DataFrame) -> Result<()> {
        let cfg = self.config();
        let cols = InputColumns {
            time: cfg.time_column.clone(),
            key: if cfg.key_kind == KeyKind::None {
                None
            } else {
                cfg.key_column.clone()
            },
            values: cfg.value_columns.clone(),
        };
        let key_out = check_schema(df, &cols, "the pushed DataFrame")?;
        if key_out.kind() != self.keys().kind() {
            let what = |k: KeyKind| match k {
                KeyKind::None => "no key",
                KeyKind::Int => "integer keys",
                KeyKind::Str => "string keys",
            };
            return Err(Error::ColumnType {
                column: cols.key.clone().unwrap_or_default(),
                found: format!(
                    "{} ({})",
                    what(key_out.kind()),
                    df.column(cols.key.as_deref().unwrap_or(""))
                        .map(|c| c.dtype().to_string())
                        .unwrap_or_default()
                ),
                expected: format!(
                    "{} (the pipeline was built with key_kind {:?})",
                    what(self.keys().kind()),
                    self.keys().kind()
                ),
            });
        }
        if self.key_output.is_none() {
            self.key_output = Some(key_out);
        }
        let offset = self.metrics().events_in;
        self.push_frame_columns(df, &cols, offset)
    }

    /// Pushes the rows of `df` (columns named by `cols`, checked by [`check_schema`]; `row_offset`
    /// is its first row in the input, for error messages). Where the columns allow it — one
    /// chunk each, no nulls, `Int64` times and `Float64` values — their own buffers are assigned
    /// in place (no copy into a batch, [`crate::Pipeline::push_int_keys`]); otherwise the frame
    /// is converted with [`frame_to_batch_into`] first.
    pub fn push_frame_columns(&mut self, df: &DataFrame, cols: &InputColumns, row_offset: u64) -> Result<()> {
        let Some((ts, values)) = borrowed_columns(df, cols) else {
            self.check_open()?;
            let mut batch = self.recycled_batch();
            frame_to_batch_into(df, cols, self.keys_mut(), row_offset, &mut batch)?;
            return self.push_encoded(batch);
        };
        // the same checks, in the same order, as the converting path: times, then keys
        let (t0, mut batch) = self.begin_push(ts, &cols.time, row_offset)?;
        encode_keys(df, cols.key.as_deref(), self.keys_mut(), &mut batch.keys)?;
        self.fill_and_push(ts, batch, &values, t0)
    }

    /// Pushes `rows` of a chunk decoded by an [`EventReader`] (`time` names the time column, for
    /// error messages; `row_offset` is the first row's place in the input). `key_ids` holds the
    /// pipeline's ids of the keys the reader has numbered, each encoded once as its chunk
    /// brought it ([`KeyIds::extend`], called for this chunk first): a row's key is then one
    /// lookup, not a hash.
    pub fn push_event_columns(
        &mut self,
        columns: &EventColumns,
        key_ids: &KeyIds,
        rows: std::ops::Range<usize>,
        time: &str,
        row_offset: u64,
    ) -> Result<()> {
        let past_end = || Error::config(format!("rows {rows:?} past the end of a chunk of {}", columns.len()));
        let ts = columns.ts.get(rows.clone()).ok_or_else(past_end)?;
        let values = columns
            .values
            .iter()
            .map(|v| v.get(rows.clone()).ok_or_else(past_end))
            .collect::<Result<Vec<&[f64]>>>()?;
        let (t0, mut batch) = self.begin_push(ts, time, row_offset)?;
        if self.keys().kind() == KeyKind::None {
            self.keys_mut().encode_none(ts.len(), &mut batch.keys)?;
        } else {
            let index = columns.key_index.get(rows.clone()).ok_or_else(past_end)?;
            batch.keys.reserve(index.len());
            for &n in index {
                let id = key_ids
                    .get(n)
                    .ok_or_else(|| Error::config(format!("key number {n} was not encoded (KeyIds::extend)")))?;
                batch.keys.push(id);
            }
        }
        self.fill_and_push(ts, batch, &values, t0)
    }

    /// Converts taken output to DataFrames.
    pub fn frames(&self, out: crate::pipeline::Output) -> Result<Frames> {
        let cfg = self.config();
        let key_out = self.key_output();
        let windows = rows_to_frame(
            out.rows,
            self.keys().values(),
            &key_out,
            &cfg.value_columns,
            &cfg.aggregates,
        )?;
        let mut cols = vec![Int64Chunked::from_vec(cfg.time_column.as_str().into(), out.late.ts).into_column()];
        if let (Some(k), Some(name)) = (
            key_column(
                &out.late.key,
                self.keys().values(),
                &key_out,
                cfg.key_column.as_deref().unwrap_or("key"),
            )?,
            cfg.key_column.as_ref(),
        ) {
            let _ = name;
            cols.push(k);
        }
        let none = vec![];
        for (c, name) in cfg.value_columns.iter().enumerate() {
            let v = out.late.values.get(c).unwrap_or(&none);
            cols.push(f64_column(name.clone(), v.len(), |i| {
                (!crate::agg::is_null_value(v[i])).then_some(v[i])
            }));
        }
        let late = DataFrame::new_infer_height(cols).map_err(Error::from)?;
        Ok(Frames { windows, late })
    }

    /// [`Pipeline::poll`](crate::Pipeline::poll) as DataFrames.
    pub fn poll_frames(&mut self) -> Result<Frames> {
        let out = self.poll()?;
        self.frames(out)
    }

    /// [`Pipeline::finish`](crate::Pipeline::finish) as DataFrames.
    pub fn finish_frames(&mut self) -> Result<Frames> {
        let out = self.finish()?;
        self.frames(out)
    }
}

/// Rows of output on their way to the writer thread.
struct RowChunk {
    /// Rows as they were emitted (moved, never copied on the caller's thread), each with its
    /// model outputs.
    pieces: Vec<(WindowRows, Option<crate::ml::MlOutput>)>,
    keys_tail: KeyValues,
}

/// What the writer thread measured.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct WriteTimes {
    /// Building DataFrames from rows, seconds (on the writer thread).
    pub build_s: f64,
    /// Encoding and writing, seconds (on the writer thread).
    pub write_s: f64,
    /// Time the caller waited for the writer in [`RowFileWriter::finish`], seconds.
    pub wait_s: f64,
    /// Rows written.
    pub rows: u64,
}

/// Writes window rows to a Parquet or CSV file while the stream runs: the caller hands rows over
/// as they are emitted, and a writer thread turns them into DataFrames (DESIGN.md §4 columns,
/// plus the model's columns when there is a model) and writes them in row groups of at least
/// [`RowFileWriter::ROW_GROUP`] rows, so output encoding overlaps aggregation and the rows are
/// never all held in memory. The file is written under a temporary name and renamed into place
/// by [`RowFileWriter::finish`]; dropped unfinished or failed, it leaves nothing behind. A bounded
/// channel gives backpressure when the disk is slower than the stream.
pub struct RowFileWriter {
    tx: Option<std::sync::mpsc::SyncSender<RowChunk>>,
    handle: Option<std::thread::JoinHandle<Result<WriteTimes>>>,
    tmp: PathBuf,
    path: PathBuf,
    keys_sent: usize,
    pending: Vec<(WindowRows, Option<crate::ml::MlOutput>)>,
    pending_rows: usize,
    /// Emptied row buffers coming back from the writer thread ([`RowFileWriter::spent`]).
    spent: std::sync::mpsc::Receiver<WindowRows>,
    /// Set once the file is in place; until then `Drop` removes the temporary file.
    renamed: bool,
}

impl RowFileWriter {
    /// Rows per row group (and per DataFrame handed to the encoder), at least. 65,536 rather
    /// than 131,072: the writer's share of work at the end of a run (after the last window, with
    /// nothing left to overlap) and the rows held in flight are halved. 5M-event peer workload,
    /// 15 alternating runs: Q1 0.223 -> 0.209 s, Q2 0.307 -> 0.296 s, Q3 (9) 0.436 -> 0.413 s,
    /// page faults -10-15%, files 0.05% larger; 32,768 was no better for Q2.
    pub const ROW_GROUP: usize = 1 << 16;
    /// Emptied row buffers the writer thread holds for the caller at most; more are freed.
    const SPENT: usize = 8;

    /// Row buffers the writer thread has emptied, to be filled again: hand them to
    /// [`crate::Pipeline::recycle`]. Rows whose plain columns were moved into the file's frame
    /// come back with their aggregate states' buffer alone. Never blocks.
    pub fn spent(&mut self) -> impl Iterator<Item = WindowRows> + '_ {
        self.spent.try_iter()
    }

    /// Creates the temporary file at once (so an unwritable path fails before any work) and
    /// starts the writer thread. Parquet pages are LZ4-compressed.
    pub fn create(
        path: &Path,
        key_out: KeyOutput,
        key_kind: KeyKind,
        value_cols: Vec<String>,
        aggs: Aggregates,
        task: Option<crate::ml::Task>,
    ) -> Result<RowFileWriter> {
        Self::create_with(path, key_out, key_kind, value_cols, aggs, task, Compression::default())
    }

    /// [`RowFileWriter::create`] with the given Parquet compression, or [`ParquetOptions`] (CSV
    /// takes none).
    pub fn create_with(
        path: &Path,
        key_out: KeyOutput,
        key_kind: KeyKind,
        value_cols: Vec<String>,
        aggs: Aggregates,
        task: Option<crate::ml::Task>,
        options: impl Into<ParquetOptions>,
    ) -> Result<RowFileWriter> {
        let options = options.into();
        let format = Format::of(path)?;
        let tmp = temp_path(path);
        let file = OutFile::create(&tmp).map_err(|e| Error::Io {
            action: "cannot write",
            path: tmp.clone(),
            source: e,
        })?;
        let (tx, rx) = std::sync::mpsc::sync_channel::<RowChunk>(1);
        let (spent_tx, spent_rx) = std::sync::mpsc::sync_channel::<WindowRows>(Self::SPENT);
        let spent = Some(spent_tx);
        let target = path.to_path_buf();
        let tmp_for_spawn = tmp.clone();
        let handle = std::thread::Builder::new()
            .name("fenestra-writer".into())
            .spawn(move || {
                let werr = |e: PolarsError| Error::Polars(format!("writing '{}': {e}", target.display()));
                let ioerr = |e: std::io::Error| Error::Io {
                    action: "cannot write",
                    path: target.clone(),
                    source: e,
                };
                let mut keys = KeyValues::new(key_kind);
                let mut times = WriteTimes::default();
                let mut out = file;
                enum Enc<'a> {
                    None,
                    Parquet(Box<ParquetOut<&'a mut OutFile>>),
                    Csv(polars::io::csv::write::BatchedWriter<&'a mut OutFile>),
                }
                {
                    let mut enc = Enc::None;
                    let out_ref = &mut out;
                    let mut out_slot = Some(out_ref);
                    while let Ok(chunk) = rx.recv() {
                        let t0 = std::time::Instant::now();
                        keys.append_tail(&chunk.keys_tail);
                        let mut pieces = chunk.pieces;
                        if pieces.is_empty() {
                            // no rows at all: an empty frame still carries the schema
                            pieces.push((WindowRows::new(value_cols.len()), Some(Default::default())));
                        }
                        let n: usize = pieces.iter().map(|(rows, _)| rows.len()).sum();
                        times.rows += n as u64;
                        // model outputs of every piece, aligned with the rows (null where a
                        // piece came without them; `write` checked the lengths)
                        let mut ml_all = task.map(|_| crate::ml::MlOutput::default());
                        let mut rows_all = Vec::with_capacity(pieces.len());
                        for (rows, ml) in pieces {
                            if let Some(all) = &mut ml_all {
                                all.append(ml.unwrap_or_else(|| crate::ml::MlOutput::nulls(rows.len())));
                            }
                            rows_all.push(rows);
                        }
                        // a chunk per piece, written as pages of one row group; with a model,
                        // one chunk per column, aligned with the model's columns
                        let mut df = if task.is_some() {
                            pieces_to_frame(&mut rows_all, &keys, &key_out, &value_cols, &aggs)?
                        } else {
                            pieces_to_stacked_frame(&mut rows_all, &keys, &key_out, &value_cols, &aggs)?
                        };
                        // the rows' buffers go back to the caller to be filled again: memory
                        // that is already mapped (a fresh buffer per batch cost a hop run ~15%
                        // of its CPU time in page faults, on the store's thread)
                        if let Some(spent) = &spent {
                            for mut r in rows_all {
                                r.clear();
                                if r.states_capacity() > 0 && spent.try_send(r).is_err() {
                                    break;
                                }
                            }
                        }
                        if let (Some(task), Some(ml)) = (task, &ml_all) {
                            for c in ml_columns(ml, task) {
                                df.with_column(c).map_err(Error::from)?;
                            }
                        }
                        let t1 = std::time::Instant::now();
                        times.build_s += (t1 - t0).as_secs_f64();
                        if let Enc::None = enc {
                            let w = out_slot.take().ok_or_else(|| Error::Polars("writer reused".into()))?;
                            enc = match format {
                                Format::Parquet => Enc::Parquet(Box::new(
                                    ParquetOut::new(w, df.schema(), options, IntEncoding::Delta).map_err(werr)?,
                                )),
                                Format::Csv => Enc::Csv(
                                    CsvWriter::new(w)
                                        .include_header(true)
                                        .batched(df.schema())
                                        .map_err(werr)?,
                                ),
                            };
                        }
                        for (at, len) in row_groups(df.height()) {
                            let part = df.slice(at as i64, len);
                            match &mut enc {
                                Enc::Parquet(w) => w.write(&part).map_err(werr)?,
                                Enc::Csv(w) => w.write_batch(&part).map_err(werr)?,
                                Enc::None => {}
                            }
                        }
                        times.write_s += t1.elapsed().as_secs_f64();
                    }
                    let t1 = std::time::Instant::now();
                    match &mut enc {
                        Enc::Parquet(w) => {
                            w.finish().map_err(werr)?;
                        }
                        Enc::Csv(w) => w.finish().map_err(werr)?,
                        Enc::None => {}
                    }
                    times.write_s += t1.elapsed().as_secs_f64();
                }
                out.finish().map_err(ioerr)?;
                Ok(times)
            })
            .map_err(|e| {
                let _ = std::fs::remove_file(&tmp_for_spawn);
                Error::config(format!("cannot start the writer thread: {e}"))
            })?;
        Ok(RowFileWriter {
            tx: Some(tx),
            handle: Some(handle),
            tmp,
            path: path.to_path_buf(),
            keys_sent: 0,
            pending: vec![],
            pending_rows: 0,
            spent: spent_rx,
            renamed: false,
        })
    }

    /// Queues `rows` (and their model outputs, aligned) for writing; `keys` is the pipeline's
    /// key dictionary. Rows are handed to the writer thread in chunks of at least
    /// [`Self::ROW_GROUP`] rows; this blocks when the writer is a chunk behind. One chunk
    /// queued, not more: each is ~10 MB of rows that fresh pages back (a queue of two cost a hop
    /// run ~45 MB more memory and ~0.05 s of kernel time), and the writer is the slower side.
    pub fn write(&mut self, rows: WindowRows, ml: Option<crate::ml::MlOutput>, keys: &KeyValues) -> Result<()> {
        if let Some(ml) = &ml
            && !ml.covers(rows.len())
        {
            return Err(Error::config(format!(
                "model outputs for {} rows handed over with {} window rows",
                ml.model_version.len(),
                rows.len()
            )));
        }
        if rows.is_empty() {
            return Ok(());
        }
        self.pending_rows += rows.len();
        self.pending.push((rows, ml));
        if self.pending_rows >= Self::ROW_GROUP {
            self.send(keys)?;
        }
        Ok(())
    }

    fn send(&mut self, keys: &KeyValues) -> Result<()> {
        let chunk = RowChunk {
            pieces: std::mem::take(&mut self.pending),
            keys_tail: keys.tail(self.keys_sent),
        };
        self.pending_rows = 0;
        self.keys_sent = keys.len();
        let Some(tx) = &self.tx else {
            return Err(Error::Closed("the output writer is closed".into()));
        };
        if tx.send(chunk).is_err() {
            // The writer stopped: its error says why.
            return Err(self
                .join()
                .err()
                .unwrap_or_else(|| Error::Closed("the output writer stopped".into())));
        }
        Ok(())
    }

    fn join(&mut self) -> Result<WriteTimes> {
        self.tx.take();
        match self.handle.take() {
            Some(h) => h
                .join()
                .map_err(|_| Error::Closed("the output writer thread panicked".into()))?,
            None => Err(Error::Closed("the output writer already finished".into())),
        }
    }

    /// Writes what is left, waits for the writer thread and renames the file into place.
    pub fn finish(mut self, keys: &KeyValues) -> Result<WriteTimes> {
        let t0 = std::time::Instant::now();
        // Always one chunk at least, so that a job without rows still writes the header/schema.
        let mut times = self.send(keys).and_then(|_| self.join()).and_then(|times| {
            std::fs::rename(&self.tmp, &self.path).map_err(|e| Error::Io {
                action: "cannot write",
                path: self.path.clone(),
                source: e,
            })?;
            Ok(times)
        })?;
        self.renamed = true;
        times.wait_s = t0.elapsed().as_secs_f64();
        Ok(times)
    }
}

impl Drop for RowFileWriter {
    fn drop(&mut self) {
        if self.handle.is_some() {
            let _ = self.join();
        }
        if !self.renamed {
            let _ = std::fs::remove_file(&self.tmp);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::{ColPartial, SumPartial};

    fn rows(n: usize, first_key: u32) -> WindowRows {
        let mut r = WindowRows::new(1);
        for i in 0..n {
            let v = i as f64 * 0.5;
            let mut p = ColPartial::IDENTITY;
            p.push::<true>(v);
            p.push::<true>(v + 1.0);
            r.push(
                first_key + (i % 3) as u32,
                i as i64 * 1000,
                i as i64 * 1000 + 1000,
                0,
                2,
                &[p],
                0,
            );
        }
        r
    }

    #[test]
    fn int_key_columns_keep_their_type_and_null_key() {
        let mut d = KeyDict::new(KeyKind::Int);
        let mut ids = vec![];
        d.encode_ints([Some(7), None, Some(4_000_000_000), Some(7)], &mut ids)
            .unwrap();
        let u32s = key_column(&ids, d.values(), &KeyOutput::Int(DataType::UInt32), "key")
            .unwrap()
            .unwrap();
        assert_eq!(u32s.dtype(), &DataType::UInt32);
        let got: Vec<Option<u32>> = u32s.u32().unwrap().iter().collect();
        assert_eq!(got, vec![Some(7), None, Some(4_000_000_000), Some(7)]);
        let i64s = key_column(&ids, d.values(), &KeyOutput::Int(DataType::Int64), "key")
            .unwrap()
            .unwrap();
        let got: Vec<Option<i64>> = i64s.i64().unwrap().iter().collect();
        assert_eq!(got, vec![Some(7), None, Some(4_000_000_000), Some(7)]);
        // the same key ids through the cast path
        let u64s = key_column(&ids, d.values(), &KeyOutput::Int(DataType::UInt64), "key")
            .unwrap()
            .unwrap();
        assert_eq!(u64s.dtype(), &DataType::UInt64);
        assert_eq!(u64s.null_count(), 1);
        // a key that does not fit the output type is an error naming it, not a wrapped value
        let mut d = KeyDict::new(KeyKind::Int);
        let mut ids = vec![];
        d.encode_ints([Some(1), Some(-3)], &mut ids).unwrap();
        let err = key_column(&ids, d.values(), &KeyOutput::Int(DataType::UInt32), "key").unwrap_err();
        assert!(err.to_string().contains("-3"), "{err}");
        // no null key: no validity bitmap
        let c = key_column(&ids[..1], d.values(), &KeyOutput::Int(DataType::UInt32), "key")
            .unwrap()
            .unwrap();
        assert_eq!(c.null_count(), 0);
    }

    fn keys(n: usize) -> KeyValues {
        let mut d = KeyDict::new(KeyKind::Int);
        for k in 0..n as i64 {
            d.encode_int(k * 10).unwrap();
        }
        d.values().clone()
    }

    fn writer(path: &Path) -> RowFileWriter {
        RowFileWriter::create(
            path,
            KeyOutput::Int(DataType::Int64),
            KeyKind::Int,
            vec!["value".into()],
            "count,sum,mean,std".parse().unwrap(),
            None,
        )
        .unwrap()
    }

    /// The frame of `rows` with the columns a [`writer`] writes.
    fn written_frame(rows: WindowRows, keys: &KeyValues) -> DataFrame {
        rows_to_frame(
            rows,
            keys,
            &KeyOutput::Int(DataType::Int64),
            &["value".into()],
            &"count,sum,mean,std".parse().unwrap(),
        )
        .unwrap()
    }

    #[test]
    fn pieces_make_the_frame_of_their_concatenation() {
        let keys = keys(6);
        let aggs: Aggregates = "count,sum,mean,std".parse().unwrap();
        let out = KeyOutput::Int(DataType::Int64);
        let cols = ["value".to_string()];
        // a row with a single value has a null std: the validity path over several pieces
        let mut single = WindowRows::new(1);
        let mut p = ColPartial::IDENTITY;
        p.push::<true>(4.0);
        single.push(5, 7000, 8000, 1, 1, &[p], 0);
        let mut pieces = vec![rows(3, 0), WindowRows::new(1), single, rows(2, 3)];
        let mut all = WindowRows::new(1);
        for r in &pieces {
            all.append(r);
        }
        let got = pieces_to_frame(&mut pieces, &keys, &out, &cols, &aggs).unwrap();
        // every aggregate bit for bit as the row-at-a-time evaluation gives it, nulls included
        for &kind in aggs.kinds() {
            let col = got
                .column(&format!("{}_value", kind.name()))
                .unwrap()
                .f64()
                .unwrap()
                .clone();
            for r in 0..all.len() {
                let (a, b) = (col.get(r), all.value(r, 0, kind));
                assert_eq!(a.map(f64::to_bits), b.map(f64::to_bits), "{kind} row {r}");
            }
        }
        let want = rows_to_frame(all, &keys, &out, &cols, &aggs).unwrap();
        assert_eq!(got.height(), 6);
        assert!(got.equals_missing(&want), "{got}\n{want}");
        assert_eq!(got.column("std_value").unwrap().null_count(), 1);
        assert!(got.columns().iter().all(|c| c.n_chunks() == 1));
    }

    #[test]
    fn split_and_plain_float_columns_read_back_bit_for_bit() {
        // a column of random mantissas (written BYTE_STREAM_SPLIT) with NaN, signed zeros,
        // infinities and a subnormal in it, and one of three-decimal values (written PLAIN),
        // in several row groups, under each compressor
        let dir = tempfile::tempdir().unwrap();
        let n = 3 * RowFileWriter::ROW_GROUP + 123;
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let specials = [f64::NAN, -0.0, 0.0, f64::INFINITY, f64::NEG_INFINITY, 5e-324, -1e300];
        let mut means: Vec<f64> = (0..n).map(|_| 400.0 + (next() % 1_000_000) as f64 / 4_999.0).collect();
        for (i, v) in specials.iter().enumerate() {
            means[i * 9_973] = *v;
        }
        let decimals: Vec<f64> = (0..n).map(|_| (next() % 1_000_000) as f64 / 1000.0).collect();
        for compression in [
            Compression::Lz4,
            Compression::Snappy,
            Compression::Zstd,
            Compression::Uncompressed,
        ] {
            let mut df = DataFrame::new_infer_height(vec![
                Column::new("means".into(), &means),
                Column::new("decimals".into(), &decimals),
            ])
            .unwrap();
            // the pages' layouts: the means split under the fast compressors (zstd, which
            // entropy-codes the bytes, packs them plain far better), the decimals plain
            let mut out = ParquetOut::new(Vec::new(), df.schema(), compression.into(), IntEncoding::Polars).unwrap();
            let batch = df.iter_chunks(CompatLevel::newest(), false).next().unwrap();
            let columns: Vec<ColumnParts> = batch.into_schema_and_arrays().1.into_iter().map(|a| vec![a]).collect();
            let pages = out.columns.encode(0, &columns).unwrap();
            let layout = |col: usize| -> Vec<polars_parquet::parquet::encoding::Encoding> {
                pages[col]
                    .iter()
                    .filter_map(|p| match p {
                        polars_parquet::write::CompressedPage::Data(d) => d.header().encoding().try_into().ok(),
                        _ => None,
                    })
                    .collect()
            };
            use polars_parquet::parquet::encoding::Encoding as E;
            let split = matches!(compression, Compression::Lz4 | Compression::Snappy);
            assert_eq!(
                layout(0),
                vec![if split { E::ByteStreamSplit } else { E::Plain }],
                "{}",
                compression.name()
            );
            assert_eq!(layout(1), vec![E::Plain], "{}", compression.name());
            // FloatEncoding::Plain writes every float column plain
            let opts = ParquetOptions {
                compression,
                floats: FloatEncoding::Plain,
            };
            let mut out = ParquetOut::new(Vec::new(), df.schema(), opts, IntEncoding::Polars).unwrap();
            let plain = out.columns.encode(0, &columns).unwrap();
            for col in &plain {
                for page in col {
                    if let polars_parquet::write::CompressedPage::Data(d) = page {
                        assert_eq!(
                            d.header().encoding().try_into().ok(),
                            Some(E::Plain),
                            "{}",
                            compression.name()
                        );
                    }
                }
            }
            let path = dir.path().join(format!("{}.parquet", compression.name()));
            write_frame_with(&mut df, &path, compression).unwrap();
            let got = read_frame(&path).unwrap();
            for (name, want) in [("means", &means), ("decimals", &decimals)] {
                let col = got.column(name).unwrap().f64().unwrap().clone();
                let bits: Vec<u64> = col.into_no_null_iter().map(f64::to_bits).collect();
                let want: Vec<u64> = want.iter().map(|v| v.to_bits()).collect();
                assert!(bits == want, "{} {name}: values differ", compression.name());
            }
        }
    }

    #[test]
    fn streamed_file_equals_the_whole_frame_in_several_row_groups() {
        let dir = tempfile::tempdir().unwrap();
        let keys = keys(6);
        for name in ["out.parquet", "out.csv"] {
            let path = dir.path().join(name);
            let mut w = writer(&path);
            let sizes = [
                10usize,
                RowFileWriter::ROW_GROUP + 7,
                0,
                3 * RowFileWriter::ROW_GROUP,
                5,
            ];
            let mut all = WindowRows::new(1);
            for (i, &n) in sizes.iter().enumerate() {
                let mut r = rows(n, (i % 2) as u32 * 3);
                if i == 1 {
                    // a window of one value: its std is null
                    let mut p = ColPartial::IDENTITY;
                    p.push::<true>(-2.5);
                    r.push(4, -5000, -4000, 0, 1, &[p], 0);
                }
                all.append(&r);
                w.write(r, None, &keys).unwrap();
            }
            assert!(!path.exists(), "the file appeared before finish()");
            let t = w.finish(&keys).unwrap();
            assert_eq!(t.rows as usize, all.len());
            let got = read_frame(&path).unwrap();
            let want = written_frame(all, &keys);
            assert_eq!(got.shape(), want.shape(), "{name}");
            assert_eq!(got.get_column_names(), want.get_column_names());
            for col in want.get_column_names() {
                let a = got.column(col).unwrap().cast(&DataType::Float64).unwrap();
                let b = want.column(col).unwrap().cast(&DataType::Float64).unwrap();
                assert!(a.equals_missing(&b), "{name}: column {col} differs");
            }
            if name.ends_with("parquet") {
                let meta = polars::io::parquet::read::ParquetReader::new(File::open(&path).unwrap())
                    .get_metadata()
                    .unwrap()
                    .clone();
                assert!(meta.row_groups.len() >= 3, "{} row groups", meta.row_groups.len());
                // float aggregates are written plain and the integer columns delta-encoded, so
                // no column has a dictionary; the window bounds, 1000 apart, take no bits per
                // value (a few bytes per 256 values, where plain would take 8 per value); every
                // column is LZ4-compressed with statistics
                for rg in &meta.row_groups {
                    for c in rg.parquet_columns() {
                        let name = c.descriptor().path_in_schema[0].to_string();
                        assert!(c.dictionary_page_offset().is_none(), "{name} has a dictionary");
                        if ["window_start", "window_end"].contains(&name.as_str()) {
                            let small = c.compressed_size() < (rg.num_rows() as i64 / 16).max(512);
                            assert!(
                                small,
                                "{name}: {} bytes for {} rows",
                                c.compressed_size(),
                                rg.num_rows()
                            );
                        }
                        assert_eq!(
                            c.compression(),
                            polars_parquet::parquet::compression::Compression::Lz4Raw,
                            "{name}"
                        );
                        let stats = c.statistics(&meta.footer_buf);
                        assert!(stats.is_some_and(|s| s.is_ok()), "{name}: no statistics");
                    }
                }
                assert_eq!(got.column("std_value").unwrap().null_count(), 1);
            }
        }
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "temporary files left: {names:?}");
    }

    #[test]
    fn aggregate_columns_of_several_value_columns_pick_each_rows_own_partial() {
        let keys = keys(6);
        let aggs: Aggregates = "count,sum,min,max,mean,var,std".parse().unwrap();
        let cols = ["a".to_string(), "b".to_string(), "c".to_string()];
        let mut pieces = vec![];
        let mut all = WindowRows::new(3);
        for piece in 0..3u32 {
            let mut r = WindowRows::new(3);
            for i in 0..(5 + piece) {
                let v = f64::from(piece * 10 + i);
                let mut a = ColPartial::IDENTITY;
                a.push::<true>(v);
                a.push::<true>(v * 2.0 + 1.0);
                // b: one value (null var/std); c: none (null everything but count)
                let b = ColPartial::of::<true>(-v);
                r.push(i % 6, 0, 1000, 0, 2, &[a, b, ColPartial::IDENTITY], 0);
            }
            all.append(&r);
            pieces.push(r);
        }
        let got = pieces_to_frame(&mut pieces, &keys, &KeyOutput::Int(DataType::Int64), &cols, &aggs).unwrap();
        for (c, name) in cols.iter().enumerate() {
            for &kind in aggs.kinds() {
                let col = got
                    .column(&format!("{}_{name}", kind.name()))
                    .unwrap()
                    .f64()
                    .unwrap()
                    .clone();
                assert_eq!(col.len(), all.len());
                for r in 0..all.len() {
                    let (x, y) = (col.get(r), all.value(r, c, kind));
                    assert_eq!(x.map(f64::to_bits), y.map(f64::to_bits), "{kind}_{name} row {r}");
                }
            }
        }
        assert_eq!(got.column("std_b").unwrap().null_count(), all.len());
        assert_eq!(got.column("sum_c").unwrap().null_count(), all.len());
        assert_eq!(got.column("var_a").unwrap().null_count(), 0);
    }

    #[test]
    fn count_and_sum_states_give_the_full_states_columns() {
        // rows carrying SumPartials (a sums-only store's) and the same rows with full states:
        // the same frame, plain and stacked, nulls where a column has no values
        let keys = keys(6);
        let aggs: Aggregates = "count,sum,mean".parse().unwrap();
        let cols = ["a".to_string(), "b".to_string()];
        let (mut full, mut sums) = (vec![], vec![]);
        for piece in 0..3u32 {
            let (mut f, mut s) = (WindowRows::new(2), WindowRows::new(2));
            for i in 0..(5 + piece) {
                let v = f64::from(piece * 10 + i) - 7.5;
                let mut a = ColPartial::of::<false>(v);
                a.push::<false>(v * 3.0);
                let b = if i % 3 == 0 {
                    ColPartial::IDENTITY
                } else {
                    ColPartial::of::<false>(-v)
                };
                f.push(i % 6, 0, 1000, 0, 2, &[a, b], 0);
                s.push(
                    i % 6,
                    0,
                    1000,
                    0,
                    2,
                    &[SumPartial::from_full(&a), SumPartial::from_full(&b)],
                    0,
                );
            }
            assert!(s.carries_sums() && s.cols.is_empty() && !f.carries_sums());
            full.push(f);
            sums.push(s);
        }
        let out = KeyOutput::Int(DataType::Int64);
        let want = pieces_to_frame(&mut full.clone(), &keys, &out, &cols, &aggs).unwrap();
        let got = pieces_to_frame(&mut sums.clone(), &keys, &out, &cols, &aggs).unwrap();
        assert!(got.equals_missing(&want), "{got}\n{want}");
        assert!(got.column("mean_b").unwrap().null_count() > 0);
        let want = pieces_to_stacked_frame(&mut full, &keys, &out, &cols, &aggs).unwrap();
        let got = pieces_to_stacked_frame(&mut sums, &keys, &out, &cols, &aggs).unwrap();
        assert!(got.equals_missing(&want), "{got}\n{want}");
    }

    #[test]
    fn a_stacked_frame_is_the_joined_one_in_chunks_and_writes_back_the_same() {
        // string keys (a dictionary column: joined before encoding, one dictionary page per
        // column chunk), a null key, a null std, empty pieces between
        let mut d = KeyDict::new(KeyKind::Str);
        let mut ids = vec![];
        d.encode_strs([Some("b"), None, Some("a"), Some("c")], &mut ids)
            .unwrap();
        let keys = d.values().clone();
        let aggs: Aggregates = "count,sum,mean,std".parse().unwrap();
        let cols = ["value".to_string()];
        let mut pieces = vec![WindowRows::new(1)];
        for piece in 0..4u32 {
            let mut r = WindowRows::new(1);
            for i in 0..(RowFileWriter::ROW_GROUP as u32 / 3) {
                let p = ColPartial::of::<true>(f64::from(i));
                r.push(
                    (i + piece) % 4,
                    i64::from(piece) * 1000,
                    i64::from(piece) * 1000 + 1000,
                    0,
                    1,
                    &[p],
                    0,
                );
            }
            pieces.push(r);
            pieces.push(WindowRows::new(1));
        }
        let out = KeyOutput::Str;
        let stacked = pieces_to_stacked_frame(&mut pieces.clone(), &keys, &out, &cols, &aggs).unwrap();
        let joined = pieces_to_frame(&mut pieces.clone(), &keys, &out, &cols, &aggs).unwrap();
        assert!(stacked.equals_missing(&joined));
        assert!(
            stacked.columns().iter().all(|c| c.n_chunks() == 4),
            "a chunk per piece with rows"
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stacked.parquet");
        let mut w = RowFileWriter::create(&path, out, KeyKind::Str, cols.to_vec(), aggs.clone(), None).unwrap();
        for p in pieces {
            w.write(p, None, &keys).unwrap();
        }
        w.finish(&keys).unwrap();
        let back = read_frame(&path).unwrap();
        assert!(back.equals_missing(&joined), "{back}\n{joined}");
        assert_eq!(
            back.column("key").unwrap().null_count(),
            joined.column("key").unwrap().null_count()
        );
    }

    #[test]
    fn the_writer_hands_emptied_row_buffers_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("spent.parquet");
        let keys = keys(6);
        let mut w = writer(&path);
        // two pieces per row group: their plain columns move into the frame, their aggregate
        // states' buffers come back
        let half = RowFileWriter::ROW_GROUP / 2 + 1;
        let mut all = WindowRows::new(1);
        for i in 0..4 {
            let r = rows(half, i % 2);
            all.append(&r);
            w.write(r, None, &keys).unwrap();
        }
        let t0 = std::time::Instant::now();
        let mut back = vec![];
        while back.len() < 2 && t0.elapsed() < std::time::Duration::from_secs(30) {
            back.extend(w.spent());
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        assert!(back.len() >= 2, "{} buffers back", back.len());
        for r in &back {
            assert!(r.is_empty());
            assert!(r.cols.capacity() >= half);
        }
        w.finish(&keys).unwrap();
        let want = written_frame(all, &keys);
        assert!(read_frame(&path).unwrap().equals_missing(&want));
    }

    #[test]
    fn delta_encoded_integer_columns_keep_extreme_values() {
        // keys, window bounds and counts at the ends of their ranges, in an order whose deltas
        // overflow 64 bits: the encoder's deltas wrap, and the file must still read back exactly
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("extreme.parquet");
        let mut d = KeyDict::new(KeyKind::Int);
        for k in [i64::MIN, i64::MAX, 0, -1, 1] {
            d.encode_int(k).unwrap();
        }
        let keys = d.values().clone();
        let mut w = writer(&path);
        let mut all = WindowRows::new(1);
        for i in 0..1000u32 {
            let mut r = WindowRows::new(1);
            let mut p = ColPartial::IDENTITY;
            p.push::<true>(f64::from(i));
            let start = if i % 2 == 0 {
                i64::MIN + i64::from(i)
            } else {
                i64::MAX - 1000 - i64::from(i)
            };
            let count = if i % 3 == 0 {
                u64::MAX - u64::from(i)
            } else {
                u64::from(i)
            };
            r.push(i % 5, start, start + 1000, i % 7, count, &[p], 0);
            all.append(&r);
            w.write(r, None, &keys).unwrap();
        }
        w.finish(&keys).unwrap();
        let got = read_frame(&path).unwrap();
        let want = written_frame(all, &keys);
        for col in ["key", "window_start", "window_end", "revision", "count"] {
            let (a, b) = (got.column(col).unwrap(), want.column(col).unwrap());
            assert_eq!(a.dtype(), b.dtype(), "{col}");
            assert!(a.equals(b), "{col} differs");
        }
    }

    #[test]
    fn projections_follow_the_file_order_and_read_everything_when_a_name_is_missing() {
        let file: Vec<PlSmallStr> = ["a", "ts", "b", "key", "v"].into_iter().map(PlSmallStr::from).collect();
        let names = |n: &[&str]| n.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(
            projection(file.iter(), &names(&["v", "ts", "key"])),
            Some(vec![1, 3, 4])
        );
        // a column named twice (a value column that is also the key) is read once
        assert_eq!(projection(file.iter(), &names(&["ts", "v", "v"])), Some(vec![1, 4]));
        assert_eq!(projection(file.iter(), &names(&["ts", "nope"])), None);
    }

    #[test]
    fn csv_blocks_end_at_record_ends_outside_quotes() {
        let text = "a,b\n1,\"x\ny\"\n22,\"q\"\"r\"\r\n333,zzzzzzzzzzzzzzzzzzzzzzzzzzzzzzzz\n4,last";
        for block in [1usize, 3, 7, 16, 1000] {
            let mut r = std::io::Cursor::new(text.as_bytes().to_vec());
            let mut carry = vec![];
            let mut parts: Vec<String> = vec![];
            while let Some(b) = csv_block(&mut r, &mut carry, block).unwrap() {
                parts.push(String::from_utf8(b).unwrap());
            }
            assert_eq!(parts.concat(), text, "block {block}: bytes lost or repeated");
            for p in &parts[..parts.len() - 1] {
                assert!(p.ends_with('\n'), "block {block}: {p:?} is cut inside a record");
                assert_eq!(
                    p.matches('"').count() % 2,
                    0,
                    "block {block}: {p:?} is cut inside quotes"
                );
            }
            if block >= 1000 {
                assert_eq!(parts.len(), 1);
            }
        }
        let mut carry = vec![];
        assert!(
            csv_block(&mut std::io::Cursor::new(Vec::<u8>::new()), &mut carry, 8)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn csv_blocks_on_random_records() {
        let mut rng = crate::generator::Rng::new(5);
        for _ in 0..200 {
            let mut text = String::new();
            let mut ends = vec![];
            for _ in 0..rng.below(40) {
                let fields: Vec<String> = (0..1 + rng.below(4))
                    .map(|_| match rng.below(4) {
                        0 => "\"a\nb,\"\"c\"\"\"".to_string(),
                        1 => "\"\"".to_string(),
                        _ => "x".repeat(rng.below(30) as usize),
                    })
                    .collect();
                text.push_str(&fields.join(","));
                text.push_str(if rng.below(2) == 0 { "\n" } else { "\r\n" });
                ends.push(text.len());
            }
            if rng.below(3) == 0 {
                text.push_str("tail,\"q\"");
            }
            let block = 1 + rng.below(64) as usize;
            let mut r = std::io::Cursor::new(text.as_bytes().to_vec());
            let (mut carry, mut at) = (vec![], 0usize);
            while let Some(b) = csv_block(&mut r, &mut carry, block).unwrap() {
                assert_eq!(&text.as_bytes()[at..at + b.len()], &b[..]);
                at += b.len();
                assert!(
                    at == text.len() || ends.contains(&at),
                    "cut inside a record at {at}: {text:?}"
                );
            }
            assert_eq!(at, text.len());
        }
    }

    #[test]
    fn csv_in_several_blocks_reads_like_csv_read_whole() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("in.csv");
        let mut text = String::from("ts,key,value,note\n");
        for i in 0..30_000 {
            let note = if i % 7 == 0 {
                format!("\"multi\nline {i}\"")
            } else {
                format!("n{i}")
            };
            text.push_str(&format!("{},{},{}.5,{}\n", i * 3, i % 11, i, note));
        }
        std::fs::write(&path, &text).unwrap();
        let whole = read_frame(&path).unwrap();
        let mut reader = ChunkReader::open_csv(&path, 4096, &[], None).unwrap();
        let mut parts = vec![];
        while let Some(c) = reader.next_chunk() {
            parts.push(c.unwrap());
        }
        assert!(parts.len() > 10, "{} chunks", parts.len());
        assert_eq!(reader.total_rows(), 30_000);
        let mut all = parts[0].clone();
        for p in &parts[1..] {
            assert_eq!(p.schema(), parts[0].schema());
            all.vstack_mut(p).unwrap();
        }
        assert!(all.equals_missing(&whole));
        // a projection: every block parses the named columns alone, in the file's order
        let only = ["value".to_string(), "ts".to_string()];
        let mut reader = ChunkReader::open_csv(&path, 4096, &[], Some(&only)).unwrap();
        let mut rows = 0;
        let mut got: Option<DataFrame> = None;
        while let Some(c) = reader.next_chunk() {
            let c = c.unwrap();
            assert_eq!(c.get_column_names(), ["ts", "value"]);
            rows += c.height();
            match &mut got {
                Some(g) => {
                    g.vstack_mut(&c).unwrap();
                }
                None => got = Some(c),
            }
        }
        assert_eq!(rows, 30_000);
        assert!(got.unwrap().equals_missing(&whole.select(["ts", "value"]).unwrap()));
        // a name the file lacks: every column, for the schema check to report it
        let missing = ["ts".to_string(), "nope".to_string()];
        let mut reader = ChunkReader::open_csv(&path, 4096, &[], Some(&missing)).unwrap();
        assert_eq!(reader.next_chunk().unwrap().unwrap().width(), 4);
    }

    #[test]
    fn csv_blocks_keep_the_types_and_place_errors_in_the_file() {
        let dir = tempfile::tempdir().unwrap();
        // Integer values for 12,000 rows (more than the 4 KiB blocks and the 10,000 rows types
        // are inferred from), then a float: the value column is read as floats throughout.
        let path = dir.path().join("in.csv");
        let mut text = String::from("ts,key,value\n");
        for i in 0..12_000 {
            text.push_str(&format!("{i},{},{}\n", i % 5, i % 100));
        }
        std::fs::write(&path, text.clone() + "12000,1,2.5\n").unwrap();
        let mut r = ChunkReader::open_csv(&path, 4096, &["value".to_string()], None).unwrap();
        let (mut n, mut last) = (0, 0.0);
        let mut chunks = 0;
        while let Some(c) = r.next_chunk() {
            let c = c.unwrap();
            assert_eq!(c.column("value").unwrap().dtype(), &DataType::Float64);
            assert_eq!(c.column("ts").unwrap().dtype(), &DataType::Int64);
            n += c.height();
            last = c.column("value").unwrap().f64().unwrap().get(c.height() - 1).unwrap();
            chunks += 1;
        }
        assert!(chunks > 1);
        assert_eq!((n, last), (12_001, 2.5));
        // a bad value in a later block: reported with the block's place in the file
        let bad = text + &"12000,1,7\n".repeat(2000) + "99999,oops,1\n";
        std::fs::write(&path, &bad).unwrap();
        let mut r = ChunkReader::open_csv(&path, 4096, &["value".to_string()], None).unwrap();
        let err = loop {
            match r.next_chunk() {
                Some(Ok(_)) => continue,
                Some(Err(e)) => break e.to_string(),
                None => panic!("a bad value was read without error"),
            }
        };
        assert!(err.contains("starts at byte") && err.contains("data row"), "{err}");
        // after an error, the reader never reports a clean end
        assert!(matches!(r.next_chunk(), Some(Err(_))));
    }

    #[test]
    fn a_split_first_chunk_hands_over_every_row_in_order() {
        // 3 row groups, one chunk: its first slice and the rest decoded side by side; with a
        // projection, and with a first slice too large to split
        let dir = tempfile::tempdir().unwrap();
        let n = 2 * RowFileWriter::ROW_GROUP + 999;
        let ts: Vec<i64> = (0..n as i64).map(|i| i * 3 - 7).collect();
        let key: Vec<u32> = (0..n as u32).map(|i| i % 17).collect();
        let value: Vec<f64> = (0..n).map(|i| i as f64 * 0.5).collect();
        let mut df = DataFrame::new_infer_height(vec![
            Column::new("ts".into(), &ts),
            Column::new("key".into(), &key),
            Column::new("value".into(), &value),
        ])
        .unwrap();
        let path = dir.path().join("in.parquet");
        write_frame(&mut df, &path).unwrap();
        let only = ["value".to_string(), "ts".to_string()];
        for (first_slice, projection, chunks) in [(1000, None, 2), (1000, Some(&only[..]), 2), (n / 2 + 1, None, 1)] {
            let mut r = ChunkReader::open_parquet(&path, projection, first_slice).unwrap();
            let mut got: Vec<DataFrame> = vec![];
            while let Some(c) = r.next_chunk() {
                got.push(c.unwrap());
            }
            assert_eq!(got.len(), chunks, "{first_slice}");
            if chunks == 2 {
                assert_eq!(got[0].height(), first_slice);
            }
            let mut all = got.remove(0);
            for c in got {
                all.vstack_mut_owned(c).unwrap();
            }
            let want = match projection {
                // (in the file's order)
                Some(cols) => df
                    .select(["ts", "value"].into_iter().filter(|c| cols.iter().any(|o| o == c)))
                    .unwrap(),
                None => df.clone(),
            };
            assert!(all.equals(&want), "{first_slice} {projection:?}");
        }
    }

    #[test]
    fn row_groups_cover_every_row_once_in_groups_of_the_row_group_size() {
        let g = RowFileWriter::ROW_GROUP;
        for rows in [0, 1, g - 1, g, 2 * g - 1, 2 * g, 2 * g + 1, 5 * g + 17] {
            let groups: Vec<_> = row_groups(rows).collect();
            let mut at = 0;
            for &(first, len) in &groups {
                assert_eq!(first, at, "{rows} rows: a gap or an overlap");
                assert!(len > 0 && len < 2 * g, "{rows} rows: a group of {len}");
                assert!(
                    len >= g || groups.len() == 1,
                    "{rows} rows: a short group among several"
                );
                at += len;
            }
            assert_eq!(at, rows);
        }
    }

    #[test]
    fn a_frame_stacked_from_pieces_is_written_in_whole_row_groups() {
        // the late output: the input's columns (any types, nulls included), stacked from a
        // piece per input chunk
        let dir = tempfile::tempdir().unwrap();
        let piece = |i: usize, n: usize| {
            let ts: Vec<i64> = (0..n).map(|j| (i * 1_000_000 + j) as i64 - 500).collect();
            let name: Vec<Option<String>> = (0..n).map(|j| (j % 5 != 0).then(|| format!("k{}", j % 11))).collect();
            let v: Vec<Option<f64>> = (0..n).map(|j| (j % 7 != 0).then_some(j as f64 * 0.25 - 3.0)).collect();
            DataFrame::new_infer_height(vec![
                Int64Chunked::from_vec("ts".into(), ts).into_column(),
                StringChunked::from_iter_options("key".into(), name.into_iter()).into_column(),
                Float64Chunked::from_iter_options("value".into(), v.into_iter()).into_column(),
            ])
            .unwrap()
        };
        let g = RowFileWriter::ROW_GROUP;
        let mut df = piece(0, 0);
        for (i, n) in [3usize, g + 1, 0, 2 * g + 5, 9].into_iter().enumerate() {
            df.vstack_mut_owned(piece(i, n)).unwrap();
        }
        let path = dir.path().join("late.parquet");
        write_frame_with(&mut df.clone(), &path, Compression::Lz4).unwrap();
        let got = read_frame(&path).unwrap();
        assert_eq!(got.shape(), df.shape());
        for col in ["ts", "key", "value"] {
            assert!(
                got.column(col).unwrap().equals_missing(df.column(col).unwrap()),
                "column {col} differs"
            );
        }
        let meta = ParquetReader::new(File::open(&path).unwrap())
            .get_metadata()
            .unwrap()
            .clone();
        let want: Vec<usize> = row_groups(df.height()).map(|(_, n)| n).collect();
        let have: Vec<usize> = meta.row_groups.iter().map(|rg| rg.num_rows()).collect();
        assert_eq!(have, want, "row groups follow the frame's rows, not its pieces");
        for c in meta.row_groups[0].parquet_columns() {
            let name = c.descriptor().path_in_schema[0].to_string();
            match name.as_str() {
                "value" => assert!(c.dictionary_page_offset().is_none(), "floats are written plain"),
                "key" => assert!(c.dictionary_page_offset().is_some(), "11 strings get a dictionary"),
                _ => {}
            }
        }
        // no rows: a file with the columns
        let empty = dir.path().join("none.parquet");
        write_frame_with(&mut piece(0, 0), &empty, Compression::Snappy).unwrap();
        let got = ParquetReader::new(File::open(&empty).unwrap()).finish().unwrap();
        assert_eq!(got.height(), 0);
        assert_eq!(got.schema(), df.schema());
    }

    /// Time column `time`, then `key` and one value column `value`.
    fn frame_cols(time: &str) -> InputColumns {
        InputColumns {
            time: time.into(),
            key: Some("key".into()),
            values: vec!["value".into()],
        }
    }

    /// Runs `frames` through a pipeline, pushed with `push_frame` (the in-place path where the
    /// columns allow it) or converted to batches first; all output rows and late events.
    fn frame_run(frames: &[DataFrame], window: &str, in_place: bool) -> (WindowRows, Vec<u64>) {
        let mut p = crate::Pipeline::builder()
            .window(window.parse().unwrap())
            .watermark_delay(crate::Duration::from_millis(100))
            .aggregates("count,sum,min,max,mean".parse().unwrap())
            .backend(crate::backend::BackendChoice::Cpu)
            .batch_size(700)
            .build()
            .unwrap();
        let cols = frame_cols("ts");
        let (mut rows, mut late) = (vec![], vec![]);
        for df in frames {
            if in_place {
                p.push_frame(df).unwrap();
            } else {
                let offset = p.metrics().events_in;
                let b = frame_to_batch(df, &cols, p.keys_mut(), offset).unwrap();
                p.push_encoded(b).unwrap();
            }
            let out = p.poll().unwrap();
            rows.push(out.rows);
            late.extend(out.late.row);
        }
        let out = p.finish().unwrap();
        rows.push(out.rows);
        late.extend(out.late.row);
        (WindowRows::concat(&mut rows, 1), late)
    }

    #[test]
    fn frames_pushed_in_place_equal_converted_batches() {
        let n = 5000;
        let ts: Vec<i64> = (0..n as i64).map(|i| i - (i * 7919 % 13) * 120).collect();
        let key: Vec<u32> = (0..n as u32).map(|i| i * 31 % 17).collect();
        let value: Vec<f64> = (0..n).map(|i| (i % 101) as f64 - 50.0).collect();
        let plain = df!("ts" => &ts, "key" => &key, "value" => &value).unwrap();
        let mut with_nan = value.clone();
        with_nan[10] = f64::NAN;
        let nan = df!("ts" => &ts, "key" => &key, "value" => &with_nan).unwrap();
        let opt: Vec<Option<f64>> = value
            .iter()
            .enumerate()
            .map(|(i, &v)| (i % 9 != 0).then_some(v))
            .collect();
        let nulls = df!("ts" => &ts, "key" => &key, "value" => &opt).unwrap();
        let wide = df!("ts" => &ts, "key" => key.iter().map(|&k| k as i64 - 8).collect::<Vec<_>>(), "value" => &value)
            .unwrap();
        // two chunks per column: not one slice
        let mut chunked = plain.slice(0, 2000);
        chunked.vstack_mut(&plain.slice(2000, 3000)).unwrap();
        for window in ["tumble:500ms", "hop:1s:250ms"] {
            for frame in [&plain, &nan, &nulls, &wide, &chunked] {
                // several frames, each cut in batches of the pipeline's size
                let frames = [frame.slice(0, 1800), frame.slice(1800, 3200)];
                let (want_rows, want_late) = frame_run(&frames, window, false);
                let (got_rows, got_late) = frame_run(&frames, window, true);
                assert!(
                    want_rows.len() > 50 && !want_late.is_empty(),
                    "{window}: the data must fire and be late"
                );
                assert_eq!(got_late, want_late, "{window}");
                assert_eq!(got_rows.key, want_rows.key, "{window}");
                assert_eq!(got_rows.start, want_rows.start, "{window}");
                assert_eq!(got_rows.count, want_rows.count, "{window}");
                // NaN is not equal to itself: compare the partials' bits
                let bits = |r: &WindowRows| {
                    r.cols
                        .iter()
                        .map(|c| bytemuck::bytes_of(c).to_vec())
                        .collect::<Vec<_>>()
                };
                assert_eq!(bits(&got_rows), bits(&want_rows), "{window}");
            }
        }
    }

    #[test]
    fn a_bad_time_in_a_frame_names_its_column_and_input_row() {
        let mut p = crate::Pipeline::builder()
            .window("tumble:1s".parse().unwrap())
            .backend(crate::backend::BackendChoice::Cpu)
            .build()
            .unwrap();
        let cols = frame_cols("when");
        let df = df!("when" => [5i64, 6, i64::MAX], "key" => [1u32, 2, 3], "value" => [1.0, 2.0, 3.0]).unwrap();
        let e = p.push_frame_columns(&df, &cols, 1000).unwrap_err().to_string();
        assert!(e.contains("when") && e.contains("1002"), "{e}");
        // nothing of the frame was applied: its keys were not even encoded
        assert_eq!(p.keys().len(), 0);
        assert_eq!(p.metrics().events_in, 0);
    }

    #[test]
    fn no_rows_still_writes_the_columns() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("empty.parquet");
        let w = writer(&path);
        w.finish(&keys(0)).unwrap();
        let df = ParquetReader::new(File::open(&path).unwrap()).finish().unwrap();
        assert_eq!(df.height(), 0);
        let names: Vec<&str> = df.get_column_names().iter().map(|s| s.as_str()).collect();
        assert_eq!(&names[..5], ["key", "window_start", "window_end", "revision", "count"]);
        assert_eq!(&names[5..], ["sum_value", "mean_value", "std_value"]);
    }

    #[test]
    fn dropped_unfinished_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gone.parquet");
        let mut w = writer(&path);
        w.write(rows(RowFileWriter::ROW_GROUP + 1, 0), None, &keys(3)).unwrap();
        drop(w);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        let bad = RowFileWriter::create(
            &dir.path().join("no/such/dir/out.parquet"),
            KeyOutput::None,
            KeyKind::None,
            vec![],
            "count".parse().unwrap(),
            None,
        );
        assert!(matches!(bad, Err(Error::Io { .. })));
    }
}
