// shared/record.wgsl — the per-column run record, twin of src/backend/gpu/record.rs.
//
// A run is a maximal stretch of slot-sorted events with the same slot. Its record keeps, for one
// value column, a *shifted* sum: x0 is the run's first non-null value (exact f64 bits), `sd` the
// sum of (x - x0) and `q` the sum of (x - x0)^2, both as double-float (hi + lo f32) numbers. The
// host turns a record into (n, sum, min, max, m2) in f64:
//   sum = n * x0 + sd,   m2 = q - sd^2 / n.
// Shifting by a value of the run keeps q - sd^2/n free of catastrophic cancellation, and the
// double-float arithmetic keeps about 48 significant bits. min/max are exact: they are the f64
// bits mapped to order keys (see agg/state.rs `order_key`), compared as (hi, lo) u32 pairs.
// A null value is the bit pattern (hi, lo) = (0x7FF00000, 0x00000001) and is skipped.
// Non-finite values count in n, min and max but not in sd/q; they set flag bits in the top of
// `n_flags` (NaN, +inf, -inf), and finite values outside the f32 range set OVERFLOW so the host
// can recompute the batch in f64. `nf` counts the finite values that went into sd/q.

const NULL_HI: u32 = 0x7FF00000u;
const NULL_LO: u32 = 0x00000001u;
const EMPTY: u32 = 0xFFFFFFFFu;
const FLAG_NAN: u32 = 0x80000000u;
const FLAG_POS_INF: u32 = 0x40000000u;
const FLAG_NEG_INF: u32 = 0x20000000u;
const FLAG_OVERFLOW: u32 = 0x10000000u;

// 12 words, written as u32 (floats bitcast).
struct Record {
    n_flags: u32,
    x0_lo: u32,
    x0_hi: u32,
    sd_hi: u32,
    sd_lo: u32,
    q_hi: u32,
    q_lo: u32,
    min_hi: u32,
    min_lo: u32,
    max_hi: u32,
    max_lo: u32,
    nf: u32,
}

struct RunState {
    n: u32,
    nf: u32,
    flags: u32,
    x0: vec2<u32>,    // (lo, hi) bits of the shift value
    x0f: vec2<f32>,   // the shift as double-float
    sd: vec2<f32>,
    q: vec2<f32>,
    mn: vec2<u32>,    // order key (hi, lo)
    mx: vec2<u32>,
}

fn run_identity() -> RunState {
    var s: RunState;
    s.n = 0u;
    s.nf = 0u;
    s.flags = 0u;
    s.x0 = vec2<u32>(0u, 0u);
    s.x0f = vec2<f32>(0.0, 0.0);
    s.sd = vec2<f32>(0.0, 0.0);
    s.q = vec2<f32>(0.0, 0.0);
    s.mn = vec2<u32>(0xFFFFFFFFu, 0xFFFFFFFFu);
    s.mx = vec2<u32>(0u, 0u);
    return s;
}

// Finite f64 bits (lo, hi) with an exponent inside the f32 range -> double-float (hi, lo) f32
// pair whose sum is the f64 to about 48 significant bits. Subnormal-range values flush to zero.
fn f64_to_df(lo: u32, hi: u32) -> vec2<f32> {
    let sign = hi & 0x80000000u;
    let e = (hi >> 20u) & 0x7FFu;
    let ue = i32(e) - 1023;
    if (ue < -126) {
        return vec2<f32>(0.0, 0.0);
    }
    // significand: 1 . m51..m0 ; the top 23 fraction bits go to hi, the low 29 bits to lo.
    let top = ((hi & 0xFFFFFu) << 3u) | (lo >> 29u);
    let h = bitcast<f32>(sign | (u32(ue + 127) << 23u) | top);
    let rest = f32(lo & 0x1FFFFFFFu);
    let l = select(1.0, -1.0, sign != 0u) * ldexp(rest, ue - 52);
    return vec2<f32>(h, l);
}

// 1.0, read from a uniform at kernel start. Error-free transformations such as TwoSum only work
// if the compiler keeps every rounding step; shader compilers apply inexact algebra
// ((a + b) - a -> b) unless a value is opaque to them, so the key intermediates are multiplied
// by ONE, which the compiler cannot see through.
var<private> ONE: f32 = 1.0;

// Knuth's TwoSum of two double-float numbers, renormalised.
fn df_add(a: vec2<f32>, b: vec2<f32>) -> vec2<f32> {
    let s = (a.x + b.x) * ONE;
    let bb = (s - a.x) * ONE;
    let err = (a.x - (s - bb)) + (b.x - bb);
    let t = err + a.y + b.y;
    let hi = (s + t) * ONE;
    let lo = t - (hi - s);
    return vec2<f32>(hi, lo);
}

fn df_neg(a: vec2<f32>) -> vec2<f32> {
    return vec2<f32>(-a.x, -a.y);
}

// a^2 as double-float (TwoProd with fma), for a double-float a.
fn df_sqr(a: vec2<f32>) -> vec2<f32> {
    let p = (a.x * a.x) * ONE;
    let e = fma(a.x, a.x, -p) + 2.0 * a.x * a.y;
    let hi = (p + e) * ONE;
    let lo = e - (hi - p);
    return vec2<f32>(hi, lo);
}

// Order key of f64 bits as (hi, lo): flip the sign bit of positives, all bits of negatives.
fn order_key(lo: u32, hi: u32) -> vec2<u32> {
    if ((hi & 0x80000000u) != 0u) {
        return vec2<u32>(~hi, ~lo);
    }
    return vec2<u32>(hi | 0x80000000u, lo);
}

fn key_less(a: vec2<u32>, b: vec2<u32>) -> bool {
    return a.x < b.x || (a.x == b.x && a.y < b.y);
}

// Adds one value (f64 bits) to a run.
fn run_push(s: ptr<function, RunState>, lo: u32, hi: u32) {
    if (hi == NULL_HI && lo == NULL_LO) {
        return;
    }
    let k = order_key(lo, hi);
    if (key_less(k, (*s).mn)) {
        (*s).mn = k;
    }
    if (key_less((*s).mx, k)) {
        (*s).mx = k;
    }
    (*s).n = (*s).n + 1u;
    let e = (hi >> 20u) & 0x7FFu;
    if (e == 0x7FFu) {
        if (((hi & 0xFFFFFu) | lo) != 0u) {
            (*s).flags = (*s).flags | FLAG_NAN;
        } else if ((hi & 0x80000000u) != 0u) {
            (*s).flags = (*s).flags | FLAG_NEG_INF;
        } else {
            (*s).flags = (*s).flags | FLAG_POS_INF;
        }
        return;
    }
    if (i32(e) - 1023 > 127) {
        (*s).flags = (*s).flags | FLAG_OVERFLOW;
        return;
    }
    let x = f64_to_df(lo, hi);
    if ((*s).nf == 0u) {
        (*s).x0 = vec2<u32>(lo, hi);
        (*s).x0f = x;
    } else {
        let d = df_add(x, df_neg((*s).x0f));
        (*s).sd = df_add((*s).sd, d);
        (*s).q = df_add((*s).q, df_sqr(d));
    }
    (*s).nf = (*s).nf + 1u;
}

fn run_record(s: RunState) -> Record {
    var r: Record;
    r.n_flags = s.n | s.flags;
    r.x0_lo = s.x0.x;
    r.x0_hi = s.x0.y;
    r.sd_hi = bitcast<u32>(s.sd.x);
    r.sd_lo = bitcast<u32>(s.sd.y);
    r.q_hi = bitcast<u32>(s.q.x);
    r.q_lo = bitcast<u32>(s.q.y);
    r.min_hi = s.mn.x;
    r.min_lo = s.mn.y;
    r.max_hi = s.mx.x;
    r.max_lo = s.mx.y;
    r.nf = s.nf;
    return r;
}
