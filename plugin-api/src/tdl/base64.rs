//! The small amount of base64 TDL needs: checking `type="base64"` content and
//! decoding it. Written here rather than pulled in as a dependency because the
//! plugin API crate is linked into every plugin and should stay lean.

/// True when `text` is base64 as Oz's schema accepts it: the pattern
/// `[a-zA-Z0-9+/]+={0,2}`, here also with a length that is a multiple of four so
/// that it really decodes (Python's decoder rejects bad padding too). Line
/// breaks and other ASCII whitespace inside the text are ignored, because
/// wrapped base64 is what most tools produce.
pub(crate) fn is_valid(text: &str) -> bool {
    let compact = compact(text);
    let body = compact.trim_end_matches('=');
    let padding = compact.len() - body.len();
    !body.is_empty() && padding <= 2 && compact.len().is_multiple_of(4) && body.bytes().all(|b| value(b).is_some())
}

/// Decodes base64 text; `None` when it is not valid (see [`is_valid`]).
pub(crate) fn decode(text: &str) -> Option<Vec<u8>> {
    if text.trim().is_empty() {
        // An empty base64 file is allowed and means an empty file.
        return Some(Vec::new());
    }
    if !is_valid(text) {
        return None;
    }
    let compact = compact(text);
    let body = compact.trim_end_matches('=').as_bytes();
    let mut out = Vec::with_capacity(body.len() * 3 / 4);
    // Each base64 digit carries 6 bits; emit a byte whenever 8 have gathered.
    let mut bits: u32 = 0;
    let mut bit_count = 0;
    for &digit in body {
        bits = (bits << 6) | u32::from(value(digit)?);
        bit_count += 6;
        if bit_count >= 8 {
            bit_count -= 8;
            out.push(((bits >> bit_count) & 0xff) as u8);
        }
    }
    Some(out)
}

fn compact(text: &str) -> String {
    text.chars().filter(|c| !c.is_ascii_whitespace()).collect()
}

fn value(digit: u8) -> Option<u8> {
    match digit {
        b'A'..=b'Z' => Some(digit - b'A'),
        b'a'..=b'z' => Some(digit - b'a' + 26),
        b'0'..=b'9' => Some(digit - b'0' + 52),
        b'+' => Some(62),
        b'/' => Some(63),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_with_and_without_padding() {
        assert_eq!(decode("aGVsbG8=").as_deref(), Some(&b"hello"[..]));
        assert_eq!(decode("aGVsbG8h").as_deref(), Some(&b"hello!"[..]));
        assert_eq!(decode("aGk=\n").as_deref(), Some(&b"hi"[..]));
        assert_eq!(decode("ZWNobyBo\n  aQ==").as_deref(), Some(&b"echo hi"[..]));
    }

    #[test]
    fn rejects_bad_alphabet_and_padding() {
        assert!(!is_valid("not base64!"));
        assert!(!is_valid("aGVsbG8"));
        assert!(!is_valid("aGV==="));
        assert!(!is_valid("===="));
        assert!(!is_valid("aG=k"));
        assert_eq!(decode("a"), None);
    }
}
