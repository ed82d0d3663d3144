//! The HTTP agent the cloud plugins that speak HTTP themselves share (vSphere's SOAP API
//! and datastore, Glance and Keystone), and the TLS trust a provider definition sets.
//!
//! Real vCenters and private OpenStack clouds often serve certificates that no public
//! authority signed (VMCA, an in-house CA). The original's Python clients did not check
//! certificates at all; here they are checked, against the public roots plus, when the
//! provider definition names one, the provider's own CA:
//!
//! - `ca_certificate`: the CA (or the server's own certificate chain) as PEM, either the
//!   text itself or the path of a PEM file on the factory's host;
//! - `tls_verify`: `false` turns checking off (chain and host name; the handshake's
//!   signatures are still checked), as govc's `-k` does. The plugin logs a warning.
//!
//! Every agent has bounded timeouts and follows no redirect: a token or session cookie
//! must only ever go to the address it was meant for.

use std::sync::Arc;
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde_json::Value;

/// The provider definition's field holding the CA, as PEM text or a PEM file's path.
pub const CA_FIELD: &str = "ca_certificate";
/// The provider definition's field that turns certificate checking off.
pub const VERIFY_FIELD: &str = "tls_verify";

/// How long a connection may take to open.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long one read or write on an open connection may stall (Glance hashes a whole
/// upload before it answers; a datastore commits a disk before it does).
const IO_TIMEOUT: Duration = Duration::from_secs(300);

/// Which server certificates an agent accepts.
#[derive(Clone, Default)]
pub struct TlsTrust {
    /// CAs trusted on top of the public roots (from `ca_certificate`).
    extra_roots: Vec<CertificateDer<'static>>,
    /// `tls_verify: false`.
    unchecked: bool,
}

impl std::fmt::Debug for TlsTrust {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TlsTrust")
            .field("extra_roots", &self.extra_roots.len())
            .field("unchecked", &self.unchecked)
            .finish()
    }
}

impl PartialEq for TlsTrust {
    fn eq(&self, other: &TlsTrust) -> bool {
        self.unchecked == other.unchecked && self.extra_roots == other.extra_roots
    }
}

impl TlsTrust {
    /// Reads `ca_certificate` and `tls_verify` from a provider definition's fields (either
    /// may be absent). The error is one line naming the field.
    pub fn from_fields(ca: Option<&Value>, verify: Option<&Value>) -> Result<TlsTrust, String> {
        let checked = match verify {
            None => true,
            Some(Value::Bool(b)) => *b,
            Some(Value::String(s)) if matches!(s.trim(), "true" | "yes" | "1") => true,
            Some(Value::String(s)) if matches!(s.trim(), "false" | "no" | "0") => false,
            Some(v) => return Err(format!("{VERIFY_FIELD} must be true or false, not {v}")),
        };
        let extra_roots = match ca {
            None => Vec::new(),
            Some(Value::String(s)) if !s.trim().is_empty() => read_certificates(s.trim())?,
            Some(v) => return Err(format!("{CA_FIELD} must be PEM text or the path of a PEM file, not {v}")),
        };
        if !checked && !extra_roots.is_empty() {
            return Err(format!("give {CA_FIELD} or {VERIFY_FIELD} false, not both"));
        }
        Ok(TlsTrust { extra_roots, unchecked: !checked })
    }

    /// Whether certificate checking is off (the caller warns about it).
    pub fn is_unchecked(&self) -> bool {
        self.unchecked
    }

    fn client_config(&self) -> Result<rustls::ClientConfig, String> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS set-up: {e}"))?;
        let config = if self.unchecked {
            builder.dangerous().with_custom_certificate_verifier(Arc::new(Unchecked(provider))).with_no_client_auth()
        } else {
            let mut roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
            for cert in &self.extra_roots {
                roots.add(cert.clone()).map_err(|e| format!("{CA_FIELD}: a certificate cannot be a root ({e})"))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        };
        Ok(config)
    }
}

/// The PEM certificates of `ca`: the text itself when it holds a PEM block, else the
/// file it names.
fn read_certificates(ca: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let (bytes, from) = if ca.contains("-----BEGIN") {
        (ca.as_bytes().to_vec(), "the PEM text".to_string())
    } else {
        let bytes = std::fs::read(ca).map_err(|e| format!("{CA_FIELD}: cannot read {ca} ({e})"))?;
        (bytes, ca.to_string())
    };
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<_, _>>()
        .map_err(|e| format!("{CA_FIELD}: {from} is not valid PEM ({e})"))?;
    if certs.is_empty() {
        return Err(format!("{CA_FIELD}: {from} holds no PEM certificate"));
    }
    Ok(certs)
}

/// An agent for `product` (its User-Agent, e.g. `imagefactory-vsphere/1.0.0`) that trusts
/// what `trust` says.
pub fn agent(product: &str, trust: &TlsTrust) -> Result<ureq::Agent, String> {
    Ok(ureq::AgentBuilder::new()
        .timeout_connect(CONNECT_TIMEOUT)
        .timeout_read(IO_TIMEOUT)
        .timeout_write(IO_TIMEOUT)
        .redirects(0)
        .user_agent(product)
        .tls_config(Arc::new(trust.client_config()?))
        .build())
}

/// The one-line description of a transport failure, without the URL (callers name the
/// endpoint themselves). A refused certificate says how to trust it.
pub fn transport_detail(t: &ureq::Transport) -> String {
    let mut parts = vec![t.kind().to_string()];
    if let Some(m) = t.message() {
        parts.push(m.to_string());
    }
    let mut source = std::error::Error::source(t);
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    let mut line = parts.join(": ").split_whitespace().collect::<Vec<_>>().join(" ");
    if line.contains("invalid peer certificate") {
        line.push_str(&format!(
            " (give the server's CA as {CA_FIELD} in the provider definition, or {VERIFY_FIELD} false)"
        ));
    }
    line
}

/// `tls_verify: false`: any chain and name, but the handshake's signatures are still
/// checked, so the server must hold the key of the certificate it shows.
#[derive(Debug)]
struct Unchecked(Arc<CryptoProvider>);

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A throwaway self-signed certificate (not a secret: no key goes with it).
    const PEM: &str = "-----BEGIN CERTIFICATE-----
MIIBmTCCAT+gAwIBAgIUOAgPt9JG8RUbmqntxTIySzs+MfgwCgYIKoZIzj0EAwIw
ITEfMB0GA1UEAwwWaW1hZ2VmYWN0b3J5IHRlc3Qgcm9vdDAgFw0yNjExMjYwNDMz
NTNaGA8yMTI2MTEwMjA0MzM1M1owITEfMB0GA1UEAwwWaW1hZ2VmYWN0b3J5IHRl
c3Qgcm9vdDBZMBMGByqGSM49AgEGCCqGSM49AwEHA0IABJTNGuZfDsNeDy6q2Gqt
KGJZqow4ZlX/HIPh0nOVk6qoOQrXZboquKl1Q2ag+fOyVAAGK9WKuV+cVPtOQpI8
hFGjUzBRMB0GA1UdDgQWBBQPDZ/pfMJYf8TjUgvsBuWkjWEwHDAfBgNVHSMEGDAW
gBQPDZ/pfMJYf8TjUgvsBuWkjWEwHDAPBgNVHRMBAf8EBTADAQH/MAoGCCqGSM49
BAMCA0gAMEUCIDL9WlAiRWrrETbp9sG6kNIo1VS/wJBVecv7FF/I7aPkAiEA2t3R
z/DebEbXmuIPb1HCaWmRHTGEYii4o8AiLN9i2G0=
-----END CERTIFICATE-----
";

    #[test]
    fn reads_the_fields() {
        let t = TlsTrust::from_fields(None, None).unwrap();
        assert!(!t.is_unchecked());
        assert!(t.extra_roots.is_empty());
        assert!(TlsTrust::from_fields(None, Some(&json!(false))).unwrap().is_unchecked());
        assert!(TlsTrust::from_fields(None, Some(&json!("false"))).unwrap().is_unchecked());
        assert!(!TlsTrust::from_fields(None, Some(&json!("true"))).unwrap().is_unchecked());
        let inline = TlsTrust::from_fields(Some(&json!(PEM)), None).unwrap();
        assert_eq!(inline.extra_roots.len(), 1);
        let dir = std::env::temp_dir().join(format!("cloudkit-http-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("ca.pem");
        std::fs::write(&file, PEM).unwrap();
        let from_file = TlsTrust::from_fields(Some(&json!(file.to_str().unwrap())), None).unwrap();
        assert_eq!(from_file, inline);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn bad_fields_get_one_line() {
        for (ca, verify, want) in [
            (None, Some(json!("maybe")), "tls_verify must be true or false"),
            (Some(json!(7)), None, "ca_certificate must be PEM text or the path"),
            (Some(json!("/nonexistent/ca.pem")), None, "cannot read /nonexistent/ca.pem"),
            (Some(json!("-----BEGIN CERTIFICATE-----\n!!\n-----END CERTIFICATE-----\n")), None, "not valid PEM"),
            (Some(json!(PEM)), Some(json!(false)), "not both"),
        ] {
            let msg = TlsTrust::from_fields(ca.as_ref(), verify.as_ref()).unwrap_err();
            assert!(msg.contains(want), "{msg}");
            assert!(!msg.contains('\n'), "{msg}");
        }
    }

    #[test]
    fn agents_build_for_every_trust() {
        for trust in [
            TlsTrust::default(),
            TlsTrust::from_fields(None, Some(&json!(false))).unwrap(),
            TlsTrust::from_fields(Some(&json!(PEM)), None).unwrap(),
        ] {
            agent("imagefactory-test/0", &trust).unwrap();
        }
    }
}
