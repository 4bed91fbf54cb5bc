//! The per-column partial state: a monoid over `(n, sum, min, max, m2)`.
//!
//! Its WGSL twin is `shaders/shared/partial.wgsl` (`partial_combine`); the two are written to be
//! read side by side.
//!
//! * `n`: non-null values seen; `sum`: their sum; `m2`: the sum of squared deviations from their
//!   mean (Welford/Chan), so variance = `m2 / (n - 1)`.
//! * `min`/`max` are stored as *order keys*: the f64 bits mapped to a `u64` whose unsigned order is
//!   the IEEE total order (flip the sign bit of positives, all bits of negatives). That makes
//!   min/max exact on every backend, including the GPU, which compares them as `(hi, lo)` u32
//!   pairs. NaN inputs are canonicalised to the positive quiet NaN, so NaN sorts above +inf:
//!   `max` is NaN when any value is NaN, `min` ignores NaN unless every value is NaN.
//! * A null value is an f64 with the reserved bit pattern [`NULL_VALUE_BITS`] (a signalling NaN
//!   that canonicalisation never produces); it is skipped by every aggregate.

/// The bit pattern that marks a null value inside a value column.
pub const NULL_VALUE_BITS: u64 = 0x7FF0_0000_0000_0001;

/// The canonical NaN every NaN input is mapped to.
pub const CANONICAL_NAN_BITS: u64 = 0x7FF8_0000_0000_0000;

/// The null marker as an f64.
#[inline]
pub fn null_value() -> f64 {
    f64::from_bits(NULL_VALUE_BITS)
}

/// True when `v` is the null marker.
#[inline]
pub fn is_null_value(v: f64) -> bool {
    v.to_bits() == NULL_VALUE_BITS
}

/// Maps any NaN other than the null marker to the canonical NaN, so that no input NaN can be
/// mistaken for a null and every NaN orders the same way on every backend.
#[inline]
pub fn canonical(v: f64) -> f64 {
    if v.is_nan() && v.to_bits() != NULL_VALUE_BITS {
        f64::from_bits(CANONICAL_NAN_BITS)
    } else {
        v
    }
}

/// The order-preserving `u64` key of an f64 (IEEE total order).
#[inline]
pub fn order_key(v: f64) -> u64 {
    let b = v.to_bits();
    if b >> 63 == 1 { !b } else { b | (1 << 63) }
}

/// Inverse of [`order_key`].
#[inline]
pub fn from_order_key(k: u64) -> f64 {
    f64::from_bits(if k >> 63 == 1 { k & !(1 << 63) } else { !k })
}

/// Partial aggregate of one value column over some set of events.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct ColPartial {
    /// Non-null values.
    pub n: u64,
    /// Sum of the non-null values.
    pub sum: f64,
    /// Order key of the minimum ([`order_key`]); `u64::MAX` when empty.
    pub min: u64,
    /// Order key of the maximum; `0` when empty.
    pub max: u64,
    /// Sum of squared deviations from the mean (only maintained when var/std are requested).
    pub m2: f64,
}

impl Default for ColPartial {
    fn default() -> Self {
        Self::IDENTITY
    }
}

impl ColPartial {
    /// The monoid identity.
    pub const IDENTITY: ColPartial = ColPartial {
        n: 0,
        sum: 0.0,
        min: u64::MAX,
        max: 0,
        m2: 0.0,
    };

    /// The partial of one value (the identity for a null): `IDENTITY` with `v` pushed.
    #[inline(always)]
    pub fn of<const M2: bool>(v: f64) -> ColPartial {
        let mut p = Self::IDENTITY;
        p.push::<M2>(v);
        p
    }

    /// Adds one value (nulls are skipped). `M2` selects whether the second moment is kept.
    #[inline(always)]
    pub fn push<const M2: bool>(&mut self, v: f64) {
        let bits = v.to_bits();
        if bits == NULL_VALUE_BITS {
            return;
        }
        let k = order_key(v);
        self.min = self.min.min(k);
        self.max = self.max.max(k);
        if M2 {
            // Welford, with the running mean derived from the running sum.
            let n0 = self.n as f64;
            let mean0 = if self.n == 0 { v } else { self.sum / n0 };
            self.sum += v;
            let mean1 = self.sum / (n0 + 1.0);
            self.m2 += (v - mean0) * (v - mean1);
        } else {
            self.sum += v;
        }
        self.n += 1;
    }

    /// Merges `other` into `self` (Chan et al.); associative and commutative up to rounding.
    #[inline]
    pub fn combine(&mut self, other: &ColPartial) {
        self.combine_with::<true>(other)
    }

    /// [`Self::combine`], keeping the second moment only when `M2` (it costs two divisions).
    #[inline(always)]
    pub fn combine_with<const M2: bool>(&mut self, other: &ColPartial) {
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        if M2 {
            let (na, nb) = (self.n as f64, other.n as f64);
            let n = na + nb;
            let delta = other.sum / nb - self.sum / na;
            self.m2 += other.m2 + delta * delta * (na * nb / n);
        }
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
        self.n += other.n;
    }

    /// `combine_with::<false>` without branches (count, sum, min, max; `m2` untouched, so it
    /// stays the identity's 0 when `self` was the identity), for hot merge loops where whether
    /// `self` is still the identity is unpredictable. The identity needs no special case:
    /// `0 + x`, `min(MAX, k)` and `max(0, k)` are exact (a sum of `-0.0` becomes `+0.0`).
    #[inline(always)]
    pub fn combine_branchless(&mut self, other: &ColPartial) {
        self.n += other.n;
        self.sum += other.sum;
        self.min = self.min.min(other.min);
        self.max = self.max.max(other.max);
    }

    /// [`Self::combine_with`] keeping the second moment, without branches: as exact as it when
    /// both sides have values (the same operations in the same order), and the other side
    /// unchanged when one is the identity (its mean is taken over at least one value and the
    /// cross term is chosen away, so even an infinite mean leaves no NaN behind).
    #[inline(always)]
    pub fn combine_branchless_m2(&mut self, other: &ColPartial) {
        let (na, nb) = (self.n as f64, other.n as f64);
        let n = na + nb;
        let delta = other.sum / nb.max(1.0) - self.sum / na.max(1.0);
        let cross = delta * delta * (na * nb / n.max(1.0));
        let cross = std::hint::select_unpredictable(self.n != 0 && other.n != 0, cross, 0.0);
        self.m2 += other.m2 + cross;
        self.combine_branchless(other);
    }

    /// [`Self::combine_branchless`], with the second moment when `M2`.
    #[inline(always)]
    pub fn combine_dense<const M2: bool>(&mut self, other: &ColPartial) {
        if M2 {
            self.combine_branchless_m2(other);
        } else {
            self.combine_branchless(other);
        }
    }

    /// The partial of a slice of values, computed directly (two-pass mean/M2); used by the
    /// reference backend as an independent numerical path.
    pub fn from_values(values: &[f64]) -> ColPartial {
        let vals: Vec<f64> = values.iter().copied().filter(|v| !is_null_value(*v)).collect();
        if vals.is_empty() {
            return ColPartial::IDENTITY;
        }
        let n = vals.len();
        let sum: f64 = vals.iter().sum();
        let mean = sum / n as f64;
        let m2: f64 = vals.iter().map(|v| (v - mean) * (v - mean)).sum();
        let min = vals.iter().map(|v| order_key(*v)).min().unwrap_or(u64::MAX);
        let max = vals.iter().map(|v| order_key(*v)).max().unwrap_or(0);
        ColPartial {
            n: n as u64,
            sum,
            min,
            max,
            m2,
        }
    }
}

/// A partial state the pane store of tumbling and sliding windows keeps per `(key, pane)`:
/// [`ColPartial`] itself, or [`SumPartial`], its count-and-sum projection, when no aggregate needs
/// the extremes or the second moment (count, sum, mean). The store is written once over this
/// trait; the narrower state moves 16 bytes per row through its merges instead of 40.
pub trait Partial: Copy + Default + PartialEq + std::fmt::Debug + Send + Sync + 'static {
    /// The monoid identity.
    const IDENTITY: Self;
    /// The partial of one value (the identity for a null).
    fn of<const M2: bool>(v: f64) -> Self;
    /// Adds one value (nulls are skipped); `M2` says whether the second moment is kept.
    fn push<const M2: bool>(&mut self, v: f64);
    /// Merges `other` into `self` ([`ColPartial::combine_with`]).
    fn combine_with<const M2: bool>(&mut self, other: &Self);
    /// [`Self::combine_with`] without branches when `!M2` ([`ColPartial::combine_branchless`]).
    fn combine_branchless(&mut self, other: &Self);
    /// The branch-free combine, with the second moment when `M2` ([`ColPartial::combine_dense`]).
    fn combine_dense<const M2: bool>(&mut self, other: &Self);
    /// The projection of a full partial (what the backends' reductions return).
    fn from_full(p: &ColPartial) -> Self;
    /// The full partial of this state (fields it does not keep are the identity's).
    fn to_full(&self) -> ColPartial;
}

impl Partial for ColPartial {
    const IDENTITY: Self = ColPartial::IDENTITY;

    #[inline(always)]
    fn of<const M2: bool>(v: f64) -> Self {
        ColPartial::of::<M2>(v)
    }

    #[inline(always)]
    fn push<const M2: bool>(&mut self, v: f64) {
        ColPartial::push::<M2>(self, v)
    }

    #[inline(always)]
    fn combine_with<const M2: bool>(&mut self, other: &Self) {
        ColPartial::combine_with::<M2>(self, other)
    }

    #[inline(always)]
    fn combine_branchless(&mut self, other: &Self) {
        ColPartial::combine_branchless(self, other)
    }

    #[inline(always)]
    fn combine_dense<const M2: bool>(&mut self, other: &Self) {
        ColPartial::combine_dense::<M2>(self, other)
    }

    #[inline(always)]
    fn from_full(p: &ColPartial) -> Self {
        *p
    }

    #[inline(always)]
    fn to_full(&self) -> ColPartial {
        *self
    }
}

/// The `(n, sum)` half of [`ColPartial`]: all that count, sum and mean need. Every operation is
/// [`ColPartial`]'s on those two fields, in the same order, so the sums and means it gives are
/// the full state's bit for bit. Its [`Partial::to_full`] has the identity's `min`, `max` and `m2`:
/// rows from it must not be asked for min, max, variance or deviation. Window rows carry it as
/// it is ([`crate::output::WindowRows::sums`]).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct SumPartial {
    /// Non-null values.
    pub n: u64,
    /// Sum of the non-null values.
    pub sum: f64,
}

impl Default for SumPartial {
    fn default() -> Self {
        <Self as Partial>::IDENTITY
    }
}

impl Partial for SumPartial {
    const IDENTITY: Self = SumPartial { n: 0, sum: 0.0 };

    #[inline(always)]
    fn of<const M2: bool>(v: f64) -> Self {
        let mut p = <Self as Partial>::IDENTITY;
        p.push::<M2>(v);
        p
    }

    #[inline(always)]
    fn push<const M2: bool>(&mut self, v: f64) {
        if v.to_bits() == NULL_VALUE_BITS {
            return;
        }
        self.sum += v;
        self.n += 1;
    }

    #[inline(always)]
    fn combine_with<const M2: bool>(&mut self, other: &Self) {
        // ColPartial::combine_with's shortcuts: an empty side leaves the other as it is (a sum of
        // -0.0 stays -0.0)
        if other.n == 0 {
            return;
        }
        if self.n == 0 {
            *self = *other;
            return;
        }
        self.sum += other.sum;
        self.n += other.n;
    }

    #[inline(always)]
    fn combine_branchless(&mut self, other: &Self) {
        self.n += other.n;
        self.sum += other.sum;
    }

    #[inline(always)]
    fn combine_dense<const M2: bool>(&mut self, other: &Self) {
        self.combine_branchless(other);
    }

    #[inline(always)]
    fn from_full(p: &ColPartial) -> Self {
        SumPartial { n: p.n, sum: p.sum }
    }

    #[inline(always)]
    fn to_full(&self) -> ColPartial {
        ColPartial {
            n: self.n,
            sum: self.sum,
            ..ColPartial::IDENTITY
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `ColPartial::of::<M2>(v)` is `IDENTITY` with `v` pushed, bit for bit (a NaN sum is not
    /// equal to itself as a float).
    fn check_of<const M2: bool>(v: f64) {
        let mut pushed = ColPartial::IDENTITY;
        pushed.push::<M2>(v);
        assert_eq!(
            bytemuck::bytes_of(&ColPartial::of::<M2>(v)),
            bytemuck::bytes_of(&pushed),
            "{v}"
        );
    }

    /// The branch-free combine with second moments is the branchy one bit for bit, for either
    /// side empty, both, and values whose squared mean overflows (no NaN from the empty side).
    #[test]
    fn branch_free_second_moment_combine_is_the_branchy_one() {
        let of = |vals: &[f64]| {
            let mut p = ColPartial::IDENTITY;
            for &v in vals {
                p.push::<true>(v);
            }
            p
        };
        let sides = [
            of(&[]),
            of(&[3.5]),
            of(&[1.0, -2.25, 7.0]),
            of(&[1e200, 1e200]),
            of(&[-0.5, 1e-300, 42.0, 42.0]),
        ];
        for a in &sides {
            for b in &sides {
                let (mut want, mut got) = (*a, *a);
                want.combine_with::<true>(b);
                got.combine_branchless_m2(b);
                assert_eq!(bytemuck::bytes_of(&got), bytemuck::bytes_of(&want), "{a:?} + {b:?}");
            }
        }
    }

    /// The count-and-sum state is the full state's `(n, sum)`, bit for bit, through every
    /// operation (signed zeros, nulls, NaN and infinities included).
    #[test]
    fn count_and_sum_state_is_the_full_states_projection() {
        let vals = [
            0.0,
            -0.0,
            2.5,
            -1e300,
            f64::INFINITY,
            canonical(f64::NAN),
            null_value(),
            7.125,
        ];
        let proj = |p: &ColPartial| (p.n, p.sum.to_bits());
        let sp = |p: &SumPartial| (p.n, p.sum.to_bits());
        // every pair of one-value states, and of one-value states pushed a second value
        let mut full: Vec<ColPartial> = vec![ColPartial::IDENTITY];
        let mut sums: Vec<SumPartial> = vec![<SumPartial as Partial>::IDENTITY];
        for &v in &vals {
            full.push(ColPartial::of::<false>(v));
            sums.push(<SumPartial as Partial>::of::<false>(v));
            for &w in &vals {
                let (mut f, mut s) = (ColPartial::of::<false>(v), <SumPartial as Partial>::of::<false>(v));
                f.push::<false>(w);
                Partial::push::<false>(&mut s, w);
                full.push(f);
                sums.push(s);
            }
        }
        for (f, s) in full.iter().zip(&sums) {
            assert_eq!(proj(f), sp(s), "{f:?}");
            assert_eq!(sp(&SumPartial::from_full(f)), sp(s));
            assert_eq!(proj(&s.to_full()), sp(s));
            assert_eq!((s.to_full().min, s.to_full().max, s.to_full().m2), (u64::MAX, 0, 0.0));
        }
        for (fa, sa) in full.iter().zip(&sums) {
            for (fb, sb) in full.iter().zip(&sums) {
                let (mut f, mut s) = (*fa, *sa);
                f.combine_with::<false>(fb);
                Partial::combine_with::<false>(&mut s, sb);
                assert_eq!(proj(&f), sp(&s), "{fa:?} + {fb:?}");
                let (mut f, mut s) = (*fa, *sa);
                f.combine_dense::<false>(fb);
                Partial::combine_dense::<false>(&mut s, sb);
                assert_eq!(proj(&f), sp(&s), "dense {fa:?} + {fb:?}");
            }
        }
    }

    #[test]
    fn partial_of_one_value_is_identity_with_it_pushed() {
        for v in [0.0, -0.0, 2.5, -1e300, f64::INFINITY, f64::NAN] {
            check_of::<true>(v);
            check_of::<false>(v);
            assert_eq!(ColPartial::of::<false>(v).n, 1);
        }
        // a null leaves the identity
        assert_eq!(ColPartial::of::<true>(null_value()), ColPartial::IDENTITY);
        assert_eq!(ColPartial::of::<false>(null_value()), ColPartial::IDENTITY);
    }

    #[test]
    fn order_key_is_monotone_and_invertible() {
        let vals = [
            f64::NEG_INFINITY,
            -1e300,
            -1.5,
            -0.0,
            0.0,
            1e-300,
            2.5,
            1e300,
            f64::INFINITY,
            f64::NAN,
        ];
        let keys: Vec<u64> = vals.iter().map(|v| order_key(canonical(*v))).collect();
        assert!(keys.windows(2).all(|w| w[0] < w[1]), "{keys:?}");
        for v in &vals[..9] {
            assert_eq!(from_order_key(order_key(*v)).to_bits(), v.to_bits());
        }
        assert!(from_order_key(order_key(canonical(f64::NAN))).is_nan());
    }

    #[test]
    fn push_and_combine_agree_with_direct() {
        let vals: Vec<f64> = (0..1000).map(|i| ((i * 7919) % 1013) as f64 * 0.37 - 100.0).collect();
        let direct = ColPartial::from_values(&vals);
        let mut a = ColPartial::IDENTITY;
        let mut b = ColPartial::IDENTITY;
        for v in &vals[..333] {
            a.push::<true>(*v);
        }
        for v in &vals[333..] {
            b.push::<true>(*v);
        }
        a.combine(&b);
        assert_eq!(a.n, direct.n);
        assert_eq!(a.min, direct.min);
        assert_eq!(a.max, direct.max);
        assert!((a.sum - direct.sum).abs() <= 1e-9 * direct.sum.abs());
        assert!((a.m2 - direct.m2).abs() <= 1e-9 * direct.m2.abs());
    }

    #[test]
    fn nulls_are_skipped_and_nan_sorts_high() {
        let mut p = ColPartial::IDENTITY;
        p.push::<false>(null_value());
        assert_eq!(p, ColPartial::IDENTITY);
        p.push::<false>(canonical(f64::NAN));
        p.push::<false>(1.0);
        assert_eq!(from_order_key(p.min), 1.0);
        assert!(from_order_key(p.max).is_nan());
        assert_eq!(p.n, 2);
    }
}
