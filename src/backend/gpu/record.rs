//! The run record read back from the GPU, and its Rust twin of `shaders/shared/record.wgsl`
//! (`RunState::push` mirrors `run_push` operation for operation, in f32), so tests can hold the
//! two side by side.

use crate::agg::ColPartial;
use crate::agg::state::NULL_VALUE_BITS;

/// NaN was seen.
pub const FLAG_NAN: u32 = 0x8000_0000;
/// +inf was seen.
pub const FLAG_POS_INF: u32 = 0x4000_0000;
/// -inf was seen.
pub const FLAG_NEG_INF: u32 = 0x2000_0000;
/// A finite value outside the f32 range was seen: the batch must be recomputed in f64.
pub const FLAG_OVERFLOW: u32 = 0x1000_0000;
const COUNT_MASK: u32 = 0x0FFF_FFFF;

/// One run's record for one value column (12 words, as the shader writes it).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, bytemuck::Pod, bytemuck::Zeroable)]
pub struct Record {
    /// Non-null values (low 28 bits) and flags (top 4 bits).
    pub n_flags: u32,
    /// Low word of the shift value's f64 bits.
    pub x0_lo: u32,
    /// High word of the shift value's f64 bits.
    pub x0_hi: u32,
    /// Sum of `x - x0`, double-float high part (f32 bits).
    pub sd_hi: u32,
    /// Sum of `x - x0`, double-float low part.
    pub sd_lo: u32,
    /// Sum of `(x - x0)^2`, high part.
    pub q_hi: u32,
    /// Sum of `(x - x0)^2`, low part.
    pub q_lo: u32,
    /// Order key of the minimum, high word.
    pub min_hi: u32,
    /// Order key of the minimum, low word.
    pub min_lo: u32,
    /// Order key of the maximum, high word.
    pub max_hi: u32,
    /// Order key of the maximum, low word.
    pub max_lo: u32,
    /// Finite values that went into `sd`/`q`.
    pub nf: u32,
}

impl Record {
    /// Flag bits.
    pub fn flags(&self) -> u32 {
        self.n_flags & !COUNT_MASK
    }

    /// Whether the batch must be recomputed on the CPU.
    pub fn overflow(&self) -> bool {
        self.n_flags & FLAG_OVERFLOW != 0
    }

    /// The record as an f64 partial state: `sum = nf * x0 + sd`, `m2 = q - sd^2 / nf`.
    pub fn to_partial(&self) -> ColPartial {
        let n = (self.n_flags & COUNT_MASK) as u64;
        if n == 0 {
            return ColPartial::IDENTITY;
        }
        let flags = self.flags();
        let f = |b: u32| f32::from_bits(b) as f64;
        let nf = self.nf as f64;
        let x0 = f64::from_bits(((self.x0_hi as u64) << 32) | self.x0_lo as u64);
        let sd = f(self.sd_hi) + f(self.sd_lo);
        let q = f(self.q_hi) + f(self.q_lo);
        let (mut sum, mut m2) = if self.nf == 0 {
            (0.0, 0.0)
        } else {
            (nf * x0 + sd, (q - sd * sd / nf).max(0.0))
        };
        if flags & FLAG_NAN != 0 || (flags & FLAG_POS_INF != 0 && flags & FLAG_NEG_INF != 0) {
            sum = f64::NAN;
            m2 = f64::NAN;
        } else if flags & FLAG_POS_INF != 0 {
            sum = f64::INFINITY;
            m2 = f64::NAN;
        } else if flags & FLAG_NEG_INF != 0 {
            sum = f64::NEG_INFINITY;
            m2 = f64::NAN;
        }
        ColPartial {
            n,
            sum,
            min: ((self.min_hi as u64) << 32) | self.min_lo as u64,
            max: ((self.max_hi as u64) << 32) | self.max_lo as u64,
            m2,
        }
    }
}

/// The per-slot results of `reduce_runs` as the host receives them (read back from the device,
/// or produced by the CPU mirror).
pub struct RunOutputs<'a> {
    /// Events per slot, for slots whose run lay within one chunk.
    pub out_counts: &'a [u32],
    /// `out_recs[slot * ncols + col]`, for the same slots.
    pub out_recs: &'a [Record],
    /// Slot of each carry (two per thread: the run at the chunk start, the run at its end), or
    /// `SKIP_SLOT` for an unused carry.
    pub carry_slots: &'a [u32],
    /// Events of each carry.
    pub carry_counts: &'a [u32],
    /// `carry_recs[carry * ncols + col]`.
    pub carry_recs: &'a [Record],
}

/// Turns `reduce_runs` output into f64 partials (`out` is reset to `num_slots`): slots wholly in
/// one chunk are taken as they are; runs that cross chunk boundaries arrive as carries in sorted
/// order and are merged in f64 (a slot's first carry replaces its unwritten entry). Returns
/// whether a record saw a value beyond the f32 range (the batch must be recomputed in f64).
pub fn assemble(
    r: &RunOutputs<'_>,
    num_slots: usize,
    ncols: usize,
    out: &mut crate::backend::Partials,
) -> crate::error::Result<bool> {
    use crate::backend::SKIP_SLOT;
    let s = num_slots;
    if r.out_counts.len() < s || r.out_recs.len() < s * ncols {
        return Err(crate::error::Error::Gpu(format!(
            "the device returned {} counts and {} records for {s} slots",
            r.out_counts.len(),
            r.out_recs.len()
        )));
    }
    let mut overflow = false;
    out.reset(s, ncols);
    for slot in 0..s {
        out.count[slot] = r.out_counts[slot] as u64;
        for c in 0..ncols {
            let rec = &r.out_recs[slot * ncols + c];
            overflow |= rec.overflow();
            out.cols[slot * ncols + c] = rec.to_partial();
        }
    }
    let mut last = SKIP_SLOT;
    for (i, &slot) in r.carry_slots.iter().enumerate() {
        if slot == SKIP_SLOT {
            continue;
        }
        let si = slot as usize;
        if si >= s || i >= r.carry_counts.len() || (i + 1) * ncols > r.carry_recs.len() {
            return Err(crate::error::Error::Gpu(format!(
                "carry {i} names slot {slot}, beyond the {s} slots of the batch"
            )));
        }
        if slot != last {
            out.count[si] = 0;
            for c in 0..ncols {
                out.cols[si * ncols + c] = ColPartial::IDENTITY;
            }
            last = slot;
        }
        out.count[si] += r.carry_counts[i] as u64;
        for c in 0..ncols {
            let rec = &r.carry_recs[i * ncols + c];
            overflow |= rec.overflow();
            out.cols[si * ncols + c].combine(&rec.to_partial());
        }
    }
    Ok(overflow)
}

/// The shader's `RunState`, for the mirror.
#[derive(Clone, Copy, Debug)]
pub struct RunState {
    n: u32,
    nf: u32,
    flags: u32,
    x0: u64,
    x0f: (f32, f32),
    sd: (f32, f32),
    q: (f32, f32),
    mn: u64,
    mx: u64,
}

impl Default for RunState {
    fn default() -> Self {
        RunState {
            n: 0,
            nf: 0,
            flags: 0,
            x0: 0,
            x0f: (0.0, 0.0),
            sd: (0.0, 0.0),
            q: (0.0, 0.0),
            mn: u64::MAX,
            mx: 0,
        }
    }
}

/// `f64_to_df` of record.wgsl.
pub fn f64_to_df(bits: u64) -> (f32, f32) {
    let hi = (bits >> 32) as u32;
    let lo = bits as u32;
    let sign = hi & 0x8000_0000;
    let e = (hi >> 20) & 0x7FF;
    let ue = e as i32 - 1023;
    if ue < -126 {
        return (0.0, 0.0);
    }
    let top = ((hi & 0xF_FFFF) << 3) | (lo >> 29);
    let h = f32::from_bits(sign | (((ue + 127) as u32) << 23) | top);
    let rest = (lo & 0x1FFF_FFFF) as f32;
    let l = if sign != 0 { -1.0 } else { 1.0 } * rest * 2f32.powi(ue - 52);
    (h, l)
}

/// `df_add` of record.wgsl.
pub fn df_add(a: (f32, f32), b: (f32, f32)) -> (f32, f32) {
    let s = a.0 + b.0;
    let bb = s - a.0;
    let err = (a.0 - (s - bb)) + (b.0 - bb);
    let t = err + a.1 + b.1;
    let hi = s + t;
    let lo = t - (hi - s);
    (hi, lo)
}

/// `df_sqr` of record.wgsl.
pub fn df_sqr(a: (f32, f32)) -> (f32, f32) {
    let p = a.0 * a.0;
    let e = a.0.mul_add(a.0, -p) + 2.0 * a.0 * a.1;
    let hi = p + e;
    let lo = e - (hi - p);
    (hi, lo)
}

impl RunState {
    /// `run_push` of record.wgsl.
    pub fn push(&mut self, v: f64) {
        let bits = v.to_bits();
        if bits == NULL_VALUE_BITS {
            return;
        }
        let k = crate::agg::order_key(v);
        self.mn = self.mn.min(k);
        self.mx = self.mx.max(k);
        self.n += 1;
        let e = ((bits >> 52) & 0x7FF) as u32;
        if e == 0x7FF {
            self.flags |= if bits & 0x000F_FFFF_FFFF_FFFF != 0 {
                FLAG_NAN
            } else if bits >> 63 == 1 {
                FLAG_NEG_INF
            } else {
                FLAG_POS_INF
            };
            return;
        }
        if e as i32 - 1023 > 127 {
            self.flags |= FLAG_OVERFLOW;
            return;
        }
        let x = f64_to_df(bits);
        if self.nf == 0 {
            self.x0 = bits;
            self.x0f = x;
        } else {
            let d = df_add(x, (-self.x0f.0, -self.x0f.1));
            self.sd = df_add(self.sd, d);
            self.q = df_add(self.q, df_sqr(d));
        }
        self.nf += 1;
    }

    /// `run_record` of record.wgsl.
    pub fn record(&self) -> Record {
        Record {
            n_flags: self.n | self.flags,
            x0_lo: self.x0 as u32,
            x0_hi: (self.x0 >> 32) as u32,
            sd_hi: self.sd.0.to_bits(),
            sd_lo: self.sd.1.to_bits(),
            q_hi: self.q.0.to_bits(),
            q_lo: self.q.1.to_bits(),
            min_hi: (self.mn >> 32) as u32,
            min_lo: self.mn as u32,
            max_hi: (self.mx >> 32) as u32,
            max_lo: self.mx as u32,
            nf: self.nf,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::agg::state::null_value;

    #[test]
    fn double_float_keeps_about_48_bits() {
        for v in [
            1.0f64,
            -2.5,
            0.1,
            123456.789,
            -1e-20,
            3.0e37,
            1.7e9 + 0.123,
            1e-20, // below ~1e-22 the low part underflows in f32 and precision drops to 24 bits
        ] {
            let (h, l) = f64_to_df(v.to_bits());
            let back = h as f64 + l as f64;
            assert!((back - v).abs() <= v.abs() * 1e-14, "{v}: {back}");
        }
    }

    #[test]
    fn mirror_records_match_direct_partials() {
        let vals: Vec<f64> = (0..5000).map(|i| 1.0e6 + ((i * 7919) % 1013) as f64 * 0.001).collect();
        let mut s = RunState::default();
        for v in &vals {
            s.push(*v);
        }
        s.push(null_value());
        let p = s.record().to_partial();
        let d = ColPartial::from_values(&vals);
        assert_eq!((p.n, p.min, p.max), (d.n, d.min, d.max));
        assert!((p.sum - d.sum).abs() <= 1e-12 * d.sum.abs(), "{} {}", p.sum, d.sum);
        assert!((p.m2 - d.m2).abs() <= 1e-6 * d.m2.abs(), "{} {}", p.m2, d.m2);
    }

    #[test]
    fn non_finite_values_follow_the_cpu() {
        let mut s = RunState::default();
        for v in [1.0, f64::INFINITY, 2.0] {
            s.push(v);
        }
        let p = s.record().to_partial();
        assert_eq!(p.sum, f64::INFINITY);
        assert_eq!(p.n, 3);
        let mut s = RunState::default();
        s.push(1e300);
        assert!(s.record().overflow());
    }
}
