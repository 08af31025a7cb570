//! Budget windows and calendar arithmetic in UTC (spend days), without a date crate.

use serde::{Deserialize, Serialize};

/// Days since 1970-01-01 -> (year, month, day); Howard Hinnant's algorithm.
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Now, in unix milliseconds (this replica's clock; shared-state decisions use Redis's).
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `YYYY-MM-DD` (UTC) of a unix-ms instant.
pub fn day_of(ms: i64) -> String {
    let (y, m, d) = civil_from_days(ms.div_euclid(86_400_000));
    format!("{y:04}-{m:02}-{d:02}")
}

/// A budget window: `30s`, `15m`, `1h`, `1d`, `30d`, `1mo` (calendar months).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Window {
    Seconds(u64),
    Months(u32),
}

impl Window {
    pub fn parse(s: &str) -> Result<Window, String> {
        let s = s.trim();
        let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
        let (n, unit) = s.split_at(split);
        let n: u64 = n
            .parse()
            .map_err(|_| format!("{s:?} is not a duration like 30s, 1h, 1d, 30d or 1mo"))?;
        if n == 0 {
            return Err("must be longer than zero".into());
        }
        let secs = match unit {
            "s" => n,
            "m" => n * 60,
            "h" => n * 3600,
            "d" => n * 86_400,
            "w" => n * 7 * 86_400,
            "mo" => {
                return u32::try_from(n)
                    .map(Window::Months)
                    .map_err(|_| "too long".into());
            }
            _ => return Err(format!("{s:?}: unknown unit {unit:?} (use s, m, h, d, w or mo)")),
        };
        Ok(Window::Seconds(secs))
    }

    /// The window that contains `now_ms`, for windows counted from `anchor_ms`: `(start, end)`.
    pub fn around(self, anchor_ms: i64, now_ms: i64) -> (i64, i64) {
        match self {
            Window::Seconds(s) => {
                let len = (s as i64).saturating_mul(1000);
                let k = (now_ms - anchor_ms).max(0) / len;
                let start = anchor_ms + k * len;
                (start, start + len)
            }
            Window::Months(n) => {
                let n = i64::from(n);
                let (mut lo, mut hi) = (0i64, 1i64);
                while add_months(anchor_ms, hi * n) <= now_ms {
                    lo = hi;
                    hi *= 2;
                }
                // Binary search for the last k with anchor + k*n months <= now.
                while hi - lo > 1 {
                    let mid = (lo + hi) / 2;
                    if add_months(anchor_ms, mid * n) <= now_ms {
                        lo = mid;
                    } else {
                        hi = mid;
                    }
                }
                (add_months(anchor_ms, lo * n), add_months(anchor_ms, (lo + 1) * n))
            }
        }
    }

    pub fn as_text(self) -> String {
        match self {
            Window::Seconds(s) if s % 86_400 == 0 => format!("{}d", s / 86_400),
            Window::Seconds(s) if s % 3600 == 0 => format!("{}h", s / 3600),
            Window::Seconds(s) if s % 60 == 0 => format!("{}m", s / 60),
            Window::Seconds(s) => format!("{s}s"),
            Window::Months(n) => format!("{n}mo"),
        }
    }
}

/// `ms` plus `months` calendar months (UTC), the day clamped to the target month's length.
fn add_months(ms: i64, months: i64) -> i64 {
    const DAY: i64 = 86_400_000;
    let (days, rest) = (ms.div_euclid(DAY), ms.rem_euclid(DAY));
    let (y, m, d) = civil_from_days(days);
    let total = y * 12 + (m as i64 - 1) + months;
    let (ny, nm) = (total.div_euclid(12), (total.rem_euclid(12) + 1) as u32);
    let dim = days_in_month(ny, nm);
    days_from_civil(ny, nm, d.min(dim)) * DAY + rest
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        4 | 6 | 9 | 11 => 30,
        2 if (y % 4 == 0 && y % 100 != 0) || y % 400 == 0 => 29,
        2 => 28,
        _ => 31,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_litellm_budget_durations() {
        assert_eq!(Window::parse("30s"), Ok(Window::Seconds(30)));
        assert_eq!(Window::parse("1h"), Ok(Window::Seconds(3600)));
        assert_eq!(Window::parse("30d"), Ok(Window::Seconds(30 * 86_400)));
        assert_eq!(Window::parse("1mo"), Ok(Window::Months(1)));
        assert!(Window::parse("0d").is_err());
        assert!(Window::parse("1y").unwrap_err().contains("unknown unit"));
        assert!(Window::parse("soon").is_err());
        assert_eq!(Window::parse("2h").unwrap().as_text(), "2h");
    }

    #[test]
    fn windows_count_from_the_anchor() {
        let w = Window::Seconds(60);
        assert_eq!(w.around(1_000, 1_000), (1_000, 61_000));
        assert_eq!(w.around(1_000, 130_999), (121_000, 181_000));
        // 2026-01-31T10:00Z + 1 month = 2026-02-28T10:00Z (clamped), + 2 = 2026-03-31.
        let jan31 = days_from_civil(2026, 1, 31) * 86_400_000 + 36_000_000;
        let feb28 = days_from_civil(2026, 2, 28) * 86_400_000 + 36_000_000;
        let mar31 = days_from_civil(2026, 3, 31) * 86_400_000 + 36_000_000;
        assert_eq!(Window::Months(1).around(jan31, feb28 - 1), (jan31, feb28));
        assert_eq!(Window::Months(1).around(jan31, feb28), (feb28, mar31));
        assert_eq!(civil_from_days(days_from_civil(2024, 2, 29)), (2024, 2, 29));
    }
}
