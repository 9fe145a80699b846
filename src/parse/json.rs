//! JSON strings decoded straight into record text, for the docker fast path.
//!
//! Owns the escape rules (`\"`, `\\`, `\/`, `\b`, `\f`, `\n`, `\r`, `\t`, `\uXXXX` with surrogate
//! pairs) and their inverse mapping, from a decoded byte back to the escaped byte it came from,
//! which gives split records their file offsets. Both walk the input with the same rules: a lone
//! surrogate becomes U+FFFD and counts as invalid, as do invalid UTF-8 bytes (one U+FFFD per
//! sequence). Unescaped control characters are passed through rather than rejected: docker never
//! writes them, and a hand-written file is better shipped than refused. Nothing allocates.

use memchr::memchr2;

use crate::parse::utf8;

/// Decodes the JSON string whose body (after the opening quote) starts `src`, appending it to
/// `out`. Returns the index in `src` of the closing quote and whether anything invalid was
/// replaced; `None` if the string does not end or has a malformed escape, in which case `out`
/// holds a partial decoding the caller must cut off.
pub(super) fn decode_str(src: &[u8], out: &mut String) -> Option<(usize, bool)> {
    let mut invalid = false;
    let mut at = 0;
    loop {
        let special = at + memchr2(b'"', b'\\', &src[at..])?;
        invalid |= utf8::push_lossy(out, &src[at..special]);
        if src[special] == b'"' {
            return Some((special, invalid));
        }
        let (len, ch, bad) = escape(&src[special..])?;
        out.push(ch);
        invalid |= bad;
        at = special + len;
    }
}

/// The escape at the start of `src` (which starts with a backslash): its length in `src`, the
/// character it stands for, and whether that is a replacement for a lone surrogate.
fn escape(src: &[u8]) -> Option<(usize, char, bool)> {
    let simple = match src.get(1)? {
        b'"' => '"',
        b'\\' => '\\',
        b'/' => '/',
        b'b' => '\u{8}',
        b'f' => '\u{c}',
        b'n' => '\n',
        b'r' => '\r',
        b't' => '\t',
        b'u' => return unicode_escape(src),
        _ => return None,
    };
    Some((2, simple, false))
}

/// `\uXXXX`, or a surrogate pair `\uD83D\uDE00` (12 bytes).
fn unicode_escape(src: &[u8]) -> Option<(usize, char, bool)> {
    let unit = hex4(src.get(2..6)?)?;
    match unit {
        0xD800..=0xDBFF => {
            let low = match src.get(6..12) {
                Some([b'\\', b'u', digits @ ..]) => hex4(digits),
                _ => None,
            };
            match low {
                Some(low @ 0xDC00..=0xDFFF) => {
                    let c = 0x10000 + ((unit - 0xD800) << 10) + (low - 0xDC00);
                    Some((12, char::from_u32(c)?, false))
                }
                // A high surrogate alone: the next escape (if any) is decoded on its own.
                _ => Some((6, char::REPLACEMENT_CHARACTER, true)),
            }
        }
        0xDC00..=0xDFFF => Some((6, char::REPLACEMENT_CHARACTER, true)),
        _ => Some((6, char::from_u32(unit)?, false)),
    }
}

fn hex4(digits: &[u8]) -> Option<u32> {
    if digits.len() != 4 {
        return None;
    }
    digits
        .iter()
        .try_fold(0u32, |acc, &b| Some(acc * 16 + (b as char).to_digit(16)?))
}

/// The index in the escaped body `src` of the unit (character or escape) that produced decoded
/// byte `decoded`; a byte in the middle of a unit maps to the unit's start. `decode_str` and this
/// agree by construction: both step through the same units.
pub(super) fn source_index(src: &[u8], decoded: usize) -> usize {
    let mut at = 0;
    let mut done = 0; // decoded bytes produced by src[..at]
    while done < decoded {
        let special = memchr2(b'"', b'\\', &src[at..]).map_or(src.len(), |k| at + k);
        for chunk in src[at..special].utf8_chunks() {
            let valid = chunk.valid().len();
            if done + valid >= decoded {
                return at + (decoded - done);
            }
            done += valid;
            at += valid;
            let bad = chunk.invalid().len();
            if bad > 0 {
                if done + char::REPLACEMENT_CHARACTER.len_utf8() > decoded {
                    return at;
                }
                done += char::REPLACEMENT_CHARACTER.len_utf8();
                at += bad;
            }
        }
        if special == src.len() || src[special] == b'"' {
            return special;
        }
        let Some((len, ch, _)) = escape(&src[special..]) else {
            return special;
        };
        if done + ch.len_utf8() > decoded {
            return special;
        }
        done += ch.len_utf8();
        at = special + len;
    }
    at
}

/// The length of the JSON object at the start of `src`, found by bracket depth outside strings;
/// `None` if it does not start with `{` or does not end. Used to step over docker's `attrs`,
/// whose content logship does not use; it is not a validator.
pub(super) fn skip_object(src: &[u8]) -> Option<usize> {
    if src.first() != Some(&b'{') {
        return None;
    }
    let mut depth = 0usize;
    let mut at = 0;
    while at < src.len() {
        match src[at] {
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                depth = depth.checked_sub(1)?;
                if depth == 0 {
                    return Some(at + 1);
                }
            }
            b'"' => {
                at += 1;
                loop {
                    let special = at + memchr2(b'"', b'\\', src.get(at..)?)?;
                    if src[special] == b'"' {
                        at = special;
                        break;
                    }
                    at = special + 2;
                }
            }
            _ => {}
        }
        at += 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn decode(body: &[u8]) -> Option<(String, usize, bool)> {
        let mut out = String::new();
        decode_str(body, &mut out).map(|(quote, invalid)| (out, quote, invalid))
    }

    #[test]
    fn decodes_escapes() {
        let cases: &[(&[u8], &str, bool)] = &[
            (br#""rest"#, "", false),
            (br#"plain text"}"#, "plain text", false),
            (br#"say \"hi\"""#, "say \"hi\"", false),
            (br#"C:\\dir\\file""#, "C:\\dir\\file", false),
            (br#"a\/b""#, "a/b", false),
            (br#"\b\f\n\r\t""#, "\u{8}\u{c}\n\r\t", false),
            (br#"caf\u00e9""#, "caf\u{e9}", false),
            (br#"\u20AC""#, "\u{20ac}", false),
            (br#"\ud83d\ude00 grin""#, "\u{1f600} grin", false),
            (br#"\u0000 nul""#, "\0 nul", false),
            (br#"lone \ud83d!""#, "lone \u{fffd}!", true),
            (br#"lone \ude00""#, "lone \u{fffd}", true),
            (br#"\ud83d\u0041""#, "\u{fffd}A", true),
            ("raw caf\u{e9}\"".as_bytes(), "raw caf\u{e9}", false),
            (b"bad \xff byte\"", "bad \u{fffd} byte", true),
            (b"tab\there\"", "tab\there", false),
        ];
        for (body, want, invalid) in cases {
            let (got, quote, bad) = decode(body).unwrap_or_else(|| panic!("{body:?}"));
            assert_eq!(got, *want, "{body:?}");
            assert_eq!(body[quote], b'"');
            assert_eq!(bad, *invalid, "{body:?}");
        }
    }

    #[test]
    fn rejects_broken_strings() {
        let cases: &[&[u8]] = &[
            b"no closing quote",
            br#"bad escape \x""#,
            br#"short \u12""#,
            br#"not hex \u12g4""#,
            br#"trailing backslash \"#,
        ];
        for body in cases {
            assert!(decode(body).is_none(), "{body:?}");
        }
    }

    #[test]
    fn maps_decoded_bytes_to_their_escapes() {
        let body = br#"a\"\u00e9\ud83d\ude00b""#;
        // decoded: a (0) " (1) é (2..4) 😀 (4..8) b (8)
        let cases = [
            (0, 0),
            (1, 1),
            (2, 3),
            (3, 3),
            (4, 9),
            (6, 9),
            (8, 21),
            (9, 22),
        ];
        for (decoded, want) in cases {
            assert_eq!(source_index(body, decoded), want, "decoded byte {decoded}");
        }
        let bad = b"x\xffy\"";
        assert_eq!(source_index(bad, 1), 1);
        assert_eq!(source_index(bad, 4), 2);
    }

    #[test]
    fn skips_objects() {
        let cases: &[(&[u8], Option<usize>)] = &[
            (br#"{}"#, Some(2)),
            (br#"{"tag":"web"},"time""#, Some(13)),
            (br#"{"a":{"b":[1,2]},"c":"}\"{"},x"#, Some(28)),
            (br#"{"a":"#, None),
            (br#"["a"]"#, None),
            (br#"{"a":"\"#, None),
        ];
        for (src, want) in cases {
            assert_eq!(
                skip_object(src),
                *want,
                "{:?}",
                String::from_utf8_lossy(src)
            );
        }
    }

    proptest! {
        /// What serde_json encodes decodes back, and every character boundary of the decoded
        /// text maps to a source prefix that decodes to exactly the text before it.
        #[test]
        fn decodes_serde_output_and_maps_boundaries(s in "\\PC*|[\\x00-\\x1f\"\\\\\u{e9}\u{1f600}a]{0,40}") {
            let encoded = serde_json::to_string(&s).unwrap();
            let body = &encoded.as_bytes()[1..];
            let (got, quote, invalid) = decode(body).unwrap();
            prop_assert_eq!(&got, &s);
            prop_assert_eq!(quote, body.len() - 1);
            prop_assert!(!invalid);
            for (i, _) in s.char_indices().chain([(s.len(), ' ')]) {
                let src = source_index(&body[..quote], i);
                let mut prefix = String::new();
                let mut with_quote = body[..src].to_vec();
                with_quote.push(b'"');
                decode_str(&with_quote, &mut prefix).unwrap();
                prop_assert_eq!(&prefix, &s[..i]);
            }
        }
    }
}
