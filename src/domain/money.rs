//! Money as an exact integer. Floats are for display only: summing floats over millions of
//! requests drifts, and budgets must compare exactly.

use std::{fmt, iter::Sum, ops::Add};

/// An amount of US dollars in nano-dollars (1e-9 USD). `i64` holds about 9.2 billion USD.
#[derive(
    Debug, Clone, Copy, Default, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
#[serde(transparent)]
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

/// USD per token in pico-dollars (1e-12 USD): $0.02 per million tokens is 20,000, so every published
/// price is an exact integer here.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Price {
    pub input: i64,
    pub output: i64,
    /// Prompt tokens read from the provider's prompt cache (default: the input price).
    pub cache_read: i64,
    /// Prompt tokens written to the provider's prompt cache (default: the input price).
    pub cache_write: i64,
}

impl Price {
    const PICO_PER_NANO: i64 = 1000;

    /// Converts LiteLLM's float USD-per-token (e.g. `2.5e-06`) to pico-dollars, once, at load time.
    pub fn pico_from_usd(usd_per_token: f64) -> i64 {
        (usd_per_token * 1e12).round() as i64
    }

    /// The cost of `usage`. `prompt_tokens` includes cached and cache-write tokens (our normal form),
    /// each charged at its own rate. Rounded up to the next nano-dollar, once per request.
    pub fn cost(&self, usage: &super::Usage) -> Cost {
        let cached = i64::from(usage.cached_prompt_tokens);
        let written = i64::from(usage.cache_creation_prompt_tokens);
        let plain = (i64::from(usage.prompt_tokens) - cached - written).max(0);
        let pico = plain * self.input
            + cached * self.cache_read
            + written * self.cache_write
            + i64::from(usage.completion_tokens) * self.output;
        Cost(nanos_rounded_up(pico))
    }

    /// The most a request can cost: every prompt token at the input price and `max_output` tokens.
    pub fn worst_case(&self, prompt_tokens: u64, max_output: u64) -> Cost {
        let input = self.input.max(self.cache_write);
        let pico =
            (prompt_tokens as i64).saturating_mul(input) + (max_output as i64).saturating_mul(self.output);
        Cost(nanos_rounded_up(pico))
    }

    /// The dearer of two prices in each component (a group's worst case across its deployments).
    pub fn max(self, other: Price) -> Price {
        Price {
            input: self.input.max(other.input),
            output: self.output.max(other.output),
            cache_read: self.cache_read.max(other.cache_read),
            cache_write: self.cache_write.max(other.cache_write),
        }
    }
}

/// Pico-dollars to nano-dollars, rounding up (costs are never negative).
fn nanos_rounded_up(pico: i64) -> i64 {
    (pico.max(0) as u64).div_ceil(Price::PICO_PER_NANO as u64) as i64
}

impl Cost {
    /// USD from LiteLLM-style float fields (`max_budget: 1.5`), rounded to the nano-dollar.
    pub fn from_usd(usd: f64) -> Cost {
        Cost((usd * Self::PER_USD as f64).round() as i64)
    }
}

impl std::ops::Sub for Cost {
    type Output = Cost;
    fn sub(self, rhs: Cost) -> Cost {
        Cost(self.0.saturating_sub(rhs.0))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::domain::Usage;

    #[test]
    fn cost_charges_each_token_class_at_its_rate_and_rounds_up_once() {
        // gpt-4o: $2.50 / $10 per million, cached input $1.25 per million.
        let p = Price {
            input: Price::pico_from_usd(2.5e-6),
            output: Price::pico_from_usd(1e-5),
            cache_read: Price::pico_from_usd(1.25e-6),
            cache_write: Price::pico_from_usd(2.5e-6),
        };
        assert_eq!(p.input, 2_500_000);
        let mut u = Usage::new(1000, 200);
        u.cached_prompt_tokens = 400;
        // 600 * 2500 + 400 * 1250 + 200 * 10000 nano = 1.5e6 + 5e5 + 2e6 = 4,000,000 nano = $0.004
        assert_eq!(p.cost(&u), Cost::from_nano_usd(4_000_000));
        let tiny = Price {
            input: 1,
            ..Price::default()
        };
        assert_eq!(tiny.cost(&Usage::new(1, 0)), Cost::from_nano_usd(1), "rounded up");
        assert_eq!(p.worst_case(1000, 100), Cost::from_nano_usd(3_500_000));
        assert_eq!(Cost::from_usd(1.0).nano_usd(), 1_000_000_000);
    }
}
