use serde::{Deserialize, Serialize};
use std::fmt;
use std::time::Duration;

/// Why a duration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DurError {
    #[error("`{0}` has no unit; write it as 250ms, 5s, 2m or 1h")]
    NoUnit(String),
    #[error("`{0}` does not start with a whole number")]
    NoNumber(String),
    #[error("`{text}` has unit `{unit}`; valid units are ms, s, m and h")]
    Unit { text: String, unit: String },
}

/// A duration written as a number with a unit: `250ms`, `5s`, `2m`, `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl Dur {
    pub fn parse(text: &str) -> Result<Self, DurError> {
        let text = text.trim();
        let split = text
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| DurError::NoUnit(text.to_owned()))?;
        let (digits, unit) = text.split_at(split);
        let n: u64 = digits
            .parse()
            .map_err(|_| DurError::NoNumber(text.to_owned()))?;
        let d = match unit {
            "ms" => Duration::from_millis(n),
            "s" => Duration::from_secs(n),
            "m" => Duration::from_secs(n.saturating_mul(60)),
            "h" => Duration::from_secs(n.saturating_mul(3600)),
            _ => {
                return Err(DurError::Unit {
                    text: text.to_owned(),
                    unit: unit.to_owned(),
                });
            }
        };
        Ok(Dur(d))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1000) {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        Dur::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl Serialize for Dur {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_units_and_refuses_the_rest() {
        assert_eq!(Dur::parse("250ms"), Ok(Dur(Duration::from_millis(250))));
        assert_eq!(Dur::parse("5s"), Ok(Dur(Duration::from_secs(5))));
        assert_eq!(Dur::parse("2m"), Ok(Dur(Duration::from_secs(120))));
        assert!(Dur::parse("5").unwrap_err().to_string().contains("no unit"));
        assert!(
            Dur::parse("5d")
                .unwrap_err()
                .to_string()
                .contains("valid units")
        );
        assert!(Dur::parse("ms").is_err());
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
    }
}
