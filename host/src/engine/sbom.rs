//! The SBOM of every base and target image: an SPDX 2.3 JSON document kept as the
//! image's file `sbom.spdx.json` (`GET .../<id>/files/sbom.spdx.json`).
//!
//! An OS plugin that knows its packages best writes the document's packages itself (the
//! Debian plugin does, with each package's license from its copyright file) into its
//! files directory. The host finishes every document the same way when the build
//! completes: the image itself becomes the described package with its SHA-256 (read
//! from the body, streamed), the document gets its name and namespace, and a target
//! image's document refers to its base image's document (`GENERATED_FROM`). A plugin
//! that writes none gets one from its ICICLE's package list; a target image whose OS
//! plugin wrote none (its conversion read the base as it was) gets its base's packages.

use std::io::Read;
use std::path::Path;

use serde_json::{json, Value};

use crate::image::ImageRecord;

pub use imagefactory_plugin_api::sbom::{document, package_json, spdx_id, FILE_NAME, IMAGE_SPDX_ID};
use imagefactory_plugin_api::sbom::{purl_encode, Package};

/// The document's namespace: unique per image. `.invalid` is a reserved name that is
/// never a real host (RFC 2606).
pub fn namespace(image_id: &str) -> String {
    format!("https://imagefactory.invalid/spdxdocs/{image_id}")
}

/// The SHA-256 of a file, read in 1 MiB pieces (images are gigabytes).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    digest_file(path, &ring::digest::SHA256)
}

fn digest_file(path: &Path, algorithm: &'static ring::digest::Algorithm) -> std::io::Result<String> {
    let mut f = std::fs::File::open(path)?;
    let mut ctx = ring::digest::Context::new(algorithm);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        ctx.update(&buf[..n]);
    }
    Ok(ctx.finish().as_ref().iter().map(|b| format!("{b:02x}")).collect())
}

/// The package entries of an ICICLE (`<package name="..."/>`), as SPDX packages. RPM
/// names (`name-version-release.arch`) of Red Hat family images become `pkg:rpm` purls;
/// anything else is a `pkg:generic` one.
pub fn packages_from_icicle(icicle: &str, os_name: &str) -> Vec<Value> {
    let namespace = match os_name.to_ascii_lowercase() {
        n if n.starts_with("fedora") => Some("fedora"),
        n if n.starts_with("rhel") => Some("redhat"),
        n if n.starts_with("centos") => Some("centos"),
        n if n.starts_with("rocky") => Some("rocky"),
        n if n.starts_with("alma") => Some("almalinux"),
        _ => None,
    };
    let Ok(doc) = roxmltree::Document::parse(icicle) else { return Vec::new() };
    let mut out = Vec::new();
    for (i, p) in doc.descendants().filter(|n| n.has_tag_name("package")).enumerate() {
        let Some(full) = p.attribute("name") else { continue };
        let rpm = namespace.and_then(|ns| split_rpm(full).map(|r| (ns, r)));
        let (name, version, purl) = match rpm {
            Some((ns, (name, version, arch))) => (
                name.to_string(),
                Some(version.to_string()),
                format!("pkg:rpm/{ns}/{}@{}?arch={arch}", purl_encode(name), purl_encode(version)),
            ),
            None => (full.to_string(), None, format!("pkg:generic/{}", purl_encode(full))),
        };
        let p = Package { name, version, license: None, purl };
        out.push(package_json(&spdx_id("Package", &format!("{i}-{}", p.name)), &p));
    }
    out
}

/// `name-version-release.arch` -> (name, version-release, arch).
fn split_rpm(full: &str) -> Option<(&str, &str, &str)> {
    let (nvr, arch) = full.rsplit_once('.')?;
    let (nv, _release) = nvr.rsplit_once('-')?;
    let (name, _version) = nv.rsplit_once('-')?;
    Some((name, &nvr[name.len() + 1..], arch))
}

/// A document holding already-made package entries (from an ICICLE, or a base's).
pub fn with_packages(packages: Vec<Value>) -> Value {
    let mut doc = document(&[], &[]);
    doc["packages"] = Value::Array(packages);
    doc
}

/// The base image a target's document refers to.
pub struct BaseRef<'a> {
    pub image_id: &'a str,
    /// The SHA-1 of the base's `sbom.spdx.json` as stored (SPDX's external reference
    /// checksum).
    pub document_sha1: String,
}

impl BaseRef<'_> {
    /// The SHA-1 of a stored document, for [`BaseRef::document_sha1`].
    pub fn sha1_of(path: &Path) -> std::io::Result<String> {
        digest_file(path, &ring::digest::SHA1_FOR_LEGACY_USE_ONLY)
    }
}

/// Completes a document for image `rec` whose body has SHA-256 `sha256`: the image as
/// the described package containing every other package, the document's identity and
/// creation, and for a target image the reference to its base's document.
pub fn finish(mut doc: Value, rec: &ImageRecord, image_name: &str, sha256: &str, base: Option<&BaseRef>) -> Value {
    let kind = rec.kind.singular().replace('_', " ");
    doc["spdxVersion"] = "SPDX-2.3".into();
    doc["dataLicense"] = "CC0-1.0".into();
    doc["SPDXID"] = "SPDXRef-DOCUMENT".into();
    doc["name"] = format!("{image_name} {kind} {}", rec.identifier).into();
    doc["documentNamespace"] = namespace(&rec.identifier).into();
    let created = chrono_like_utc(rec.created);
    doc["creationInfo"] = json!({"created": created, "creators": [format!("Tool: imagefactory-{}", crate::VERSION)]});
    let mut packages: Vec<Value> = doc["packages"].as_array().cloned().unwrap_or_default();
    packages.retain(|p| p["SPDXID"] != IMAGE_SPDX_ID);
    let contained: Vec<String> = packages.iter().filter_map(|p| p["SPDXID"].as_str().map(str::to_string)).collect();
    let mut image = json!({
        "SPDXID": IMAGE_SPDX_ID,
        "name": image_name,
        "versionInfo": rec.identifier,
        "downloadLocation": "NOASSERTION",
        "filesAnalyzed": false,
        "checksums": [{"algorithm": "SHA256", "checksumValue": sha256}],
        "licenseConcluded": "NOASSERTION",
        "licenseDeclared": "NOASSERTION",
        "copyrightText": "NOASSERTION",
        "primaryPackagePurpose": "OPERATING-SYSTEM",
        "comment": format!("The {kind}'s disk as stored by imagefactory ({})", rec.target.as_deref().unwrap_or("base")),
    });
    if let Some(t) = &rec.target {
        image["summary"] = format!("{t} target image").into();
    }
    packages.insert(0, image);
    doc["packages"] = Value::Array(packages);
    let mut relationships = vec![json!({
        "spdxElementId": "SPDXRef-DOCUMENT", "relationshipType": "DESCRIBES", "relatedSpdxElement": IMAGE_SPDX_ID
    })];
    relationships.extend(
        contained
            .iter()
            .map(|c| json!({"spdxElementId": IMAGE_SPDX_ID, "relationshipType": "CONTAINS", "relatedSpdxElement": c})),
    );
    doc.as_object_mut().map(|o| o.remove("externalDocumentRefs"));
    if let Some(b) = base {
        doc["externalDocumentRefs"] = json!([{
            "externalDocumentId": "DocumentRef-base-image",
            "spdxDocument": namespace(b.image_id),
            "checksum": {"algorithm": "SHA1", "checksumValue": b.document_sha1},
        }]);
        relationships.push(json!({
            "spdxElementId": IMAGE_SPDX_ID,
            "relationshipType": "GENERATED_FROM",
            "relatedSpdxElement": format!("DocumentRef-base-image:{IMAGE_SPDX_ID}"),
        }));
    }
    doc["relationships"] = Value::Array(relationships);
    doc
}

/// The packages of a base image's document (the image's own entry left out), for a
/// target image made without changes to its packages.
pub fn packages_of(doc: &Value) -> Vec<Value> {
    doc["packages"]
        .as_array()
        .map(|p| p.iter().filter(|p| p["SPDXID"] != IMAGE_SPDX_ID).cloned().collect())
        .unwrap_or_default()
}

/// Unix seconds as SPDX's `YYYY-MM-DDThh:mm:ssZ`.
fn chrono_like_utc(unix: u64) -> String {
    let days = unix / 86_400;
    let secs = unix % 86_400;
    // Civil from days (Howard Hinnant's algorithm), for 1970 onwards.
    let z = days as i64 + 719_468;
    let era = z / 146_097;
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = if m <= 2 { y + 1 } else { y };
    format!("{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z", secs / 3600, secs % 3600 / 60, secs % 60)
}

/// The packages a document lists, by name (for tests and checks).
pub fn package_names(doc: &Value) -> Vec<String> {
    packages_of(doc).iter().filter_map(|p| p["name"].as_str().map(str::to_string)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::image::ImageKind;

    #[test]
    fn dates_are_spdx_utc() {
        assert_eq!(chrono_like_utc(0), "1970-01-01T00:00:00Z");
        assert_eq!(chrono_like_utc(1_796_585_336), "2026-12-06T19:28:56Z");
        assert_eq!(chrono_like_utc(951_782_400), "2000-02-29T00:00:00Z");
    }

    #[test]
    fn rpm_names_become_rpm_purls() {
        let icicle =
            r#"<icicle><packages><package name="bash-5.2.26-3.fc40.x86_64"/><package name="odd"/></packages></icicle>"#;
        let p = packages_from_icicle(icicle, "Fedora");
        assert_eq!(p[0]["name"], "bash");
        assert_eq!(p[0]["versionInfo"], "5.2.26-3.fc40");
        assert_eq!(p[0]["externalRefs"][0]["referenceLocator"], "pkg:rpm/fedora/bash@5.2.26-3.fc40?arch=x86_64");
        assert_eq!(p[1]["externalRefs"][0]["referenceLocator"], "pkg:generic/odd");
        let generic = packages_from_icicle(icicle, "MockOS_A");
        assert_eq!(generic[0]["externalRefs"][0]["referenceLocator"], "pkg:generic/bash-5.2.26-3.fc40.x86_64");
    }

    #[test]
    fn finish_describes_the_image_and_links_the_base() {
        let mut rec = ImageRecord::new(ImageKind::TargetImage, "t-1".into(), "/s/t-1.body".into());
        rec.target = Some("ec2".into());
        let doc =
            with_packages(packages_from_icicle(r#"<icicle><packages><package name="a"/></packages></icicle>"#, "x"));
        let base = BaseRef { image_id: "b-1", document_sha1: "00".repeat(20) };
        let d = finish(doc, &rec, "demo", &"ab".repeat(32), Some(&base));
        assert_eq!(d["packages"][0]["SPDXID"], IMAGE_SPDX_ID);
        assert_eq!(d["packages"][0]["checksums"][0]["checksumValue"], "ab".repeat(32));
        assert_eq!(d["documentNamespace"], namespace("t-1"));
        let rels = d["relationships"].as_array().unwrap();
        assert!(rels.iter().any(|r| r["relationshipType"] == "CONTAINS"));
        assert!(rels.iter().any(|r| r["relationshipType"] == "GENERATED_FROM"
            && r["relatedSpdxElement"] == "DocumentRef-base-image:SPDXRef-Image"));
        assert_eq!(package_names(&d), vec!["a".to_string()]);
    }
}
