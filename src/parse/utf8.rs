//! UTF-8 where file bytes become record text.
//!
//! Owns two things: appending bytes to a batch's text with every invalid sequence replaced by one
//! U+FFFD (the same output as `String::from_utf8_lossy`), and finding where a run of bytes can be
//! cut without splitting a character. Valid input, the usual case, costs one validation pass and
//! one copy; nothing here allocates beyond the growth of the text it appends to.

/// Appends `bytes` to `out`, each maximal invalid sequence replaced by U+FFFD. Returns whether
/// anything was replaced.
#[inline]
pub(super) fn push_lossy(out: &mut String, bytes: &[u8]) -> bool {
    match std::str::from_utf8(bytes) {
        Ok(valid) => {
            out.push_str(valid);
            false
        }
        Err(_) => {
            for chunk in bytes.utf8_chunks() {
                out.push_str(chunk.valid());
                if !chunk.invalid().is_empty() {
                    out.push(char::REPLACEMENT_CHARACTER);
                }
            }
            true
        }
    }
}

/// How many bytes at the end of `bytes` are the start of a character that continues past the end
/// (0 to 3): cutting before them keeps the character whole in the next piece.
pub(super) fn incomplete_suffix(bytes: &[u8]) -> usize {
    let n = bytes.len();
    // The last character starts at most 3 bytes back; past that, a cut cannot help.
    let Some(start) = (n.saturating_sub(3)..n)
        .rev()
        .find(|&i| bytes[i] & 0xC0 != 0x80)
    else {
        return 0;
    };
    match std::str::from_utf8(&bytes[start..]) {
        // Only "input ended in the middle of a valid sequence" is worth carrying over.
        Err(e) if e.error_len().is_none() => n - start - e.valid_up_to(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_like_from_utf8_lossy() {
        let cases: &[&[u8]] = &[
            b"",
            b"plain ascii",
            "caf\u{e9} \u{1f600}".as_bytes(),
            b"bad \xff byte",
            b"\xff\xfe\xfd",
            b"truncated \xe2\x82",
            b"\xe2\x82 at start",
            b"overlong \xc0\xaf",
            b"surrogate \xed\xa0\x80",
            b"nul \x00 kept",
        ];
        for bytes in cases {
            let mut out = String::from("prefix|");
            let replaced = push_lossy(&mut out, bytes);
            let want = String::from_utf8_lossy(bytes);
            assert_eq!(out, format!("prefix|{want}"), "{bytes:?}");
            assert_eq!(replaced, std::str::from_utf8(bytes).is_err(), "{bytes:?}");
        }
    }

    #[test]
    fn finds_an_incomplete_last_character() {
        let euro = "\u{20ac}".as_bytes(); // 3 bytes
        let grin = "\u{1f600}".as_bytes(); // 4 bytes
        let cases: &[(&[u8], usize)] = &[
            (b"", 0),
            (b"abc", 0),
            (euro, 0),
            (&euro[..1], 1),
            (&euro[..2], 2),
            (grin, 0),
            (&grin[..3], 3),
            (&[b'a', grin[0], grin[1]], 2),
            // Not a valid start of anything: nothing to keep whole.
            (b"ab\xff", 0),
            (b"ab\x80\x80", 0),
            (b"\xe0\x80", 0),
        ];
        for (bytes, want) in cases {
            assert_eq!(incomplete_suffix(bytes), *want, "{bytes:?}");
        }
    }
}
