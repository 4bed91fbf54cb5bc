//! Window specifications (tumbling, sliding/hopping, session) and their assignment arithmetic.
//!
//! All windows are half-open `[start, end)` with `max_timestamp = end - 1` (DESIGN.md §2).

use crate::error::{Error, Result};
use crate::time::{Duration, MAX_DURATION_MS, parse_duration};
use std::fmt;
use std::str::FromStr;

/// Which windows an event belongs to.
///
/// ```
/// use fenestra::WindowSpec;
/// let hop: WindowSpec = "hop:10s:1s".parse().unwrap();
/// assert_eq!(hop.to_string(), "hop:10s:1s");
/// assert!("tumble:0s".parse::<WindowSpec>().is_err());
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WindowSpec {
    /// Fixed-size, non-overlapping windows: `start = ts - ((ts - offset) mod size)`.
    Tumbling {
        /// Window length.
        size: Duration,
        /// Alignment shift, `|offset| < size`.
        offset: Duration,
    },
    /// Fixed-size windows that start every `slide`; an event belongs to `ceil(size/slide)` of
    /// them. Computed from panes of width `gcd(size, slide)`.
    Sliding {
        /// Window length.
        size: Duration,
        /// Distance between window starts, `0 < slide <= size`.
        slide: Duration,
        /// Alignment shift, `|offset| < slide`.
        offset: Duration,
    },
    /// Per-key activity sessions: each event opens `[ts, ts + gap)`; overlapping or touching
    /// windows of one key merge.
    Session {
        /// Inactivity gap.
        gap: Duration,
    },
}

impl WindowSpec {
    /// Tumbling windows of `size`, aligned to the epoch.
    pub fn tumbling(size: Duration) -> Self {
        WindowSpec::Tumbling {
            size,
            offset: Duration::ZERO,
        }
    }

    /// Sliding (hopping) windows of `size` every `slide`, aligned to the epoch.
    pub fn sliding(size: Duration, slide: Duration) -> Self {
        WindowSpec::Sliding {
            size,
            slide,
            offset: Duration::ZERO,
        }
    }

    /// Session windows with inactivity `gap`.
    pub fn session(gap: Duration) -> Self {
        WindowSpec::Session { gap }
    }

    /// Checks sizes, slides, offsets and gaps; every constructor path goes through this before
    /// a pipeline is built.
    pub fn validate(&self) -> Result<()> {
        let err = |reason: String| {
            Err(Error::InvalidWindow {
                spec: self.to_string(),
                reason,
            })
        };
        let positive = |name: &str, d: Duration| -> Option<String> {
            if d.as_millis() <= 0 {
                Some(format!("{name} must be positive, got {d}"))
            } else if d.as_millis() > MAX_DURATION_MS {
                Some(format!("{name} must be at most {MAX_DURATION_MS} ms"))
            } else {
                None
            }
        };
        match *self {
            WindowSpec::Tumbling { size, offset } => {
                if let Some(r) = positive("size", size) {
                    return err(r);
                }
                if offset.as_millis().abs() >= size.as_millis() {
                    return err(format!("offset {offset} must be smaller than the size {size}"));
                }
            }
            WindowSpec::Sliding { size, slide, offset } => {
                if let Some(r) = positive("size", size).or_else(|| positive("slide", slide)) {
                    return err(r);
                }
                if slide > size {
                    return err(format!(
                        "slide {slide} is larger than size {size}: events between windows would belong to none"
                    ));
                }
                if offset.as_millis().abs() >= slide.as_millis() {
                    return err(format!("offset {offset} must be smaller than the slide {slide}"));
                }
            }
            WindowSpec::Session { gap } => {
                if let Some(r) = positive("gap", gap) {
                    return err(r);
                }
            }
        }
        Ok(())
    }

    /// The pane layout for tumbling and sliding windows; `None` for sessions.
    pub fn panes(&self) -> Option<PaneLayout> {
        match *self {
            WindowSpec::Tumbling { size, offset } => {
                Some(PaneLayout::new(size.as_millis(), size.as_millis(), offset.as_millis()))
            }
            WindowSpec::Sliding { size, slide, offset } => {
                Some(PaneLayout::new(size.as_millis(), slide.as_millis(), offset.as_millis()))
            }
            WindowSpec::Session { .. } => None,
        }
    }

    /// True for session windows.
    pub fn is_session(&self) -> bool {
        matches!(self, WindowSpec::Session { .. })
    }
}

impl fmt::Display for WindowSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            WindowSpec::Tumbling { size, offset } => {
                write!(f, "tumble:{size}")?;
                if offset != Duration::ZERO {
                    write!(f, ":offset={offset}")?;
                }
                Ok(())
            }
            WindowSpec::Sliding { size, slide, offset } => {
                write!(f, "hop:{size}:{slide}")?;
                if offset != Duration::ZERO {
                    write!(f, ":offset={offset}")?;
                }
                Ok(())
            }
            WindowSpec::Session { gap } => write!(f, "session:{gap}"),
        }
    }
}

impl FromStr for WindowSpec {
    type Err = Error;

    /// `tumble:SIZE[:offset=D]`, `hop:SIZE:SLIDE[:offset=D]` (also `slide:`/`sliding:`/
    /// `hopping:`/`tumbling:`), `session:GAP`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = |reason: String| Error::InvalidWindow {
            spec: s.to_string(),
            reason,
        };
        let mut parts: Vec<&str> = s.trim().split(':').collect();
        let mut offset = Duration::ZERO;
        if let Some(last) = parts.last()
            && let Some(o) = last.strip_prefix("offset=")
        {
            offset = parse_duration(o).map_err(|e| bad(e.to_string()))?;
            parts.pop();
        }
        let dur = |t: &str| parse_duration(t).map_err(|e| bad(e.to_string()));
        let kind = parts[0].to_ascii_lowercase();
        let spec = match (kind.as_str(), &parts[1..]) {
            ("tumble" | "tumbling", [size]) => WindowSpec::Tumbling {
                size: dur(size)?,
                offset,
            },
            ("hop" | "hopping" | "slide" | "sliding", [size, slide]) => WindowSpec::Sliding {
                size: dur(size)?,
                slide: dur(slide)?,
                offset,
            },
            ("session", [gap]) => {
                if offset != Duration::ZERO {
                    return Err(bad("session windows take no offset".into()));
                }
                WindowSpec::Session { gap: dur(gap)? }
            }
            ("tumble" | "tumbling", _) => {
                return Err(bad("expected tumble:SIZE, e.g. tumble:1s".into()));
            }
            ("hop" | "hopping" | "slide" | "sliding", _) => {
                return Err(bad("expected hop:SIZE:SLIDE, e.g. hop:10s:1s".into()));
            }
            ("session", _) => return Err(bad("expected session:GAP, e.g. session:100ms".into())),
            _ => {
                return Err(bad(format!(
                    "unknown window kind '{}'; expected tumble:SIZE, hop:SIZE:SLIDE or session:GAP",
                    parts[0]
                )));
            }
        };
        spec.validate()?;
        Ok(spec)
    }
}

/// Greatest common divisor of two positive integers.
pub fn gcd(mut a: i64, mut b: i64) -> i64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.abs()
}

/// Start of the window of length `size` (aligned to `offset`) that contains `ts`, with a floored
/// remainder so negative timestamps work.
#[inline]
pub fn tumbling_start(ts: i64, size: i64, offset: i64) -> i64 {
    ts - (ts - offset).rem_euclid(size)
}

/// Tumbling and sliding windows cut into panes of width `gcd(size, slide)`.
///
/// Pane `p` covers `[p * pane + offset, (p + 1) * pane + offset)`; a window of `size` starting at
/// `s` is the union of `size / pane` consecutive panes, and window starts are `slide` apart.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PaneLayout {
    /// Window length in ms.
    pub size: i64,
    /// Window start spacing in ms (`== size` for tumbling).
    pub slide: i64,
    /// Alignment in ms.
    pub offset: i64,
    /// Pane width in ms.
    pub pane: i64,
    /// `1 / pane`, for a division-free `pane_of`.
    inv_pane: f64,
}

impl PaneLayout {
    /// The layout for windows of `size` every `slide`, shifted by `offset` (all in ms).
    pub fn new(size: i64, slide: i64, offset: i64) -> Self {
        let pane = gcd(size, slide);
        PaneLayout {
            size,
            slide,
            offset,
            pane,
            inv_pane: 1.0 / pane as f64,
        }
    }

    /// Panes in one window.
    pub fn panes_per_window(&self) -> i64 {
        self.size / self.pane
    }

    /// Panes between two consecutive window starts.
    pub fn panes_per_slide(&self) -> i64 {
        self.slide / self.pane
    }

    /// The pane index of a timestamp: `floor((ts - offset) / pane)`, by a reciprocal multiply
    /// and one correction step (exact for |ts| <= 2^53).
    #[inline]
    pub fn pane_of(&self, ts: i64) -> i64 {
        let x = ts - self.offset;
        let q = (x as f64 * self.inv_pane) as i64;
        let r = x - q * self.pane;
        q + (r >= self.pane) as i64 - (r < 0) as i64
    }

    /// The start of pane `p`.
    #[inline]
    pub fn pane_start(&self, p: i64) -> i64 {
        p * self.pane + self.offset
    }

    /// The end (exclusive) of the last window that contains pane `p`. The pane's state is needed
    /// until that window is purged.
    #[inline]
    pub fn last_window_end(&self, p: i64) -> i64 {
        tumbling_start(self.pane_start(p), self.slide, self.offset) + self.size
    }

    /// The end (exclusive) of the first window that contains pane `p`.
    #[inline]
    pub fn first_window_end(&self, p: i64) -> i64 {
        let first_start = tumbling_start(self.pane_start(p) - self.size + self.pane, self.slide, self.offset);
        // `first_start` may be a window that ends at or before the pane when slide does not
        // divide size; step forward to the first one that covers the pane.
        let mut s = first_start;
        while s + self.size <= self.pane_start(p) {
            s += self.slide;
        }
        s + self.size
    }

    /// The first window end strictly greater than `t`.
    #[inline]
    pub fn next_window_end_after(&self, t: i64) -> i64 {
        // window ends are offset + size + k * slide
        let base = self.offset + self.size;
        t - (t - base).rem_euclid(self.slide) + self.slide
    }

    /// The window starts that contain `ts`, newest first (DESIGN.md §2).
    pub fn windows_of(&self, ts: i64) -> impl Iterator<Item = i64> + '_ {
        let last = tumbling_start(ts, self.slide, self.offset);
        let size = self.size;
        let slide = self.slide;
        (0..).map(move |k| last - k * slide).take_while(move |s| *s > ts - size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_and_display() {
        for s in [
            "tumble:1s",
            "hop:10s:1s",
            "session:100ms",
            "tumble:1s:offset=200ms",
            "hop:10s:2s:offset=-1s",
        ] {
            let w: WindowSpec = s.parse().unwrap();
            assert_eq!(w.to_string(), s);
        }
        let w: WindowSpec = "sliding:1m:15s".parse().unwrap();
        assert_eq!(w, WindowSpec::sliding(Duration::from_secs(60), Duration::from_secs(15)));
    }

    #[test]
    fn invalid_specs_name_the_problem() {
        let cases = [
            ("tumble:0s", "positive"),
            ("hop:1s:2s", "larger than size"),
            ("hop:10s", "hop:SIZE:SLIDE"),
            ("window:1s", "unknown window kind"),
            ("tumble:1x", "unknown unit"),
            ("tumble:1s:offset=2s", "smaller than the size"),
            ("session:-5ms", "positive"),
        ];
        for (s, needle) in cases {
            let e = s.parse::<WindowSpec>().unwrap_err().to_string();
            assert!(e.contains(needle), "{s}: {e}");
        }
    }

    #[test]
    fn tumbling_start_floors_negative_timestamps() {
        assert_eq!(tumbling_start(-1, 1000, 0), -1000);
        assert_eq!(tumbling_start(-1000, 1000, 0), -1000);
        assert_eq!(tumbling_start(999, 1000, 0), 0);
        assert_eq!(tumbling_start(250, 1000, 300), -700);
        assert_eq!(tumbling_start(300, 1000, 300), 300);
    }

    #[test]
    fn windows_of_matches_the_definition() {
        let l = PaneLayout::new(10_000, 3_000, 0);
        assert_eq!(l.pane, 1000);
        for ts in [-12_345i64, -1, 0, 1, 2999, 3000, 9999, 123_456] {
            let mine: Vec<i64> = l.windows_of(ts).collect();
            // brute force over all aligned starts
            let mut brute = vec![];
            let mut s = tumbling_start(ts - 20_000, 3000, 0);
            while s <= ts {
                if s <= ts && ts < s + 10_000 {
                    brute.push(s);
                }
                s += 3000;
            }
            brute.reverse();
            assert_eq!(mine, brute, "ts {ts}");
            let p = l.pane_of(ts);
            assert_eq!(l.last_window_end(p), mine[0] + 10_000);
            assert_eq!(l.first_window_end(p), mine.last().unwrap() + 10_000, "ts {ts}");
        }
    }

    #[test]
    fn pane_of_is_a_floored_division() {
        for pane in [1i64, 3, 7, 1000, 86_400_000, 999_983] {
            let l = PaneLayout::new(pane * 2, pane, 0);
            for ts in [
                -(1i64 << 53),
                -1_000_000_007,
                -pane - 1,
                -pane,
                -1,
                0,
                1,
                pane - 1,
                pane,
                1_700_000_000_123,
                (1 << 53) - 1,
            ] {
                assert_eq!(l.pane_of(ts), ts.div_euclid(pane), "ts {ts} pane {pane}");
            }
        }
    }

    #[test]
    fn next_window_end() {
        let l = PaneLayout::new(10_000, 1_000, 0);
        assert_eq!(l.next_window_end_after(999), 1000);
        assert_eq!(l.next_window_end_after(1000), 2000);
        assert_eq!(l.next_window_end_after(-1), 0);
    }
}
