//! Reading the installer's serial console log after the guest stopped: did the `%post`
//! finish, did a template step fail, and what the ICICLE lines were.
//!
//! The console also carries the installer's own output, with `\r\n` line ends and
//! possibly escape sequences; only whole lines between this build's markers count.

use crate::kickstart::Markers;

/// What the `%post` reported.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Report {
    /// The done marker was printed.
    pub done: bool,
    /// A template step failed: (kind, index, exit status).
    pub failed: Option<(String, usize, String)>,
    /// The `rpm -qa` lines, when printed completely.
    pub packages: Option<Vec<String>>,
    /// The ICICLE extra command's lines, when printed completely.
    pub extra: Option<Vec<String>>,
}

fn clean(line: &str) -> String {
    // Drop ANSI escape sequences and control characters the installer's UI may leave.
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.peek() == Some(&'[') {
                chars.next();
                for d in chars.by_ref() {
                    if d.is_ascii_alphabetic() {
                        break;
                    }
                }
            }
            continue;
        }
        if !c.is_control() {
            out.push(c);
        }
    }
    out.trim().to_string()
}

fn section(lines: &[String], begin: &str, end: &str) -> Option<Vec<String>> {
    let start = lines.iter().position(|l| l == begin)?;
    let stop = lines[start + 1..].iter().position(|l| l == end)? + start + 1;
    Some(lines[start + 1..stop].iter().filter(|l| !l.is_empty()).cloned().collect())
}

/// Reads a console log (bytes: the installer may print invalid UTF-8).
pub fn read(log: &[u8], m: &Markers) -> Report {
    let text = String::from_utf8_lossy(log);
    let lines: Vec<String> = text.split('\n').map(clean).collect();
    let done_marker = m.done();
    let failed_marker = m.failed();
    let failed = lines.iter().find_map(|l| {
        let rest = l.strip_prefix(&failed_marker)?;
        let mut w = rest.split_whitespace();
        let kind = w.next()?.to_string();
        let index = w.next()?.parse().ok()?;
        let status = w.next().unwrap_or("?").to_string();
        Some((kind, index, status))
    });
    Report {
        done: lines.contains(&done_marker),
        failed,
        packages: section(&lines, &m.icicle_begin(), &m.icicle_end()),
        extra: section(&lines, &m.extra_begin(), &m.extra_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_finished_install() {
        let m = Markers::new("abc");
        let log = format!(
            "anaconda 40\r\n\x1b[1mStarting\x1b[0m\r\n{}\r\nbash-5.2-1.fc40.x86_64\r\n\r\nrpm-4.19-1.fc40.x86_64\r\n{}\r\n\
{}\r\nsig1\r\nsig2\r\n{}\r\n{}\r\nreboot: Power down\r\n",
            m.icicle_begin(),
            m.icicle_end(),
            m.extra_begin(),
            m.extra_end(),
            m.done()
        );
        let r = read(log.as_bytes(), &m);
        assert!(r.done && r.failed.is_none());
        assert_eq!(r.packages.unwrap(), vec!["bash-5.2-1.fc40.x86_64", "rpm-4.19-1.fc40.x86_64"]);
        assert_eq!(r.extra.unwrap(), vec!["sig1", "sig2"]);
    }

    #[test]
    fn failures_and_foreign_markers() {
        let m = Markers::new("abc");
        let other = Markers::new("zzz");
        let log = format!("{} command 2 7\n{}\n{}\nx\n", m.failed(), other.done(), m.icicle_begin());
        let r = read(log.as_bytes(), &m);
        assert!(!r.done, "another build's marker does not count");
        assert_eq!(r.failed, Some(("command".into(), 2, "7".into())));
        assert_eq!(r.packages, None, "an unterminated ICICLE is no ICICLE");
        assert_eq!(read(b"\xff\xfe garbage", &m), Report::default());
    }
}
