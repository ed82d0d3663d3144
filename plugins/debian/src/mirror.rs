//! Where packages come from: the template's install url, or else the build host's own
//! apt mirror, read from its apt sources at run time. No mirror is ever built in: the
//! host's sources are what its operator chose (a local mirror, a proxy, a snapshot).

use std::path::Path;

use crate::error::DebianError;

/// The host's apt sources: the one-line format file, then the directory's files.
pub const SOURCES_LIST: &str = "/etc/apt/sources.list";
pub const SOURCES_DIR: &str = "/etc/apt/sources.list.d";

/// Suite names of the Debian archive itself (not -updates, -security or backports,
/// and not a third-party repository whose suite happens to have no dash).
const DEBIAN_SUITES: &[&str] =
    &["buster", "bullseye", "bookworm", "trixie", "forky", "duke", "sid", "unstable", "testing", "stable", "oldstable"];

/// One `deb` entry of an apt source file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Source {
    pub uri: String,
    pub suites: Vec<String>,
    pub components: Vec<String>,
}

impl Source {
    /// Whether this entry is the main Debian archive (a release suite, component main).
    fn is_debian_archive(&self) -> bool {
        self.suites.iter().any(|s| DEBIAN_SUITES.contains(&s.as_str()))
            && self.components.iter().any(|c| c == "main")
            && (self.uri.starts_with("http://") || self.uri.starts_with("https://") || self.uri.starts_with("file:"))
    }
}

/// Parses the one-line format (`sources.list`, `*.list`): `deb [options] uri suite comp...`.
pub fn parse_one_line(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or("").trim();
        let mut rest = match line.strip_prefix("deb ").or_else(|| line.strip_prefix("deb\t")) {
            Some(r) => r.trim_start(),
            None => continue,
        };
        if rest.starts_with('[') {
            match rest.find(']') {
                Some(end) => rest = rest[end + 1..].trim_start(),
                None => continue,
            }
        }
        let mut words = rest.split_whitespace();
        let (Some(uri), Some(suite)) = (words.next(), words.next()) else { continue };
        out.push(Source {
            uri: uri.to_string(),
            suites: vec![suite.to_string()],
            components: words.map(str::to_string).collect(),
        });
    }
    out
}

/// Parses the deb822 format (`*.sources`): stanzas of `Field: value` lines separated by
/// blank lines; a stanza is used when its Types include `deb` and it is not disabled.
pub fn parse_deb822(text: &str) -> Vec<Source> {
    let mut out = Vec::new();
    for stanza in text.split("\n\n") {
        let mut types = Vec::new();
        let mut uris = Vec::new();
        let mut suites = Vec::new();
        let mut components = Vec::new();
        let mut enabled = true;
        let mut field = String::new();
        for line in stanza.lines() {
            if line.trim_start().starts_with('#') || line.trim().is_empty() {
                continue;
            }
            // Continuation lines (leading space) extend the previous field.
            let (name, value) = match (line.starts_with([' ', '\t']), line.split_once(':')) {
                (true, _) => (field.clone(), line.trim()),
                (false, Some((n, v))) => (n.trim().to_ascii_lowercase(), v.trim()),
                (false, None) => continue,
            };
            field = name.clone();
            let words = value.split_whitespace().map(str::to_string);
            match name.as_str() {
                "types" => types.extend(words),
                "uris" => uris.extend(words),
                "suites" => suites.extend(words),
                "components" => components.extend(words),
                "enabled" => enabled = !value.eq_ignore_ascii_case("no"),
                _ => {}
            }
        }
        if enabled && types.iter().any(|t| t == "deb") {
            for uri in uris {
                out.push(Source { uri, suites: suites.clone(), components: components.clone() });
            }
        }
    }
    out
}

/// The mirror URL among `files` (name, text), in apt's reading order: the first entry
/// of the Debian archive.
pub fn pick_mirror(files: &[(String, String)]) -> Option<String> {
    files
        .iter()
        .flat_map(|(name, text)| if name.ends_with(".sources") { parse_deb822(text) } else { parse_one_line(text) })
        .find(Source::is_debian_archive)
        .map(|s| s.uri.trim_end_matches('/').to_string())
}

/// Reads the apt source files of a host rooted at `etc_root` (`/` in production): the
/// sources.list, then `*.list` and `*.sources` of sources.list.d in name order, as apt
/// does. Other names (backups, disabled files) are ignored, as apt ignores them.
pub fn read_sources(etc_root: &Path) -> Vec<(String, String)> {
    let mut files = Vec::new();
    let list = etc_root.join(SOURCES_LIST.trim_start_matches('/'));
    if let Ok(text) = std::fs::read_to_string(&list) {
        files.push((list.display().to_string(), text));
    }
    let dir = etc_root.join(SOURCES_DIR.trim_start_matches('/'));
    let mut names: Vec<_> =
        std::fs::read_dir(&dir).map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect()).unwrap_or_default();
    names.sort();
    for p in names {
        let wanted = p.extension().is_some_and(|x| x == "list" || x == "sources");
        if let (true, Ok(text)) = (wanted, std::fs::read_to_string(&p)) {
            files.push((p.display().to_string(), text));
        }
    }
    files
}

/// The build host's Debian mirror.
pub fn host_mirror() -> Result<String, DebianError> {
    pick_mirror(&read_sources(Path::new("/"))).ok_or(DebianError::NoMirror)
}

/// The mirror to bootstrap from: the template's url if it gave one, else the host's.
pub fn choose(template_url: Option<&str>) -> Result<String, DebianError> {
    match template_url.map(str::trim).filter(|u| !u.is_empty()) {
        Some(u) => Ok(u.trim_end_matches('/').to_string()),
        None => host_mirror(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Sample files use reserved example names (RFC 2606), never a real mirror.
    const DEB822: &str =
        "Types: deb\n# a snapshot\nURIs: http://mirror.example.org/debian\nSuites: bookworm bookworm-updates\n\
Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n\
Types: deb\nURIs: http://mirror.example.org/debian-security\nSuites: bookworm-security\nComponents: main\n";

    #[test]
    fn deb822_stanzas() {
        let s = parse_deb822(DEB822);
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].uri, "http://mirror.example.org/debian");
        assert_eq!(s[0].suites, vec!["bookworm", "bookworm-updates"]);
        assert_eq!(s[1].suites, vec!["bookworm-security"]);
        let disabled = "Types: deb\nEnabled: no\nURIs: http://a.example/debian\nSuites: bookworm\nComponents: main\n";
        assert!(parse_deb822(disabled).is_empty());
    }

    #[test]
    fn one_line_entries() {
        let text = "# comment\ndeb-src http://src.example/debian bookworm main\n\
deb [arch=amd64 signed-by=/k.gpg] http://one.example/debian/ bookworm main contrib # trailing\n";
        let s = parse_one_line(text);
        assert_eq!(
            s,
            vec![Source {
                uri: "http://one.example/debian/".into(),
                suites: vec!["bookworm".into()],
                components: vec!["main".into(), "contrib".into()],
            }]
        );
    }

    #[test]
    fn the_debian_archive_is_picked_not_security_or_third_party() {
        let files = vec![
            ("/etc/apt/sources.list".to_string(), "deb http://vendor.example/apt nodistro main\n".to_string()),
            ("/etc/apt/sources.list.d/debian.sources".to_string(), DEB822.to_string()),
        ];
        assert_eq!(pick_mirror(&files).as_deref(), Some("http://mirror.example.org/debian"));
        let only_security = vec![(
            "x.list".to_string(),
            "deb http://mirror.example.org/debian-security bookworm-security main\n".to_string(),
        )];
        assert_eq!(pick_mirror(&only_security), None);
    }

    #[test]
    fn reads_list_and_sources_files_in_apt_order() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("etc/apt/sources.list.d");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("b.sources"), DEB822).unwrap();
        std::fs::write(d.join("a.list"), "deb http://first.example/debian trixie main\n").unwrap();
        std::fs::write(d.join("c.list.disabled"), "deb http://never.example/debian bookworm main\n").unwrap();
        let files = read_sources(dir.path());
        assert_eq!(files.len(), 2);
        assert_eq!(pick_mirror(&files).as_deref(), Some("http://first.example/debian"));
    }

    #[test]
    fn template_url_wins() {
        assert_eq!(choose(Some(" http://t.example/debian/ ")).unwrap(), "http://t.example/debian");
    }

    /// The real host: the build machine must name a Debian mirror, or builds without an
    /// install url cannot work at all. Fails loudly instead of skipping.
    #[test]
    fn this_host_names_a_mirror() {
        let m = host_mirror().expect("this host's apt sources name no Debian mirror");
        assert!(m.starts_with("http") || m.starts_with("file:"), "{m}");
    }
}
