//! The price model: what an execution costs, as an exact decimal number of dollars.
//!
//! cost = per_invocation + fuel × per_million_fuel / 10⁶ + GiB-seconds × per_gib_second
//!        + GiB transferred × per_gib_transferred + what its model calls cost,
//! where GiB-seconds = peak linear memory (GiB) × wall time (s), and GiB transferred is
//! outbound HTTP request and response body bytes together. Computed in decimal
//! arithmetic (never floating point) and rounded half-up to whole picodollars
//! (10⁻¹² USD), which is how it is stored.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use serde::{Deserialize, Serialize};

use crate::runtime::Usage;

/// Prices in dollars, as decimal strings in config (`"0.000001"`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriceModel {
    /// Charged once per execution.
    pub per_invocation: Decimal,
    /// Charged per million fuel units.
    pub per_million_fuel: Decimal,
    /// Charged per GiB-second of peak linear memory.
    pub per_gib_second: Decimal,
    /// Charged per GiB of outbound HTTP traffic (request and response bodies).
    #[serde(default)]
    pub per_gib_transferred: Decimal,
}

impl Default for PriceModel {
    fn default() -> Self {
        PriceModel {
            per_invocation: Decimal::new(1, 7),      // $0.0000001
            per_million_fuel: Decimal::new(1, 6),    // $0.000001
            per_gib_second: Decimal::new(16667, 9),  // $0.000016667
            per_gib_transferred: Decimal::new(9, 2), // $0.09
        }
    }
}

/// 10¹² picodollars to the dollar.
fn pico() -> Decimal {
    Decimal::new(1_000_000_000_000, 0)
}

impl PriceModel {
    /// The exact cost of `usage`, in picodollars.
    pub fn cost_picodollars(&self, usage: &Usage) -> i64 {
        let fuel = Decimal::from(usage.fuel) / Decimal::from(1_000_000u32);
        let gib = Decimal::from(usage.peak_memory_bytes) / Decimal::from(1u64 << 30);
        let seconds = Decimal::from(u64::try_from(usage.wall_time.as_micros()).unwrap_or(u64::MAX))
            / Decimal::from(1_000_000u32);
        let transferred = Decimal::from(
            usage
                .http
                .bytes_sent
                .saturating_add(usage.http.bytes_received),
        ) / Decimal::from(1u64 << 30);
        let dollars = self.per_invocation
            + fuel * self.per_million_fuel
            + gib * seconds * self.per_gib_second
            + transferred * self.per_gib_transferred;
        (dollars * pico())
            .round_dp_with_strategy(0, rust_decimal::RoundingStrategy::MidpointAwayFromZero)
            .to_i64()
            .unwrap_or(i64::MAX)
            // Model calls are priced per call, each already exact to the picodollar.
            .saturating_add(usage.llm.cost_picodollars)
    }
}

/// A dollar amount in whole picodollars (rounded down; budgets are validated to at
/// most 12 decimals, so nothing is lost).
pub fn picodollars(dollars: Decimal) -> i64 {
    (dollars * pico()).trunc().to_i64().unwrap_or(i64::MAX)
}

/// Picodollars as a dollar amount with 12 decimals, e.g. `"0.000001200000"`.
pub fn format_dollars(picodollars: i64) -> String {
    format!("{:.12}", Decimal::from(picodollars) / pico())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn the_cost_is_exact_decimal_arithmetic() {
        let prices = PriceModel {
            per_invocation: Decimal::new(1, 6),
            per_million_fuel: Decimal::new(2, 6),
            per_gib_second: Decimal::new(1, 0),
            per_gib_transferred: Decimal::ZERO,
        };
        let usage = Usage {
            fuel: 500_000,
            peak_memory_bytes: 1 << 30,
            wall_time: Duration::from_millis(3),
            ..Usage::default()
        };
        // 0.000001 + 0.5 × 0.000002 + 1 GiB × 0.003 s × $1 = 0.003002
        assert_eq!(prices.cost_picodollars(&usage), 3_002_000_000);
        assert_eq!(format_dollars(3_002_000_000), "0.003002000000");
    }

    #[test]
    fn a_third_of_a_picodollar_rounds_to_the_nearest() {
        let prices = PriceModel {
            per_invocation: Decimal::ZERO,
            per_million_fuel: Decimal::new(1, 12), // one picodollar per million fuel
            per_gib_second: Decimal::ZERO,
            per_gib_transferred: Decimal::ZERO,
        };
        let usage = Usage {
            fuel: 1_500_000,
            ..Usage::default()
        };
        assert_eq!(
            prices.cost_picodollars(&usage),
            2,
            "1.5 rounds half away from zero"
        );
    }

    #[test]
    fn outbound_http_bytes_are_charged_both_ways() {
        let prices = PriceModel {
            per_invocation: Decimal::ZERO,
            per_million_fuel: Decimal::ZERO,
            per_gib_second: Decimal::ZERO,
            per_gib_transferred: Decimal::new(9, 2),
        };
        let mut usage = Usage::default();
        usage.http.bytes_sent = 1 << 29;
        usage.http.bytes_received = 1 << 29;
        // 1 GiB × $0.09
        assert_eq!(prices.cost_picodollars(&usage), 90_000_000_000);
    }
}
