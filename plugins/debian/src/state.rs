//! The source state of a build: the suite files (`InRelease`, or `Release` where a suite
//! has none) of every archive a template's build reads, each by URL and SHA-256.
//!
//! A suite file names the SHA-256 of every package index of its suite, and each index
//! names the SHA-256 of every package: its digest pins everything apt can install from
//! that suite. The same template and the same source state make the same image, so the
//! state is what a cache key needs (the host calls [`source_state`]) and what the build
//! key is derived from ([`crate::seed`]). The main suite's `Date:` is the build's
//! SOURCE_DATE_EPOCH ([`release_date`]).

use std::path::Path;

use diskimage::process::{Quiet, Watch};
use imagefactory_plugin_api::tdl::{ParseOptions, Repository, Template};

use crate::digest;
use crate::error::DebianError;
use crate::fetch::fetch_if_present;
use crate::mirror;
use crate::plan::Plan;

/// One suite file as fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuiteFile {
    pub url: String,
    pub bytes: Vec<u8>,
}

impl SuiteFile {
    /// `sha256:<hex>` of the bytes.
    pub fn digest(&self) -> Result<String, DebianError> {
        Ok(format!("sha256:{}", digest::hex(&digest::sha256(&self.bytes)?)))
    }
}

/// An archive and suite apt reads: `deb URI SUITE ...`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Archive {
    pub uri: String,
    pub suite: String,
}

impl Archive {
    /// The suite files to try, in apt's order: InRelease, then Release. A flat
    /// repository (a suite ending in `/`, such as `./`) keeps them beside its suite
    /// path instead of under `dists/`.
    pub fn suite_file_urls(&self) -> [String; 2] {
        let base = self.uri.trim_end_matches('/');
        let dir = if self.suite.ends_with('/') {
            match self.suite.trim_matches('/') {
                "" | "." => base.to_string(),
                path => format!("{base}/{path}"),
            }
        } else {
            format!("{base}/dists/{}", self.suite)
        };
        [format!("{dir}/InRelease"), format!("{dir}/Release")]
    }
}

/// The archive of a template repository, read the way [`crate::sources`] writes its
/// apt line: a plain URL is the image's own suite; `URL SUITE COMPONENTS...` names its
/// suite. `None` for a URL apt would not fetch over http(s) or file.
pub fn repository_archive(repo: &Repository, image_suite: &str) -> Option<Archive> {
    let mut words = repo.url.split_whitespace();
    let uri = words.next()?;
    let suite = words.next().unwrap_or(image_suite);
    let fetchable = ["http://", "https://", "file:"].iter().any(|s| uri.starts_with(s));
    fetchable.then(|| Archive { uri: uri.to_string(), suite: suite.to_string() })
}

/// Every archive the build of `template` reads: the mirror's suite first (mmdebstrap
/// installs the base from it), then each template repository.
pub fn archives(template: &Template, mirror: &str, suite: &str) -> Vec<Archive> {
    let mut out = vec![Archive { uri: mirror.to_string(), suite: suite.to_string() }];
    out.extend(template.repositories.iter().filter_map(|r| repository_archive(r, suite)));
    out
}

/// Fetches the suite file of each archive: its InRelease, or its Release when the
/// mirror has no InRelease. An archive with neither is an error naming it.
pub fn fetch_suite_files(archives: &[Archive], watch: &dyn Watch) -> Result<Vec<SuiteFile>, DebianError> {
    let mut out = Vec::with_capacity(archives.len());
    for a in archives {
        let [inrelease, release] = a.suite_file_urls();
        let found = match fetch_if_present(&inrelease, watch)? {
            Some(bytes) => SuiteFile { url: inrelease, bytes },
            None => match fetch_if_present(&release, watch)? {
                Some(bytes) => SuiteFile { url: release, bytes },
                None => {
                    return Err(DebianError::Fetch {
                        url: inrelease,
                        reason: "the archive has neither InRelease nor Release for this suite".into(),
                    })
                }
            },
        };
        out.push(found);
    }
    Ok(out)
}

/// The suite files of the build `template_xml` describes (the mirror as the build
/// chooses it: the template's install url, or the host's apt mirror).
pub fn suite_files(template_xml: &str, watch: &dyn Watch) -> Result<Vec<SuiteFile>, DebianError> {
    let template =
        Template::parse(template_xml, &ParseOptions::default()).map_err(|e| DebianError::Template(e.to_string()))?;
    let plan = Plan::new(&template)?;
    let mirror = mirror::choose(plan.install_url.as_deref())?;
    fetch_suite_files(&archives(&template, &mirror, plan.release.suite()), watch)
}

/// `(URL, "sha256:<hex>")` of each suite file the build of `template_xml` reads, the
/// main suite first: what a cache key of the build must include besides the template.
pub fn source_state(template_xml: &str) -> Result<Vec<(String, String)>, DebianError> {
    pairs(&suite_files(template_xml, &Quiet)?)
}

/// The `(URL, digest)` pairs of fetched suite files.
pub fn pairs(files: &[SuiteFile]) -> Result<Vec<(String, String)>, DebianError> {
    files.iter().map(|f| Ok((f.url.clone(), f.digest()?))).collect()
}

/// The URLs of `files` whose bytes apt did not store in the tree at `root` (its
/// `/var/lib/apt/lists`, kept until the end of the build): the mirror moved on between
/// the build's reading of its state and mmdebstrap's or `apt-get update`'s.
pub fn changed_since(root: &Path, files: &[SuiteFile]) -> Vec<String> {
    let lists = root.join("var/lib/apt/lists");
    let stored: Vec<Vec<u8>> = std::fs::read_dir(&lists)
        .map(|rd| {
            rd.filter_map(Result::ok)
                .filter(|e| e.file_name().to_string_lossy().ends_with("Release"))
                .filter_map(|e| std::fs::read(e.path()).ok())
                .collect()
        })
        .unwrap_or_default();
    files.iter().filter(|f| !stored.contains(&f.bytes)).map(|f| f.url.clone()).collect()
}

/// The `Date:` field of a Release or InRelease file as seconds since 1970 (UTC): the
/// moment the archive was in this state. In an InRelease the field is inside the signed
/// text, which comes before the signature.
pub fn release_date(text: &str) -> Option<u64> {
    let value = text.lines().take_while(|l| !l.starts_with("-----BEGIN PGP SIGNATURE")).find_map(|l| {
        let (name, value) = l.split_once(':')?;
        name.eq_ignore_ascii_case("Date").then(|| value.trim())
    })?;
    parse_rfc2822(value)
}

/// `[Day, ]DD Mon YYYY HH:MM:SS ZONE` (the form apt writes and reads in Release files),
/// ZONE being `UTC`, `GMT`, `Z` or `+HHMM`/`-HHMM`.
fn parse_rfc2822(value: &str) -> Option<u64> {
    let value = value.split_once(',').map_or(value, |(_, rest)| rest);
    let words: Vec<&str> = value.split_whitespace().collect();
    let [day, month, year, time, zone] = words.as_slice() else { return None };
    const MONTHS: [&str; 12] = ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"];
    let month = MONTHS.iter().position(|m| m.eq_ignore_ascii_case(month))? as u32 + 1;
    let day: u32 = day.parse().ok()?;
    let year: i64 = year.parse().ok()?;
    let mut hms = time.split(':').map(|p| p.parse::<i64>().ok());
    let (h, m, s) = (hms.next()??, hms.next()??, hms.next().unwrap_or(Some(0))?);
    if !(1..=31).contains(&day) || h > 23 || m > 59 || s > 60 {
        return None;
    }
    let offset = match *zone {
        "UTC" | "GMT" | "Z" | "UT" => 0,
        z if z.len() == 5 && (z.starts_with('+') || z.starts_with('-')) => {
            let hh: i64 = z[1..3].parse().ok()?;
            let mm: i64 = z[3..5].parse().ok()?;
            let o = hh * 3600 + mm * 60;
            if z.starts_with('-') {
                -o
            } else {
                o
            }
        }
        _ => return None,
    };
    let secs = days_from_civil(year, month, day) * 86_400 + h * 3600 + m * 60 + s - offset;
    u64::try_from(secs).ok()
}

/// Days from 1970-01-01 to the given proleptic Gregorian date.
fn days_from_civil(year: i64, month: u32, day: u32) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (i64::from(month) + 9) % 12;
    let doy = (153 * mp + 2) / 5 + i64::from(day) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    // Reserved example names (RFC 2606), never a real mirror.
    const INRELEASE: &str = "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\n\
Label: Debian\nSuite: stable\nCodename: bookworm\nDate: Sat, 10 Jan 2026 10:07:24 UTC\n\
Acquire-By-Hash: yes\n-----BEGIN PGP SIGNATURE-----\n\nDate: Mon, 01 Jan 2024 00:00:00 UTC\n";

    fn repo(url: &str) -> Repository {
        Repository { name: "r".into(), url: url.into(), signed: true, persisted: true, sslverify: false }
    }

    #[test]
    fn dates_of_suite_files() {
        // 2026-01-10 10:07:24 UTC, as `date -u -d '2026-01-10 10:07:24' +%s` says.
        assert_eq!(release_date(INRELEASE), Some(1_768_039_644));
        assert_eq!(release_date("Date: Thu, 01 Jan 1970 00:00:00 UTC\n"), Some(0));
        assert_eq!(release_date("Date: 29 Feb 2024 12:00:00 +0100\n"), Some(1_709_204_400));
        assert_eq!(release_date("Date: Tue, 07 Dec 2027 23:59:60 -0030\n"), Some(1_828_225_800));
        assert_eq!(release_date("Origin: Debian\n"), None);
        assert_eq!(release_date("Date: yesterday\n"), None);
        assert_eq!(release_date("Date: Sat, 10 Foo 2026 10:07:24 UTC\n"), None);
    }

    #[test]
    fn suite_files_apt_did_not_store_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let lists = dir.path().join("var/lib/apt/lists");
        std::fs::create_dir_all(&lists).unwrap();
        std::fs::write(lists.join("m.example_debian_dists_bookworm_InRelease"), "state one").unwrap();
        std::fs::write(lists.join("m.example_debian_dists_bookworm_main_binary-amd64_Packages"), "state two").unwrap();
        let file = |url: &str, bytes: &str| SuiteFile { url: url.into(), bytes: bytes.into() };
        let files = [file("http://a/InRelease", "state one"), file("http://b/InRelease", "state two")];
        assert_eq!(changed_since(dir.path(), &files), vec!["http://b/InRelease".to_string()]);
    }

    #[test]
    fn civil_days() {
        assert_eq!(days_from_civil(1970, 1, 1), 0);
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
        assert_eq!(days_from_civil(1969, 12, 31), -1);
    }

    #[test]
    fn suite_file_urls_of_dists_and_flat_archives() {
        let a = Archive { uri: "http://m.example/debian/".into(), suite: "bookworm".into() };
        assert_eq!(
            a.suite_file_urls(),
            ["http://m.example/debian/dists/bookworm/InRelease", "http://m.example/debian/dists/bookworm/Release"]
        );
        let flat = Archive { uri: "http://r.example/apt".into(), suite: "./".into() };
        assert_eq!(flat.suite_file_urls()[0], "http://r.example/apt/InRelease");
        let sub = Archive { uri: "http://r.example/apt".into(), suite: "amd64/".into() };
        assert_eq!(sub.suite_file_urls()[1], "http://r.example/apt/amd64/Release");
    }

    #[test]
    fn repositories_are_read_as_their_apt_lines() {
        assert_eq!(
            repository_archive(&repo("http://r.example/debian"), "bookworm"),
            Some(Archive { uri: "http://r.example/debian".into(), suite: "bookworm".into() })
        );
        assert_eq!(
            repository_archive(&repo(" http://r.example/debian  bookworm-updates main "), "bookworm"),
            Some(Archive { uri: "http://r.example/debian".into(), suite: "bookworm-updates".into() })
        );
        assert_eq!(repository_archive(&repo("cdrom:/media"), "bookworm"), None);
        assert_eq!(repository_archive(&repo("  "), "bookworm"), None);
    }

    #[test]
    fn a_file_mirror_gives_the_state_and_falls_back_to_release() {
        let dir = tempfile::tempdir().unwrap();
        let dists = dir.path().join("debian/dists");
        std::fs::create_dir_all(dists.join("bookworm")).unwrap();
        std::fs::create_dir_all(dists.join("extra")).unwrap();
        std::fs::write(dists.join("bookworm/InRelease"), "abc").unwrap();
        std::fs::write(dists.join("extra/Release"), "").unwrap();
        let mirror = format!("file://{}/debian", dir.path().display());
        let xml = format!(
            "<template><name>s</name><os><name>Debian</name><version>12</version><arch>x86_64</arch>\
<install type='url'><url>{mirror}</url></install></os><repositories><repository name='x'>\
<url>{mirror} extra main</url></repository></repositories></template>"
        );
        let state = source_state(&xml).unwrap();
        assert_eq!(
            state,
            vec![
                (
                    format!("{mirror}/dists/bookworm/InRelease"),
                    "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad".to_string()
                ),
                (
                    format!("{mirror}/dists/extra/Release"),
                    "sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".to_string()
                ),
            ]
        );
        std::fs::remove_file(dists.join("extra/Release")).unwrap();
        let e = source_state(&xml).unwrap_err().to_string();
        assert!(e.contains("dists/extra/InRelease") && e.contains("neither InRelease nor Release"), "{e}");
    }
}
