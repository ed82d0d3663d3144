//! SBOMs: an OS plugin that knows the packages it installed lists them, and the host
//! keeps an SPDX 2.3 document of every image.
//!
//! The plugin writes [`document`] of its [`Package`]s into its files directory as
//! [`FILE_NAME`] ([`write`] does both). The host finishes the document when the build
//! completes: the image itself becomes the described package (id [`IMAGE_SPDX_ID`]) with
//! the SHA-256 of the body, containing every listed package, plus the document's name,
//! namespace and creation info. A plugin that writes nothing still gets a document, made
//! from its ICICLE's package names.

use serde_json::{json, Value};

use crate::sdk::{Host, PluginError};

/// The kept file's name.
pub const FILE_NAME: &str = "sbom.spdx.json";

/// The SPDX id the host gives the image's own package.
pub const IMAGE_SPDX_ID: &str = "SPDXRef-Image";

/// One installed package.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: Option<String>,
    /// The package's own declared license, as an SPDX license expression (which may
    /// use `LicenseRef-` ids listed in the document's [`ExtractedLicense`]s), or `None`
    /// when the package says nothing machine-readable.
    pub license: Option<String>,
    /// Its package URL, e.g. `pkg:deb/debian/bash@5.2.15-2?arch=amd64&distro=debian-12`.
    pub purl: String,
}

/// A license that has no SPDX id: its `LicenseRef-...` id and what the package called it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtractedLicense {
    pub id: String,
    pub name: String,
    pub text: String,
}

/// An SPDX id from any text: `SPDXRef-<prefix>-<text>` with everything but letters,
/// digits and `.` made `-`.
pub fn spdx_id(prefix: &str, text: &str) -> String {
    let clean: String = text.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
    format!("SPDXRef-{prefix}-{clean}")
}

/// A `LicenseRef-` id for a license name SPDX does not know.
pub fn license_ref(prefix: &str, name: &str) -> String {
    let clean: String = name.chars().map(|c| if c.is_ascii_alphanumeric() || c == '.' { c } else { '-' }).collect();
    format!("LicenseRef-{prefix}-{clean}")
}

/// Percent-encodes a purl component (RFC 3986 unreserved characters stay).
pub fn purl_encode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b'+' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One SPDX package entry with the given SPDX id.
pub fn package_json(spdx_id: &str, p: &Package) -> Value {
    let mut v = json!({
        "SPDXID": spdx_id,
        "name": p.name,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": p.license.as_deref().unwrap_or("NOASSERTION"),
        "copyrightText": "NOASSERTION",
        "externalRefs": [{"referenceCategory": "PACKAGE-MANAGER", "referenceType": "purl", "referenceLocator": p.purl}],
    });
    if let Some(version) = &p.version {
        v["versionInfo"] = version.clone().into();
    }
    v
}

/// The plugin's part of the document: the packages (ids numbered in order) and the
/// licenses they name that SPDX has no id for.
pub fn document(packages: &[Package], extracted: &[ExtractedLicense]) -> Value {
    let packages: Vec<Value> = packages
        .iter()
        .enumerate()
        .map(|(i, p)| package_json(&spdx_id("Package", &format!("{i}-{}", p.name)), p))
        .collect();
    let mut doc = json!({
        "spdxVersion": "SPDX-2.3",
        "dataLicense": "CC0-1.0",
        "SPDXID": "SPDXRef-DOCUMENT",
        "packages": packages,
    });
    if !extracted.is_empty() {
        doc["hasExtractedLicensingInfos"] = extracted
            .iter()
            .map(|l| json!({"licenseId": l.id, "name": l.name, "extractedText": l.text}))
            .collect::<Vec<_>>()
            .into();
    }
    doc
}

/// Writes [`document`] into the operation's files directory as [`FILE_NAME`].
pub fn write(host: &Host, packages: &[Package], extracted: &[ExtractedLicense]) -> Result<(), PluginError> {
    let path = host.files_dir().join(FILE_NAME);
    let text = serde_json::to_vec_pretty(&document(packages, extracted))
        .map_err(|e| PluginError::new(format!("cannot write the SBOM: {e}")))?;
    std::fs::write(&path, text).map_err(|e| PluginError::new(format!("cannot write {}: {e}", path.display())))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_document_lists_packages_with_purls_and_extracted_licenses() {
        let p = Package {
            name: "bash".into(),
            version: Some("5.2.15-2+b2".into()),
            license: Some("GPL-3.0-or-later".into()),
            purl: format!("pkg:deb/debian/bash@{}?arch=amd64", purl_encode("5.2.15-2+b2")),
        };
        let l = ExtractedLicense {
            id: license_ref("Debian", "public-domain"),
            name: "public-domain".into(),
            text: "x".into(),
        };
        let d = document(&[p], &[l]);
        assert_eq!(d["packages"][0]["SPDXID"], "SPDXRef-Package-0-bash");
        assert_eq!(
            d["packages"][0]["externalRefs"][0]["referenceLocator"],
            "pkg:deb/debian/bash@5.2.15-2+b2?arch=amd64"
        );
        assert_eq!(d["hasExtractedLicensingInfos"][0]["licenseId"], "LicenseRef-Debian-public-domain");
        assert_eq!(purl_encode("1:2.3"), "1%3A2.3");
    }
}
