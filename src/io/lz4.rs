//! An LZ4 block encoder for pages of 64-bit floats: the output is an ordinary LZ4 block (any
//! LZ4 decoder reads it; Parquet's `LZ4_RAW` codec is one block per page), found by looking for
//! matches only where a value starts.
//!
//! The float columns of the window output are aggregates of values with few decimals (prices,
//! sensor readings, the peer workload's three): their doubles repeat their low mantissa bytes
//! across values (a value with three decimals is `k / 1000`, and the binary expansions of such
//! fractions are a few cycles of bits), while the sign, exponent and top mantissa bytes vary.
//! LZ4's general matcher finds those repeats, but it tries every byte position and pays a hash
//! lookup for most of them; on the peer workload's Q1 output it ran at ~600-690 MB/s on this
//! machine and took its four float columns to 0.62-0.70 of their size, ~20% of the whole run's
//! CPU. Here one lookup per value is made, keyed on the value's five low bytes; a hit is grown
//! backwards over equal bytes of the value before (usually its exponent byte, which most values
//! share) and forwards as far as the bytes agree. On the same columns: 1.4-1.5 GB/s and
//! 0.62-0.67 of their size; on means of many values (Q2's mean column) 1.06 GB/s and 0.73
//! (LZ4: 0.80).
//!
//! Values that share nothing (random mantissas) make no matches and come out as literals, about
//! 1.004 of their size, where LZ4 would scrape a few percent; the writer's float layout
//! ([`super::pages::FloatLayout`]) takes the byte-stream-split layout for those.
//!
//! The block rules kept (LZ4 block format, "end of block conditions"): the last 5 bytes are
//! literals, the last match starts at least 12 bytes before the end, matches are at least 4 bytes
//! long and at most 65,535 bytes back.

/// Hash bits of the match table: 8,192 entries, as many as the values in LZ4's 64 KiB window.
const HASH_BITS: u32 = 13;
/// The last bytes of a block are literals.
const LAST_LITERALS: usize = 5;
/// A match starts at least this many bytes before the end of the block.
const MATCH_LIMIT: usize = 12;
/// The shortest match the format has.
const MIN_MATCH: usize = 4;
/// The farthest a match may reach back.
const MAX_DISTANCE: usize = 65_535;

/// The match table (for each hash of five low value bytes, the last position it was seen at)
/// and a block buffer, kept between blocks: a block is written into the buffer, which stays
/// allocated and faulted in, and copied out at its compressed size (a fresh buffer of the
/// uncompressed size per page, zeroed, was ~12% of a Q1 run's page faults).
pub struct Table {
    hashes: Box<[u32; 1 << HASH_BITS]>,
    block: Vec<u8>,
}

impl Default for Table {
    fn default() -> Table {
        Table {
            hashes: Box::new([0; 1 << HASH_BITS]),
            block: vec![],
        }
    }
}

impl Clone for Table {
    /// A fresh table (its contents matter only within one block).
    fn clone(&self) -> Table {
        Table::default()
    }
}

/// The most bytes [`compress_values`] writes for `n` input bytes (all literals).
pub fn bound(n: usize) -> usize {
    n + n / 255 + 32
}

#[inline(always)]
fn read_u64(s: &[u8], at: usize) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&s[at..at + 8]);
    u64::from_le_bytes(b)
}

/// Writes the rest of a length of 15 or more (the token holds the 15): 255s, then what is left.
#[cold]
#[inline(never)]
fn put_length(dst: &mut [u8], mut o: usize, mut n: usize) -> usize {
    while n >= 255 {
        dst[o] = 255;
        o += 1;
        n -= 255;
    }
    dst[o] = n as u8;
    o + 1
}

/// Literals `src[from..to]` of 15 bytes or more: the rest of their length, then the bytes.
#[cold]
#[inline(never)]
fn long_literals(dst: &mut [u8], o: usize, src: &[u8], from: usize, to: usize) -> usize {
    let o = put_length(dst, o, to - from - 15);
    dst[o..o + (to - from)].copy_from_slice(&src[from..to]);
    o + (to - from)
}

/// The length of a match whose first 8 bytes are equal (`src[p..]` and `src[c..]`), up to
/// `limit`.
#[cold]
#[inline(never)]
fn extend_match(src: &[u8], p: usize, c: usize, limit: usize) -> usize {
    let mut len = 8;
    while p + len + 8 <= limit {
        let x = read_u64(src, c + len) ^ read_u64(src, p + len);
        if x != 0 {
            return len + (x.trailing_zeros() / 8) as usize;
        }
        len += 8;
    }
    while p + len < limit && src[c + len] == src[p + len] {
        len += 1;
    }
    len
}

/// Compresses `src` into `out` (cleared first) as one LZ4 block, looking for matches at
/// `first`, `first + 8`, … (the bytes before `first`, such as a page's definition levels, are
/// taken as literals). Any bytes round-trip; values that repeat their low bytes compress.
pub fn compress_values(src: &[u8], first: usize, table: &mut Table, out: &mut Vec<u8>) {
    let n = src.len();
    if table.block.len() < bound(n) {
        table.block.resize(bound(n), 0);
    }
    let dst = table.block.as_mut_slice();
    let len = compress_into(src, first, &mut table.hashes, dst);
    out.clear();
    out.extend_from_slice(&dst[..len]);
}

/// [`compress_values`] into `dst` (at least [`bound`] bytes); returns the block's length.
fn compress_into(src: &[u8], first: usize, table: &mut [u32; 1 << HASH_BITS], dst: &mut [u8]) -> usize {
    let n = src.len();
    table.fill(0);
    let limit = n.saturating_sub(LAST_LITERALS);
    let (mut o, mut anchor, mut p) = (0usize, 0usize, first);
    while p + MATCH_LIMIT <= n {
        let v = read_u64(src, p);
        // the five low bytes (the top three shifted out), hashed
        let h = ((v << 24).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - HASH_BITS)) as usize;
        let c = table[h] as usize;
        table[h] = p as u32;
        // 1..=MAX_DISTANCE back (an empty entry, 0, may point at real bytes: they are compared)
        let dist = p.wrapping_sub(c);
        if dist.wrapping_sub(1) < MAX_DISTANCE {
            let x = read_u64(src, c) ^ v;
            if x as u32 == 0 {
                let mut len = if x == 0 {
                    extend_match(src, p, c, limit)
                } else {
                    (x.trailing_zeros() / 8) as usize
                };
                len = len.min(limit - p);
                // grown backwards over equal bytes (not into the previous match)
                let (mut mp, mut mc) = (p, c);
                while mp > anchor && mc > 0 && src[mp - 1] == src[mc - 1] {
                    mp -= 1;
                    mc -= 1;
                    len += 1;
                }
                let lit = mp - anchor;
                let extra = len - MIN_MATCH;
                dst[o] = ((lit.min(15) as u8) << 4) | extra.min(15) as u8;
                o += 1;
                if lit >= 15 {
                    o = long_literals(dst, o, src, anchor, mp);
                } else if anchor + 16 <= n && o + 16 <= dst.len() {
                    // a fixed 16-byte copy, of which the next writes overwrite the excess
                    dst[o..o + 16].copy_from_slice(&src[anchor..anchor + 16]);
                    o += lit;
                } else {
                    dst[o..o + lit].copy_from_slice(&src[anchor..mp]);
                    o += lit;
                }
                dst[o..o + 2].copy_from_slice(&(dist as u16).to_le_bytes());
                o += 2;
                if extra >= 15 {
                    o = put_length(dst, o, extra - 15);
                }
                anchor = mp + len;
                if anchor > p + 8 {
                    // a match past this value: on at the first value start after it
                    p = first + (anchor - first).div_ceil(8) * 8;
                    continue;
                }
            }
        }
        p += 8;
    }
    let lit = n - anchor;
    dst[o] = (lit.min(15) as u8) << 4;
    o += 1;
    if lit >= 15 {
        o = put_length(dst, o, lit - 15);
    }
    dst[o..o + lit].copy_from_slice(&src[anchor..]);
    o + lit
}

#[cfg(test)]
mod tests {
    use super::*;
    use polars_parquet::parquet::compression::{Compression, DecompressionContext, decompress};
    use proptest::prelude::*;

    fn round_trip(src: &[u8], first: usize) -> usize {
        let (mut table, mut out) = (Table::default(), vec![]);
        compress_values(src, first, &mut table, &mut out);
        assert!(out.len() <= bound(src.len()));
        let mut back = vec![0u8; src.len()];
        decompress(Compression::Lz4Raw, &out, &mut back, &mut DecompressionContext::Unset).expect("a valid LZ4 block");
        assert_eq!(back, src, "{} bytes from {first}", src.len());
        out.len()
    }

    fn doubles(values: impl IntoIterator<Item = f64>) -> Vec<u8> {
        values.into_iter().flat_map(f64::to_le_bytes).collect()
    }

    /// Values with three decimals, as the peer workload's, drawn by a small LCG.
    fn three_decimals(n: usize, seed: u64) -> Vec<f64> {
        let mut s = seed;
        (0..n)
            .map(|_| {
                s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                ((s >> 33) % 1_000_000) as f64 / 1000.0
            })
            .collect()
    }

    #[test]
    fn values_with_few_decimals_compress_as_lz4_does() {
        let src = doubles(three_decimals(65_536, 7));
        let ours = round_trip(&src, 0) as f64 / src.len() as f64;
        let mut lz4 = vec![];
        polars_parquet::parquet::compression::compress(
            polars_parquet::parquet::compression::CompressionOptions::Lz4Raw,
            &src,
            &mut lz4,
        )
        .expect("lz4");
        let theirs = lz4.len() as f64 / src.len() as f64;
        assert!(ours < 0.75, "{ours}");
        assert!(ours <= theirs + 0.02, "ours {ours} against LZ4's {theirs}");
    }

    #[test]
    fn edge_cases_round_trip() {
        // empty, shorter than a match may be, exactly at the limits
        for n in 0..40 {
            let src: Vec<u8> = (0..n).map(|i| (i % 3) as u8).collect();
            round_trip(&src, 0);
            round_trip(&src, n.min(5));
        }
        // one value repeated: long matches, their length past 15 + 255
        let same = doubles(std::iter::repeat_n(0.125, 10_000));
        assert!(round_trip(&same, 0) < 400);
        // literal runs past 15 + 255 between matches, and values after a prefix of 6 bytes
        let mut mixed = vec![9u8; 6];
        let mut s = 1u64;
        for i in 0..20_000u64 {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1);
            let v = if i % 700 < 600 { s } else { 0x4040_0000_0000_1234 };
            mixed.extend_from_slice(&v.to_le_bytes());
        }
        round_trip(&mixed, 6);
        // random bytes: no matches, every byte a literal
        let random: Vec<u8> = (0..100_000u64)
            .map(|i| (i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 56) as u8)
            .collect();
        assert!(round_trip(&random, 3) <= bound(random.len()));
    }

    #[test]
    fn matches_reach_no_farther_than_the_window() {
        // a value that repeats only 8,192+ values later may not be matched across 64 KiB
        let mut v = three_decimals(20_000, 3);
        v[0] = 123.456;
        v[9_000] = 123.456;
        v[9_001] = 123.456;
        round_trip(&doubles(v), 0);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]
        #[test]
        fn any_bytes_round_trip(bytes in proptest::collection::vec(0u8..4, 0..3000), first in 0usize..16) {
            round_trip(&bytes, first.min(bytes.len()));
        }

        #[test]
        fn any_doubles_round_trip(vals in proptest::collection::vec(0u32..2000, 0..3000)) {
            round_trip(&doubles(vals.into_iter().map(|k| f64::from(k) / 8.0)), 0);
        }
    }
}
