//! Sequential Rust mirrors of the GPU kernels, one function per WGSL entry point and with its
//! name: [`count_slots`], [`scan_blocks`] / [`add_offsets`], [`scatter_slots`], [`reduce_runs`].
//!
//! They follow the shaders step by step (tiles of [`TILE`] events folded by slot before one
//! global update per distinct slot, block scans of [`SCAN_BLOCK`] elements, chunks of sorted
//! positions with carries at their edges) and share the run state with the shaders through
//! [`record`](crate::backend::gpu::record), the Rust twin of `shaders/shared/record.wgsl`; the
//! host step that merges the runs, [`assemble`], is the very code the GPU backend runs on what
//! it reads back. [`reduce_sorted`] chains them into a whole batch. They are the executable
//! specification the GPU is tested against (`tests/gpu.rs`), not the CPU backend's fast path,
//! which reduces straight into slot-indexed state ([`super::reduce::reduce_slots`]).

use crate::backend::gpu::record::{Record, RunOutputs, RunState, assemble};
use crate::backend::{Partials, SKIP_SLOT, SlotBatch};
use crate::error::Result;

/// Events per count/scatter workgroup (`TILE` in `shaders/shared/slot_table.wgsl`).
pub const TILE: usize = 1024;
/// Elements per scan workgroup (`WG * PER` in `shaders/scan.wgsl`).
pub const SCAN_BLOCK: usize = 1024;
/// Sorted positions per `reduce_runs` thread (the GPU backend's `CHUNK`).
pub const CHUNK: usize = 64;

/// The distinct slots of one tile in first-seen order, with each event's rank within its slot
/// (the workgroup hash table of `slot_table.wgsl`).
fn fold_tile(slots: &[u32]) -> (Vec<(u32, u32)>, Vec<u32>) {
    let mut table: std::collections::HashMap<u32, usize> = std::collections::HashMap::new();
    let mut entries: Vec<(u32, u32)> = vec![];
    let mut rank = vec![0u32; slots.len()];
    for (i, &s) in slots.iter().enumerate() {
        if s == SKIP_SLOT {
            continue;
        }
        let e = *table.entry(s).or_insert_with(|| {
            entries.push((s, 0));
            entries.len() - 1
        });
        rank[i] = entries[e].1;
        entries[e].1 += 1;
    }
    (entries, rank)
}

/// `count_slots.wgsl`: events per slot. `counts` must be zeroed and hold every slot.
pub fn count_slots(slots: &[u32], counts: &mut [u32]) {
    for tile in slots.chunks(TILE) {
        for (s, c) in fold_tile(tile).0 {
            counts[s as usize] += c;
        }
    }
}

/// `scan_blocks` of `scan.wgsl`: an exclusive scan of each block of [`SCAN_BLOCK`] elements in
/// place, the block totals written to `sums` (one per block).
pub fn scan_blocks(data: &mut [u32], sums: &mut [u32]) {
    for (b, block) in data.chunks_mut(SCAN_BLOCK).enumerate() {
        let mut total = 0u32;
        for x in block.iter_mut() {
            let v = *x;
            *x = total;
            total = total.wrapping_add(v);
        }
        sums[b] = total;
    }
}

/// `add_offsets` of `scan.wgsl`: adds each block's (scanned) offset to its elements.
pub fn add_offsets(data: &mut [u32], sums: &[u32]) {
    for (b, block) in data.chunks_mut(SCAN_BLOCK).enumerate() {
        for x in block.iter_mut() {
            *x = x.wrapping_add(sums[b]);
        }
    }
}

/// The exclusive scan of `data` in place, by levels, as the GPU backend dispatches it.
pub fn exclusive_scan(data: &mut [u32]) {
    let mut sums = vec![0u32; data.len().div_ceil(SCAN_BLOCK).max(1)];
    scan_blocks(data, &mut sums);
    if data.len() > SCAN_BLOCK {
        exclusive_scan(&mut sums);
        add_offsets(data, &sums);
    }
}

/// `scatter_slots.wgsl`: the permutation that sorts events by slot. `offsets` is the exclusive
/// scan of the counts, `cursor` is zeroed, `perm` holds one entry per non-skipped event.
pub fn scatter_slots(slots: &[u32], offsets: &[u32], cursor: &mut [u32], perm: &mut [u32]) {
    for (t, tile) in slots.chunks(TILE).enumerate() {
        let (entries, rank) = fold_tile(tile);
        let mut start = std::collections::HashMap::with_capacity(entries.len());
        for (s, c) in entries {
            start.insert(s, offsets[s as usize] + cursor[s as usize]);
            cursor[s as usize] += c;
        }
        for (j, &s) in tile.iter().enumerate() {
            if s != SKIP_SLOT {
                perm[(start[&s] + rank[j]) as usize] = (t * TILE + j) as u32;
            }
        }
    }
}

/// What `reduce_runs` writes, owned.
#[derive(Clone, Debug, Default)]
pub struct RunBuffers {
    /// Events per slot (slots whose run lies within one chunk).
    pub out_counts: Vec<u32>,
    /// `out_recs[slot * ncols + col]`.
    pub out_recs: Vec<Record>,
    /// Two carries per thread (`SKIP_SLOT` when unused).
    pub carry_slots: Vec<u32>,
    /// Events per carry.
    pub carry_counts: Vec<u32>,
    /// `carry_recs[carry * ncols + col]`.
    pub carry_recs: Vec<Record>,
}

impl RunBuffers {
    /// The buffers as [`assemble`] reads them.
    pub fn outputs(&self) -> RunOutputs<'_> {
        RunOutputs {
            out_counts: &self.out_counts,
            out_recs: &self.out_recs,
            carry_slots: &self.carry_slots,
            carry_counts: &self.carry_counts,
            carry_recs: &self.carry_recs,
        }
    }
}

/// `reduce_runs.wgsl`, every thread and every value column: thread `t` walks sorted positions
/// `[t * chunk, (t + 1) * chunk)`; a run wholly inside its chunk is final, a run that touches
/// the chunk's start or end (and continues beyond it) becomes the thread's carry.
pub fn reduce_runs(perm: &[u32], slots: &[u32], values: &[Vec<f64>], num_slots: usize, chunk: usize) -> RunBuffers {
    let ncols = values.len();
    let n = perm.len();
    let threads = n.div_ceil(chunk);
    let mut out = RunBuffers {
        out_counts: vec![0; num_slots],
        out_recs: vec![Record::default(); num_slots * ncols],
        carry_slots: vec![SKIP_SLOT; 2 * threads],
        carry_counts: vec![0; 2 * threads],
        carry_recs: vec![Record::default(); 2 * threads * ncols],
    };
    let slot_at = |p: usize| slots[perm[p] as usize];
    for t in 0..threads {
        let (start, end) = (t * chunk, ((t + 1) * chunk).min(n));
        let continues_left = start > 0 && slot_at(start - 1) == slot_at(start);
        let mut p = start;
        let mut first = true;
        while p < end {
            let cur = slot_at(p);
            let mut q = p;
            let mut st = vec![RunState::default(); ncols];
            while q < end && slot_at(q) == cur {
                let i = perm[q] as usize;
                for (c, s) in st.iter_mut().enumerate() {
                    s.push(values[c][i]);
                }
                q += 1;
            }
            let at_start = first && continues_left;
            let at_end = q == end && end < n && slot_at(end) == cur;
            let count = (q - p) as u32;
            if !at_start && !at_end {
                out.out_counts[cur as usize] = count;
                for (c, s) in st.iter().enumerate() {
                    out.out_recs[cur as usize * ncols + c] = s.record();
                }
            } else {
                let k = if at_start { 2 * t } else { 2 * t + 1 };
                out.carry_slots[k] = cur;
                out.carry_counts[k] = count;
                for (c, s) in st.iter().enumerate() {
                    out.carry_recs[k * ncols + c] = s.record();
                }
            }
            first = false;
            p = q;
        }
    }
    out
}

/// The whole GPU batch on the CPU: count, scan, scatter, reduce runs, assemble. Returns whether
/// a value beyond the f32 range was seen (the GPU backend then recomputes the batch in f64).
pub fn reduce_sorted(batch: &SlotBatch<'_>, ncols: usize, out: &mut Partials) -> Result<bool> {
    let s = batch.num_slots;
    let mut counts = vec![0u32; s];
    count_slots(batch.slots, &mut counts);
    let mut offsets = counts.clone();
    exclusive_scan(&mut offsets);
    let n_sorted = counts.iter().map(|&c| c as usize).sum();
    let mut perm = vec![0u32; n_sorted];
    scatter_slots(batch.slots, &offsets, &mut vec![0u32; s], &mut perm);
    let runs = reduce_runs(&perm, batch.slots, &batch.values[..ncols], s, CHUNK);
    assemble(&runs.outputs(), s, ncols, out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::reduce::reduce_slots;
    use crate::backend::{Tolerance, check_parity};
    use crate::generator::{AliasTable, Rng};

    fn batch_data(n: usize, keys: u32, zipf: f64, seed: u64) -> (Vec<u32>, usize, Vec<Vec<f64>>) {
        let mut rng = Rng::new(seed);
        let table = AliasTable::zipf(keys, zipf);
        let mut map = std::collections::HashMap::new();
        let slots: Vec<u32> = (0..n)
            .map(|_| {
                if rng.below(20) == 0 {
                    return SKIP_SLOT;
                }
                let k = table.sample(&mut rng);
                let next = map.len() as u32;
                *map.entry(k).or_insert(next)
            })
            .collect();
        let values = vec![
            (0..n).map(|_| 1.0e4 + rng.next_f64() * 10.0).collect(),
            (0..n).map(|_| rng.next_f64() - 0.5).collect(),
        ];
        (slots, map.len(), values)
    }

    #[test]
    fn scan_is_exclusive_across_levels() {
        for len in [0usize, 1, 1023, 1024, 1025, 5000, 1 << 21] {
            let data: Vec<u32> = (0..len as u32).map(|i| i % 7).collect();
            let mut got = data.clone();
            exclusive_scan(&mut got);
            let mut acc = 0u32;
            for (i, (&g, &d)) in got.iter().zip(&data).enumerate() {
                assert_eq!(g, acc, "len {len} at {i}");
                acc += d;
            }
        }
    }

    #[test]
    fn scatter_sorts_by_slot_and_keeps_every_event() {
        let (slots, s, _) = batch_data(10_000, 3000, 1.1, 3);
        let mut counts = vec![0u32; s];
        count_slots(&slots, &mut counts);
        let mut offsets = counts.clone();
        exclusive_scan(&mut offsets);
        let n_sorted = slots.iter().filter(|&&x| x != SKIP_SLOT).count();
        assert_eq!(counts.iter().sum::<u32>() as usize, n_sorted);
        let mut perm = vec![u32::MAX; n_sorted];
        scatter_slots(&slots, &offsets, &mut vec![0; s], &mut perm);
        let mut seen = perm.clone();
        seen.sort_unstable();
        seen.dedup();
        assert_eq!(seen.len(), n_sorted, "perm is not a permutation");
        assert!(perm.windows(2).all(|w| slots[w[0] as usize] <= slots[w[1] as usize]));
    }

    #[test]
    fn sorted_chain_matches_the_direct_reduction() {
        for (n, keys, zipf, seed) in [
            (1usize, 1u32, 0.0, 1u64),
            (500, 3, 0.0, 2),
            (20_000, 1000, 1.1, 4),
            (50_000, 40_000, 0.0, 5),
        ] {
            let (slots, s, values) = batch_data(n, keys, zipf, seed);
            let batch = SlotBatch {
                slots: &slots,
                values: &values,
                num_slots: s,
                want_m2: true,
            };
            let mut mirror = Partials::default();
            assert!(!reduce_sorted(&batch, 2, &mut mirror).unwrap());
            let mut direct = Partials::default();
            direct.reset(s, 2);
            reduce_slots(&batch, 0..n, &mut direct);
            check_parity(&mirror, &direct, Tolerance::GPU).unwrap_or_else(|e| panic!("n={n}: {e}"));
        }
    }

    #[test]
    fn values_beyond_f32_are_flagged() {
        let slots = vec![0u32, 0, 1];
        let values = vec![vec![1.0, 1e300, 2.0]];
        let batch = SlotBatch {
            slots: &slots,
            values: &values,
            num_slots: 2,
            want_m2: false,
        };
        assert!(reduce_sorted(&batch, 1, &mut Partials::default()).unwrap());
    }
}
