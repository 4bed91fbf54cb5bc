//! Aggregates: the partial-state monoid ([`state`]) and the list of requested aggregates with
//! their output column names (DESIGN.md §4).

pub mod state;

pub use state::{
    ColPartial, NULL_VALUE_BITS, Partial, SumPartial, from_order_key, is_null_value, null_value, order_key,
};

use crate::error::{Error, Result};
use std::fmt;
use std::str::FromStr;

/// One per-column aggregate. `count` (events in the window) is always emitted and is not listed
/// here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AggKind {
    /// Sum of the non-null values (null when there are none).
    Sum,
    /// Smallest non-null value; NaN sorts above every number.
    Min,
    /// Largest non-null value; NaN sorts above every number.
    Max,
    /// Arithmetic mean of the non-null values.
    Mean,
    /// Sample variance (ddof = 1); null below two values.
    Var,
    /// Sample standard deviation (ddof = 1); null below two values.
    Std,
}

impl AggKind {
    /// All aggregates, in output order.
    pub const ALL: [AggKind; 6] = [
        AggKind::Sum,
        AggKind::Min,
        AggKind::Max,
        AggKind::Mean,
        AggKind::Var,
        AggKind::Std,
    ];

    /// The name used in specs and output columns (`sum`, `min`, ...).
    pub fn name(self) -> &'static str {
        match self {
            AggKind::Sum => "sum",
            AggKind::Min => "min",
            AggKind::Max => "max",
            AggKind::Mean => "mean",
            AggKind::Var => "var",
            AggKind::Std => "std",
        }
    }

    /// Whether this aggregate needs the second-moment state (M2).
    pub fn needs_m2(self) -> bool {
        matches!(self, AggKind::Var | AggKind::Std)
    }

    /// The aggregate's value from a merged partial, `None` for SQL null.
    pub fn evaluate(self, p: &ColPartial) -> Option<f64> {
        (p.n >= self.min_values()).then(|| self.value_of(p))
    }

    /// Non-null values a partial needs for the aggregate not to be null: 2 for the sample
    /// variance and deviation, 1 for the others.
    pub fn min_values(self) -> u64 {
        if self.needs_m2() { 2 } else { 1 }
    }

    /// The aggregate's value from a partial with at least [`AggKind::min_values`] values (any
    /// other partial gives some number, without a panic: for column builders that mark nulls
    /// apart).
    #[inline(always)]
    pub fn value_of(self, p: &ColPartial) -> f64 {
        match self {
            AggKind::Sum => p.sum,
            AggKind::Min => from_order_key(p.min),
            AggKind::Max => from_order_key(p.max),
            AggKind::Mean => p.sum / p.n as f64,
            AggKind::Var => p.m2 / p.n.wrapping_sub(1) as f64,
            AggKind::Std => (p.m2 / p.n.wrapping_sub(1) as f64).sqrt(),
        }
    }
}

impl fmt::Display for AggKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for AggKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        Ok(match s.trim().to_ascii_lowercase().as_str() {
            "sum" => AggKind::Sum,
            "min" => AggKind::Min,
            "max" => AggKind::Max,
            "mean" | "avg" => AggKind::Mean,
            "var" | "variance" => AggKind::Var,
            "std" | "stddev" => AggKind::Std,
            _ => {
                return Err(Error::InvalidAggregate {
                    name: s.trim().to_string(),
                });
            }
        })
    }
}

/// The aggregates computed for every value column, in output order, without duplicates.
///
/// Parsed from a comma list such as `count,sum,min,max,mean,std`; `count` is accepted and always
/// emitted (it is a fixed output column).
///
/// ```
/// use fenestra::Aggregates;
/// let a: Aggregates = "count,std,sum".parse().unwrap();
/// assert_eq!(a.to_string(), "count,sum,std");
/// assert_eq!(a.column_names("value"), vec!["sum_value", "std_value"]);
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Aggregates {
    kinds: Vec<AggKind>,
}

impl Aggregates {
    /// The given aggregates, sorted into output order and deduplicated.
    pub fn new(kinds: impl IntoIterator<Item = AggKind>) -> Self {
        let mut kinds: Vec<AggKind> = kinds.into_iter().collect();
        kinds.sort();
        kinds.dedup();
        Aggregates { kinds }
    }

    /// `count,sum,min,max,mean,std`, the CLI default.
    pub fn default_set() -> Self {
        Aggregates::new([AggKind::Sum, AggKind::Min, AggKind::Max, AggKind::Mean, AggKind::Std])
    }

    /// Every aggregate.
    pub fn all() -> Self {
        Aggregates::new(AggKind::ALL)
    }

    /// Only `count`.
    pub fn count_only() -> Self {
        Aggregates { kinds: vec![] }
    }

    /// The per-column aggregates in output order.
    pub fn kinds(&self) -> &[AggKind] {
        &self.kinds
    }

    /// Whether any aggregate needs the second moment.
    pub fn needs_m2(&self) -> bool {
        self.kinds.iter().any(|k| k.needs_m2())
    }

    /// Whether every aggregate follows from the count and the sum of values (count, sum, mean):
    /// then window state needs no extremes and no second moment ([`SumPartial`]).
    pub fn sums_suffice(&self) -> bool {
        self.kinds.iter().all(|k| matches!(k, AggKind::Sum | AggKind::Mean))
    }

    /// Output column names for one value column, e.g. `sum_value`.
    pub fn column_names(&self, column: &str) -> Vec<String> {
        self.kinds.iter().map(|k| format!("{}_{}", k.name(), column)).collect()
    }
}

impl Default for Aggregates {
    fn default() -> Self {
        Aggregates::default_set()
    }
}

impl fmt::Display for Aggregates {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("count")?;
        for k in &self.kinds {
            write!(f, ",{}", k.name())?;
        }
        Ok(())
    }
}

impl FromStr for Aggregates {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        let mut kinds = vec![];
        for part in s.split(',') {
            let p = part.trim();
            if p.is_empty() {
                return Err(Error::InvalidAggregate { name: s.to_string() });
            }
            if p.eq_ignore_ascii_case("count") {
                continue;
            }
            kinds.push(p.parse()?);
        }
        Ok(Aggregates::new(kinds))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_orders_and_dedups() {
        let a: Aggregates = "max,count,sum,max,avg".parse().unwrap();
        assert_eq!(a.kinds(), &[AggKind::Sum, AggKind::Max, AggKind::Mean]);
        assert!(
            "sum,median"
                .parse::<Aggregates>()
                .unwrap_err()
                .to_string()
                .contains("median")
        );
        assert!("sum,,max".parse::<Aggregates>().is_err());
    }
}
