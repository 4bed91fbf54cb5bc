//! The bounded-out-of-orderness watermark, evaluated per event (DESIGN.md §3).

/// `W_i = max(ts_0 .. ts_{i-1}) - delay - 1`; −∞ before any event, +∞ once the input has ended.
///
/// Because it is defined per event, lateness never depends on how events were cut into batches.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Watermark {
    max_ts: i64,
    delay: i64,
    finished: bool,
}

impl Watermark {
    /// A watermark that trails the largest timestamp seen by `delay_ms`.
    pub fn new(delay_ms: i64) -> Self {
        Watermark {
            max_ts: i64::MIN,
            delay: delay_ms,
            finished: false,
        }
    }

    /// The watermark that applies to the next event.
    #[inline]
    pub fn current(&self) -> i64 {
        if self.finished {
            i64::MAX
        } else if self.max_ts == i64::MIN {
            i64::MIN
        } else {
            self.max_ts - self.delay - 1
        }
    }

    /// The watermark that follows a running maximum of `max_ts`.
    #[inline]
    pub fn from_max(&self, max_ts: i64) -> i64 {
        if max_ts == i64::MIN {
            i64::MIN
        } else {
            max_ts - self.delay - 1
        }
    }

    /// The largest timestamp seen, `i64::MIN` before any event.
    #[inline]
    pub fn max_ts(&self) -> i64 {
        self.max_ts
    }

    /// Records that events up to `max_ts` have been seen.
    #[inline]
    pub fn advance(&mut self, max_ts: i64) {
        self.max_ts = self.max_ts.max(max_ts);
    }

    /// Marks the end of input: the watermark becomes +∞.
    pub fn finish(&mut self) {
        self.finished = true;
    }

    /// Whether the input has ended.
    pub fn is_finished(&self) -> bool {
        self.finished
    }

    /// The configured delay in ms.
    pub fn delay(&self) -> i64 {
        self.delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trails_the_maximum() {
        let mut w = Watermark::new(500);
        assert_eq!(w.current(), i64::MIN);
        w.advance(10_000);
        assert_eq!(w.current(), 9_499);
        w.advance(9_000);
        assert_eq!(w.current(), 9_499);
        w.finish();
        assert_eq!(w.current(), i64::MAX);
    }
}
