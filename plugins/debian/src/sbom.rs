//! The packages of a Debian image for its SBOM: name, version, architecture and the
//! license each package declares, read inside the image root.
//!
//! The license comes from the package's `/usr/share/doc/<package>/copyright`: in the
//! machine-readable format (DEP-5), the `License:` of the `Files: *` paragraph, else the
//! first `License:` the file has. Debian's short names are mapped to SPDX ids where the
//! two agree (`GPL-2+` is `GPL-2.0-or-later`, `Expat` is `MIT`, ...); any other name
//! becomes a `LicenseRef-Debian-...` listed with what the package called it. A package
//! whose copyright file says nothing machine-readable declares NOASSERTION.

use diskimage::chroot::Chroot;
use diskimage::process::{self, Options, Watch};
use imagefactory_plugin_api::sbom::{license_ref, purl_encode, ExtractedLicense, Package};

use crate::error::DebianError;

/// Prints `name<TAB>version<TAB>arch<TAB>license` for every installed package, run in
/// the image root (dpkg-query and awk are in every Debian base).
const LIST_SCRIPT: &str = r#"dpkg-query -W -f '${Package}\t${Version}\t${Architecture}\n' |
while IFS="$(printf '\t')" read -r n v a; do
  l=""
  if [ -r "/usr/share/doc/$n/copyright" ]; then
    l=$(awk '
      /^Files:[ \t]*\*[ \t]*$/ { star = 1; next }
      /^[ \t]*$/ { star = 0 }
      /^License:/ { v = $0; sub(/^License:[ \t]*/, "", v); if (first == "") first = v; if (star && found == "") found = v }
      END { if (found != "") print found; else print first }' "/usr/share/doc/$n/copyright" 2>/dev/null)
  fi
  printf '%s\t%s\t%s\t%s\n' "$n" "$v" "$a" "$l"
done"#;

/// Debian's short license names and their SPDX ids (the common ones; see
/// https://spdx.org/licenses/ and the copyright-format specification).
const SPDX_NAMES: &[(&str, &str)] = &[
    ("GPL-1+", "GPL-1.0-or-later"),
    ("GPL-1", "GPL-1.0-only"),
    ("GPL-2+", "GPL-2.0-or-later"),
    ("GPL-2", "GPL-2.0-only"),
    ("GPL-3+", "GPL-3.0-or-later"),
    ("GPL-3", "GPL-3.0-only"),
    ("LGPL-2+", "LGPL-2.0-or-later"),
    ("LGPL-2", "LGPL-2.0-only"),
    ("LGPL-2.1+", "LGPL-2.1-or-later"),
    ("LGPL-2.1", "LGPL-2.1-only"),
    ("LGPL-3+", "LGPL-3.0-or-later"),
    ("LGPL-3", "LGPL-3.0-only"),
    ("AGPL-3+", "AGPL-3.0-or-later"),
    ("AGPL-3", "AGPL-3.0-only"),
    ("GFDL-1.2+", "GFDL-1.2-or-later"),
    ("GFDL-1.3+", "GFDL-1.3-or-later"),
    ("Apache-2.0", "Apache-2.0"),
    ("Apache-2", "Apache-2.0"),
    ("Artistic", "Artistic-1.0-Perl"),
    ("Artistic-2.0", "Artistic-2.0"),
    ("BSD-2-clause", "BSD-2-Clause"),
    ("BSD-3-clause", "BSD-3-Clause"),
    ("BSD-4-clause", "BSD-4-Clause"),
    ("Expat", "MIT"),
    ("MIT", "MIT"),
    ("ISC", "ISC"),
    ("Zlib", "Zlib"),
    ("zlib", "Zlib"),
    ("MPL-1.1", "MPL-1.1"),
    ("MPL-2.0", "MPL-2.0"),
    ("CC0-1.0", "CC0-1.0"),
    ("CC0", "CC0-1.0"),
    ("OpenSSL", "OpenSSL"),
    ("PSF-2", "PSF-2.0"),
    ("Python", "Python-2.0"),
    ("X11", "X11"),
    ("curl", "curl"),
    ("BSL-1.0", "BSL-1.0"),
    ("Unicode-DFS-2016", "Unicode-DFS-2016"),
    ("0BSD", "0BSD"),
    ("Unlicense", "Unlicense"),
    ("WTFPL", "WTFPL"),
];

/// The packages of the image whose root `chroot` enters, with their licenses.
pub fn collect(
    chroot: &Chroot,
    release_number: u8,
    watch: &dyn Watch,
) -> Result<(Vec<Package>, Vec<ExtractedLicense>), DebianError> {
    let out = process::run(
        "listing packages and licenses for the SBOM",
        chroot.command("sh", ["-c", LIST_SCRIPT]),
        Options { capture_stdout: true, ..Default::default() },
        watch,
    )?;
    Ok(parse(&String::from_utf8_lossy(&out.stdout), release_number))
}

/// Parses [`LIST_SCRIPT`]'s lines.
pub fn parse(listing: &str, release_number: u8) -> (Vec<Package>, Vec<ExtractedLicense>) {
    let mut packages = Vec::new();
    let mut extracted: Vec<ExtractedLicense> = Vec::new();
    for line in listing.lines() {
        let mut f = line.split('\t');
        let (Some(name), Some(version), Some(arch)) = (f.next(), f.next(), f.next()) else { continue };
        if name.is_empty() {
            continue;
        }
        let declared = f.next().map(str::trim).filter(|l| !l.is_empty());
        let license = declared.map(|d| to_spdx(d, &mut extracted));
        packages.push(Package {
            name: name.to_string(),
            version: Some(version.to_string()),
            license,
            purl: format!(
                "pkg:deb/debian/{}@{}?arch={}&distro=debian-{release_number}",
                purl_encode(name),
                purl_encode(version),
                purl_encode(arch)
            ),
        });
    }
    (packages, extracted)
}

/// A Debian license expression (`GPL-2+ or Artistic`, `LGPL-2.1+ and BSD-3-clause`) as
/// an SPDX expression. Names SPDX has no id for become `LicenseRef-Debian-...`, added to
/// `extracted` once; an exception (`with OpenSSL exception`, one or more words up to the
/// next `or`/`and`) is left out, as Debian's exception names are not SPDX's. Anything
/// that does not come out as operands joined by operators becomes one `LicenseRef` for
/// the whole declaration.
fn to_spdx(declared: &str, extracted: &mut Vec<ExtractedLicense>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut in_exception = false;
    for word in declared.split_whitespace() {
        match word.to_ascii_lowercase().as_str() {
            "or" => {
                in_exception = false;
                out.push("OR".to_string());
            }
            "and" => {
                in_exception = false;
                out.push("AND".to_string());
            }
            "with" => in_exception = true,
            _ if in_exception => {}
            _ => {
                let name = word.trim_matches(|c| c == ',' || c == '(' || c == ')');
                out.push(spdx_name(name, extracted));
            }
        }
    }
    let is_op = |w: &str| w == "OR" || w == "AND";
    let well_formed =
        !out.is_empty() && out.iter().enumerate().all(|(i, w)| is_op(w) == (i % 2 == 1)) && out.len() % 2 == 1;
    if well_formed {
        return out.join(" ");
    }
    spdx_name(declared.trim(), extracted)
}

/// One license name: its SPDX id, or a `LicenseRef-Debian-...` recorded in `extracted`.
fn spdx_name(name: &str, extracted: &mut Vec<ExtractedLicense>) -> String {
    if let Some((_, spdx)) = SPDX_NAMES.iter().find(|(d, _)| *d == name) {
        return (*spdx).to_string();
    }
    let id = license_ref("Debian", name);
    if !extracted.iter().any(|l| l.id == id) {
        extracted.push(ExtractedLicense {
            id: id.clone(),
            name: name.to_string(),
            text: format!("The Debian license name {name:?}, as the package's copyright file declares it."),
        });
    }
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listing_lines_become_packages_with_spdx_licenses() {
        let listing = "bash\t5.2.15-2+b2\tamd64\tGPL-3+\n\
perl-base\t5.36.0-7\tamd64\tGPL-1+ or Artistic\n\
tzdata\t2024a-0\tall\tpublic-domain\n\
libfoo\t1:2.0\tamd64\t\n";
        let (p, x) = parse(listing, 12);
        assert_eq!(p.len(), 4);
        assert_eq!(p[0].license.as_deref(), Some("GPL-3.0-or-later"));
        assert_eq!(p[0].purl, "pkg:deb/debian/bash@5.2.15-2+b2?arch=amd64&distro=debian-12");
        assert_eq!(p[1].license.as_deref(), Some("GPL-1.0-or-later OR Artistic-1.0-Perl"));
        assert_eq!(p[2].license.as_deref(), Some("LicenseRef-Debian-public-domain"));
        assert_eq!(x.len(), 1);
        assert_eq!(p[3].license, None);
        assert_eq!(p[3].purl, "pkg:deb/debian/libfoo@1%3A2.0?arch=amd64&distro=debian-12");
    }

    #[test]
    fn exceptions_and_dangling_operators_keep_the_expression_valid() {
        let mut x = Vec::new();
        assert_eq!(to_spdx("GPL-2+ with OpenSSL-exception", &mut x), "GPL-2.0-or-later");
        assert_eq!(to_spdx("GPL-2+ with OpenSSL exception or MIT", &mut x), "GPL-2.0-or-later OR MIT");
        assert_eq!(to_spdx("BSD-3-clause and", &mut x), "LicenseRef-Debian-BSD-3-clause-and");
        assert_eq!(to_spdx("GPL-2+ MIT", &mut x), "LicenseRef-Debian-GPL-2--MIT");
        assert!(x.iter().any(|l| l.name == "GPL-2+ MIT"));
    }
}
