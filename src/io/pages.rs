//! Parquet pages for the window output, encoded straight from a column's values: integer
//! columns `DELTA_BINARY_PACKED`, float columns `PLAIN` or `BYTE_STREAM_SPLIT`, each with its statistics from one pass.
//!
//! polars' encoder takes integer values through an iterator, one at a time, recomputing a
//! miniblock's bit width on each; on Q2 of the peer workload (4.3M rows, five integer columns)
//! it was ~9% of the run's CPU. Here a block's deltas are computed in one pass over a slice, a
//! miniblock whose deltas are all equal (window bounds and revisions, nearly everywhere) is
//! written as its bit width of 0 alone, and the others are packed 64 values at a time by
//! polars' unrolled packers. The statistics (min, max, null count) come from the same pass (a
//! separate pass for them took twice as long as the encoding, 64-bit compares being emulated
//! on baseline x86-64). polars' float statistics are a scalar reduction (~4% of a Q1 run's CPU
//! over its four float columns); here they are eight-lane minima and maxima with the same
//! results: NaN when any value is NaN, a zero minimum written as -0.0, a zero maximum as +0.0.
//!
//! A float column is written `PLAIN` or `BYTE_STREAM_SPLIT` (the eight bytes of every value
//! gathered into eight streams), whichever its values favour ([`FloatLayout`]): values that
//! repeat their low bytes, as aggregates of values with few decimals do, compress far better
//! plain (Q1 of the peer workload: its four float columns to 0.62-0.67 of their size plain,
//! 0.88 split), while values with random low mantissa bytes compress better split, the exponent
//! streams packed and the random ones passed over quickly. Under LZ4, plain pages are compressed
//! by [`lz4`], which looks for matches where values start (1.0-1.5 GB/s on the peer workload's
//! columns, where the LZ4 library ran at 0.6-0.7 GB/s); split pages and other codecs go to the
//! library.
//!
//! The delta layout is the Parquet format's: a header (block size 256, 4 miniblocks of 64
//! values per block, the value count, the first value), then per block the smallest delta, the
//! 4 bit widths and the miniblocks, each `64 * width / 8` bytes; miniblocks past the last value
//! are not written. Deltas wrap (two's complement), as the format says, so any sequence
//! round-trips.

use polars_arrow::array::{Array, PrimitiveArray};
use polars_parquet::parquet::CowBuffer;
use polars_parquet::parquet::compression::{Compression, CompressionOptions};
use polars_parquet::parquet::encoding::bitpacked::Unpackable;
use polars_parquet::parquet::encoding::{uleb128, zigzag_leb128};
use polars_parquet::parquet::error::ParquetResult;
use polars_parquet::parquet::metadata::Descriptor;
use polars_parquet::parquet::page::CompressedDataPage;
use polars_parquet::parquet::page::{DataPage, DataPageHeader, DataPageHeaderV1};
use polars_parquet::parquet::schema::Repetition;
use polars_parquet::parquet::schema::types::PrimitiveType;
use polars_parquet::parquet::statistics::{ParquetStatistics, PrimitiveStatistics};
use polars_parquet::write::{CompressedPage, Encoding, Page, Version, WriteOptions, write_def_levels};

use super::lz4;

const BLOCK: usize = 256;
const MINIBLOCKS: usize = 4;
const MINI: usize = BLOCK / MINIBLOCKS;

/// An integer type of the window output, with the Parquet physical type it is stored as
/// (`INT32` for 32-bit, `INT64` for 64-bit integers; unsigned ones as the same bits).
pub trait DeltaInt: polars_arrow::types::NativeType {
    /// The physical value.
    type Physical: polars_parquet::parquet::types::NativeType;
    /// The physical value as the format's delta arithmetic sees it: sign-extended to 64 bits.
    fn delta_value(self) -> i64;
    /// The physical value.
    fn physical(self) -> Self::Physical;
    /// The value as an `i64` that orders as the value does (for the statistics).
    fn order_key(self) -> i64;
    /// The value of an [`DeltaInt::order_key`].
    fn from_order_key(k: i64) -> Self;
}

macro_rules! delta_int {
    ($t:ty, $p:ty, $key:expr, $from:expr) => {
        impl DeltaInt for $t {
            type Physical = $p;
            #[inline(always)]
            fn delta_value(self) -> i64 {
                self as $p as i64
            }
            #[inline(always)]
            fn physical(self) -> $p {
                self as $p
            }
            #[inline(always)]
            fn order_key(self) -> i64 {
                $key(self)
            }
            #[inline(always)]
            fn from_order_key(k: i64) -> $t {
                $from(k)
            }
        }
    };
}
delta_int!(i32, i32, |v: i32| v as i64, |k: i64| k as i32);
delta_int!(u32, i32, |v: u32| v as i64, |k: i64| k as u32);
delta_int!(i64, i64, |v: i64| v, |k: i64| k);
// the sign bit flipped: unsigned order as signed order
delta_int!(u64, i64, |v: u64| (v ^ 1 << 63) as i64, |k: i64| k as u64 ^ 1 << 63);

fn uleb(v: u64, out: &mut Vec<u8>) {
    let mut buf = [0u8; 10];
    let n = uleb128::encode(v, &mut buf);
    out.extend_from_slice(&buf[..n]);
}

fn zigzag(v: i64, out: &mut Vec<u8>) {
    let (buf, n) = zigzag_leb128::encode(v);
    out.extend_from_slice(&buf[..n]);
}

/// Appends `values` encoded as `DELTA_BINARY_PACKED` to `out`; returns their smallest and
/// largest value (`None` when there are none), found in the same pass.
pub fn encode<T: DeltaInt>(values: &[T], out: &mut Vec<u8>) -> Option<(T, T)> {
    uleb(BLOCK as u64, out);
    uleb(MINIBLOCKS as u64, out);
    uleb(values.len() as u64, out);
    let Some((first, rest)) = values.split_first() else {
        zigzag(0, out);
        return None;
    };
    zigzag(first.delta_value(), out);
    let mut prev = first.delta_value();
    let (mut lo, mut hi) = (first.order_key(), first.order_key());
    let mut deltas = [0i64; BLOCK];
    let mut packed = [0u64; MINI];
    for block in rest.chunks(BLOCK) {
        let mut min = i64::MAX;
        for (d, v) in deltas.iter_mut().zip(block) {
            let x = v.delta_value();
            *d = x.wrapping_sub(prev);
            prev = x;
            min = min.min(*d);
            let k = v.order_key();
            lo = lo.min(k);
            hi = hi.max(k);
        }
        zigzag(min, out);
        let widths = out.len();
        out.extend_from_slice(&[0; MINIBLOCKS]);
        for (m, mini) in deltas[..block.len()].chunks(MINI).enumerate() {
            let mut any = 0u64;
            for (p, d) in packed.iter_mut().zip(mini) {
                *p = d.wrapping_sub(min) as u64;
                any |= *p;
            }
            let width = (64 - any.leading_zeros()) as usize;
            out[widths + m] = width as u8;
            if width == 0 {
                continue;
            }
            // a short last miniblock is padded with zeros (any value fits: they are not read)
            packed[mini.len()..].fill(0);
            let at = out.len();
            out.resize(at + MINI * width / 8, 0);
            u64::pack(&packed, width, &mut out[at..]);
        }
    }
    Some((T::from_order_key(lo), T::from_order_key(hi)))
}

/// The header and descriptor of a V1 data page of `n` values without nulls.
fn page_header(
    n: usize,
    encoding: Encoding,
    statistics: Option<ParquetStatistics>,
    type_: PrimitiveType,
) -> (DataPageHeader, Descriptor) {
    let optional = type_.field_info.repetition == Repetition::Optional;
    let header = DataPageHeader::V1(DataPageHeaderV1 {
        num_values: n as i32,
        encoding: encoding.into(),
        definition_level_encoding: Encoding::Rle.into(),
        repetition_level_encoding: Encoding::Rle.into(),
        statistics,
    });
    let descriptor = Descriptor {
        primitive_type: type_,
        max_def_level: optional as i16,
        max_rep_level: 0,
    };
    (header, descriptor)
}

/// A V1 data page of `n` values without nulls from `buffer` (definition levels, then values),
/// compressed with `compression`.
fn data_page(
    buffer: Vec<u8>,
    n: usize,
    encoding: Encoding,
    statistics: Option<ParquetStatistics>,
    type_: PrimitiveType,
    compression: CompressionOptions,
) -> ParquetResult<CompressedPage> {
    let (header, descriptor) = page_header(n, encoding, statistics, type_);
    let page = Page::Data(DataPage::new(header, CowBuffer::Owned(buffer), descriptor, n));
    polars_parquet::write::compress(page, vec![], compression)
}

/// A page's buffer with room for `value_bytes` more, its definition levels (all set, for an
/// optional column) written.
fn levels(type_: &PrimitiveType, n: usize, value_bytes: usize) -> Vec<u8> {
    let optional = type_.field_info.repetition == Repetition::Optional;
    let mut buffer = Vec::with_capacity(value_bytes + 64);
    // the V1 page (the only version the output writes) cannot fail to take its levels
    let _ = write_def_levels(&mut buffer, optional, None, n, Version::V1);
    buffer
}

/// The statistics of a page without nulls whose values span `range`, as `options` asks.
fn statistics<P: polars_parquet::parquet::types::NativeType>(
    type_: &PrimitiveType,
    options: WriteOptions,
    range: Option<(P, P)>,
) -> Option<ParquetStatistics> {
    options.has_statistics().then(|| {
        PrimitiveStatistics::<P> {
            primitive_type: type_.clone(),
            null_count: options.statistics.null_count.then_some(0),
            distinct_count: None,
            min_value: range.filter(|_| options.statistics.min_value).map(|r| r.0),
            max_value: range.filter(|_| options.statistics.max_value).map(|r| r.1),
        }
        .serialize()
    })
}

/// The page of an integer column without nulls: its values delta-encoded, with statistics,
/// for the column's Parquet type `type_`.
pub fn page<T: DeltaInt>(
    array: &PrimitiveArray<T>,
    type_: PrimitiveType,
    options: WriteOptions,
) -> ParquetResult<CompressedPage> {
    let values = array.values().as_slice();
    let mut buffer = levels(&type_, values.len(), values.len() / 2);
    let range = encode(values, &mut buffer).map(|(lo, hi)| (lo.physical(), hi.physical()));
    let stats = statistics(&type_, options, range);
    data_page(
        buffer,
        values.len(),
        Encoding::DeltaBinaryPacked,
        stats,
        type_,
        options.compression,
    )
}

/// The smallest and largest of `values` as polars' statistics give them: NaN for both when
/// any value is NaN, a zero minimum as -0.0 and a zero maximum as +0.0; `None` when empty.
pub fn float_range(values: &[f64]) -> Option<(f64, f64)> {
    const LANES: usize = 8;
    let first = *values.first()?;
    let (mut lo, mut hi, mut nan) = ([first; LANES], [first; LANES], [false; LANES]);
    let mut chunks = values.chunks_exact(LANES);
    for c in &mut chunks {
        for j in 0..LANES {
            let v = c[j];
            lo[j] = if v < lo[j] { v } else { lo[j] };
            hi[j] = if v > hi[j] { v } else { hi[j] };
            nan[j] |= v.is_nan();
        }
    }
    for &v in chunks.remainder() {
        lo[0] = if v < lo[0] { v } else { lo[0] };
        hi[0] = if v > hi[0] { v } else { hi[0] };
        nan[0] |= v.is_nan();
    }
    if first.is_nan() || nan.iter().any(|&n| n) {
        return Some((f64::NAN, f64::NAN));
    }
    let lo = lo.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = hi.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((if lo == 0.0 { -0.0 } else { lo }, if hi == 0.0 { 0.0 } else { hi }))
}

/// How a float column's pages lay out their values, chosen from samples of the column: `PLAIN`
/// unless `BYTE_STREAM_SPLIT` compresses the sampled pages to at most a fraction more bytes
/// ([`FloatLayout::SLACK`], [`FloatLayout::SLACK_LZ4`] under LZ4). A sample is a page's first [`FloatLayout::SAMPLE`] values (all of a shorter page's),
/// compressed both ways; pages are sampled until that many values are, the choice then holds for
/// the next [`FloatLayout::EVERY`] values (a sampled page itself takes its own sample's choice).
/// Samples are as large as the pages, or large, because short ones understate how well the
/// split layout compresses (LZ4 on Q2's mean column: 1.16-1.32x the plain size for 8,192
/// values, 1.07-1.14x for 32,768, 1.085x over the file's pages), as they do for short pages.
/// On a plain column of Q1 (1.4M values) the samples are ~3% of the compressor's work.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FloatLayout {
    /// Never split ([`FloatLayout::plain`]).
    plain_only: bool,
    split: bool,
    /// Values until the next sample (0: sampling).
    until_sample: usize,
    /// The samples so far: values, and their compressed bytes plain and split.
    sampled: usize,
    plain_bytes: usize,
    split_bytes: usize,
}

impl FloatLayout {
    /// Values sampled before a choice (256 KiB).
    pub const SAMPLE: usize = 32_768;
    /// Values a choice holds for (32 MiB of the column).
    pub const EVERY: usize = 1 << 22;
    /// The split layout is taken when its compressed samples are at most this fraction larger
    /// than the plain ones (snappy and zstd: the library's plain compression is ~2.5x slower than
    /// its split one on such values).
    pub const SLACK: f64 = 0.2;
    /// [`FloatLayout::SLACK`] under LZ4, whose plain pages [`lz4`] compresses fast and small:
    /// Q2's mean column came out 21% larger split (32.5 MB file against 28.3 MB plain, at the
    /// same wall time in 10 alternating runs), Q1's float columns 25-42% larger.
    pub const SLACK_LZ4: f64 = 0.1;

    /// A layout that writes every page `PLAIN`.
    pub fn plain() -> FloatLayout {
        FloatLayout {
            plain_only: true,
            ..FloatLayout::default()
        }
    }

    fn pays(plain: usize, split: usize, compression: CompressionOptions) -> bool {
        let slack = if compression == CompressionOptions::Lz4Raw {
            Self::SLACK_LZ4
        } else {
            Self::SLACK
        };
        split as f64 <= plain as f64 * (1.0 + slack)
    }

    /// Whether the next page, of `values`, is written split, sampling it when due.
    pub fn next_split(&mut self, values: &[f64], options: WriteOptions, table: &mut lz4::Table) -> bool {
        if self.plain_only || matches!(options.compression, CompressionOptions::Uncompressed) {
            // without a compressor the split layout has nothing to gain
            return false;
        }
        if self.until_sample > 0 {
            self.until_sample = self.until_sample.saturating_sub(values.len());
            return self.split;
        }
        let sample = &values[..values.len().min(Self::SAMPLE)];
        let (mut raw, mut packed) = (Vec::with_capacity(sample.len() * 8), vec![]);
        // each layout as its pages are compressed: plain values matched value by value
        plain_values(sample, &mut raw);
        let plain =
            compress_plain(&raw, options.compression, table, &mut packed).map_or(usize::MAX / 4, |()| packed.len());
        raw.clear();
        split_values(sample, &mut raw);
        packed.clear();
        let split = polars_parquet::parquet::compression::compress(options.compression, &raw, &mut packed)
            .map_or(usize::MAX / 4, |()| packed.len());
        self.sampled += sample.len();
        self.plain_bytes += plain;
        self.split_bytes += split;
        if self.sampled >= Self::SAMPLE {
            self.split = Self::pays(self.plain_bytes, self.split_bytes, options.compression);
            self.until_sample = Self::EVERY;
            (self.sampled, self.plain_bytes, self.split_bytes) = (0, 0, 0);
        }
        Self::pays(plain, split, options.compression)
    }
}

/// Appends `values` as `PLAIN` (little-endian, one after another).
fn plain_values(values: &[f64], out: &mut Vec<u8>) {
    if cfg!(target_endian = "little") {
        out.extend_from_slice(bytemuck::cast_slice(values));
    } else {
        for v in values {
            out.extend_from_slice(&v.to_le_bytes());
        }
    }
}

/// Appends `values` as `BYTE_STREAM_SPLIT`: byte `k` of every value in stream `k`, the streams
/// one after another.
fn split_values(values: &[f64], out: &mut Vec<u8>) {
    let n = values.len();
    let at = out.len();
    out.resize(at + n * 8, 0);
    let streams = &mut out[at..];
    // eight values at a time: eight bytes into each stream
    let mut chunks = values.chunks_exact(8);
    let mut i = 0;
    for c in &mut chunks {
        let b: [[u8; 8]; 8] = std::array::from_fn(|j| c[j].to_le_bytes());
        for k in 0..8 {
            let word: [u8; 8] = std::array::from_fn(|j| b[j][k]);
            streams[k * n + i..k * n + i + 8].copy_from_slice(&word);
        }
        i += 8;
    }
    for v in chunks.remainder() {
        for (k, byte) in v.to_le_bytes().into_iter().enumerate() {
            streams[k * n + i] = byte;
        }
        i += 1;
    }
}

/// The page of a float column without nulls, `PLAIN` or `BYTE_STREAM_SPLIT` as `layout`
/// chooses, with statistics.
pub fn float_page(
    array: &PrimitiveArray<f64>,
    type_: PrimitiveType,
    options: WriteOptions,
    layout: &mut FloatLayout,
    table: &mut lz4::Table,
) -> ParquetResult<CompressedPage> {
    let values = array.values().as_slice();
    let mut buffer = levels(&type_, values.len(), values.len() * 8);
    let split = layout.next_split(values, options, table);
    if split {
        split_values(values, &mut buffer);
    } else {
        plain_values(values, &mut buffer);
    }
    let encoding = if split {
        Encoding::ByteStreamSplit
    } else {
        Encoding::Plain
    };
    let stats = statistics(&type_, options, float_range(values));
    if split || options.compression != CompressionOptions::Lz4Raw {
        return data_page(buffer, values.len(), encoding, stats, type_, options.compression);
    }
    // plain values under LZ4: matched value by value ([`lz4`])
    let mut packed = Vec::new();
    compress_plain(&buffer, options.compression, table, &mut packed)?;
    let (header, descriptor) = page_header(values.len(), encoding, stats, type_);
    Ok(CompressedPage::Data(CompressedDataPage::new(
        header,
        CowBuffer::Owned(packed),
        Compression::Lz4Raw,
        buffer.len(),
        descriptor,
        values.len(),
    )))
}

/// Compresses `bytes`, whose tail is plain 64-bit floats (after a page's levels, say), into
/// `out` (cleared first): under LZ4 with [`lz4::compress_values`], matched at the values' starts
/// (the first at `bytes.len() % 8`), with any other codec by polars.
pub fn compress_plain(
    bytes: &[u8],
    compression: CompressionOptions,
    table: &mut lz4::Table,
    out: &mut Vec<u8>,
) -> ParquetResult<()> {
    if compression == CompressionOptions::Lz4Raw {
        lz4::compress_values(bytes, bytes.len() % 8, table, out);
        return Ok(());
    }
    out.clear();
    polars_parquet::parquet::compression::compress(compression, bytes, out)
}

/// The page of `array` when it has no nulls and is a 32- or 64-bit integer array to be
/// delta-encoded or a `Float64` array to be written plain or split (`encodings`: the column's
/// choice; `layout`: the float column's state); `None` for anything else (polars' encoder takes
/// those).
pub fn try_page(
    array: &dyn Array,
    type_: &PrimitiveType,
    encodings: &[Encoding],
    options: WriteOptions,
    layout: &mut FloatLayout,
    table: &mut lz4::Table,
) -> Option<ParquetResult<CompressedPage>> {
    if array.null_count() > 0 || options.version != Version::V1 {
        return None;
    }
    fn typed<T: DeltaInt>(a: &dyn Array, t: &PrimitiveType, o: WriteOptions) -> Option<ParquetResult<CompressedPage>> {
        a.as_any()
            .downcast_ref::<PrimitiveArray<T>>()
            .map(|a| page(a, t.clone(), o))
    }
    use polars_arrow::datatypes::ArrowDataType as D;
    match (array.dtype(), encodings) {
        (D::Int32, [Encoding::DeltaBinaryPacked]) => typed::<i32>(array, type_, options),
        (D::UInt32, [Encoding::DeltaBinaryPacked]) => typed::<u32>(array, type_, options),
        (D::Int64, [Encoding::DeltaBinaryPacked]) => typed::<i64>(array, type_, options),
        (D::UInt64, [Encoding::DeltaBinaryPacked]) => typed::<u64>(array, type_, options),
        (D::Float64, [Encoding::Plain]) => array
            .as_any()
            .downcast_ref::<PrimitiveArray<f64>>()
            .map(|a| float_page(a, type_.clone(), options, layout, table)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uleb_at(b: &[u8], at: &mut usize) -> u64 {
        let (mut v, mut shift) = (0u64, 0);
        loop {
            let byte = b[*at];
            *at += 1;
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return v;
            }
            shift += 7;
        }
    }

    fn zigzag_at(b: &[u8], at: &mut usize) -> i64 {
        let u = uleb_at(b, at);
        (u >> 1) as i64 ^ -((u & 1) as i64)
    }

    /// A decoder written from the format's text, bit by bit: the reference for the encoder.
    fn decode(b: &[u8]) -> Vec<i64> {
        let mut at = 0;
        let block = uleb_at(b, &mut at) as usize;
        let minis = uleb_at(b, &mut at) as usize;
        let n = uleb_at(b, &mut at) as usize;
        let mut v = zigzag_at(b, &mut at);
        let mut out = vec![];
        if n > 0 {
            out.push(v);
        }
        while out.len() < n {
            let min = zigzag_at(b, &mut at);
            let widths: Vec<usize> = b[at..at + minis].iter().map(|&w| w as usize).collect();
            at += minis;
            for w in widths {
                if out.len() == n {
                    break;
                }
                for i in 0..block / minis {
                    let mut d = 0u64;
                    for bit in 0..w {
                        let pos = i * w + bit;
                        d |= u64::from(b[at + pos / 8] >> (pos % 8) & 1) << bit;
                    }
                    if out.len() < n {
                        v = v.wrapping_add(min).wrapping_add(d as i64);
                        out.push(v);
                    }
                }
                at += block / minis * w / 8;
            }
        }
        assert_eq!(at, b.len(), "bytes left over");
        out
    }

    fn check<T: DeltaInt + Ord>(values: &[T]) {
        let mut out = vec![];
        let range = encode(values, &mut out);
        let want_range = values.iter().min().copied().zip(values.iter().max().copied());
        assert_eq!(range, want_range, "statistics");
        let want: Vec<i64> = values.iter().map(|v| v.delta_value()).collect();
        assert_eq!(decode(&out), want, "{} values", values.len());
    }

    #[test]
    fn round_trips_runs_steps_extremes_and_every_length_around_a_block() {
        for n in [0usize, 1, 2, 63, 64, 65, 255, 256, 257, 258, 511, 512, 513, 1000, 4097] {
            let runs: Vec<i64> = (0..n as i64).map(|i| (i / 300) * 1000 - 5_000_000).collect();
            check(&runs);
            let steps: Vec<u32> = (0..n as u32).map(|i| i * 3 + (i % 7)).collect();
            check(&steps);
            let wild: Vec<i64> = (0..n as i64)
                .map(|i| match i % 4 {
                    0 => i64::MIN + i,
                    1 => i64::MAX - i,
                    2 => 0,
                    _ => -i * 1_000_003,
                })
                .collect();
            check(&wild);
            let high: Vec<u64> = (0..n as u64)
                .map(|i| if i % 3 == 0 { u64::MAX - i } else { i })
                .collect();
            check(&high);
            let high32: Vec<u32> = (0..n as u32)
                .map(|i| if i % 2 == 0 { u32::MAX - i } else { i })
                .collect();
            check(&high32);
            let neg32: Vec<i32> = (0..n as i32)
                .map(|i| if i % 5 == 0 { i32::MIN } else { i32::MAX - i })
                .collect();
            check(&neg32);
        }
    }

    #[test]
    fn split_values_are_the_formats_byte_streams() {
        for n in [0usize, 1, 7, 8, 9, 16, 17, 100] {
            let v: Vec<f64> = (0..n).map(|i| (i as f64 * 1.7).exp() - 3.0).collect();
            let mut got = vec![0xAB];
            split_values(&v, &mut got);
            // byte k of value i at k * n + i, after what the buffer held
            let mut want = vec![0xAB];
            for k in 0..8 {
                want.extend(v.iter().map(|x| x.to_le_bytes()[k]));
            }
            assert_eq!(got, want, "{n} values");
        }
    }

    /// Random-mantissa values (means of many draws), values with three decimals (the extremes
    /// of the peer workload's values), and a stream that turns from one to the other.
    fn means_and_decimals(n: usize) -> (Vec<f64>, Vec<f64>) {
        let mut x: u64 = 0x2545_F491_4F6C_DD1D;
        let mut next = || {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x
        };
        let means = (0..n).map(|_| 400.0 + (next() % 1_000_000) as f64 / 4_999.0).collect();
        let decimals = (0..n).map(|_| (next() % 1_000_000) as f64 / 1000.0).collect();
        (means, decimals)
    }

    fn options(compression: polars_parquet::write::CompressionOptions) -> WriteOptions {
        WriteOptions {
            statistics: polars_parquet::write::StatisticsOptions::default(),
            compression,
            version: Version::V1,
            data_page_size: None,
        }
    }

    #[test]
    fn float_pages_are_split_where_it_costs_little_and_plain_elsewhere() {
        use polars_parquet::write::CompressionOptions as C;
        let t = PrimitiveType::from_physical("v".into(), polars_parquet::parquet::schema::types::PhysicalType::Double);
        let (means, decimals) = means_and_decimals(3 * FloatLayout::SAMPLE);
        let encodings = |values: &[f64], page: usize, o: WriteOptions| {
            let mut layout = FloatLayout::default();
            values
                .chunks(page)
                .map(|c| {
                    let p = float_page(
                        &PrimitiveArray::from_slice(c),
                        t.clone(),
                        o,
                        &mut layout,
                        &mut lz4::Table::default(),
                    )
                    .expect("a page");
                    let CompressedPage::Data(d) = p else {
                        panic!("a data page")
                    };
                    Encoding::try_from(d.header().encoding()).expect("an encoding")
                })
                .collect::<Vec<_>>()
        };
        for compression in [C::Lz4Raw, C::Snappy] {
            // pages shorter than a sample (sampled until a sample's worth) and longer ones
            for page in [5000, FloatLayout::SAMPLE + 1000] {
                let o = options(compression);
                let got = encodings(&means, page, o);
                assert!(
                    got.iter().all(|e| *e == Encoding::ByteStreamSplit),
                    "{compression:?} {page}: {got:?}"
                );
                let got = encodings(&decimals, page, o);
                assert!(
                    got.iter().all(|e| *e == Encoding::Plain),
                    "{compression:?} {page}: {got:?}"
                );
            }
        }
        // without a compressor nothing is gained: plain
        let got = encodings(&means, 5000, options(C::Uncompressed));
        assert!(got.iter().all(|e| *e == Encoding::Plain), "{got:?}");
        // a choice holds for EVERY values, then the column is sampled again
        let mut layout = FloatLayout::default();
        let o = options(C::Lz4Raw);
        let table = &mut lz4::Table::default();
        assert!(layout.next_split(&means[..FloatLayout::SAMPLE], o, table));
        let mut seen = 0;
        while seen < FloatLayout::EVERY {
            assert!(
                layout.next_split(&decimals[..FloatLayout::SAMPLE], o, table),
                "the choice held"
            );
            seen += FloatLayout::SAMPLE;
        }
        assert!(
            !layout.next_split(&decimals[..FloatLayout::SAMPLE], o, table),
            "sampled again"
        );
    }

    #[test]
    fn plain_float_pages_under_lz4_are_lz4_blocks_of_their_levels_and_values() {
        use polars_parquet::parquet::compression::{DecompressionContext, decompress};
        use polars_parquet::parquet::schema::types::{FieldInfo, PhysicalType};
        let (_, decimals) = means_and_decimals(20_000);
        let mut t = PrimitiveType::from_physical("v".into(), PhysicalType::Double);
        for repetition in [Repetition::Required, Repetition::Optional] {
            t.field_info = FieldInfo {
                repetition,
                ..t.field_info.clone()
            };
            let o = options(CompressionOptions::Lz4Raw);
            let array = PrimitiveArray::from_slice(&decimals);
            let page = float_page(
                &array,
                t.clone(),
                o,
                &mut FloatLayout::default(),
                &mut lz4::Table::default(),
            )
            .expect("a page");
            let CompressedPage::Data(mut d) = page else {
                panic!("a data page")
            };
            assert_eq!(d.compression(), Compression::Lz4Raw);
            assert_eq!(
                Encoding::try_from(d.header().encoding()).expect("an encoding"),
                Encoding::Plain
            );
            let mut expected = levels(&t, decimals.len(), 0);
            plain_values(&decimals, &mut expected);
            assert_eq!(d.uncompressed_size(), expected.len());
            let mut back = vec![0u8; expected.len()];
            let packed = d.slice_mut().to_vec();
            decompress(
                Compression::Lz4Raw,
                &packed,
                &mut back,
                &mut DecompressionContext::Unset,
            )
            .expect("lz4");
            assert_eq!(back, expected, "{repetition:?}");
            assert!(d.compressed_size() < expected.len() * 3 / 4, "{}", d.compressed_size());
        }
    }

    #[test]
    fn float_statistics_are_polars_own() {
        use polars_compute::min_max::MinMaxKernel;
        let mut cases: Vec<Vec<f64>> = vec![
            vec![],
            vec![3.5],
            vec![0.0, -0.0],
            vec![-0.0, 2.0, 0.0],
            vec![-1.0, 0.0],
            vec![1.0, f64::NAN, -3.0],
            vec![f64::NAN],
            vec![f64::INFINITY, -f64::INFINITY, 5.0],
        ];
        // lengths around the lane count, the extreme anywhere, a NaN late
        for n in [7usize, 8, 9, 17, 1000] {
            for at in [0, n / 2, n - 1] {
                let mut v: Vec<f64> = (0..n).map(|i| (i as f64 * 0.37).sin() * 100.0).collect();
                v[at] = -1e300;
                cases.push(v.clone());
                v[at] = 1e300;
                cases.push(v.clone());
                v[at] = f64::NAN;
                cases.push(v);
            }
        }
        for v in cases {
            let arr = PrimitiveArray::<f64>::from_vec(v.clone());
            // polars' statistics: NaN propagated, zeros normalized when serialized
            let want = arr
                .min_max_propagate_nan_kernel()
                .map(|(lo, hi)| (if lo == 0.0 { -0.0 } else { lo }, if hi == 0.0 { 0.0 } else { hi }));
            let got = float_range(&v);
            let bits = |r: Option<(f64, f64)>| r.map(|(a, b)| (a.to_bits(), b.to_bits()));
            let nan = |r: Option<(f64, f64)>| r.is_some_and(|(a, b)| a.is_nan() && b.is_nan());
            assert!(
                bits(got) == bits(want) || (nan(got) && nan(want)),
                "{v:?}: {got:?} vs {want:?}"
            );
        }
    }

    #[test]
    fn equal_deltas_take_no_bits() {
        // 4097 values 1000 apart: the header, then per block the smallest delta and 4 zero widths
        let v: Vec<i64> = (0..4097).map(|i| i * 1000).collect();
        let mut out = vec![];
        encode(&v, &mut out);
        assert!(out.len() < 16 * 8 + 8, "{} bytes", out.len());
        check(&v);
    }
}
