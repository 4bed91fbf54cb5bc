//! Parquet row groups decoded straight into event columns, without polars' arrays.
//!
//! polars' reader decodes a row group into fresh Arrow arrays, and the pipeline then reads its
//! key column value by value through the key dictionary. On the peer workload (5M events in
//! row groups of 1M, every column dictionary-encoded and snappy-compressed) that decoding was
//! ~30% of a Q1 run's CPU, a third of it the kernel zeroing the new arrays' pages. Here the
//! pages of the three kinds of column a job reads (times, keys, values) are decompressed and
//! decoded into buffers that the caller hands back after use ([`EventReader::recycle`]), and a
//! dictionary-encoded key column stays a dictionary (its distinct values, once per row group)
//! with one index per row, so that the caller encodes each distinct key once.
//!
//! What is decoded here: flat `INT32`/`INT64`/`DOUBLE` columns, required or optional, whose
//! V1 data pages are `PLAIN` or dictionary-encoded (`RLE_DICTIONARY`, `PLAIN_DICTIONARY`) with
//! no nulls, under any codec polars reads. A chunk with anything else — a null, a V2 page,
//! another encoding, damaged bytes — is read by polars instead, as a [`EventChunk::Frame`], so
//! that its rows keep polars' meaning and its errors polars' messages. A file whose columns do
//! not have those types is not taken at all ([`EventReader::open`] returns `None`).

use super::{InputColumns, ReaderEnd, Received, cannot_read, format_error, open_input, projection, stopped_early};
use crate::error::{Error, Result};
use polars::prelude::*;
use polars_parquet::parquet::compression::{Compression, DecompressionContext, decompress};
use polars_parquet::parquet::encoding::bitpacked::Unpackable;
use polars_parquet::parquet::metadata::{ColumnChunkMetadata, FileMetadata};
use polars_parquet_format::thrift::protocol::TCompactInputProtocol;
use polars_parquet_format::{Encoding as PageEncoding, PageHeader, PageType};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender};

/// The decoded columns of one chunk of events (whole row groups), in file order.
#[derive(Default, Debug)]
pub struct EventColumns {
    /// Event times (the time column's `INT64` values).
    pub ts: Vec<i64>,
    /// Each row's key, as its number in the file's key list (empty without a key column): the
    /// keys of every dictionary page, and of plain pages one per row, in file order.
    pub key_index: Vec<u32>,
    /// The keys this chunk adds to the file's key list, numbered from `key_first` on.
    pub key_values: Vec<i64>,
    /// The number of `key_values[0]`: how many keys the earlier chunks numbered.
    pub key_first: usize,
    /// Keys numbered below this are not referred to by this chunk's or later chunks' rows (the
    /// start of the dictionary the chunk begins in, or every earlier key after plain pages).
    pub key_floor: usize,
    /// One vector per value column, in the job's order.
    pub values: Vec<Vec<f64>>,
}

/// The pipeline's ids of the keys an [`EventReader`] numbers, for [`crate::Pipeline::push_event_columns`]:
/// each key encoded once, as its chunk brings it, and dropped once no later row can refer to it
/// (a plain-encoded key column numbers a key per row).
#[derive(Default, Debug)]
pub struct KeyIds {
    /// The number of `ids[0]`.
    start: usize,
    ids: Vec<u32>,
}

impl KeyIds {
    /// Encodes `columns`' new keys with `dict` (call once per chunk, in order, before its rows
    /// are pushed), after dropping those below its floor.
    pub fn extend(&mut self, columns: &EventColumns, dict: &mut crate::batch::KeyDict) -> Result<()> {
        let end = self.start + self.ids.len();
        if columns.key_first != end || columns.key_floor < self.start {
            return Err(Error::config(format!(
                "a chunk's keys numbered from {} (floor {}) after keys {}..{end}: chunks out of order",
                columns.key_first, columns.key_floor, self.start
            )));
        }
        let drop = (columns.key_floor - self.start).min(self.ids.len());
        self.ids.drain(..drop);
        self.start += drop;
        if columns.key_values.is_empty() {
            return Ok(());
        }
        dict.encode_int_iter(columns.key_values.iter().copied(), &mut self.ids)
    }

    /// The pipeline's id of key number `n`.
    pub fn get(&self, n: u32) -> Option<u32> {
        (n as usize)
            .checked_sub(self.start)
            .and_then(|i| self.ids.get(i))
            .copied()
    }

    /// Ids held (for tests and diagnostics).
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether no id is held.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

impl EventColumns {
    /// Rows in the chunk.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// Whether the chunk has no rows.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    fn clear(&mut self) {
        self.ts.clear();
        self.key_index.clear();
        self.key_values.clear();
        for v in &mut self.values {
            v.clear();
        }
    }
}

/// A chunk from an [`EventReader`].
pub enum EventChunk {
    /// Decoded here.
    Columns(EventColumns),
    /// Read by polars (a chunk this module does not decode): the job's columns.
    Frame(DataFrame),
}

/// How a key column's `INT32` values read (its Arrow type: signed or unsigned).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Int32 {
    Signed,
    Unsigned,
}

/// The job's columns in the file: each one's index among the file's leaf columns.
#[derive(Clone, Debug)]
struct Layout {
    time: usize,
    key: Option<(usize, Int32)>,
    values: Vec<usize>,
}

/// Parquet input decoded by this module where it can, chunk by chunk on a reader thread (see the
/// module docs).
pub struct EventReader {
    total_rows: usize,
    delivered: usize,
    path: PathBuf,
    /// The job's columns, without rows, with the file's types (for the schema check).
    schema: DataFrame,
    end: ReaderEnd<EventChunk>,
    spent: Sender<EventColumns>,
}

impl EventReader {
    /// Opens `path` for the columns `cols` names, when it is a Parquet file whose columns this
    /// module decodes (`Ok(None)` otherwise: read it with [`super::ChunkReader`]). A missing,
    /// unreadable, truncated or empty file is an error, as from [`super::ChunkReader::open`].
    pub fn open(path: &Path, cols: &InputColumns) -> Result<Option<EventReader>> {
        if super::Format::of(path)? != super::Format::Parquet {
            return Ok(None);
        }
        let (file, _) = open_input(path)?;
        // SAFETY: the file is mapped read-only and only read through the map; were another
        // process to truncate it during the run, reading past its new end would fault (SIGBUS),
        // as it would under polars' own reader, which maps input files the same way.
        let Ok(bytes) = (unsafe { memmap2::Mmap::map(&file) }) else {
            return Ok(None);
        };
        let bad = format_error(path, "Parquet");
        let mut reader = ParquetReader::new(file);
        let schema = reader.schema().map_err(bad.clone())?;
        let meta = reader.get_metadata().map_err(bad.clone())?.clone();
        let names: Vec<String> = std::iter::once(cols.time.clone())
            .chain(cols.key.clone())
            .chain(cols.values.iter().cloned())
            .collect();
        let Some(layout) = layout(&schema, &meta, cols) else {
            return Ok(None);
        };
        if meta.row_groups.iter().map(|g| g.num_rows()).sum::<usize>() != meta.num_rows {
            // a footer whose row count disagrees with its row groups': polars' reading decides
            return Ok(None);
        }
        if meta.num_rows == 0 {
            return Err(Error::EmptyInput(format!("'{}'", path.display())));
        }
        let fields = names.iter().filter_map(|n| schema.get(n.as_str()).map(|f| (n, f)));
        let frame_schema =
            Schema::from_iter(fields.map(|(n, f)| Field::new(n.as_str().into(), DataType::from_arrow_field(f))));
        let empty = DataFrame::empty_with_schema(&frame_schema);
        let projection = projection(schema.iter_names(), &names);
        let (tx, rx) = std::sync::mpsc::sync_channel::<Result<EventChunk>>(0);
        let (spent, spent_rx) = std::sync::mpsc::channel::<EventColumns>();
        let total_rows = meta.num_rows;
        let job = Job {
            path: path.to_path_buf(),
            bytes: Arc::new(bytes),
            meta,
            layout,
            projection,
        };
        let handle = std::thread::Builder::new()
            .name("fenestra-reader".into())
            .spawn(move || job.run(&tx, &spent_rx))
            .map_err(|e| Error::Io {
                action: "cannot start a reader thread for",
                path: path.to_path_buf(),
                source: e,
            })?;
        Ok(Some(EventReader {
            total_rows,
            delivered: 0,
            path: path.to_path_buf(),
            schema: empty,
            end: ReaderEnd::new(Some((rx, handle))),
            spent,
        }))
    }

    /// Rows in the file (from its footer).
    pub fn total_rows(&self) -> usize {
        self.total_rows
    }

    /// The job's columns with the file's types and no rows.
    pub fn schema_frame(&self) -> &DataFrame {
        &self.schema
    }

    /// Hands a chunk's buffers back for the next chunks (no fresh memory per chunk).
    pub fn recycle(&self, columns: EventColumns) {
        let _ = self.spent.send(columns);
    }

    /// The next chunk, in file order; `None` at the end. A reader that stops before it has
    /// delivered every row of the file is an error.
    pub fn next_chunk(&mut self) -> Option<Result<EventChunk>> {
        match self.end.next()? {
            Received::Chunk(c) => {
                self.delivered += match &c {
                    EventChunk::Columns(c) => c.len(),
                    EventChunk::Frame(df) => df.height(),
                };
                Some(Ok(c))
            }
            Received::Failed(e) => Some(Err(e)),
            Received::Ended { panicked } => (panicked || self.delivered != self.total_rows).then(|| {
                Err(stopped_early(
                    &self.path,
                    "Parquet",
                    self.delivered,
                    &self.total_rows.to_string(),
                    panicked,
                ))
            }),
        }
    }
}

/// The job's columns among the file's leaf columns, when every one is flat and of a type
/// decoded here: times `Int64`, keys `Int32`/`UInt32`/`Int64`, values `Float64`.
fn layout(schema: &ArrowSchema, meta: &FileMetadata, cols: &InputColumns) -> Option<Layout> {
    use polars_arrow::datatypes::ArrowDataType as D;
    // flat columns: one leaf per field, in schema order
    if meta.schema_descr.columns().len() != schema.len() {
        return None;
    }
    let index = |name: &str| schema.index_of(name);
    let dtype = |name: &str| schema.get(name).map(|f| f.dtype.clone());
    let time = index(&cols.time).filter(|_| dtype(&cols.time) == Some(D::Int64))?;
    let key = match &cols.key {
        None => None,
        Some(k) => Some((
            index(k)?,
            match dtype(k)? {
                D::Int32 | D::Int64 => Int32::Signed,
                D::UInt32 => Int32::Unsigned,
                _ => return None,
            },
        )),
    };
    let values = cols
        .values
        .iter()
        .map(|v| index(v).filter(|_| dtype(v) == Some(D::Float64)))
        .collect::<Option<Vec<_>>>()?;
    use polars_parquet::parquet::schema::types::PhysicalType as P;
    // each Arrow type read from its stored type (the Arrow schema in a footer could claim another)
    let key_physical = match cols.key.as_deref().and_then(dtype) {
        Some(D::Int64) => P::Int64,
        _ => P::Int32,
    };
    let stored = std::iter::once((time, P::Int64))
        .chain(key.map(|(k, _)| (k, key_physical)))
        .chain(values.iter().map(|&v| (v, P::Double)));
    for (c, want) in stored {
        let d = &meta.schema_descr.columns()[c].descriptor;
        if d.max_rep_level != 0 || d.max_def_level > 1 || d.primitive_type.physical_type != want {
            return None;
        }
    }
    Some(Layout { time, key, values })
}

/// What the reader thread works from.
struct Job {
    path: PathBuf,
    /// The file's bytes, mapped.
    bytes: Arc<memmap2::Mmap>,
    meta: Arc<FileMetadata>,
    layout: Layout,
    projection: Option<Vec<usize>>,
}

/// Why a column is left to polars: it holds something not decoded here, or is damaged.
struct NotHere;

type Here<T> = std::result::Result<T, NotHere>;

/// Rows per chunk: a quarter of a million (5 MB of the peer workload's three columns). The pages
/// of a row group are decoded a chunk's worth at a time, so that memory holds a few such chunks
/// instead of a few row groups: on the peer workload's 1M-row groups, peak memory and page faults
/// fell by a third against whole row groups.
const CHUNK_ROWS: usize = 1 << 18;
/// Rows of the first chunk: the engine starts while the rest of the first pages decode (Q1 of
/// the peer workload, 12 alternating runs: 0.142 -> 0.140 s).
const FIRST_ROWS: usize = 1 << 16;

/// Rows of the chunk that starts at row `first_row` (before the file's end cuts it).
fn chunk_rows(first_row: usize) -> usize {
    if first_row == 0 { FIRST_ROWS } else { CHUNK_ROWS }
}

impl Job {
    fn run(&self, tx: &std::sync::mpsc::SyncSender<Result<EventChunk>>, spent: &Receiver<EventColumns>) {
        let file: &[u8] = &self.bytes;
        let meta = &*self.meta;
        let cursor = |c: usize, int32: Int32| Cursor::new(c, int32);
        let mut times_keys: Vec<Cursor> = std::iter::once(cursor(self.layout.time, Int32::Signed))
            .chain(self.layout.key.map(|(k, int32)| cursor(k, int32)))
            .collect();
        let value_cursors =
            || -> Vec<Cursor> { self.layout.values.iter().map(|&c| cursor(c, Int32::Signed)).collect() };
        let mut keys_seen = 0usize;
        let total: usize = meta.row_groups.iter().map(|g| g.num_rows()).sum();
        std::thread::scope(|scope| {
            // The value columns (most of the bytes) are decoded on a second thread, for the whole
            // run, while this one decodes times and keys: a chunk is ready in about half the time.
            let (jobs, job_rx) = std::sync::mpsc::channel::<(Vec<Vec<f64>>, usize)>();
            let (done_tx, done) = std::sync::mpsc::channel::<(Vec<Vec<f64>>, Here<()>)>();
            let mut helper_cursors = value_cursors();
            let helper = (!helper_cursors.is_empty())
                .then(|| {
                    std::thread::Builder::new()
                        .name("fenestra-reader-2".into())
                        .spawn_scoped(scope, move || {
                            for (mut out, rows) in job_rx {
                                // a panic (in a dependency, on damaged bytes) is a chunk for polars
                                let res = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                                    fill_values(&mut helper_cursors, file, meta, &mut out, rows)
                                }))
                                .unwrap_or(Err(NotHere));
                                if done_tx.send((out, res)).is_err() {
                                    return;
                                }
                            }
                        })
                        .ok()
                })
                .flatten();
            // without the second thread, the value columns are decoded here
            let mut values = if helper.is_some() { vec![] } else { value_cursors() };
            let mut first_row = 0usize;
            while first_row < total {
                let rows = chunk_rows(first_row).min(total - first_row);
                let mut out = spent.try_recv().unwrap_or_default();
                out.clear();
                out.values.resize_with(self.layout.values.len(), Vec::new);
                out.key_first = keys_seen;
                // keys below the current dictionary's start (or, past plain pages, below every
                // key so far) are not referred to by this chunk's rows or later ones
                out.key_floor = match times_keys.get(1) {
                    Some(k) if !k.dict.is_empty() => k.base,
                    _ => keys_seen,
                };
                let decoded = if helper.is_some() {
                    let sent = jobs.send((std::mem::take(&mut out.values), rows)).is_ok();
                    let a = self.fill_times_keys(file, &mut times_keys, &mut out, rows, &mut keys_seen);
                    let b = match done.recv() {
                        Ok((v, res)) if sent => {
                            out.values = v;
                            res
                        }
                        _ => Err(NotHere),
                    };
                    a.and(b)
                } else {
                    self.fill_times_keys(file, &mut times_keys, &mut out, rows, &mut keys_seen)
                        .and_then(|()| fill_values(&mut values, file, meta, &mut out.values, rows))
                };
                let exact = decoded.is_ok()
                    && out.ts.len() == rows
                    && (self.layout.key.is_none() || out.key_index.len() == rows)
                    && out.values.iter().all(|v| v.len() == rows);
                if !exact {
                    // the rest of the file through polars, a row group's worth at a time
                    self.polars_rest(first_row, tx);
                    return;
                }
                first_row += rows;
                if tx.send(Ok(EventChunk::Columns(out))).is_err() {
                    return;
                }
            }
        });
    }

    /// Decodes the next `rows` times and keys into `out`.
    fn fill_times_keys(
        &self,
        file: &[u8],
        cursors: &mut [Cursor],
        out: &mut EventColumns,
        rows: usize,
        keys_seen: &mut usize,
    ) -> Here<()> {
        let (time, key) = cursors.split_first_mut().ok_or(NotHere)?;
        out.ts.reserve_exact(rows);
        time.fill(file, &self.meta, &mut Sink::I64(&mut out.ts), rows)?;
        if let Some(k) = key.first_mut() {
            out.key_index.reserve_exact(rows);
            let sink = &mut Sink::Keys {
                values: &mut out.key_values,
                index: &mut out.key_index,
                seen: keys_seen,
            };
            k.fill(file, &self.meta, sink, rows)?;
        }
        Ok(())
    }

    /// Rows `first_row..` read by polars and sent on, in slices that end where row groups do.
    fn polars_rest(&self, first_row: usize, tx: &std::sync::mpsc::SyncSender<Result<EventChunk>>) {
        let mut at = 0usize;
        let mut from = first_row;
        for rg in &self.meta.row_groups {
            let end = at + rg.num_rows();
            at = end;
            if end <= from {
                continue;
            }
            let chunk = self.polars_chunk(from, end - from).map(EventChunk::Frame);
            let failed = chunk.is_err();
            if tx.send(chunk).is_err() || failed {
                return;
            }
            from = end;
        }
    }

    /// Rows `first_row..first_row + rows` read by polars.
    fn polars_chunk(&self, first_row: usize, rows: usize) -> Result<DataFrame> {
        let bad = format_error(&self.path, "Parquet");
        let f = File::open(&self.path).map_err(cannot_read(&self.path))?;
        let mut r = ParquetReader::new(f)
            .with_slice(Some((first_row, rows)))
            .with_projection(self.projection.clone());
        r.set_metadata(self.meta.clone());
        r.finish().map_err(bad)
    }
}

/// Decodes the next `rows` values of each value column into `out` (one vector per column).
fn fill_values(
    cursors: &mut [Cursor],
    file: &[u8],
    meta: &FileMetadata,
    out: &mut [Vec<f64>],
    rows: usize,
) -> Here<()> {
    for (c, v) in cursors.iter_mut().zip(out.iter_mut()) {
        v.reserve_exact(rows);
        c.fill(file, meta, &mut Sink::F64(v), rows)?;
    }
    Ok(())
}

/// One column's pages, decoded a part at a time, row group after row group: a page is opened
/// (decompressed, its levels checked) and its values handed out as chunks take them, so that a
/// chunk holds exactly its rows however the pages fall.
struct Cursor {
    /// The column's index among the file's leaf columns.
    column: usize,
    /// How its `INT32` values read.
    int32: Int32,
    /// The next row group to open.
    group: usize,
    /// The current column chunk's bytes in the file, and where its next page header starts.
    chunk: std::ops::Range<usize>,
    at: usize,
    /// Values of the current column chunk in pages not opened yet.
    left: usize,
    /// The current column chunk's value width, whether it has definition levels, its codec.
    width: usize,
    optional: bool,
    compression: Compression,
    /// The open data page: its values' bytes (in `page`, or in the file when stored
    /// uncompressed), how they are encoded and how many are left.
    open: Option<Open>,
    /// A decompressed page.
    page: Vec<u8>,
    /// The current dictionary page's values (64 bits each: `INT32` widened, `DOUBLE` as bits),
    /// and the number its first value has in the key list (keys only).
    dict: Vec<u64>,
    base: usize,
    ctx: DecompressionContext,
}

/// An open data page.
struct Open {
    /// Its values' bytes: in `Cursor::page` when decompressed, else in the file.
    bytes: std::ops::Range<usize>,
    in_file: bool,
    /// Values not handed out yet.
    left: usize,
    encoding: Values,
}

/// How an open page's values are stored.
enum Values {
    /// One after another; the next at this byte of the page's values.
    Plain(usize),
    /// Dictionary indices in the hybrid encoding.
    Dictionary(Hybrid),
}

impl Cursor {
    fn new(column: usize, int32: Int32) -> Cursor {
        Cursor {
            column,
            int32,
            group: 0,
            chunk: 0..0,
            at: 0,
            left: 0,
            width: 8,
            optional: false,
            compression: Compression::Uncompressed,
            open: None,
            page: vec![],
            dict: vec![],
            base: 0,
            ctx: DecompressionContext::Unset,
        }
    }

    /// Decodes values until `sink` holds `want` of them (fewer only when the column ends).
    fn fill(&mut self, file: &[u8], meta: &FileMetadata, sink: &mut Sink, want: usize) -> Here<()> {
        while sink.len() < want {
            let Some(open) = &mut self.open else {
                if !self.open_page(file, meta, sink)? {
                    return Ok(());
                }
                continue;
            };
            let take = open.left.min(want - sink.len());
            let bytes = if open.in_file {
                &file[open.bytes.clone()]
            } else {
                &self.page[open.bytes.clone()]
            };
            match &mut open.encoding {
                Values::Plain(at) => {
                    let w = self.width;
                    sink.plain(bytes.get(*at..).ok_or(NotHere)?, w, take, self.int32)?;
                    *at += take * w;
                }
                Values::Dictionary(h) => {
                    let (dict, base) = (&self.dict, self.base);
                    let mut res = Ok(());
                    h.take(bytes, take, &mut |run| {
                        if res.is_ok() {
                            res = sink.indices(run, dict, base);
                        }
                    })?;
                    res?;
                }
            }
            open.left -= take;
            if open.left == 0 {
                self.open = None;
            }
        }
        Ok(())
    }

    /// Opens the next data page (after the dictionary or index pages before it, and moving on
    /// to the next row group at the end of one); `false` at the column's end.
    fn open_page(&mut self, file: &[u8], meta: &FileMetadata, sink: &mut Sink) -> Here<bool> {
        loop {
            if self.left == 0 {
                let Some(group) = meta.row_groups.get(self.group) else {
                    return Ok(false);
                };
                self.group += 1;
                let c = group.parquet_columns().get(self.column).ok_or(NotHere)?;
                // the column chunk's bytes, from its offsets checked here (polars' `byte_range`
                // unwraps on a damaged footer)
                let first_page = c.dictionary_page_offset().unwrap_or(c.data_page_offset());
                let start = usize::try_from(first_page).map_err(|_| NotHere)?;
                let len = usize::try_from(c.compressed_size()).map_err(|_| NotHere)?;
                let end = start.checked_add(len).ok_or(NotHere)?;
                if end > file.len() {
                    return Err(NotHere);
                }
                self.chunk = start..end;
                self.at = start;
                self.left = group.num_rows();
                self.width = width(c).ok_or(NotHere)?;
                self.optional = c.descriptor().descriptor.max_def_level == 1;
                self.compression = c.compression();
                self.dict.clear();
                continue;
            }
            let rest = file.get(self.at..self.chunk.end).ok_or(NotHere)?;
            let mut reader = rest;
            let header = {
                let mut prot = TCompactInputProtocol::new(&mut reader, rest.len());
                PageHeader::read_from_in_protocol(&mut prot).map_err(|_| NotHere)?
            };
            let body_start = self.at + (rest.len() - reader.len());
            let stored = usize::try_from(header.compressed_page_size).map_err(|_| NotHere)?;
            let size = usize::try_from(header.uncompressed_page_size).map_err(|_| NotHere)?;
            let body = body_start..body_start.checked_add(stored).ok_or(NotHere)?;
            if body.end > self.chunk.end {
                return Err(NotHere);
            }
            self.at = body.end;
            if header.type_ == PageType::INDEX_PAGE {
                continue;
            }
            if header.type_ != PageType::DATA_PAGE && header.type_ != PageType::DICTIONARY_PAGE {
                return Err(NotHere);
            }
            let in_file = self.compression == Compression::Uncompressed;
            let bytes = if in_file {
                body
            } else {
                self.page.clear();
                self.page.resize(size, 0);
                decompress(self.compression, &file[body], &mut self.page, &mut self.ctx).map_err(|_| NotHere)?;
                0..size
            };
            let page = if in_file { &file[bytes.clone()] } else { &self.page[..] };
            let w = self.width;
            if header.type_ == PageType::DICTIONARY_PAGE {
                let d = header.dictionary_page_header.as_ref().ok_or(NotHere)?;
                if d.encoding != PageEncoding::PLAIN && d.encoding != PageEncoding::PLAIN_DICTIONARY {
                    return Err(NotHere);
                }
                let n = usize::try_from(d.num_values).map_err(|_| NotHere)?;
                let int32 = self.int32;
                self.dict.clear();
                let values = page.get(..n.checked_mul(w).ok_or(NotHere)?).ok_or(NotHere)?;
                self.dict.extend(values.chunks_exact(w).map(|b| plain_bits(b, int32)));
                self.base = sink.dictionary(&self.dict)?;
                continue;
            }
            let h = header.data_page_header.as_ref().ok_or(NotHere)?;
            let n = usize::try_from(h.num_values).map_err(|_| NotHere)?;
            self.left = self.left.checked_sub(n).ok_or(NotHere)?;
            let mut from = 0usize;
            if self.optional {
                // definition levels: a 4-byte length, then 1-bit RLE/bit-packed levels, all 1
                if h.definition_level_encoding != PageEncoding::RLE {
                    return Err(NotHere);
                }
                let len = page.get(..4).ok_or(NotHere)?;
                let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
                let levels_end = len.checked_add(4).ok_or(NotHere)?;
                let levels = page.get(4..levels_end).ok_or(NotHere)?;
                let mut all_set = true;
                Hybrid::new(1).take(levels, n, &mut |run| all_set &= run.iter().all(|&l| l == 1))?;
                if !all_set {
                    return Err(NotHere);
                }
                from = levels_end;
            }
            let encoding = match h.encoding {
                PageEncoding::PLAIN => {
                    if page.len() < from + n.checked_mul(w).ok_or(NotHere)? {
                        return Err(NotHere);
                    }
                    Values::Plain(0)
                }
                PageEncoding::RLE_DICTIONARY | PageEncoding::PLAIN_DICTIONARY => {
                    let bits = *page.get(from).ok_or(NotHere)?;
                    if bits > 32 {
                        return Err(NotHere);
                    }
                    from += 1;
                    Values::Dictionary(Hybrid::new(u32::from(bits)))
                }
                _ => return Err(NotHere),
            };
            let bytes = bytes.start + from..bytes.end;
            if n > 0 {
                self.open = Some(Open {
                    bytes,
                    in_file,
                    left: n,
                    encoding,
                });
            }
            return Ok(true);
        }
    }
}

/// Where a column's values go.
enum Sink<'a> {
    I64(&'a mut Vec<i64>),
    F64(&'a mut Vec<f64>),
    /// Keys: values first seen appended to `values` (numbered on from `seen`, the keys seen in
    /// earlier chunks and pages), one number per row to `index`.
    Keys {
        values: &'a mut Vec<i64>,
        index: &'a mut Vec<u32>,
        seen: &'a mut usize,
    },
}

/// The physical width of a column's values in bytes (4 or 8), `None` for other types.
fn width(c: &ColumnChunkMetadata) -> Option<usize> {
    use polars_parquet::parquet::schema::types::PhysicalType as P;
    match c.physical_type() {
        P::Int32 => Some(4),
        P::Int64 | P::Double => Some(8),
        _ => None,
    }
}

/// The value of plain bytes `b` (4 or 8 of them) as 64 bits: `INT32` sign- or zero-extended as
/// `int32` says, anything 8 bytes wide as it is.
#[inline(always)]
fn plain_bits(b: &[u8], int32: Int32) -> u64 {
    if b.len() == 4 {
        let v = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
        match int32 {
            Int32::Signed => v as i32 as i64 as u64,
            Int32::Unsigned => u64::from(v),
        }
    } else {
        u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl Sink<'_> {
    /// Values held.
    fn len(&self) -> usize {
        match self {
            Sink::I64(v) => v.len(),
            Sink::F64(v) => v.len(),
            Sink::Keys { index, .. } => index.len(),
        }
    }

    /// Numbers `n` new keys: the first one's number.
    fn number_keys(seen: &mut usize, n: usize) -> Here<usize> {
        let base = *seen;
        *seen = base.checked_add(n).filter(|&s| s <= u32::MAX as usize).ok_or(NotHere)?;
        Ok(base)
    }

    /// Appends `n` plain values from `bytes`.
    fn plain(&mut self, bytes: &[u8], w: usize, n: usize, int32: Int32) -> Here<()> {
        let bytes = bytes.get(..n.checked_mul(w).ok_or(NotHere)?).ok_or(NotHere)?;
        match self {
            Sink::I64(out) if w == 8 => out.extend(bytes.chunks_exact(8).map(|b| plain_bits(b, int32) as i64)),
            Sink::F64(out) if w == 8 => out.extend(bytes.chunks_exact(8).map(|b| f64::from_bits(plain_bits(b, int32)))),
            Sink::Keys {
                values, index, seen, ..
            } => {
                let base = Self::number_keys(seen, n)?;
                values.extend(bytes.chunks_exact(w).map(|b| plain_bits(b, int32) as i64));
                index.extend(base as u32..(base + n) as u32);
            }
            _ => return Err(NotHere),
        }
        Ok(())
    }

    /// A dictionary page's values are in `dict`: keys number them; the first one's number.
    fn dictionary(&mut self, dict: &[u64]) -> Here<usize> {
        match self {
            Sink::Keys { values, seen, .. } => {
                let base = Self::number_keys(seen, dict.len())?;
                values.extend(dict.iter().map(|&v| v as i64));
                Ok(base)
            }
            _ => Ok(0),
        }
    }

    /// Appends the values of dictionary indices `idx` (each below `dict.len()`, checked).
    #[inline(always)]
    fn indices(&mut self, idx: &[u32], dict: &[u64], base: usize) -> Here<()> {
        if idx.iter().any(|&i| i as usize >= dict.len()) {
            return Err(NotHere);
        }
        match self {
            Sink::I64(out) => out.extend(idx.iter().map(|&i| dict[i as usize] as i64)),
            Sink::F64(out) => out.extend(idx.iter().map(|&i| f64::from_bits(dict[i as usize]))),
            Sink::Keys { index, .. } => index.extend(idx.iter().map(|&i| base as u32 + i)),
        }
        Ok(())
    }
}

/// Reads an unsigned LEB128 value at `b[*at..]`.
fn uleb(b: &[u8], at: &mut usize) -> Here<u64> {
    let (mut v, mut shift) = (0u64, 0u32);
    loop {
        let byte = *b.get(*at).ok_or(NotHere)?;
        *at += 1;
        if shift > 63 {
            return Err(NotHere);
        }
        v |= u64::from(byte & 0x7f) << shift;
        if byte & 0x80 == 0 {
            return Ok(v);
        }
        shift += 7;
    }
}

/// A place in data of the RLE / bit-packing hybrid encoding (`bits`-bit values), from which it
/// is decoded a part at a time.
struct Hybrid {
    bits: u32,
    /// The next run's header.
    at: usize,
    /// The current run.
    run: Run,
    /// Values of a bit-packed run unpacked and not handed out yet: `unpacked[given..len]`.
    unpacked: [u32; 32],
    given: usize,
    len: usize,
}

enum Run {
    None,
    /// `left` more of one value.
    Repeat {
        value: u32,
        left: usize,
    },
    /// Bit-packed values: the next 32 at byte `next`, `left` more in the run.
    Packed {
        next: usize,
        left: usize,
    },
}

impl Hybrid {
    fn new(bits: u32) -> Hybrid {
        Hybrid {
            bits,
            at: 0,
            run: Run::None,
            unpacked: [0; 32],
            given: 0,
            len: 0,
        }
    }

    /// Hands the next `want` values of `b` to `out`, up to 32 at a time.
    fn take(&mut self, b: &[u8], want: usize, out: &mut impl FnMut(&[u32])) -> Here<()> {
        let bits = self.bits as usize;
        let mut left = want;
        while left > 0 {
            if self.given < self.len {
                let m = (self.len - self.given).min(left);
                out(&self.unpacked[self.given..self.given + m]);
                self.given += m;
                left -= m;
                continue;
            }
            match &mut self.run {
                Run::None => {
                    let header = uleb(b, &mut self.at)?;
                    let count = usize::try_from(header >> 1).map_err(|_| NotHere)?;
                    if header & 1 == 0 {
                        let bytes = bits.div_ceil(8);
                        let mut v = [0u8; 4];
                        v[..bytes].copy_from_slice(b.get(self.at..self.at + bytes).ok_or(NotHere)?);
                        self.at += bytes;
                        if count == 0 {
                            return Err(NotHere);
                        }
                        self.run = Run::Repeat {
                            value: u32::from_le_bytes(v),
                            left: count,
                        };
                    } else {
                        // groups of 8 values
                        let values = count.checked_mul(8).ok_or(NotHere)?;
                        let next = self.at;
                        self.at = next
                            .checked_add(values.checked_mul(bits).ok_or(NotHere)? / 8)
                            .ok_or(NotHere)?;
                        if self.at > b.len() || values == 0 {
                            return Err(NotHere);
                        }
                        self.run = Run::Packed { next, left: values };
                    }
                }
                Run::Repeat { value, left: run } => {
                    let m = (*run).min(left);
                    let same = [*value; 32];
                    let mut k = m;
                    while k > 0 {
                        let j = k.min(32);
                        out(&same[..j]);
                        k -= j;
                    }
                    *run -= m;
                    left -= m;
                    if *run == 0 {
                        self.run = Run::None;
                    }
                }
                Run::Packed { next, left: run } => {
                    // 32 values (4 * bits bytes) unpacked at a time; a short last block padded
                    let step = 4 * bits;
                    if bits == 0 {
                        self.unpacked = [0; 32];
                    } else if *next + step <= b.len() {
                        u32::unpack(&b[*next..*next + step], bits, &mut self.unpacked);
                    } else {
                        let mut tail = [0u8; 128];
                        let have = b.len() - *next;
                        tail[..have].copy_from_slice(&b[*next..]);
                        u32::unpack(&tail[..step], bits, &mut self.unpacked);
                    }
                    let m = (*run).min(32);
                    *next += step;
                    *run -= m;
                    (self.given, self.len) = (0, m);
                    if *run == 0 {
                        self.run = Run::None;
                    }
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{ChunkReader, InputColumns, write_frame_with};

    /// A file's rows as the job sees them: times, keys (`None` without a key), values (as bits,
    /// so that NaN compares; nulls as `None`).
    type Rows = Vec<(i64, Option<i64>, Vec<Option<u64>>)>;

    /// Chunks of a file of `total` rows that end at or before row `row`.
    fn chunks_before(row: usize, total: usize) -> usize {
        let (mut at, mut n) = (0, 0);
        while at < total {
            at = (at + chunk_rows(at)).min(total);
            if at > row {
                break;
            }
            n += 1;
        }
        n
    }

    fn cols(key: Option<&str>, values: &[&str]) -> InputColumns {
        InputColumns {
            time: "ts".into(),
            key: key.map(Into::into),
            values: values.iter().map(|v| v.to_string()).collect(),
        }
    }

    fn frame_rows(df: &DataFrame, c: &InputColumns, out: &mut Rows) {
        let ts = df.column(&c.time).unwrap().cast(&DataType::Int64).unwrap();
        let keys = c
            .key
            .as_ref()
            .map(|k| df.column(k).unwrap().cast(&DataType::Int64).unwrap());
        let values: Vec<Column> = c
            .values
            .iter()
            .map(|v| df.column(v).unwrap().cast(&DataType::Float64).unwrap())
            .collect();
        for i in 0..df.height() {
            let t = ts.i64().unwrap().get(i).unwrap();
            let k = keys.as_ref().and_then(|k| k.i64().unwrap().get(i));
            let v = values
                .iter()
                .map(|v| v.f64().unwrap().get(i).map(f64::to_bits))
                .collect();
            out.push((t, k, v));
        }
    }

    /// The rows through polars alone.
    fn polars_rows(path: &Path, c: &InputColumns) -> Rows {
        let mut r = ChunkReader::open(path, &c.values).unwrap();
        let mut out = vec![];
        while let Some(df) = r.next_chunk() {
            frame_rows(&df.unwrap(), c, &mut out);
        }
        out
    }

    /// The rows through an [`EventReader`], and how many chunks were decoded here.
    fn scanned_rows(path: &Path, c: &InputColumns) -> (Rows, usize) {
        let mut r = EventReader::open(path, c).unwrap().expect("decoded here");
        let (mut out, mut here, mut keys) = (vec![], 0, vec![]);
        let mut floor = 0usize;
        // the pipeline's side: ids encoded once per key number, dropped below each floor
        let (mut dict, mut ids) = (
            crate::batch::KeyDict::new(crate::batch::KeyKind::Int),
            KeyIds::default(),
        );
        while let Some(chunk) = r.next_chunk() {
            match chunk.unwrap() {
                EventChunk::Frame(df) => frame_rows(&df, c, &mut out),
                EventChunk::Columns(cc) => {
                    here += 1;
                    assert_eq!(cc.key_first, keys.len(), "keys numbered on from the earlier chunks'");
                    assert!(cc.key_floor <= keys.len() + cc.key_values.len());
                    if let Some(&n) = cc.key_index.iter().min() {
                        assert!(n as usize >= cc.key_floor, "a row refers to key {n}, below the floor");
                    }
                    assert!(cc.key_floor >= floor, "floors only rise");
                    floor = cc.key_floor;
                    keys.extend_from_slice(&cc.key_values);
                    ids.extend(&cc, &mut dict).unwrap();
                    // the ids held stay within the chunk's own keys and those it may refer to
                    assert!(ids.len() <= keys.len() - cc.key_floor, "{} ids held", ids.len());
                    for i in 0..cc.len() {
                        let k = c.key.as_ref().map(|_| keys[cc.key_index[i] as usize]);
                        if let Some(k) = k {
                            let id = ids.get(cc.key_index[i]).expect("an id for every row's key");
                            assert_eq!(dict.values().int_value(id), Some(k));
                        }
                        let v = cc.values.iter().map(|v| Some(v[i].to_bits())).collect();
                        out.push((cc.ts[i], k, v));
                    }
                    r.recycle(cc);
                }
            }
        }
        (out, here)
    }

    /// `n` rows: disordered times, `keys` distinct keys (few: dictionary pages; many: plain
    /// ones), values with three decimals (a NaN among them) and a column `w` of few values.
    fn events(n: usize, keys: u64, key_type: &DataType) -> DataFrame {
        let mut x = 0x9E37_79B9_7F4A_7C15u64;
        let mut next = move || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let ts: Vec<i64> = (0..n)
            .map(|i| 1_700_000_000_000 + i as i64 / 10 - (next() % 500) as i64)
            .collect();
        let key: Vec<i64> = (0..n).map(|_| (next() % keys) as i64).collect();
        let v: Vec<f64> = (0..n)
            .map(|i| {
                if i == 7 {
                    f64::NAN
                } else {
                    (next() % 1_000_000) as f64 / 1000.0
                }
            })
            .collect();
        // few distinct values: a dictionary-encoded float column
        let w: Vec<f64> = (0..n).map(|i| (i % 100) as f64 * 0.25).collect();
        DataFrame::new_infer_height(vec![
            Column::new("ts".into(), ts),
            Column::new("key".into(), key).cast(key_type).unwrap(),
            Column::new("value".into(), v),
            Column::new("w".into(), w),
        ])
        .unwrap()
    }

    fn write(df: &mut DataFrame, path: &Path, compression: ParquetCompression, row_group: usize, page: usize) {
        let f = File::create(path).unwrap();
        ParquetWriter::new(f)
            .with_compression(compression)
            .with_row_group_size(Some(row_group))
            .with_data_page_size(Some(page))
            .finish(df)
            .unwrap();
    }

    #[test]
    fn chunks_decoded_here_hold_polars_rows() {
        let dir = tempfile::tempdir().unwrap();
        let n = 700_000;
        let cases = [
            (ParquetCompression::Snappy, 1_000_000, 1 << 20, 50, DataType::UInt32),
            (
                ParquetCompression::Zstd(None),
                300_000,
                64 << 10,
                100_000,
                DataType::Int64,
            ),
            (ParquetCompression::Lz4Raw, 70_001, 1 << 20, 7, DataType::Int32),
            (
                ParquetCompression::Uncompressed,
                262_144,
                16 << 10,
                3_000_000_000,
                DataType::Int64,
            ),
        ];
        for (i, (compression, row_group, page, keys, key_type)) in cases.into_iter().enumerate() {
            let path = dir.path().join(format!("e{i}.parquet"));
            write(&mut events(n, keys, &key_type), &path, compression, row_group, page);
            for c in [
                cols(Some("key"), &["value", "w"]),
                cols(None, &["value"]),
                cols(Some("key"), &[]),
            ] {
                let (got, here) = scanned_rows(&path, &c);
                assert_eq!(here, chunks_before(n, n), "case {i}: chunks decoded here");
                assert_eq!(got, polars_rows(&path, &c), "case {i} {:?}", c.key);
            }
        }
    }

    #[test]
    fn what_is_not_decoded_here_is_read_by_polars() {
        let dir = tempfile::tempdir().unwrap();
        let n = 600_000;
        // nulls among the values from row 400,000: the chunks before are decoded here, the rest
        // (from the chunk with the first null) by polars
        let mut df = events(n, 1000, &DataType::UInt32);
        let v: Vec<Option<f64>> = (0..n)
            .map(|i| (i < 400_000 || i % 3 != 0).then_some(i as f64))
            .collect();
        df.replace("value", Column::new("value".into(), v)).unwrap();
        let path = dir.path().join("nulls.parquet");
        write(&mut df, &path, ParquetCompression::Snappy, 200_000, 1 << 20);
        let c = cols(Some("key"), &["value"]);
        let (got, here) = scanned_rows(&path, &c);
        assert_eq!(here, chunks_before(400_000, n));
        assert_eq!(got, polars_rows(&path, &c));
        assert!(got.iter().any(|r| r.2[0].is_none()), "the nulls are kept");
        // delta-encoded columns (fenestra's own window output as input): all through polars
        let mut out = DataFrame::new_infer_height(vec![
            Column::new("ts".into(), (0..50_000i64).collect::<Vec<_>>()),
            Column::new("key".into(), (0..50_000u32).map(|k| k / 7).collect::<Vec<_>>()),
            Column::new("value".into(), (0..50_000).map(f64::from).collect::<Vec<_>>()),
        ])
        .unwrap();
        let path = dir.path().join("delta.parquet");
        write_frame_with(&mut out, &path, crate::io::Compression::Lz4).unwrap();
        let (got, _) = scanned_rows(&path, &c);
        assert_eq!(got, polars_rows(&path, &c));
    }

    #[test]
    fn files_of_other_types_are_left_to_the_chunk_reader() {
        let dir = tempfile::tempdir().unwrap();
        let mut df = events(1000, 10, &DataType::Int64);
        let path = dir.path().join("e.parquet");
        write(&mut df, &path, ParquetCompression::Snappy, 1000, 1 << 20);
        // float times, string keys, float32 values, a missing column
        let mut other = df.clone();
        other
            .replace("ts", df.column("ts").unwrap().cast(&DataType::Float64).unwrap())
            .unwrap();
        other
            .replace("key", df.column("key").unwrap().cast(&DataType::String).unwrap())
            .unwrap();
        other
            .replace("w", df.column("w").unwrap().cast(&DataType::Float32).unwrap())
            .unwrap();
        let other_path = dir.path().join("o.parquet");
        write(&mut other, &other_path, ParquetCompression::Snappy, 1000, 1 << 20);
        assert!(
            EventReader::open(&other_path, &cols(None, &["value"]))
                .unwrap()
                .is_none()
        );
        assert!(
            EventReader::open(&path, &cols(Some("key"), &["value"]))
                .unwrap()
                .is_some()
        );
        let o = |c: &InputColumns| EventReader::open(&other_path, c).unwrap().is_none();
        assert!(o(&cols(Some("key"), &["value"])));
        assert!(o(&cols(None, &["w"])));
        assert!(EventReader::open(&path, &cols(None, &["nope"])).unwrap().is_none());
        // not Parquet
        let csv = dir.path().join("e.csv");
        std::fs::write(&csv, "ts,key,value\n1,2,3\n").unwrap();
        assert!(
            EventReader::open(&csv, &cols(Some("key"), &["value"]))
                .unwrap()
                .is_none()
        );
    }

    /// Writes `ts`, `key`, `value` through polars' Parquet writer with the column encodings,
    /// nullability and page version given (what a DataFrame write does not let one choose).
    fn write_arrow(
        path: &Path,
        columns: (Vec<i64>, Vec<u32>, Vec<f64>),
        nullable: bool,
        version: polars_parquet::write::Version,
        encodings: [polars_parquet::write::Encoding; 3],
        row_group: usize,
    ) {
        use polars_arrow::array::{Array, PrimitiveArray};
        use polars_arrow::datatypes::{ArrowDataType as D, Field as F};
        use polars_arrow::record_batch::RecordBatchT;
        use polars_parquet::write::{
            CompressionOptions, FileWriter, RowGroupIterator, StatisticsOptions, WriteOptions,
        };
        let schema: ArrowSchema = [
            F::new("ts".into(), D::Int64, nullable),
            F::new("key".into(), D::UInt32, nullable),
            F::new("value".into(), D::Float64, nullable),
        ]
        .into_iter()
        .map(|f| (f.name.clone(), f))
        .collect();
        let schema = Arc::new(schema);
        let n = columns.0.len();
        let options = WriteOptions {
            statistics: StatisticsOptions::default(),
            compression: CompressionOptions::Snappy,
            version,
            data_page_size: Some(32 << 10),
        };
        let batches: Vec<_> = (0..n)
            .step_by(row_group)
            .map(|at| {
                let len = row_group.min(n - at);
                let arrays: Vec<Box<dyn Array>> = vec![
                    PrimitiveArray::from_vec(columns.0[at..at + len].to_vec()).boxed(),
                    PrimitiveArray::from_vec(columns.1[at..at + len].to_vec()).boxed(),
                    PrimitiveArray::from_vec(columns.2[at..at + len].to_vec()).boxed(),
                ];
                (len, RecordBatchT::try_new(len, schema.clone(), arrays))
            })
            .collect();
        let sizes: Vec<usize> = batches.iter().map(|b| b.0).collect();
        let groups = RowGroupIterator::try_new(
            batches.into_iter().map(|b| b.1),
            &schema,
            options,
            encodings.iter().map(|e| vec![*e]).collect::<Vec<_>>().into(),
        )
        .unwrap();
        let mut w = FileWriter::try_new(File::create(path).unwrap(), (*schema).clone(), options).unwrap();
        for (group, len) in groups.zip(sizes) {
            w.write(len as u64, group.unwrap()).unwrap();
        }
        w.end(None).unwrap();
    }

    #[test]
    fn required_columns_dictionary_values_and_v2_pages() {
        use polars_parquet::write::{Encoding as E, Version};
        let dir = tempfile::tempdir().unwrap();
        let n = 300_000;
        let df = events(n, 500, &DataType::UInt32);
        let ts: Vec<i64> = df.column("ts").unwrap().i64().unwrap().into_no_null_iter().collect();
        let key: Vec<u32> = df.column("key").unwrap().u32().unwrap().into_no_null_iter().collect();
        let w: Vec<f64> = df.column("w").unwrap().f64().unwrap().into_no_null_iter().collect();
        let c = cols(Some("key"), &["value"]);
        let dictionary = [E::RleDictionary, E::RleDictionary, E::RleDictionary];
        let plain = [E::Plain, E::Plain, E::Plain];
        for (i, (nullable, version, encodings, here)) in [
            // required columns (no definition levels), dictionary-encoded floats
            (false, Version::V1, dictionary, true),
            (false, Version::V1, plain, true),
            (true, Version::V1, dictionary, true),
            // V2 pages: read by polars
            (true, Version::V2, dictionary, false),
        ]
        .into_iter()
        .enumerate()
        {
            let path = dir.path().join(format!("a{i}.parquet"));
            write_arrow(
                &path,
                (ts.clone(), key.clone(), w.clone()),
                nullable,
                version,
                encodings,
                120_000,
            );
            let (got, decoded) = scanned_rows(&path, &c);
            assert_eq!(decoded > 0, here, "case {i}: {decoded} chunks decoded here");
            assert_eq!(got, polars_rows(&path, &c), "case {i}");
            assert_eq!(got.len(), n);
        }
    }

    #[test]
    fn a_pyarrow_file_whose_dictionaries_overflow_into_plain_pages() {
        // tests/data/dictionary_fallback.parquet: 24,000 events written by pyarrow in row groups
        // of 10,000 with dictionary pages capped at 8 KiB, so that each column chunk's pages
        // start dictionary-encoded and go on plain once its dictionary is full
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/dictionary_fallback.parquet");
        for c in [cols(Some("key"), &["value"]), cols(None, &["value"])] {
            let (got, here) = scanned_rows(&path, &c);
            assert_eq!(here, 1);
            assert_eq!(got.len(), 24_000);
            assert_eq!(got, polars_rows(&path, &c));
        }
    }
}
