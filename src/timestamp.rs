//! Timestamps as nanoseconds since the Unix epoch, UTC.
//!
//! Parsing and formatting are on the hot path (every CRI and docker line has one, every document
//! writes one), so both work on bytes, by hand, without allocating: the calendar arithmetic is
//! Howard Hinnant's days-from-civil and civil-from-days over the proleptic Gregorian calendar.
//!
//! Invariant: [`Timestamp::write_rfc3339`] output always parses back with [`parse_rfc3339`] to
//! the same value. Parsing accepts only what the container runtimes write (RFC 3339 with an
//! optional fraction of up to 9 digits and a `Z` or `±HH:MM` offset) and rejects out-of-range
//! fields and instants outside the `i64` range rather than guessing.

use std::time::{SystemTime, UNIX_EPOCH};

/// Nanoseconds since 1970-01-01T00:00:00Z. An `i64` covers the years 1677 to 2262.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(pub i64);

const NANOS_PER_SEC: i64 = 1_000_000_000;
const SECS_PER_DAY: i64 = 86_400;

impl Timestamp {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let since = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(since.as_nanos()).unwrap_or(i64::MAX))
    }

    /// Appends the timestamp as RFC 3339 in UTC with nine fraction digits:
    /// `2026-11-22T10:00:00.123456789Z` (always 30 bytes, as the whole `i64` range has 4-digit
    /// years).
    pub fn write_rfc3339(self, out: &mut Vec<u8>) {
        let secs = self.0.div_euclid(NANOS_PER_SEC);
        let nanos = self.0.rem_euclid(NANOS_PER_SEC) as u32;
        let days = secs.div_euclid(SECS_PER_DAY);
        let sod = secs.rem_euclid(SECS_PER_DAY) as u32;
        let (year, month, day) = civil_from_days(days);

        let mut buf = *b"0000-00-00T00:00:00.000000000Z";
        write_digits(&mut buf[0..4], year as u32);
        write_digits(&mut buf[5..7], month);
        write_digits(&mut buf[8..10], day);
        write_digits(&mut buf[11..13], sod / 3600);
        write_digits(&mut buf[14..16], sod / 60 % 60);
        write_digits(&mut buf[17..19], sod % 60);
        write_digits(&mut buf[20..29], nanos);
        out.extend_from_slice(&buf);
    }
}

/// Parses `YYYY-MM-DDTHH:MM:SS[.fraction]` followed by `Z`, `z` or `±HH:MM`, where the fraction
/// has 1 to 9 digits. Every field is range-checked (February 29 only in leap years, seconds up to
/// 59); `None` for anything else, including instants the `i64` cannot hold.
pub fn parse_rfc3339(bytes: &[u8]) -> Option<Timestamp> {
    match parse_rfc3339_prefix(bytes)? {
        (t, len) if len == bytes.len() => Some(t),
        _ => None,
    }
}

/// Like [`parse_rfc3339`], for a timestamp at the start of `bytes` followed by anything: the
/// timestamp and its length. A CRI line starts with one, and finding its end by parsing it saves
/// a search for the space after it.
#[inline]
pub fn parse_rfc3339_prefix(bytes: &[u8]) -> Option<(Timestamp, usize)> {
    let b = bytes.get(..19)?;
    if b[4] != b'-' || b[7] != b'-' || b[10] != b'T' || b[13] != b':' || b[16] != b':' {
        return None;
    }
    let year = digits2(b[0], b[1])? * 100 + digits2(b[2], b[3])?;
    let month = digits2(b[5], b[6])?;
    let day = digits2(b[8], b[9])?;
    let hour = digits2(b[11], b[12])?;
    let minute = digits2(b[14], b[15])?;
    let second = digits2(b[17], b[18])?;
    if !(1..=12).contains(&month)
        || day == 0
        || day > days_in_month(year, month)
        || hour > 23
        || minute > 59
        || second > 59
    {
        return None;
    }

    let mut at = 19;
    let mut nanos = 0u32;
    if bytes.get(at) == Some(&b'.') {
        let (value, n) = fraction(&bytes[at + 1..])?;
        nanos = value;
        at += 1 + n;
    }

    let offset_secs: i64 = match *bytes.get(at)? {
        b'Z' | b'z' => {
            at += 1;
            0
        }
        sign @ (b'+' | b'-') => {
            let o = bytes.get(at + 1..at + 6)?;
            if o[2] != b':' {
                return None;
            }
            let (oh, om) = (digits2(o[0], o[1])?, digits2(o[3], o[4])?);
            if oh > 23 || om > 59 {
                return None;
            }
            at += 6;
            let secs = i64::from(oh * 3600 + om * 60);
            if sign == b'+' {
                secs
            } else {
                -secs
            }
        }
        _ => return None,
    };

    let days = days_from_civil(i64::from(year), month, day);
    let secs = days * SECS_PER_DAY + i64::from(hour * 3600 + minute * 60 + second) - offset_secs;
    // In i128 because the earliest representable instant has a negative second count whose
    // product with 10^9 alone is below i64::MIN.
    let ns = i128::from(secs) * i128::from(NANOS_PER_SEC) + i128::from(nanos);
    Some((Timestamp(i64::try_from(ns).ok()?), at))
}

/// The fraction digits at the start of `bytes` (1 to 9 of them, followed by a non-digit) as
/// nanoseconds, and how many there were.
#[inline]
fn fraction(bytes: &[u8]) -> Option<(u32, usize)> {
    // containerd always writes 9 digits: 8 of them at once, then the ninth.
    if let Some(eight) = bytes.first_chunk::<8>() {
        if let Some(value) = eight_digits(u64::from_le_bytes(*eight)) {
            return match bytes.get(8) {
                Some(&d) if d.is_ascii_digit() => {
                    if bytes.get(9).is_some_and(u8::is_ascii_digit) {
                        return None;
                    }
                    Some((value * 10 + u32::from(d - b'0'), 9))
                }
                _ => Some((value * 10, 8)),
            };
        }
    }
    let mut value = 0u32;
    let mut n = 0;
    while let Some(&d) = bytes.get(n) {
        if !d.is_ascii_digit() {
            break;
        }
        if n == 9 {
            return None;
        }
        value = value * 10 + u32::from(d - b'0');
        n += 1;
    }
    if n == 0 {
        return None;
    }
    Some((value * POW10[9 - n], n))
}

const POW10: [u32; 10] = [
    1,
    10,
    100,
    1_000,
    10_000,
    100_000,
    1_000_000,
    10_000_000,
    100_000_000,
    1_000_000_000,
];

/// Eight ASCII digits (the first in the lowest byte) as a number, `None` if any is not a digit.
/// The SWAR method from simdjson: a digit check and three multiplications instead of a loop.
#[inline]
fn eight_digits(word: u64) -> Option<u32> {
    let all_digits = (word & 0xF0F0_F0F0_F0F0_F0F0)
        | ((word.wrapping_add(0x0606_0606_0606_0606) & 0xF0F0_F0F0_F0F0_F0F0) >> 4)
        == 0x3333_3333_3333_3333;
    if !all_digits {
        return None;
    }
    let v = (word & 0x0F0F_0F0F_0F0F_0F0F).wrapping_mul(2561) >> 8;
    let v = (v & 0x00FF_00FF_00FF_00FF).wrapping_mul(6_553_601) >> 16;
    Some(((v & 0x0000_FFFF_0000_FFFF).wrapping_mul(42_949_672_960_001) >> 32) as u32)
}

/// Two ASCII digits as a number.
#[inline]
fn digits2(a: u8, b: u8) -> Option<u32> {
    let (a, b) = (a.wrapping_sub(b'0'), b.wrapping_sub(b'0'));
    (a < 10 && b < 10).then(|| u32::from(a) * 10 + u32::from(b))
}

/// Writes `value` as zero-padded decimal filling `out` (the caller sizes `out` to fit).
#[inline]
fn write_digits(out: &mut [u8], mut value: u32) {
    for b in out.iter_mut().rev() {
        *b = b'0' + (value % 10) as u8;
        value /= 10;
    }
}

const fn is_leap(year: u32) -> bool {
    year.is_multiple_of(4) && (!year.is_multiple_of(100) || year.is_multiple_of(400))
}

const fn days_in_month(year: u32, month: u32) -> u32 {
    match month {
        2 if is_leap(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Hinnant's `days_from_civil`). Years are
/// shifted to start in March so the leap day is the last day of the shifted year.
#[inline]
const fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = (if y >= 0 { y } else { y - 399 }) / 400;
    let yoe = (y - era * 400) as u32; // [0, 399]
    let mp = (month + 9) % 12; // March = 0
    let doy = (153 * mp + 2) / 5 + day - 1; // [0, 365]
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy; // [0, 146096]
    era * 146_097 + doe as i64 - 719_468
}

/// The date `days` after 1970-01-01 (Hinnant's `civil_from_days`): (year, month, day).
const fn civil_from_days(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = (if z >= 0 { z } else { z - 146_096 }) / 146_097;
    let doe = (z - era * 146_097) as u32; // [0, 146096]
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365; // [0, 399]
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100); // [0, 365]
    let mp = (5 * doy + 2) / 153; // [0, 11]
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe as i64 + era * 400 + if month <= 2 { 1 } else { 0 };
    (year, month, day)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse(s: &str) -> Option<i64> {
        parse_rfc3339(s.as_bytes()).map(|t| t.0)
    }

    fn write(ns: i64) -> String {
        let mut out = Vec::new();
        Timestamp(ns).write_rfc3339(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn parses_runtime_timestamps() {
        let cases: &[(&str, Option<i64>)] = &[
            ("1970-01-01T00:00:00Z", Some(0)),
            ("1970-01-01T00:00:00.000000001Z", Some(1)),
            ("1969-12-31T23:59:59.999999999Z", Some(-1)),
            // containerd: UTC with nanoseconds.
            (
                "2026-11-22T10:00:00.123456789Z",
                Some(1_795_341_600_123_456_789),
            ),
            // docker: trailing zeros of the fraction trimmed.
            ("2026-11-22T10:00:00.1234Z", Some(1_795_341_600_123_400_000)),
            ("2026-11-22T10:00:00.5z", Some(1_795_341_600_500_000_000)),
            (
                "2026-11-22T10:00:00.12345678Z",
                Some(1_795_341_600_123_456_780),
            ),
            (
                "2026-11-22T10:00:00.1234567Z",
                Some(1_795_341_600_123_456_700),
            ),
            (
                "2026-11-22T10:00:00.000000000Z",
                Some(1_795_341_600_000_000_000),
            ),
            // CRI-O: local offsets.
            (
                "2026-11-22T11:00:00.123456789+01:00",
                Some(1_795_341_600_123_456_789),
            ),
            ("2026-11-22T04:30:00-05:30", Some(1_795_341_600_000_000_000)),
            ("2026-11-22T10:00:00+00:00", Some(1_795_341_600_000_000_000)),
            // Leap years: 2024 and 2000 have February 29, 1900 and 2100 do not.
            ("2024-02-29T00:00:00Z", Some(1_709_164_800_000_000_000)),
            ("2024-03-01T00:00:00Z", Some(1_709_251_200_000_000_000)),
            ("2000-02-29T12:00:00Z", Some(951_825_600_000_000_000)),
            ("2023-02-29T00:00:00Z", None),
            ("1900-02-29T00:00:00Z", None),
            ("2100-02-29T00:00:00Z", None),
            ("2023-12-31T23:59:59Z", Some(1_704_067_199_000_000_000)),
            // The ends of the i64 range.
            ("2262-04-11T23:47:16.854775807Z", Some(i64::MAX)),
            ("2262-04-11T23:47:16.854775808Z", None),
            ("1677-09-21T00:12:43.145224192Z", Some(i64::MIN)),
            ("1677-09-21T00:12:43.145224191Z", None),
            ("9999-12-31T23:59:59Z", None),
            // Bad input.
            ("", None),
            ("2026-11-22", None),
            ("2026-11-22T10:00:00", None),
            ("2026-11-22 10:00:00Z", None),
            ("2026-11-22T10:00:00.Z", None),
            ("2026-11-22T10:00:00.1234567890Z", None),
            ("2026-13-22T10:00:00Z", None),
            ("2026-00-22T10:00:00Z", None),
            ("2026-11-00T10:00:00Z", None),
            ("2026-11-31T10:00:00Z", None),
            ("2026-11-22T24:00:00Z", None),
            ("2026-11-22T10:60:00Z", None),
            ("2026-11-22T10:00:60Z", None),
            ("2026-11-22T10:00:00+24:00", None),
            ("2026-11-22T10:00:00+01:60", None),
            ("2026-11-22T10:00:00+0100", None),
            ("2026-11-22T10:00:00ZZ", None),
            ("2026-11-22T10:00:00Z ", None),
            ("2026-1a-22T10:00:00Z", None),
            ("+026-11-22T10:00:00Z", None),
            ("2026-11-22T10:00:00.12a4Z", None),
            ("2026-11-22T10:00:00.1234567a9Z", None),
            ("2026-11-22T10:00:00.12345678", None),
            ("2026-11-22T10:00:00.123456789", None),
            ("2026-11-22T10:00:00+01:0", None),
        ];
        for (input, want) in cases {
            assert_eq!(parse(input), *want, "{input:?}");
        }
    }

    #[test]
    fn parses_a_timestamp_at_the_start_of_a_line() {
        let cases: &[(&str, Option<(i64, usize)>)] = &[
            (
                "2026-11-22T10:00:00.123456789Z stdout F x",
                Some((1_795_341_600_123_456_789, 30)),
            ),
            (
                "2026-11-22T11:00:00+01:00 stdout F x",
                Some((1_795_341_600_000_000_000, 25)),
            ),
            (
                "2026-11-22T10:00:00Z",
                Some((1_795_341_600_000_000_000, 20)),
            ),
            ("2026-11-22T10:00:00 stdout F x", None),
        ];
        for (input, want) in cases {
            let got = parse_rfc3339_prefix(input.as_bytes()).map(|(t, n)| (t.0, n));
            assert_eq!(got, *want, "{input:?}");
        }
    }

    #[test]
    fn writes_utc_with_nine_fraction_digits() {
        let cases: &[(i64, &str)] = &[
            (0, "1970-01-01T00:00:00.000000000Z"),
            (-1, "1969-12-31T23:59:59.999999999Z"),
            (1_795_341_600_123_456_789, "2026-11-22T10:00:00.123456789Z"),
            (1_709_164_800_000_000_000, "2024-02-29T00:00:00.000000000Z"),
            (951_825_600_000_000_007, "2000-02-29T12:00:00.000000007Z"),
            (i64::MAX, "2262-04-11T23:47:16.854775807Z"),
            (i64::MIN, "1677-09-21T00:12:43.145224192Z"),
        ];
        for (ns, want) in cases {
            assert_eq!(write(*ns), *want, "{ns}");
        }
    }

    #[test]
    fn write_appends() {
        let mut out = b"t=".to_vec();
        Timestamp(0).write_rfc3339(&mut out);
        assert_eq!(out, b"t=1970-01-01T00:00:00.000000000Z");
    }

    proptest! {
        #[test]
        fn write_then_parse_round_trips(ns in any::<i64>()) {
            let s = write(ns);
            prop_assert_eq!(s.len(), 30);
            prop_assert_eq!(parse(&s), Some(ns));
        }

        /// chrono (a dependency of the binary) as an oracle for dates, fractions and offsets.
        #[test]
        fn parse_agrees_with_chrono(
            year in 1678u32..2262, month in 1u32..=12, day in 1u32..=31,
            hour in 0u32..24, minute in 0u32..60, second in 0u32..60,
            frac in proptest::option::of((1usize..=9, 0u32..1_000_000_000)),
            offset in proptest::option::of((any::<bool>(), 0u32..24, 0u32..60)),
        ) {
            let mut s = format!("{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}");
            if let Some((width, value)) = frac {
                let digits = format!("{value:09}");
                s.push('.');
                s.push_str(&digits[..width]);
            }
            match offset {
                None => s.push('Z'),
                Some((east, h, m)) => s.push_str(&format!("{}{h:02}:{m:02}", if east { '+' } else { '-' })),
            }
            let want = chrono::DateTime::parse_from_rfc3339(&s)
                .ok()
                .and_then(|t| t.timestamp_nanos_opt());
            prop_assert_eq!(parse(&s), want, "{}", s);
        }
    }
}
