//! Money as an exact integer. Floats are for display only: summing floats over millions of
//! requests drifts, and budgets must compare exactly.

use std::{fmt, iter::Sum, ops::Add};

/// An amount of US dollars in nano-dollars (1e-9 USD). `i64` holds about 9.2 billion USD.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Cost(i64);

impl Cost {
    pub const ZERO: Cost = Cost(0);
    const PER_USD: i64 = 1_000_000_000;

    pub const fn from_nano_usd(nanos: i64) -> Self {
        Self(nanos)
    }
    pub const fn nano_usd(self) -> i64 {
        self.0
    }
    /// Lossy, for display and for LiteLLM-style float fields only.
    pub fn usd(self) -> f64 {
        self.0 as f64 / Self::PER_USD as f64
    }
}

impl Add for Cost {
    type Output = Cost;
    fn add(self, rhs: Cost) -> Cost {
        Cost(self.0.saturating_add(rhs.0))
    }
}

impl Sum for Cost {
    fn sum<I: Iterator<Item = Cost>>(iter: I) -> Cost {
        iter.fold(Cost::ZERO, Add::add)
    }
}

impl fmt::Display for Cost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "${:.6}", self.usd())
    }
}
