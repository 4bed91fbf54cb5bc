//! The synthetic event generator behind `fenestra gen` and `fenestra bench`.
//!
//! Events arrive in generation order with a base clock that advances `1 / events_per_ms` ms per
//! event; each event's time is its base minus a uniform jitter in `0..=disorder_ms`, so the
//! running maximum never runs ahead of the base and, with a watermark delay of at least
//! `disorder_ms`, no such event is late. A fraction `late_fraction` of events is instead delayed
//! beyond the disorder bound (by up to another 5 s plus 4× the disorder), so that most of them are
//! late for windows of a few seconds. Keys follow a bounded Zipf law with exponent `zipf` over
//! `0..keys` (key 0 hottest), or are uniform when `zipf` is 0. Values are uniform on `[0, 1000)`
//! rounded to 3 decimals.

use crate::error::{Error, Result};

/// Generator settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GenConfig {
    /// Number of events.
    pub events: usize,
    /// Number of distinct keys.
    pub keys: u32,
    /// Zipf exponent (0 = uniform keys).
    pub zipf: f64,
    /// Maximum in-order jitter, ms.
    pub disorder_ms: i64,
    /// Fraction of events delayed beyond the disorder bound.
    pub late_fraction: f64,
    /// Random seed.
    pub seed: u64,
    /// Time of the first event's base clock, ms since the epoch.
    pub start_ms: i64,
    /// Events per millisecond of base clock.
    pub events_per_ms: u32,
}

impl Default for GenConfig {
    fn default() -> Self {
        GenConfig {
            events: 1_000_000,
            keys: 10_000,
            zipf: 0.0,
            disorder_ms: 500,
            late_fraction: 0.0,
            seed: 42,
            start_ms: 1_700_000_000_000,
            events_per_ms: 10,
        }
    }
}

impl GenConfig {
    /// Checks ranges; the error names the option.
    pub fn validate(&self) -> Result<()> {
        if self.keys == 0 {
            return Err(Error::config("--keys must be at least 1"));
        }
        if !(self.zipf >= 0.0 && self.zipf.is_finite()) {
            return Err(Error::config(format!(
                "--zipf must be a finite number >= 0, got {}",
                self.zipf
            )));
        }
        if self.disorder_ms < 0 {
            return Err(Error::config(format!(
                "--disorder-ms must be >= 0, got {}",
                self.disorder_ms
            )));
        }
        if !(0.0..=1.0).contains(&self.late_fraction) {
            return Err(Error::config(format!(
                "--late-fraction must be between 0 and 1, got {}",
                self.late_fraction
            )));
        }
        if self.events_per_ms == 0 {
            return Err(Error::config("events per ms must be at least 1"));
        }
        Ok(())
    }
}

/// Generated events in columns.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Events {
    /// Event time, ms.
    pub ts: Vec<i64>,
    /// Key.
    pub key: Vec<i64>,
    /// Value.
    pub value: Vec<f64>,
}

impl Events {
    /// Number of events.
    pub fn len(&self) -> usize {
        self.ts.len()
    }
    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.ts.is_empty()
    }
}

/// xoshiro256** seeded through SplitMix64: small, fast, reproducible.
#[derive(Clone, Debug)]
pub struct Rng([u64; 4]);

impl Rng {
    /// A generator for `seed`.
    pub fn new(seed: u64) -> Self {
        let mut z = seed;
        let mut next = || {
            z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut x = z;
            x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            x ^ (x >> 31)
        };
        Rng([next(), next(), next(), next()])
    }

    /// The next 64 random bits.
    #[inline]
    pub fn next_u64(&mut self) -> u64 {
        let s = &mut self.0;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// Uniform on `[0, 1)`.
    #[inline]
    pub fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform on `0..n` (n > 0).
    #[inline]
    pub fn below(&mut self, n: u64) -> u64 {
        ((self.next_u64() as u128 * n as u128) >> 64) as u64
    }
}

/// Walker's alias table: O(1) sampling from a discrete distribution.
#[derive(Clone, Debug)]
pub struct AliasTable {
    prob: Vec<f64>,
    alias: Vec<u32>,
}

impl AliasTable {
    /// A table for the (unnormalised, positive) `weights`.
    pub fn new(weights: &[f64]) -> Self {
        let n = weights.len();
        let total: f64 = weights.iter().sum();
        let mut prob: Vec<f64> = weights.iter().map(|w| w * n as f64 / total).collect();
        let mut alias = vec![0u32; n];
        let (mut small, mut large): (Vec<usize>, Vec<usize>) = (0..n).partition(|&i| prob[i] < 1.0);
        while let (Some(s), Some(&l)) = (small.pop(), large.last()) {
            alias[s] = l as u32;
            prob[l] -= 1.0 - prob[s];
            if prob[l] < 1.0 {
                large.pop();
                small.push(l);
            }
        }
        for i in large.into_iter().chain(small) {
            prob[i] = 1.0;
        }
        AliasTable { prob, alias }
    }

    /// Bounded Zipf over `0..n` with exponent `s`: `P(k) ∝ 1 / (k + 1)^s`.
    pub fn zipf(n: u32, s: f64) -> Self {
        let w: Vec<f64> = (0..n).map(|k| 1.0 / ((k + 1) as f64).powf(s)).collect();
        AliasTable::new(&w)
    }

    /// Draws one index.
    #[inline]
    pub fn sample(&self, rng: &mut Rng) -> u32 {
        let i = rng.below(self.prob.len() as u64) as usize;
        if rng.next_f64() < self.prob[i] {
            i as u32
        } else {
            self.alias[i]
        }
    }
}

/// Generates events per `cfg`, calling `progress(done)` every 2^20 events.
pub fn generate(cfg: &GenConfig, mut progress: impl FnMut(usize)) -> Result<Events> {
    cfg.validate()?;
    let n = cfg.events;
    let mut rng = Rng::new(cfg.seed);
    let table = (cfg.zipf > 0.0).then(|| AliasTable::zipf(cfg.keys, cfg.zipf));
    let mut ev = Events {
        ts: Vec::with_capacity(n),
        key: Vec::with_capacity(n),
        value: Vec::with_capacity(n),
    };
    let late_extra = 5_000 + 4 * cfg.disorder_ms;
    for i in 0..n {
        let base = cfg.start_ms + (i as i64) / cfg.events_per_ms as i64;
        let jitter = rng.below(cfg.disorder_ms as u64 + 1) as i64;
        let late = cfg.late_fraction > 0.0 && rng.next_f64() < cfg.late_fraction;
        let ts = if late {
            base - cfg.disorder_ms - 1 - rng.below(late_extra as u64 + 1) as i64
        } else {
            base - jitter
        };
        let key = match &table {
            Some(t) => t.sample(&mut rng),
            None => rng.below(cfg.keys as u64) as u32,
        };
        let value = (rng.next_f64() * 1_000_000.0).floor() / 1000.0;
        ev.ts.push(ts);
        ev.key.push(key as i64);
        ev.value.push(value);
        if i & ((1 << 20) - 1) == (1 << 20) - 1 {
            progress(i + 1);
        }
    }
    progress(n);
    Ok(ev)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zipf_makes_key_zero_hot() {
        let cfg = GenConfig {
            events: 200_000,
            keys: 10_000,
            zipf: 1.1,
            ..Default::default()
        };
        let ev = generate(&cfg, |_| {}).unwrap();
        let hot = ev.key.iter().filter(|k| **k == 0).count() as f64 / ev.len() as f64;
        let h: f64 = (0..10_000).map(|k| 1.0 / ((k + 1) as f64).powf(1.1)).sum();
        let expected = 1.0 / h; // ≈ 0.151
        assert!((hot - expected).abs() < 0.01, "{hot} vs {expected}");
        let uniform = generate(
            &GenConfig {
                events: 200_000,
                ..Default::default()
            },
            |_| {},
        )
        .unwrap();
        let hot_u = uniform.key.iter().filter(|k| **k == 0).count();
        assert!(hot_u < 100, "{hot_u}");
    }

    #[test]
    fn disorder_is_bounded_and_seeded() {
        let cfg = GenConfig {
            events: 50_000,
            disorder_ms: 300,
            ..Default::default()
        };
        let a = generate(&cfg, |_| {}).unwrap();
        let b = generate(&cfg, |_| {}).unwrap();
        assert_eq!(a, b);
        let mut max = i64::MIN;
        for &t in &a.ts {
            if max != i64::MIN {
                assert!(t >= max - 300 - 1, "{t} {max}");
            }
            max = max.max(t);
        }
        assert!(a.value.iter().all(|v| (0.0..1000.0).contains(v)));
    }
}
