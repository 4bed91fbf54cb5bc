//! Columnar micro-batches and the host-side key dictionary.
//!
//! Keys (integers, strings, or none) are encoded to dense `u32` ids in first-seen order so that
//! every backend indexes its state by a small integer. Output rows are ordered by key *value*;
//! [`KeyDict::sort_ids`] does that.

use crate::agg::state::{NULL_VALUE_BITS, canonical};
use crate::error::{Error, Result};
use std::cmp::Ordering;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A small, fast, non-cryptographic hasher for integer and string keys (FxHash).
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for chunk in bytes.chunks(8) {
            let mut b = [0u8; 8];
            b[..chunk.len()].copy_from_slice(chunk);
            self.write_u64(u64::from_le_bytes(b));
        }
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn write_i64(&mut self, i: i64) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64)
    }
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
}

/// `HashMap` with [`FxHasher`].
pub type FxHashMap<K, V> = HashMap<K, V, BuildHasherDefault<FxHasher>>;

/// What the key column holds.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum KeyKind {
    /// No key column: one global group (id 0).
    None,
    /// Integer keys (any integer width; stored as `i64`).
    Int,
    /// String keys.
    Str,
}

/// Integer values below this are looked up in a direct table instead of a hash map.
const DIRECT_LIMIT: i64 = 1 << 22;
const NONE: u32 = u32::MAX;

/// The key value behind every id, in id order: what output needs to print and sort keys.
///
/// The key dictionary owns one; the window store keeps a copy that it extends batch by batch
/// ([`KeyValues::extend_from`]) so that firing can sort rows by key value on another thread.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyValues {
    kind: KeyKind,
    ints: Vec<i64>,
    strs: Vec<Box<str>>,
    null_id: Option<u32>,
    len: u32,
}

impl KeyValues {
    /// No keys yet (one global group for [`KeyKind::None`]).
    pub fn new(kind: KeyKind) -> Self {
        KeyValues {
            kind,
            ints: vec![],
            strs: vec![],
            null_id: None,
            len: if kind == KeyKind::None { 1 } else { 0 },
        }
    }

    /// The kind of key.
    pub fn kind(&self) -> KeyKind {
        self.kind
    }

    /// Number of ids.
    pub fn len(&self) -> usize {
        self.len as usize
    }

    /// True when there are no ids.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn push_int(&mut self, v: i64) -> Result<u32> {
        let id = self.next_id()?;
        self.ints.push(v);
        Ok(id)
    }

    fn push_str(&mut self, v: &str) -> Result<u32> {
        let id = self.next_id()?;
        self.strs.push(v.into());
        Ok(id)
    }

    fn push_null(&mut self) -> Result<u32> {
        let id = self.next_id()?;
        match self.kind {
            KeyKind::Int => self.ints.push(0),
            KeyKind::Str => self.strs.push("".into()),
            KeyKind::None => {}
        }
        self.null_id = Some(id);
        Ok(id)
    }

    fn next_id(&mut self) -> Result<u32> {
        if self.len >= u32::MAX - 1 {
            return Err(Error::config("more than 4 billion distinct keys"));
        }
        self.len += 1;
        Ok(self.len - 1)
    }

    /// Appends the ids `from..other.len()` of `other` (a later state of the same dictionary).
    pub fn extend_from(&mut self, other: &KeyValues, from: usize) {
        if from >= other.len() {
            return;
        }
        self.kind = other.kind;
        match other.kind {
            KeyKind::Int => self.ints.extend_from_slice(&other.ints[from..]),
            KeyKind::Str => self.strs.extend(other.strs[from..].iter().cloned()),
            KeyKind::None => {}
        }
        self.null_id = other.null_id;
        self.len = other.len;
    }

    /// The values of ids `from..` as a new, detached `KeyValues` delta (see [`Self::extend_from`]).
    pub fn tail(&self, from: usize) -> KeyValues {
        let mut t = KeyValues::new(self.kind);
        t.len = 0;
        match self.kind {
            KeyKind::Int => t.ints = self.ints[from.min(self.ints.len())..].to_vec(),
            KeyKind::Str => t.strs = self.strs[from.min(self.strs.len())..].to_vec(),
            KeyKind::None => {}
        }
        t.null_id = self.null_id;
        t.len = self.len;
        t
    }

    /// Appends a delta made by [`Self::tail`] starting at this value's current length.
    pub fn append_tail(&mut self, tail: &KeyValues) {
        self.kind = tail.kind;
        self.ints.extend_from_slice(&tail.ints);
        self.strs.extend(tail.strs.iter().cloned());
        self.null_id = tail.null_id;
        self.len = tail.len;
    }

    /// True if `id` is the null key.
    #[inline]
    pub fn is_null(&self, id: u32) -> bool {
        self.null_id == Some(id)
    }

    /// The integer value of `id` (`None` for the null key or non-integer keys).
    pub fn int_value(&self, id: u32) -> Option<i64> {
        match self.kind {
            KeyKind::Int if !self.is_null(id) => self.ints.get(id as usize).copied(),
            _ => None,
        }
    }

    /// The string value of `id` (`None` for the null key or non-string keys).
    pub fn str_value(&self, id: u32) -> Option<&str> {
        match self.kind {
            KeyKind::Str if !self.is_null(id) => self.strs.get(id as usize).map(|s| &**s),
            _ => None,
        }
    }

    /// Orders two ids by key value; the null key sorts last.
    pub fn cmp_ids(&self, a: u32, b: u32) -> Ordering {
        match (self.is_null(a), self.is_null(b)) {
            (true, true) => Ordering::Equal,
            (true, false) => Ordering::Greater,
            (false, true) => Ordering::Less,
            _ => match self.kind {
                KeyKind::None => Ordering::Equal,
                KeyKind::Int => self.ints[a as usize].cmp(&self.ints[b as usize]),
                KeyKind::Str => self.strs[a as usize].cmp(&self.strs[b as usize]),
            },
        }
    }

    /// Sorts ids by key value (null last).
    pub fn sort_ids(&self, ids: &mut [u32]) {
        match self.kind {
            KeyKind::None => {}
            KeyKind::Int => {
                let null = self.null_id;
                ids.sort_unstable_by_key(|&id| (Some(id) == null, self.ints[id as usize]));
            }
            KeyKind::Str => ids.sort_unstable_by(|a, b| self.cmp_ids(*a, *b)),
        }
    }
}

/// The key ids in key-value order, kept up to date as keys arrive, so that firing a window
/// orders its rows without sorting key values each time.
///
/// New ids are sorted among themselves and merged into the existing order (`O(K + k log k)` for
/// `k` new keys), then every id's rank is refreshed.
#[derive(Clone, Debug, Default)]
pub struct KeyOrder {
    sorted: Vec<u32>,
    rank: Vec<u32>,
}

impl KeyOrder {
    /// Brings the order up to date with `keys` (ids are only ever appended).
    pub fn update(&mut self, keys: &KeyValues) {
        let covered = self.rank.len();
        let n = keys.len();
        if n <= covered {
            return;
        }
        let mut fresh: Vec<u32> = (covered as u32..n as u32).collect();
        keys.sort_ids(&mut fresh);
        if self.sorted.is_empty() {
            self.sorted = fresh;
        } else {
            let old = std::mem::take(&mut self.sorted);
            let mut merged = Vec::with_capacity(n);
            let (mut i, mut j) = (0, 0);
            while i < old.len() && j < fresh.len() {
                if keys.cmp_ids(fresh[j], old[i]) == Ordering::Less {
                    merged.push(fresh[j]);
                    j += 1;
                } else {
                    merged.push(old[i]);
                    i += 1;
                }
            }
            merged.extend_from_slice(&old[i..]);
            merged.extend_from_slice(&fresh[j..]);
            self.sorted = merged;
        }
        self.rank.resize(n, 0);
        for (r, &id) in self.sorted.iter().enumerate() {
            self.rank[id as usize] = r as u32;
        }
    }

    /// Number of ids covered.
    pub fn len(&self) -> usize {
        self.rank.len()
    }

    /// True when no id is covered.
    pub fn is_empty(&self) -> bool {
        self.rank.is_empty()
    }

    /// The position of `id` in key-value order.
    #[inline]
    pub fn rank(&self, id: u32) -> u32 {
        self.rank[id as usize]
    }

    /// All ids in key-value order.
    pub fn sorted(&self) -> &[u32] {
        &self.sorted
    }

    /// Orders `ids` by key value. When they are a large share of all keys, it walks the global
    /// order with `present(id)` instead of sorting.
    pub fn order_ids(&self, ids: &mut Vec<u32>, present: impl Fn(u32) -> bool) {
        let n = self.sorted.len();
        if ids.len() * 8 >= n {
            // Every id is written and the cursor moves on only past present ones: no branch on
            // `present`, which is close to a coin toss when a pane holds about half the keys.
            ids.clear();
            // (id `r` is written at position `m <= r`)
            ids.resize(n, 0);
            let mut m = 0;
            for &id in &self.sorted {
                ids[m] = id;
                m += present(id) as usize;
            }
            ids.truncate(m);
        } else {
            ids.sort_unstable_by_key(|&id| self.rank[id as usize]);
        }
    }
}

/// Dense `u32` ids for key values, assigned in first-seen order. A null key is a group of its own.
#[derive(Clone, Debug)]
pub struct KeyDict {
    values: KeyValues,
    direct: Vec<u32>,
    ints: FxHashMap<i64, u32>,
    strs: FxHashMap<Box<str>, u32>,
}

impl KeyDict {
    /// An empty dictionary for keys of `kind`. With [`KeyKind::None`] it holds the one global
    /// group, id 0.
    pub fn new(kind: KeyKind) -> Self {
        KeyDict {
            values: KeyValues::new(kind),
            direct: vec![],
            ints: FxHashMap::default(),
            strs: FxHashMap::default(),
        }
    }

    /// The kind of key.
    pub fn kind(&self) -> KeyKind {
        self.values.kind
    }

    /// Number of distinct keys seen (the null key included).
    pub fn len(&self) -> usize {
        self.values.len()
    }

    /// True before any key was seen.
    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The value of every id.
    pub fn values(&self) -> &KeyValues {
        &self.values
    }

    fn null_key(&mut self) -> Result<u32> {
        match self.values.null_id {
            Some(id) => Ok(id),
            None => self.values.push_null(),
        }
    }

    /// Encodes one integer key.
    #[inline]
    pub fn encode_int(&mut self, v: i64) -> Result<u32> {
        if (0..DIRECT_LIMIT).contains(&v) {
            let i = v as usize;
            if let Some(&id) = self.direct.get(i)
                && id != NONE
            {
                return Ok(id);
            }
            if i >= self.direct.len() {
                let new_len = (i + 1).max(self.direct.len() * 2).min(DIRECT_LIMIT as usize);
                self.direct.resize(new_len, NONE);
            }
            let id = self.values.push_int(v)?;
            self.direct[i] = id;
            return Ok(id);
        }
        if let Some(&id) = self.ints.get(&v) {
            return Ok(id);
        }
        let id = self.values.push_int(v)?;
        self.ints.insert(v, id);
        Ok(id)
    }

    /// Encodes integer keys (`None` = null) into `out`.
    pub fn encode_ints<I: IntoIterator<Item = Option<i64>>>(&mut self, keys: I, out: &mut Vec<u32>) -> Result<()> {
        self.expect_kind(KeyKind::Int)?;
        for k in keys {
            out.push(match k {
                Some(v) => self.encode_int(v)?,
                None => self.null_key()?,
            });
        }
        Ok(())
    }

    /// Encodes a slice of non-null integer keys into `out` (the fast path).
    pub fn encode_int_slice(&mut self, keys: &[i64], out: &mut Vec<u32>) -> Result<()> {
        out.reserve(keys.len());
        self.encode_int_iter(keys.iter().copied(), out)
    }

    /// Encodes integer keys from any iterator into `out`.
    pub fn encode_int_iter(&mut self, keys: impl Iterator<Item = i64>, out: &mut Vec<u32>) -> Result<()> {
        self.expect_kind(KeyKind::Int)?;
        for v in keys {
            let id = self.encode_int(v)?;
            out.push(id);
        }
        Ok(())
    }

    /// Encodes string keys (`None` = null) into `out`.
    pub fn encode_strs<'a, I: IntoIterator<Item = Option<&'a str>>>(
        &mut self,
        keys: I,
        out: &mut Vec<u32>,
    ) -> Result<()> {
        self.expect_kind(KeyKind::Str)?;
        for k in keys {
            out.push(match k {
                Some(s) => match self.strs.get(s) {
                    Some(&id) => id,
                    None => {
                        let id = self.values.push_str(s)?;
                        self.strs.insert(s.into(), id);
                        id
                    }
                },
                None => self.null_key()?,
            });
        }
        Ok(())
    }

    /// Encodes `n` events without a key column (all id 0).
    pub fn encode_none(&mut self, n: usize, out: &mut Vec<u32>) -> Result<()> {
        self.expect_kind(KeyKind::None)?;
        out.resize(out.len() + n, 0);
        Ok(())
    }

    fn expect_kind(&self, kind: KeyKind) -> Result<()> {
        if self.kind() != kind {
            return Err(Error::config(format!(
                "keys of kind {kind:?} pushed into a pipeline with {:?} keys",
                self.kind()
            )));
        }
        Ok(())
    }

    /// True if `id` is the null key.
    pub fn is_null(&self, id: u32) -> bool {
        self.values.is_null(id)
    }

    /// The integer value of `id`.
    pub fn int_value(&self, id: u32) -> Option<i64> {
        self.values.int_value(id)
    }

    /// The string value of `id`.
    pub fn str_value(&self, id: u32) -> Option<&str> {
        self.values.str_value(id)
    }

    /// Sorts ids by key value (null last).
    pub fn sort_ids(&self, ids: &mut [u32]) {
        self.values.sort_ids(ids)
    }
}

/// Copies a value column into the engine's representation: NaN canonicalised, nulls marked.
pub fn ingest_values(values: &[f64], valid: Option<&[bool]>, out: &mut Vec<f64>) {
    out.reserve(values.len());
    match valid {
        None => out.extend(values.iter().map(|v| canonical(*v))),
        Some(m) => out.extend(values.iter().zip(m).map(|(v, ok)| {
            if *ok {
                canonical(*v)
            } else {
                f64::from_bits(NULL_VALUE_BITS)
            }
        })),
    }
}

/// One micro-batch after key encoding: structure of arrays, all of one length.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct EventBatch {
    /// Event time, ms since the epoch.
    pub ts: Vec<i64>,
    /// Dense key id per event.
    pub keys: Vec<u32>,
    /// One vector per value column (nulls are the marker of [`crate::agg::null_value`]).
    pub values: Vec<Vec<f64>>,
}

impl EventBatch {
    /// An empty batch with `ncols` value columns.
    pub fn new(ncols: usize) -> Self {
        EventBatch {
            ts: vec![],
            keys: vec![],
            values: vec![vec![]; ncols],
        }
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.ts.len()
    }

    /// True when the batch holds no events.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }

    /// Removes all events, keeping allocations.
    pub fn clear(&mut self) {
        self.ts.clear();
        self.keys.clear();
        for v in &mut self.values {
            v.clear();
        }
    }

    /// Checks that every column has the same length.
    pub fn check(&self) -> Result<()> {
        let n = self.ts.len();
        if self.keys.len() != n || self.values.iter().any(|v| v.len() != n) {
            return Err(Error::RaggedBatch(format!(
                "ts has {n} rows, keys {}, values {:?}",
                self.keys.len(),
                self.values.iter().map(|v| v.len()).collect::<Vec<_>>()
            )));
        }
        Ok(())
    }
}

/// Compile-time check that the types crossing threads are `Send`.
#[allow(dead_code)]
fn assert_send() {
    fn is_send<T: Send>() {}
    is_send::<KeyDict>();
    is_send::<EventBatch>();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ints_encode_densely_and_sort_by_value() {
        let mut d = KeyDict::new(KeyKind::Int);
        let mut ids = vec![];
        d.encode_ints([Some(5), Some(-3), None, Some(5), Some(1 << 40), Some(2)], &mut ids)
            .unwrap();
        assert_eq!(ids, vec![0, 1, 2, 0, 3, 4]);
        assert!(d.is_null(2));
        let mut all = vec![0, 1, 2, 3, 4];
        d.sort_ids(&mut all);
        let vals: Vec<Option<i64>> = all.iter().map(|&i| d.int_value(i)).collect();
        assert_eq!(vals, vec![Some(-3), Some(2), Some(5), Some(1 << 40), None]);
    }

    #[test]
    fn key_order_merges_new_keys() {
        let mut d = KeyDict::new(KeyKind::Int);
        let mut ids = vec![];
        let mut order = KeyOrder::default();
        d.encode_int_slice(&[50, 10, 30], &mut ids).unwrap();
        order.update(d.values());
        d.encode_ints([Some(20), None, Some(60), Some(5)], &mut ids).unwrap();
        order.update(d.values());
        let vals: Vec<Option<i64>> = order.sorted().iter().map(|&i| d.int_value(i)).collect();
        assert_eq!(
            vals,
            vec![Some(5), Some(10), Some(20), Some(30), Some(50), Some(60), None]
        );
        let mut some = vec![0, 3];
        order.order_ids(&mut some, |id| id == 0 || id == 3);
        assert_eq!(
            some.iter().map(|&i| d.int_value(i)).collect::<Vec<_>>(),
            vec![Some(20), Some(50)]
        );
    }

    #[test]
    fn strings_encode_and_sort() {
        let mut d = KeyDict::new(KeyKind::Str);
        let mut ids = vec![];
        d.encode_strs([Some("b"), Some("a"), None, Some("b")], &mut ids)
            .unwrap();
        assert_eq!(ids, vec![0, 1, 2, 0]);
        let mut all = vec![0, 1, 2];
        d.sort_ids(&mut all);
        assert_eq!(all, vec![1, 0, 2]);
        assert!(d.encode_int_slice(&[1], &mut ids).is_err());
    }
}
