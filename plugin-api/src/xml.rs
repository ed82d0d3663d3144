//! Writing XML text: plugins write ICICLEs, OVF descriptors, SOAP bodies and kickstart
//! fragments, and each needs the same five escapes.

/// Escapes `s` for XML element text or a quoted attribute value (`&`, `<`, `>`, `"`, `'`).
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escapes_the_five() {
        assert_eq!(super::escape(r#"a<b>&"c"'d'é"#), "a&lt;b&gt;&amp;&quot;c&quot;&apos;d&apos;é");
    }
}
