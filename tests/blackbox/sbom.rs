//! The SBOM every base and target image gets (`files/sbom.spdx.json`), with the test
//! plugins: valid SPDX 2.3 by a real validator (pyspdxtools from the spdx-tools PyPI
//! package, installed by scripts/setup.sh), the image as the described package with the
//! SHA-256 of its body, its ICICLE's packages, and a target's document generated from
//! its base's.

use std::path::PathBuf;

use imagefactory_blackbox::*;
use serde_json::{json, Value};
use testkit::spdx::{assert_valid as assert_valid_spdx, described, digest};

fn sbom(d: &Daemon, collection: &str, id: &str) -> (Value, PathBuf) {
    let r = d.get(&format!("/imagefactory/{collection}/{id}/files/sbom.spdx.json"));
    r.expect(200);
    (r.json(), d.storage().join(format!("{id}.files/sbom.spdx.json")))
}

#[test]
fn every_base_and_target_image_gets_a_valid_spdx_document() {
    let d = Daemon::start_default();
    let base = d.create_base(&mock_tdl(), json!({}));
    let rec = d.wait_complete(&base, "base_images");
    let (doc, path) = sbom(&d, "base_images", &base);
    assert_valid_spdx(&path);
    assert_eq!(doc["spdxVersion"], "SPDX-2.3");
    let image = described(&doc);
    assert_eq!(image["checksums"][0]["algorithm"], "SHA256");
    assert_eq!(image["checksums"][0]["checksumValue"], digest("sha256sum", &d.storage().join(format!("{base}.body"))));
    // Every package the ICICLE lists, each contained in the image, with a purl.
    let icicle = rec["icicle"].as_str().expect("an ICICLE");
    let packages: Vec<&Value> =
        doc["packages"].as_array().unwrap().iter().filter(|p| p["SPDXID"] != image["SPDXID"]).collect();
    let icicle_count = icicle.matches("<package ").count();
    assert!(icicle_count > 0, "{icicle}");
    assert_eq!(packages.len(), icicle_count, "{doc}");
    for p in &packages {
        assert!(icicle.contains(&format!("name=\"{}", p["name"].as_str().unwrap())), "{p} is not in {icicle}");
        assert!(p["externalRefs"][0]["referenceLocator"].as_str().is_some_and(|l| l.starts_with("pkg:")), "{p}");
        let contained = doc["relationships"].as_array().unwrap().iter().any(|r| {
            r["relationshipType"] == "CONTAINS"
                && r["spdxElementId"] == image["SPDXID"]
                && r["relatedSpdxElement"] == p["SPDXID"]
        });
        assert!(contained, "the image does not contain {}", p["SPDXID"]);
    }

    // The target's document: its own body's hash, generated from the base's document.
    let r =
        d.post_json("/imagefactory/target_images", &json!({"target_image": {"base_image_id": base, "target": "mock"}}));
    r.expect(202);
    let target = r.json()["target_image"]["id"].as_str().expect("an id").to_string();
    d.wait_complete(&target, "target_images");
    let (tdoc, tpath) = sbom(&d, "target_images", &target);
    assert_valid_spdx(&tpath);
    let timage = described(&tdoc);
    assert_eq!(
        timage["checksums"][0]["checksumValue"],
        digest("sha256sum", &d.storage().join(format!("{target}.body")))
    );
    assert_ne!(tdoc["documentNamespace"], doc["documentNamespace"]);
    let ext = &tdoc["externalDocumentRefs"][0];
    assert_eq!(ext["spdxDocument"], doc["documentNamespace"]);
    assert_eq!(ext["checksum"]["checksumValue"], digest("sha1sum", &path));
    let from = tdoc["relationships"].as_array().unwrap().iter().any(|r| {
        r["relationshipType"] == "GENERATED_FROM"
            && r["relatedSpdxElement"]
                == format!("{}:{}", ext["externalDocumentId"].as_str().unwrap(), image["SPDXID"].as_str().unwrap())
    });
    assert!(from, "the target's document is not generated from the base's: {}", tdoc["relationships"]);

    // A failed build has no SBOM.
    let failed = d.create_base(&mock_tdl(), json!({"mock_fail_at": "create_base_image"}));
    d.wait_status(&failed, "base_images", &["FAILED"], BUILD_TIMEOUT);
    assert_eq!(d.get(&format!("/imagefactory/base_images/{failed}/files/sbom.spdx.json")).status, 404);
}
