//! Numbers Apollo sends in more than one shape: `request_id` and `credits_consumed`.

use std::fmt;
use std::str::FromStr;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Apollo's `request_id`: a signed 64-bit integer that arrives as a JSON number or a string.
///
/// It is never passed through `f64`: serde_json hands integers to us as `i64`/`u64` exactly.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RequestId(pub i64);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl FromStr for RequestId {
    type Err = std::num::ParseIntError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim().parse::<i64>().map(RequestId)
    }
}

impl Serialize for RequestId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_i64(self.0)
    }
}

impl<'de> Deserialize<'de> for RequestId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RequestId;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a 64-bit integer as a JSON number or string")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<RequestId, E> {
                Ok(RequestId(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<RequestId, E> {
                i64::try_from(v)
                    .map(RequestId)
                    .map_err(|_| E::custom(format!("request_id {v} does not fit a signed 64-bit integer")))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<RequestId, E> {
                Err(E::custom(format!("request_id {v} is not an integer")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RequestId, E> {
                v.parse().map_err(|_| E::custom(format!("request_id {v:?} is not an integer")))
            }
        }
        d.deserialize_any(V)
    }
}

/// A credit amount in millionths of a credit, so sums stay exact (`1.01 + 2.01 == 3.02`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Credits(pub i64);

impl Credits {
    /// Zero credits.
    pub const ZERO: Credits = Credits(0);
    const SCALE: i64 = 1_000_000;

    /// Whole credits.
    pub const fn whole(n: i64) -> Self {
        Credits(n * Self::SCALE)
    }

    /// The amount in millionths of a credit (the storage form).
    pub fn micros(self) -> i64 {
        self.0
    }

    /// The amount as a float, for display only.
    pub fn as_f64(self) -> f64 {
        self.0 as f64 / Self::SCALE as f64
    }

    /// Parses a decimal such as `"2.01"`, `"-0.5"` or `"3"`; digits past the sixth decimal are cut.
    pub fn parse_decimal(s: &str) -> Option<Credits> {
        let s = s.trim();
        let (neg, body) = match s.strip_prefix('-') {
            Some(rest) => (true, rest),
            None => (false, s.strip_prefix('+').unwrap_or(s)),
        };
        // Scientific notation comes from serde_json's float formatting of tiny or huge values.
        if body.contains(['e', 'E']) {
            let v: f64 = s.parse().ok()?;
            return Some(Credits((v * Self::SCALE as f64).round() as i64));
        }
        let (int, frac) = body.split_once('.').unwrap_or((body, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.chars().all(|c| c.is_ascii_digit()) || !frac.chars().all(|c| c.is_ascii_digit()) {
            return None;
        }
        let int: i64 = if int.is_empty() { 0 } else { int.parse().ok()? };
        let mut micros: i64 = 0;
        for (i, c) in frac.chars().take(6).enumerate() {
            micros += i64::from(c as u8 - b'0') * 10_i64.pow(5 - i as u32);
        }
        let total = int.checked_mul(Self::SCALE)?.checked_add(micros)?;
        Some(Credits(if neg { -total } else { total }))
    }
}

impl std::ops::Add for Credits {
    type Output = Credits;
    fn add(self, o: Credits) -> Credits {
        Credits(self.0 + o.0)
    }
}

impl std::ops::AddAssign for Credits {
    fn add_assign(&mut self, o: Credits) {
        self.0 += o.0;
    }
}

impl std::iter::Sum for Credits {
    fn sum<I: Iterator<Item = Credits>>(iter: I) -> Credits {
        iter.fold(Credits::ZERO, |a, b| a + b)
    }
}

impl fmt::Display for Credits {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let sign = if self.0 < 0 { "-" } else { "" };
        let abs = self.0.unsigned_abs();
        let int = abs / Self::SCALE as u64;
        let frac = abs % Self::SCALE as u64;
        if frac == 0 {
            write!(f, "{sign}{int}")
        } else {
            let frac = format!("{frac:06}");
            write!(f, "{sign}{int}.{}", frac.trim_end_matches('0'))
        }
    }
}

impl Serialize for Credits {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0 % Self::SCALE == 0 { s.serialize_i64(self.0 / Self::SCALE) } else { s.serialize_f64(self.as_f64()) }
    }
}

impl<'de> Deserialize<'de> for Credits {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = Credits;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a decimal number of credits")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Credits, E> {
                v.checked_mul(Credits::SCALE).map(Credits).ok_or_else(|| E::custom("credits overflow"))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Credits, E> {
                i64::try_from(v).map_err(|_| E::custom("credits overflow")).and_then(|v| self.visit_i64(v))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Credits, E> {
                // The shortest decimal that round-trips is what Apollo wrote (`2.01`, not 2.00999…).
                Credits::parse_decimal(&v.to_string()).ok_or_else(|| E::custom(format!("credits {v} out of range")))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Credits, E> {
                Credits::parse_decimal(v).ok_or_else(|| E::custom(format!("credits {v:?} is not a decimal")))
            }
        }
        d.deserialize_any(V)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_keeps_all_64_bits() {
        let big: RequestId = serde_json::from_str("1039995589705121931").unwrap();
        assert_eq!(big.0, 1039995589705121931);
        let neg: RequestId = serde_json::from_str("-4211274463135576197").unwrap();
        assert_eq!(neg.0, -4211274463135576197);
        let s: RequestId = serde_json::from_str("\"7302857720198765431\"").unwrap();
        assert_eq!(s.0, 7302857720198765431);
        assert!(serde_json::from_str::<RequestId>("1.5").is_err());
        assert!(serde_json::from_str::<RequestId>("18446744073709551615").is_err());
        assert_eq!(serde_json::to_string(&neg).unwrap(), "-4211274463135576197");
    }

    #[test]
    fn credits_are_exact_decimals() {
        let a: Credits = serde_json::from_str("2.01").unwrap();
        let b: Credits = serde_json::from_str("1.01").unwrap();
        assert_eq!(a.micros(), 2_010_000);
        assert_eq!((a + b).to_string(), "3.02");
        let c: Credits = serde_json::from_str("\"12\"").unwrap();
        assert_eq!(c, Credits::whole(12));
        assert_eq!(Credits::parse_decimal("-0.5"), Some(Credits(-500_000)));
        assert_eq!(Credits::parse_decimal("abc"), None);
        assert_eq!(Credits::parse_decimal("."), None);
        assert_eq!(serde_json::to_string(&Credits::whole(8)).unwrap(), "8");
        assert_eq!(serde_json::to_string(&a).unwrap(), "2.01");
    }
}
