//! Emitted window rows in columnar form, before they become a DataFrame or a file.

use crate::agg::{AggKind, Aggregates, ColPartial, Partial, SumPartial};

/// A partial state window rows carry: full ([`WindowRows::cols`]) or counts and sums
/// ([`WindowRows::sums`]). The window store appends its rows' states where their kind goes,
/// without widening them.
pub trait RowStates: Partial {
    /// The states of this kind in `rows`.
    fn row_states(rows: &mut WindowRows) -> &mut Vec<Self>;
}

impl RowStates for ColPartial {
    #[inline(always)]
    fn row_states(rows: &mut WindowRows) -> &mut Vec<Self> {
        &mut rows.cols
    }
}

impl RowStates for SumPartial {
    #[inline(always)]
    fn row_states(rows: &mut WindowRows) -> &mut Vec<Self> {
        &mut rows.sums
    }
}

/// Window results: one row per `(key, window, revision)`, in firing order (DESIGN.md §4).
///
/// Keys are dictionary ids; [`crate::batch::KeyDict`] turns them back into values. Per-column
/// aggregates are kept as merged [`ColPartial`]s (`cols[row * ncols + c]`), or, from tumbling and
/// sliding windows that need no more than counts and sums ([`Aggregates::sums_suffice`]), as
/// [`SumPartial`]s in `sums` (then `cols` is empty), and evaluated with [`WindowRows::value`].
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowRows {
    /// Dictionary id of each row's key.
    pub key: Vec<u32>,
    /// Window start (inclusive), ms.
    pub start: Vec<i64>,
    /// Window end (exclusive), ms.
    pub end: Vec<i64>,
    /// 0 for a window's first firing, then 1, 2, ... for updates within the allowed lateness.
    pub revision: Vec<u32>,
    /// Events in the window.
    pub count: Vec<u64>,
    /// Value columns per row.
    pub ncols: usize,
    /// Merged partial states, row-major (empty when the rows carry `sums`).
    pub cols: Vec<ColPartial>,
    /// Merged count-and-sum states, row-major, instead of `cols` (16 bytes a state instead of 40)
    /// for rows whose aggregates are count, sum and mean only; empty otherwise.
    pub sums: Vec<SumPartial>,
    /// Identity of the window a row belongs to across revisions ([`WindowRows::lineage`]), up to
    /// the last row whose lineage is not 0; rows past its end have lineage 0. Tumbling and sliding
    /// rows (always 0) so carry none: 8 bytes less per row to write and move.
    lineage: Vec<u64>,
    /// Session lineages that had emitted rows and were then merged into another session, as
    /// `(absorbed, survivor)`: the absorbed session's earlier rows are superseded by the
    /// survivor's next revision. Always empty for tumbling and sliding windows.
    pub merged: Vec<(u64, u64)>,
}

impl WindowRows {
    /// Empty rows for `ncols` value columns.
    pub fn new(ncols: usize) -> Self {
        WindowRows {
            ncols,
            ..Default::default()
        }
    }

    /// Makes room for `additional` more rows (their states where those the rows hold go, full
    /// ones when they hold none: [`WindowRows::reserve_for`] names the kind).
    pub fn reserve(&mut self, additional: usize) {
        if self.carries_sums() {
            self.reserve_for::<SumPartial>(additional)
        } else {
            self.reserve_for::<ColPartial>(additional)
        }
    }

    /// Makes room for `additional` more rows with states of kind `P`.
    pub fn reserve_for<P: RowStates>(&mut self, additional: usize) {
        self.key.reserve(additional);
        self.start.reserve(additional);
        self.end.reserve(additional);
        self.revision.reserve(additional);
        self.count.reserve(additional);
        let ncols = self.ncols;
        P::row_states(self).reserve(additional * ncols);
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.key.len()
    }

    /// True when there are no rows.
    pub fn is_empty(&self) -> bool {
        self.key.is_empty()
    }

    /// Appends one row (its states to those of their kind, [`RowStates::row_states`]).
    #[allow(clippy::too_many_arguments)]
    pub fn push<P: RowStates>(
        &mut self,
        key: u32,
        start: i64,
        end: i64,
        revision: u32,
        count: u64,
        cols: &[P],
        lineage: u64,
    ) {
        debug_assert_eq!(cols.len(), self.ncols);
        self.key.push(key);
        self.start.push(start);
        self.end.push(end);
        self.revision.push(revision);
        self.count.push(count);
        P::row_states(self).extend_from_slice(cols);
        if lineage != 0 {
            self.lineage.resize(self.key.len() - 1, 0);
            self.lineage.push(lineage);
        }
    }

    /// Identity of the window row `row` belongs to across revisions: for session windows, the
    /// session (which may grow and merge between revisions); for tumbling and sliding windows, 0
    /// (the window is identified by key and start).
    pub fn lineage(&self, row: usize) -> u64 {
        self.lineage.get(row).copied().unwrap_or(0)
    }

    /// Appends the first firing (revision 0, lineage 0) of window `[start, end)` for every key
    /// in `keys`, in that order; `row(key)` is the key's row in `count` / `cols` (`ncols`
    /// partials per row, appended to the states of their kind: [`RowStates::row_states`]). One
    /// bulk append per column instead of one push per row.
    pub fn extend_firing<P: RowStates>(
        &mut self,
        start: i64,
        end: i64,
        keys: &[u32],
        count: &[u64],
        cols: &[P],
        row: impl Fn(u32) -> usize,
    ) {
        let n = keys.len();
        let len = self.key.len();
        self.key.extend_from_slice(keys);
        self.start.resize(len + n, start);
        self.end.resize(len + n, end);
        self.revision.resize(len + n, 0);
        self.count.extend(keys.iter().map(|&k| count[row(k)]));
        let nc = self.ncols;
        let states = P::row_states(self);
        if nc == 1 {
            states.extend(keys.iter().map(|&k| cols[row(k)]));
        } else {
            states.reserve(n * nc);
            for &k in keys {
                let r = row(k);
                states.extend_from_slice(&cols[r * nc..(r + 1) * nc]);
            }
        }
    }

    /// Completes rows `from..` whose `key`, `count` and states (`cols` or `sums`) were appended
    /// directly as the first firing (revision 0, lineage 0) of window `[start, end)`.
    pub fn close_firing(&mut self, from: usize, start: i64, end: i64) {
        let len = self.key.len();
        debug_assert_eq!(self.start.len(), from);
        debug_assert_eq!(self.count.len(), len);
        debug_assert_eq!(self.cols.len().max(self.sums.len()), len * self.ncols);
        self.start.resize(len, start);
        self.end.resize(len, end);
        self.revision.resize(len, 0);
    }

    /// The rows of `pieces` in order. The first piece is moved out, the others are appended to it
    /// and stay in `pieces` (their buffers can be filled again).
    pub fn concat(pieces: &mut Vec<WindowRows>, ncols: usize) -> WindowRows {
        if pieces.len() <= 1 {
            return pieces.pop().unwrap_or_else(|| WindowRows::new(ncols));
        }
        // The first piece is the base: its buffers grow (once, in the steady state) instead of a
        // new buffer being allocated, filled and freed for every call.
        let n: usize = pieces[1..].iter().map(|p| p.len()).sum();
        let mut out = pieces.remove(0);
        out.reserve(n);
        for p in pieces.iter() {
            out.append(p);
        }
        out
    }

    /// Appends all rows of `other`. Rows of both state kinds together carry full states (the
    /// count-and-sum ones widened; a pipeline's rows are all of one kind).
    pub fn append(&mut self, other: &WindowRows) {
        if !other.lineage.is_empty() {
            self.lineage.resize(self.key.len(), 0);
            self.lineage.extend_from_slice(&other.lineage);
        }
        self.key.extend_from_slice(&other.key);
        self.start.extend_from_slice(&other.start);
        self.end.extend_from_slice(&other.end);
        self.revision.extend_from_slice(&other.revision);
        self.count.extend_from_slice(&other.count);
        if !self.is_empty_of_states() && !other.is_empty_of_states() && self.carries_sums() != other.carries_sums() {
            self.widen();
            self.cols.extend(other.sums.iter().map(SumPartial::to_full));
        } else {
            self.sums.extend_from_slice(&other.sums);
        }
        self.cols.extend_from_slice(&other.cols);
        self.merged.extend_from_slice(&other.merged);
    }

    /// Removes every row, keeping the allocations.
    pub fn clear(&mut self) {
        self.key.clear();
        self.start.clear();
        self.end.clear();
        self.revision.clear();
        self.count.clear();
        self.cols.clear();
        self.sums.clear();
        self.lineage.clear();
        self.merged.clear();
    }

    /// True when the rows hold no states of either kind.
    fn is_empty_of_states(&self) -> bool {
        self.cols.is_empty() && self.sums.is_empty()
    }

    /// Turns count-and-sum states into full ones (with the identity's extremes and moment).
    fn widen(&mut self) {
        let sums = std::mem::take(&mut self.sums);
        self.cols.extend(sums.iter().map(SumPartial::to_full));
    }

    /// The partial of value column `c` in `row` (from `sums`, widened with the identity's
    /// extremes and second moment, when the rows carry those).
    pub fn partial(&self, row: usize, c: usize) -> ColPartial {
        let i = row * self.ncols + c;
        match self.sums.get(i) {
            Some(s) => s.to_full(),
            None => self.cols[i],
        }
    }

    /// True when the rows carry count-and-sum states ([`WindowRows::sums`]) instead of full ones.
    pub fn carries_sums(&self) -> bool {
        !self.sums.is_empty()
    }

    /// The value of aggregate `kind` over column `c` in `row` (`None` = null, and for min, max,
    /// variance and deviation of rows that carry count-and-sum states, which keep none of them).
    pub fn value(&self, row: usize, c: usize, kind: AggKind) -> Option<f64> {
        if self.carries_sums() && !matches!(kind, AggKind::Sum | AggKind::Mean) {
            return None;
        }
        kind.evaluate(&self.partial(row, c))
    }

    /// Capacity of the states' buffers, of either kind (a recycled buffer worth keeping has some).
    pub fn states_capacity(&self) -> usize {
        self.cols.capacity() + self.sums.capacity()
    }

    /// All aggregate values of one row in output order (per column, then per aggregate).
    pub fn values(&self, row: usize, aggs: &Aggregates) -> Vec<Option<f64>> {
        let mut out = Vec::with_capacity(self.ncols * aggs.kinds().len());
        for c in 0..self.ncols {
            for k in aggs.kinds() {
                out.push(self.value(row, c, *k));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` rows of two columns; `tag` makes every field of every piece distinct, and `lineage`
    /// gives the rows a lineage (as session windows have).
    fn piece(n: usize, tag: u32, lineage: bool) -> WindowRows {
        let mut w = WindowRows::new(2);
        for i in 0..n as u32 {
            let v = (tag * 100 + i) as f64;
            let cols = [ColPartial::of::<true>(v), ColPartial::of::<false>(-v)];
            let lin = if lineage { (tag * 100 + i + 1) as u64 } else { 0 };
            w.push(tag * 100 + i, v as i64, v as i64 + 10, tag, (i + 1) as u64, &cols, lin);
        }
        if tag == 2 {
            w.merged.push((7, 9));
        }
        w
    }

    #[test]
    fn rows_of_both_state_kinds_appended_carry_full_states() {
        let full = piece(3, 1, false);
        let mut sums = WindowRows::new(2);
        for i in 0..4u32 {
            let cols = [
                SumPartial::from_full(&ColPartial::of::<false>(f64::from(i))),
                SumPartial::IDENTITY,
            ];
            sums.push(i, 0, 10, 0, 1, &cols, 0);
        }
        assert!(sums.carries_sums() && sums.cols.is_empty());
        // count-and-sum rows keep no extremes or moments: null, not a made-up value
        assert_eq!(sums.value(2, 0, AggKind::Sum), Some(2.0));
        assert_eq!(sums.value(2, 0, AggKind::Mean), Some(2.0));
        for k in [AggKind::Min, AggKind::Max, AggKind::Var, AggKind::Std] {
            assert_eq!(sums.value(2, 0, k), None, "{k}");
        }
        for (a, b) in [(&full, &sums), (&sums, &full)] {
            let mut got = a.clone();
            got.append(b);
            assert!(!got.carries_sums() && got.cols.len() == got.len() * 2, "widened");
            let states = |w: &WindowRows| -> Vec<ColPartial> {
                (0..w.len())
                    .flat_map(|r| (0..2).map(move |c| (r, c)))
                    .map(|(r, c)| w.partial(r, c))
                    .collect()
            };
            let want: Vec<ColPartial> = states(a).into_iter().chain(states(b)).collect();
            assert_eq!(got.cols, want);
        }
        // one kind stays that kind
        let mut two = sums.clone();
        two.append(&sums);
        assert!(two.carries_sums() && two.cols.is_empty() && two.sums.len() == 16);
        let mut empty = WindowRows::new(2);
        empty.append(&sums);
        assert_eq!(empty, sums);
    }

    #[test]
    fn concat_keeps_firing_order_and_the_pieces_after_the_first() {
        for sizes in [vec![], vec![3], vec![3, 0, 4], vec![0, 5, 2, 1]] {
            for lineage_in in 0..sizes.len().max(1) {
                let pieces: Vec<WindowRows> = (0..sizes.len())
                    .map(|i| piece(sizes[i], i as u32 + 1, i == lineage_in))
                    .collect();
                let mut want = WindowRows::new(2);
                for p in &pieces {
                    want.append(p);
                }
                let mut left = pieces.clone();
                let got = WindowRows::concat(&mut left, 2);
                assert_eq!(got, want, "{sizes:?} lineage in piece {lineage_in}");
                for r in 0..got.len() {
                    assert_eq!(got.lineage(r), want.lineage(r), "{sizes:?} row {r}");
                }
                // the pieces after the first stay, unchanged, for their buffers to be reused
                assert_eq!(left, pieces.iter().skip(1).cloned().collect::<Vec<_>>(), "{sizes:?}");
            }
        }
    }
}
