//! SPDX documents checked by a real validator: pyspdxtools, from the spdx-tools PyPI
//! package that scripts/setup.sh installs in a venv under the services directory.

use std::path::{Path, PathBuf};
use std::process::Command;

/// The validator; fails loudly when setup has not installed it.
pub fn pyspdxtools() -> PathBuf {
    let tool = crate::services_dir().join("spdx/bin/pyspdxtools");
    assert!(tool.is_file(), "{} is missing: run scripts/setup.sh (PyPI package spdx-tools)", tool.display());
    tool
}

/// Panics with the validator's words unless `path` is a valid SPDX document.
pub fn assert_valid(path: &Path) {
    let out = Command::new(pyspdxtools()).arg("-i").arg(path).output().expect("run pyspdxtools");
    assert!(
        out.status.success(),
        "pyspdxtools refused {}:\n{}{}",
        path.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The package a document DESCRIBES.
pub fn described(doc: &serde_json::Value) -> &serde_json::Value {
    let rel = doc["relationships"].as_array().and_then(|r| r.iter().find(|r| r["relationshipType"] == "DESCRIBES"));
    let id = rel.and_then(|r| r["relatedSpdxElement"].as_str()).expect("a DESCRIBES relationship");
    doc["packages"].as_array().and_then(|p| p.iter().find(|p| p["SPDXID"] == id)).expect("the described package")
}

/// A tool's hex digest of a file (`sha256sum`, `sha1sum`).
pub fn digest(tool: &str, path: &Path) -> String {
    let out = Command::new(tool).arg(path).output().unwrap_or_else(|e| panic!("{tool}: {e}"));
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or_default().to_string()
}
