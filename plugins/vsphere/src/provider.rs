//! The vSphere provider definition and credentials, in the original's shapes.
//!
//! Provider (JSON object or XML document, keys as the original's):
//! `{"api-url": "https://vcenter.example.com/sdk", "datastore": "datastore1",
//!   "network_name": "VM Network", "compute_resource": "Cluster1"}`
//! plus, optionally, `datacenter` (needed when the server has more than one),
//! `username` (used when the credentials carry none, as the original did) and `endpoint`, a
//! URL that overrides `api-url` (the tests' simulator on a random loopback port).
//! The server's certificate is checked against the public roots; `ca_certificate` (PEM
//! text or a PEM file's path) adds the vCenter's own CA, and `tls_verify: false` turns the
//! check off (see `cloudkit::http`).
//! `compute_resource` may be left out when the datacenter has exactly one; `network_name`
//! may be left out for a VM without a network card. A `password` in the definition is
//! refused: definitions are stored with the image, so a password goes in the credentials.
//!
//! Credentials: `<provider_credentials><vsphere_credentials><username>…</username>
//! <password>…</password></vsphere_credentials></provider_credentials>`.

use cloudkit::http::{self, TlsTrust};
use cloudkit::provider::ProviderDoc;
use cloudkit::Secret;

/// A parsed provider definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    /// `scheme://host[:port]`: the SOAP API is at `<base>/sdk`, datastores at `<base>/folder`.
    pub base: String,
    pub datastore: String,
    pub datacenter: Option<String>,
    pub compute_resource: Option<String>,
    pub network_name: Option<String>,
    pub username: Option<String>,
    /// Which server certificates are accepted.
    pub trust: TlsTrust,
}

/// Why a provider definition or credentials cannot be used. One line, never a secret.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProviderError {
    #[error("vSphere provider definition: {0}")]
    Definition(String),
    #[error("vSphere credentials: {0}")]
    Credentials(String),
}

/// The user and password to log in with.
#[derive(Debug, Clone)]
pub struct Credentials {
    pub username: String,
    pub password: Secret,
}

/// Reads a provider definition.
pub fn parse(definition: &str) -> Result<Provider, ProviderError> {
    let def = |m: String| ProviderError::Definition(m);
    let doc = ProviderDoc::parse(definition).map_err(|e| def(e.0))?;
    if doc.fields.is_empty() {
        return Err(def(format!(
            "'{}' is a name; vSphere needs a JSON or XML definition with api-url and datastore",
            doc.name.unwrap_or_default()
        )));
    }
    if doc.fields.contains_key("password") {
        return Err(def("a password cannot be given here (definitions are stored); put it in the credentials".into()));
    }
    let url = match doc.endpoint().map_err(|e| def(e.0))? {
        Some(e) => e,
        None => {
            doc.require("api-url", "the vSphere API URL, e.g. https://vcenter.example.com/sdk").map_err(|e| def(e.0))?
        }
    };
    Ok(Provider {
        base: base_url(&url).map_err(def)?,
        datastore: doc.require("datastore", "the datastore the disk is uploaded to").map_err(|e| def(e.0))?,
        datacenter: doc.str("datacenter"),
        compute_resource: doc.str("compute_resource"),
        network_name: doc.str("network_name"),
        username: doc.str("username"),
        trust: TlsTrust::from_fields(doc.fields.get(http::CA_FIELD), doc.fields.get(http::VERIFY_FIELD))
            .map_err(def)?,
    })
}

/// `scheme://host[:port]` of an API URL (`https://vc/sdk`, `vc.example.com`, ...).
fn base_url(raw: &str) -> Result<String, String> {
    let with_scheme = if raw.contains("://") { raw.to_string() } else { format!("https://{raw}") };
    let u = url::Url::parse(&with_scheme).map_err(|e| format!("api-url '{raw}' is not a URL ({e})"))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(format!("api-url '{raw}' must be an http or https URL"));
    }
    if !u.username().is_empty() || u.password().is_some() {
        return Err("api-url must not carry a user or password: put them in the credentials".into());
    }
    let host = u.host_str().filter(|h| !h.is_empty()).ok_or_else(|| format!("api-url '{raw}' has no host"))?;
    Ok(match u.port() {
        Some(p) => format!("{}://{host}:{p}", u.scheme()),
        None => format!("{}://{host}", u.scheme()),
    })
}

/// Reads the credentials document; the user name may come from the provider instead.
pub fn credentials(xml: &str, provider: &Provider) -> Result<Credentials, ProviderError> {
    let cred = |m: String| ProviderError::Credentials(m);
    let values = cloudkit::credentials::section(xml, "vsphere_credentials").map_err(|e| cred(e.0))?;
    let username = match values.get("username").filter(|u| !u.is_empty()) {
        Some(u) => u.expose().to_string(),
        None => provider
            .username
            .clone()
            .ok_or_else(|| cred("<username> is missing from <vsphere_credentials> and the provider".into()))?,
    };
    let password =
        cloudkit::credentials::required(&values, "password", "vsphere_credentials").map_err(|e| cred(e.0))?.clone();
    Ok(Credentials { username, password })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_shapes_and_endpoint_override() {
        let p = parse(
            r#"{"api-url": "https://vc.example.com/sdk", "datastore": "ds1", "network_name": "VM Network",
                "compute_resource": "C1", "username": "admin"}"#,
        )
        .unwrap();
        assert_eq!(p.base, "https://vc.example.com");
        assert_eq!((p.datastore.as_str(), p.compute_resource.as_deref()), ("ds1", Some("C1")));
        let p = parse(r#"{"api-url": "https://vc/sdk", "endpoint": "http://127.0.0.1:4000/sdk", "datastore": "d"}"#)
            .unwrap();
        assert_eq!(p.base, "http://127.0.0.1:4000");
        let x = parse("<provider><api-url>vc.example.com:8443</api-url><datastore>d</datastore></provider>").unwrap();
        assert_eq!(x.base, "https://vc.example.com:8443");
        assert!(!x.trust.is_unchecked());
        let k =
            parse("<provider><api-url>vc</api-url><datastore>d</datastore><tls_verify>false</tls_verify></provider>")
                .unwrap();
        assert!(k.trust.is_unchecked());
    }

    #[test]
    fn bad_definitions_and_credentials_are_one_line_without_secrets() {
        for (text, want) in [
            ("vsphere-east", "is a name"),
            (r#"{"datastore": "d"}"#, "api-url is missing"),
            (r#"{"api-url": "https://vc/sdk"}"#, "datastore is missing"),
            (r#"{"api-url": "https://vc", "datastore": "d", "password": "pw1"}"#, "cannot be given here"),
            (r#"{"api-url": "ftp://vc", "datastore": "d"}"#, "http or https"),
            (r#"{"api-url": "https://vc", "datastore": "d", "tls_verify": "perhaps"}"#, "tls_verify must be"),
            (r#"{"api-url": "https://vc", "datastore": "d", "ca_certificate": "/nonexistent.pem"}"#, "cannot read"),
        ] {
            let e = parse(text).unwrap_err().to_string();
            assert!(e.contains(want) && !e.contains("pw1") && !e.contains('\n'), "{text}: {e}");
        }
        let p = parse(r#"{"api-url": "https://vc", "datastore": "d", "username": "fallback"}"#).unwrap();
        let c = credentials(
            "<provider_credentials><vsphere_credentials><password>pw2</password></vsphere_credentials></provider_credentials>",
            &p,
        )
        .unwrap();
        assert_eq!((c.username.as_str(), c.password.expose()), ("fallback", "pw2"));
        let e = credentials("<provider_credentials><vsphere_credentials><username>u</username></vsphere_credentials></provider_credentials>", &p)
            .unwrap_err()
            .to_string();
        assert!(e.contains("<password> is missing"), "{e}");
    }
}
