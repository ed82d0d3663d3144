//! The RHEV-M provider definition and credentials, in the original's shapes.
//!
//! Provider (JSON or XML), the original's keys: `api-url`, `nfs-host`, `nfs-path`,
//! `nfs-dir`, `cluster` (`_any_`), `timeout`. Here `nfs-dir` is required and used
//! directly: the directory where the NFS export storage domain is mounted (the original
//! mounted `nfs-host:nfs-path` there itself; this plugin never mounts anything, so mount
//! it first, or give a local directory). `storage_domain` (a domain UUID) picks one when
//! the directory holds several. `api-url`, `nfs-host`, `nfs-path`, `cluster` are recorded
//! for the import step, which this plugin leaves to the engine (see the crate docs).
//!
//! Credentials: `<provider_credentials><rhevm_credentials><username/><password/>`; read
//! and checked for shape, used only by the (unimplemented) API import.

use std::path::PathBuf;

use cloudkit::provider::ProviderDoc;

/// A parsed provider definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    pub nfs_dir: PathBuf,
    pub storage_domain: Option<String>,
    pub api_url: Option<String>,
    pub nfs_host: Option<String>,
    pub nfs_path: Option<String>,
    pub cluster: String,
    pub timeout: Option<u64>,
}

/// Why a definition or credentials cannot be used. One line, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("RHEV-M provider definition: {0}")]
    Definition(String),
    #[error("RHEV-M credentials: {0}")]
    Credentials(String),
}

/// Reads a provider definition.
pub fn parse(definition: &str) -> Result<Provider, ProviderError> {
    let def = ProviderError::Definition;
    let doc = ProviderDoc::parse(definition).map_err(|e| def(e.0))?;
    if doc.fields.is_empty() {
        return Err(def(format!(
            "'{}' is a name; RHEV-M needs a JSON or XML definition with nfs-dir",
            doc.name.unwrap_or_default()
        )));
    }
    if doc.fields.contains_key("password") {
        return Err(def("a password cannot be given here (definitions are stored); put it in the credentials".into()));
    }
    let nfs_dir = PathBuf::from(
        doc.require("nfs-dir", "the directory where the export storage domain is mounted").map_err(|e| def(e.0))?,
    );
    if !nfs_dir.is_absolute() {
        return Err(def(format!("nfs-dir must be an absolute path, not {}", nfs_dir.display())));
    }
    let timeout = match doc.str("timeout") {
        None => None,
        Some(t) => Some(t.parse::<u64>().map_err(|_| def(format!("timeout must be a number of seconds, not {t}")))?),
    };
    let storage_domain = doc.str("storage_domain");
    if let Some(sd) = &storage_domain {
        if !is_uuid(sd) {
            return Err(def(format!("storage_domain must be a domain UUID, not {sd}")));
        }
    }
    Ok(Provider {
        nfs_dir,
        storage_domain,
        api_url: doc.str("api-url"),
        nfs_host: doc.str("nfs-host"),
        nfs_path: doc.str("nfs-path"),
        cluster: doc.str("cluster").unwrap_or_else(|| "_any_".into()),
        timeout,
    })
}

/// Whether `s` looks like a UUID (8-4-4-4-12 hex digits).
pub fn is_uuid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts.iter().zip([8, 4, 4, 4, 12]).all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Checks the credentials document's shape; returns the user name when it has one.
pub fn credentials(xml: &str) -> Result<Option<String>, ProviderError> {
    let values =
        cloudkit::credentials::section(xml, "rhevm_credentials").map_err(|e| ProviderError::Credentials(e.0))?;
    Ok(values.get("username").filter(|u| !u.is_empty()).map(|u| u.expose().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_keys_and_errors() {
        let p = parse(
            r#"{"api-url": "https://rhevm.example.com/api", "nfs-host": "nfs.example.com", "nfs-path": "/export",
                "nfs-dir": "/mnt/rhevm-export", "cluster": "Default", "timeout": 1800}"#,
        )
        .unwrap();
        assert_eq!(p.nfs_dir, PathBuf::from("/mnt/rhevm-export"));
        assert_eq!((p.cluster.as_str(), p.timeout), ("Default", Some(1800)));
        let x = parse("<provider><nfs-dir>/srv/export</nfs-dir></provider>").unwrap();
        assert_eq!(x.cluster, "_any_");
        for (bad, want) in [
            ("rhevm1", "is a name"),
            (r#"{"nfs-host": "h"}"#, "nfs-dir is missing"),
            (r#"{"nfs-dir": "relative"}"#, "absolute"),
            (r#"{"nfs-dir": "/x", "password": "pw9"}"#, "cannot be given here"),
            (r#"{"nfs-dir": "/x", "storage_domain": "nope"}"#, "domain UUID"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains("pw9"), "{bad}: {e}");
        }
        assert!(is_uuid("0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0"));
        assert_eq!(
            credentials("<provider_credentials><rhevm_credentials><username>admin@internal</username><password>x</password></rhevm_credentials></provider_credentials>").unwrap(),
            Some("admin@internal".into())
        );
        assert!(credentials("<x/>").is_err());
    }
}
