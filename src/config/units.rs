//! Human-readable sizes (`64MiB`, `256KiB`, `1GB`, or a plain number of bytes) and durations
//! (`500ms`, `5s`, `1h`), as the configuration file writes them.
//!
//! Both are read with their usual crates (bytesize, humantime) and written back exactly: the
//! largest unit that divides the value, so `262144` reads back as `256KiB` and `86400s` as `24h`,
//! and what `logship check` prints parses to the same value. Ranges are not checked here: what a
//! key allows is `validate`'s business.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A number of bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Size(pub u64);

impl Size {
    pub const KIB: u64 = 1 << 10;
    pub const MIB: u64 = 1 << 20;
    pub const GIB: u64 = 1 << 30;

    pub const fn kib(n: u64) -> Size {
        Size(n * Self::KIB)
    }

    pub const fn mib(n: u64) -> Size {
        Size(n * Self::MIB)
    }

    pub const fn gib(n: u64) -> Size {
        Size(n * Self::GIB)
    }
}

impl FromStr for Size {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        // bytesize takes a bare unit ("MiB") as a parse error already, but reads "-1" as
        // nothing useful either: reject anything that does not start with a digit up front.
        if !text.starts_with(|c: char| c.is_ascii_digit()) {
            return Err(size_error(text));
        }
        text.parse::<bytesize::ByteSize>()
            .map(|b| Size(b.as_u64()))
            .map_err(|_| size_error(text))
    }
}

fn size_error(text: &str) -> String {
    format!("{text:?} is not a size; write a number of bytes or a number and a unit: 262144, 256KiB, 64MiB, 1GB")
}

impl fmt::Display for Size {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u64, &str); 6] = [
            (Size::GIB, "GiB"),
            (Size::MIB, "MiB"),
            (Size::KIB, "KiB"),
            (1_000_000_000, "GB"),
            (1_000_000, "MB"),
            (1_000, "kB"),
        ];
        let n = self.0;
        match UNITS
            .iter()
            .find(|(unit, _)| n != 0 && n.is_multiple_of(*unit))
        {
            Some((unit, name)) => write!(f, "{}{name}", n / unit),
            None => write!(f, "{n}"),
        }
    }
}

/// Both are written as they are read: `64MiB`, `500ms` (their `Display`).
macro_rules! serialize_as_text {
    ($($unit:ty),*) => {$(
        impl Serialize for $unit {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                serializer.collect_str(self)
            }
        }
    )*};
}

serialize_as_text!(Size, HumanDuration);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SizeVisitor;
        impl Visitor<'_> for SizeVisitor {
            type Value = Size;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a size such as 64MiB, or a number of bytes")
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Size, E> {
                Ok(Size(n))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Size, E> {
                u64::try_from(n)
                    .map(Size)
                    .map_err(|_| E::custom(format!("{n} is not a size: it is negative")))
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<Size, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_any(SizeVisitor)
    }
}

/// A span of time, written with a unit.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

impl HumanDuration {
    pub const fn millis(n: u64) -> HumanDuration {
        HumanDuration(Duration::from_millis(n))
    }

    pub const fn secs(n: u64) -> HumanDuration {
        HumanDuration(Duration::from_secs(n))
    }
}

impl FromStr for HumanDuration {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        humantime::parse_duration(text.trim())
            .map(HumanDuration)
            .map_err(|e| {
                format!("{text:?} is not a duration ({e}); write a number and a unit: 500ms, 5s, 1m, 1h")
            })
    }
}

impl fmt::Display for HumanDuration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        const UNITS: [(u128, &str); 6] = [
            (3_600_000_000_000, "h"),
            (60_000_000_000, "m"),
            (1_000_000_000, "s"),
            (1_000_000, "ms"),
            (1_000, "us"),
            (1, "ns"),
        ];
        let n = self.0.as_nanos();
        match UNITS
            .iter()
            .find(|(unit, _)| n.is_multiple_of(*unit) && n != 0)
        {
            Some((unit, name)) => write!(f, "{}{name}", n / unit),
            None => f.write_str("0s"),
        }
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct DurationVisitor;
        impl Visitor<'_> for DurationVisitor {
            type Value = HumanDuration;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a duration with a unit, such as 500ms or 5s")
            }
            fn visit_str<E: de::Error>(self, text: &str) -> Result<HumanDuration, E> {
                text.parse().map_err(E::custom)
            }
        }
        deserializer.deserialize_str(DurationVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_as_written() {
        let cases = [
            ("262144", 262_144),
            ("256KiB", 256 * 1024),
            ("64MiB", 64 << 20),
            ("64 MiB", 64 << 20),
            ("64mib", 64 << 20),
            ("1GB", 1_000_000_000),
            ("1GiB", 1 << 30),
            ("1.5KiB", 1536),
            ("100B", 100),
            ("0", 0),
        ];
        for (text, bytes) in cases {
            assert_eq!(text.parse::<Size>(), Ok(Size(bytes)), "{text}");
        }
        for bad in ["", "MiB", "-1", "64XB", "lots", "12 parsecs"] {
            let err = bad.parse::<Size>().unwrap_err();
            assert!(err.contains("is not a size"), "{bad}: {err}");
        }
    }

    #[test]
    fn sizes_are_written_exactly_and_read_back() {
        let cases = [
            (262_144, "256KiB"),
            (64 << 20, "64MiB"),
            (1 << 30, "1GiB"),
            (1_000_000_000, "1GB"),
            (3 << 19, "1536KiB"),
            (1000, "1kB"),
            (1001, "1001"),
            (0, "0"),
        ];
        for (bytes, text) in cases {
            assert_eq!(Size(bytes).to_string(), text);
            assert_eq!(text.parse::<Size>(), Ok(Size(bytes)));
        }
    }

    #[test]
    fn durations_read_and_write_back() {
        let cases = [
            ("500ms", Duration::from_millis(500), "500ms"),
            ("5s", Duration::from_secs(5), "5s"),
            ("1h", Duration::from_secs(3600), "1h"),
            ("24h", Duration::from_secs(86_400), "24h"),
            ("90s", Duration::from_secs(90), "90s"),
            ("1m 30s", Duration::from_secs(90), "90s"),
            ("1500ms", Duration::from_millis(1500), "1500ms"),
            ("10us", Duration::from_micros(10), "10us"),
            ("0s", Duration::ZERO, "0s"),
        ];
        for (text, duration, written) in cases {
            let parsed: HumanDuration = text.parse().unwrap();
            assert_eq!(parsed.0, duration, "{text}");
            assert_eq!(parsed.to_string(), written, "{text}");
            assert_eq!(written.parse::<HumanDuration>().unwrap(), parsed);
        }
        for bad in ["", "5", "fast", "5 parsecs", "-1s"] {
            let err = bad.parse::<HumanDuration>().unwrap_err();
            assert!(err.contains("is not a duration"), "{bad}: {err}");
        }
    }

    #[test]
    fn serde_reads_numbers_and_text() {
        let size: Size = serde_json::from_value(serde_json::json!(4096)).unwrap();
        assert_eq!(size, Size(4096));
        let size: Size = serde_json::from_value(serde_json::json!("4KiB")).unwrap();
        assert_eq!(size, Size(4096));
        let err = serde_json::from_value::<Size>(serde_json::json!(-1)).unwrap_err();
        assert!(err.to_string().contains("negative"), "{err}");
        let err = serde_json::from_value::<Size>(serde_json::json!(true)).unwrap_err();
        assert!(err.to_string().contains("a size such as 64MiB"), "{err}");
        let err = serde_json::from_value::<HumanDuration>(serde_json::json!(5)).unwrap_err();
        assert!(err.to_string().contains("a duration with a unit"), "{err}");
    }
}
