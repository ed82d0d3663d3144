//! HTTPS for the daemon.
//!
//! The original `imagefactoryd` served its REST API over HTTPS by default: `--ssl_pem FILE`
//! named a PEM file holding the certificate chain and the private key, the default `*` meant
//! "make a throw-away self-signed certificate at start", and `--no_ssl` meant plain HTTP.
//! This module covers the two HTTPS cases: [`server_config`] turns a [`TlsSource`] into a
//! rustls configuration, which `api::server::serve` serves an axum `Router` with.
//!
//! Only the `ring` crypto provider is used, passed explicitly, so the result never depends
//! on which providers other crates happen to enable (aws-lc-rs also needs cmake and nasm
//! to build).
//!
//! Only TLS 1.2 and TLS 1.3 are offered: `with_safe_default_protocol_versions` is exactly
//! those two, and rustls implements nothing older (no SSLv3, TLS 1.0 or 1.1), so a client
//! asking for an older version fails its handshake with a `protocol_version` alert.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::{self, PemObject};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

/// Where the server's certificate and key come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TlsSource {
    /// A certificate made at start and never written anywhere (the original's `--ssl_pem '*'`).
    SelfSigned,
    /// A PEM file holding the certificate chain (leaf first) and its private key.
    PemFile(PathBuf),
}

/// Why no TLS configuration could be made. Each message is one line a user can act on.
#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("cannot read the TLS PEM file {}: {source}", path.display())]
    Unreadable { path: PathBuf, source: std::io::Error },
    #[error("the TLS PEM file {} is not valid PEM: {reason}", path.display())]
    MalformedPem { path: PathBuf, reason: String },
    #[error("no certificate in the TLS PEM file {}", path.display())]
    NoCertificate { path: PathBuf },
    #[error("no private key in the TLS PEM file {}", path.display())]
    NoPrivateKey { path: PathBuf },
    #[error("the private key in {} does not match its certificate", path.display())]
    KeyMismatch { path: PathBuf },
    #[error("the certificate or key in {} cannot be used: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    #[error("cannot make a self-signed TLS certificate: {0}")]
    SelfSigned(String),
}

/// Builds the rustls server configuration for `source`.
pub fn server_config(source: &TlsSource) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let (certs, key, label) = match source {
        TlsSource::SelfSigned => {
            let names = self_signed_names();
            tracing::info!(?names, "using a transient self-signed TLS certificate");
            let (cert, key) = self_signed(&names)?;
            (vec![cert], key, PathBuf::from("<self-signed>"))
        }
        TlsSource::PemFile(path) => {
            let (certs, key) = read_pem_file(path)?;
            (certs, key, path.clone())
        }
    };
    config_from(certs, key, label)
}

/// The names the self-signed certificate is valid for: what a client on this machine or
/// on the network is likely to type.
fn self_signed_names() -> Vec<String> {
    let mut names = vec!["localhost".to_string(), "127.0.0.1".to_string(), "::1".to_string()];
    if let Some(host) = hostname() {
        if !names.contains(&host) {
            names.push(host);
        }
    }
    names
}

/// This machine's host name, if it can be read and is a plain DNS name.
fn hostname() -> Option<String> {
    let raw = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .or_else(|_| std::fs::read_to_string("/etc/hostname"))
        .ok()?;
    let name = raw.trim().to_ascii_lowercase();
    let plain = !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.');
    plain.then_some(name)
}

/// Makes a self-signed certificate for `names` (DNS names or IP addresses), with the first
/// name as its common name, and its private key.
fn self_signed(names: &[String]) -> Result<(CertificateDer<'static>, PrivateKeyDer<'static>), TlsError> {
    let error = |e: rcgen::Error| TlsError::SelfSigned(e.to_string());
    let mut params = rcgen::CertificateParams::new(names.to_vec()).map_err(error)?;
    if let Some(first) = names.first() {
        params.distinguished_name.push(rcgen::DnType::CommonName, first.as_str());
    }
    let key_pair = rcgen::KeyPair::generate().map_err(error)?;
    let cert = params.self_signed(&key_pair).map_err(error)?;
    let key = PrivatePkcs8KeyDer::from(key_pair.serialize_der());
    Ok((cert.der().clone(), PrivateKeyDer::Pkcs8(key)))
}

/// Reads a PEM file with certificates and one private key, in any order.
fn read_pem_file(path: &Path) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), TlsError> {
    let bytes = std::fs::read(path).map_err(|source| TlsError::Unreadable { path: path.to_path_buf(), source })?;
    let malformed = |e: pem::Error| TlsError::MalformedPem { path: path.to_path_buf(), reason: e.to_string() };

    let certs = CertificateDer::pem_slice_iter(&bytes).collect::<Result<Vec<_>, _>>().map_err(malformed)?;
    if certs.is_empty() {
        return Err(TlsError::NoCertificate { path: path.to_path_buf() });
    }
    let key = match PrivateKeyDer::from_pem_slice(&bytes) {
        Ok(key) => key,
        Err(pem::Error::NoItemsFound) => return Err(TlsError::NoPrivateKey { path: path.to_path_buf() }),
        Err(e) => return Err(malformed(e)),
    };
    Ok((certs, key))
}

/// The rustls configuration for one certificate chain and key. `label` names where they
/// came from, for error messages.
fn config_from(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    label: PathBuf,
) -> Result<Arc<rustls::ServerConfig>, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let unusable = |e: rustls::Error| TlsError::Unusable { path: label.clone(), reason: e.to_string() };
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(unusable)?
        .with_no_client_auth()
        // rustls compares the key with the certificate's public key here.
        .with_single_cert(certs, key)
        .map_err(|e| match e {
            rustls::Error::InconsistentKeys(rustls::InconsistentKeys::KeyMismatch) => {
                TlsError::KeyMismatch { path: label.clone() }
            }
            other => unusable(other),
        })?;
    // Only HTTP/1.1 is served (see `serve_connection`), so only that is offered.
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::server::{serve, Limits};
    use axum::extract::connect_info::ConnectInfo;
    use axum::routing::get;
    use axum::Router;
    use std::net::SocketAddr;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpListener, TcpStream};

    /// A certificate and key for `localhost`/127.0.0.1 as PEM text, made with rcgen.
    fn pem_pair() -> (String, String) {
        let made = rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .expect("rcgen makes a certificate");
        (made.cert.pem(), made.signing_key.serialize_pem())
    }

    fn write_file(dir: &tempfile::TempDir, name: &str, text: &str) -> PathBuf {
        let path = dir.path().join(name);
        std::fs::write(&path, text).expect("write test file");
        path
    }

    #[test]
    fn self_signed_config_builds() {
        let config = server_config(&TlsSource::SelfSigned).expect("self-signed config");
        assert_eq!(config.alpn_protocols, vec![b"http/1.1".to_vec()]);
    }

    #[tokio::test]
    async fn only_tls_1_2_and_1_3_are_accepted() {
        let (addr, cert, stop, _server) = start_server().await;
        // A client held to either version is served.
        for version in [&rustls::version::TLS12, &rustls::version::TLS13] {
            let response = https_get(&connector_with(cert.clone(), &[version]), addr, "localhost").await;
            assert!(response.ends_with("\r\n\r\nok"), "{version:?}: {response}");
        }
        // Nothing older is offered: the server takes the default list, which is these two
        // (rustls implements nothing older; the black-box test tries TLS 1.1 with openssl).
        let names: Vec<_> = rustls::DEFAULT_VERSIONS.iter().map(|v| v.version).collect();
        assert_eq!(names, vec![rustls::ProtocolVersion::TLSv1_3, rustls::ProtocolVersion::TLSv1_2]);
        let _ = stop.send(());
    }

    #[test]
    fn self_signed_names_cover_localhost_and_loopback() {
        let names = self_signed_names();
        assert!(names.contains(&"localhost".to_string()));
        assert!(names.contains(&"127.0.0.1".to_string()));
        if let Some(host) = hostname() {
            assert!(names.contains(&host));
        }
    }

    #[test]
    fn pem_file_with_cert_and_key_builds() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, key) = pem_pair();
        let path = write_file(&dir, "both.pem", &format!("{cert}{key}"));
        server_config(&TlsSource::PemFile(path)).expect("config from PEM file");

        // The key may also come first.
        let path = write_file(&dir, "key-first.pem", &format!("{key}{cert}"));
        server_config(&TlsSource::PemFile(path)).expect("config from PEM file, key first");
    }

    #[test]
    fn empty_file_has_no_certificate() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = write_file(&dir, "empty.pem", "");
        let err = server_config(&TlsSource::PemFile(path)).unwrap_err();
        assert!(matches!(err, TlsError::NoCertificate { .. }), "{err}");
        assert!(err.to_string().starts_with("no certificate in the TLS PEM file "));
    }

    #[test]
    fn certificate_without_key_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, _key) = pem_pair();
        let path = write_file(&dir, "cert-only.pem", &cert);
        let err = server_config(&TlsSource::PemFile(path)).unwrap_err();
        assert!(matches!(err, TlsError::NoPrivateKey { .. }), "{err}");
    }

    #[test]
    fn key_of_another_certificate_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let (cert, _) = pem_pair();
        let (_, other_key) = pem_pair();
        let path = write_file(&dir, "mismatch.pem", &format!("{cert}{other_key}"));
        let err = server_config(&TlsSource::PemFile(path)).unwrap_err();
        assert!(matches!(err, TlsError::KeyMismatch { .. }), "{err}");
    }

    #[test]
    fn missing_file_is_unreadable() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("nope.pem");
        let err = server_config(&TlsSource::PemFile(path.clone())).unwrap_err();
        assert!(matches!(err, TlsError::Unreadable { .. }), "{err}");
        assert!(err.to_string().contains(&path.display().to_string()));
    }

    /// A rustls client that trusts exactly `cert`.
    fn connector_trusting(cert: CertificateDer<'static>) -> tokio_rustls::TlsConnector {
        connector_with(cert, rustls::DEFAULT_VERSIONS)
    }

    /// A rustls client that trusts exactly `cert` and speaks only `versions`.
    fn connector_with(
        cert: CertificateDer<'static>,
        versions: &[&'static rustls::SupportedProtocolVersion],
    ) -> tokio_rustls::TlsConnector {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert).expect("add test root");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(versions)
            .expect("protocol versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        tokio_rustls::TlsConnector::from(Arc::new(config))
    }

    /// Sends one `GET /` over TLS and returns the whole raw response.
    async fn https_get(connector: &tokio_rustls::TlsConnector, addr: SocketAddr, server_name: &str) -> String {
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from(server_name.to_string()).expect("server name");
        let mut tls = connector.connect(name, tcp).await.expect("TLS handshake");
        tls.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").await.expect("send request");
        let mut response = Vec::new();
        tls.read_to_end(&mut response).await.expect("read response");
        String::from_utf8_lossy(&response).into_owned()
    }

    /// Starts `serve` with TLS on an ephemeral loopback port with a router whose `/` answers
    /// "ok" (only if `ConnectInfo` holds a loopback address), using a self-signed
    /// certificate whose DER is returned so clients can trust it.
    async fn start_server() -> (
        SocketAddr,
        CertificateDer<'static>,
        tokio::sync::oneshot::Sender<()>,
        tokio::task::JoinHandle<std::io::Result<()>>,
    ) {
        let names = vec!["localhost".to_string(), "127.0.0.1".to_string()];
        let (cert, key) = self_signed(&names).expect("self-signed");
        let config = config_from(vec![cert.clone()], key, PathBuf::from("test")).expect("config");
        let app = Router::new().route(
            "/",
            get(|ConnectInfo(peer): ConnectInfo<SocketAddr>| async move {
                if peer.ip().is_loopback() {
                    "ok"
                } else {
                    "wrong peer"
                }
            }),
        );
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(serve(listener, app, Some(config), Limits::default(), async move {
            let _ = stopped.await;
        }));
        (addr, cert, stop, server)
    }

    #[tokio::test]
    async fn serves_the_router_over_tls() {
        let (addr, cert, stop, server) = start_server().await;
        let connector = connector_trusting(cert);

        // Both the DNS name and the IP address in the certificate are accepted.
        for name in ["localhost", "127.0.0.1"] {
            let response = https_get(&connector, addr, name).await;
            assert!(response.starts_with("HTTP/1.1 200"), "{response}");
            assert!(response.ends_with("\r\n\r\nok"), "{response}");
        }

        stop.send(()).expect("server still running");
        let finished = tokio::time::timeout(Duration::from_secs(5), server).await.expect("server stops after shutdown");
        assert!(matches!(finished, Ok(Ok(()))));
    }

    #[tokio::test]
    async fn plain_http_on_the_tls_port_does_not_stop_the_server() {
        let (addr, cert, stop, _server) = start_server().await;

        let mut plain = TcpStream::connect(addr).await.expect("connect");
        plain.write_all(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n").await.expect("send plain request");
        let mut reply = Vec::new();
        // The server answers with at most a TLS alert and closes; never with "ok".
        let read = tokio::time::timeout(Duration::from_secs(5), plain.read_to_end(&mut reply))
            .await
            .expect("server closes the plain connection");
        assert!(read.is_ok() || reply.is_empty());
        assert!(!String::from_utf8_lossy(&reply).contains("ok"));

        // A client that does not trust the certificate fails its handshake; also harmless.
        let untrusting = connector_trusting(self_signed(&["localhost".to_string()]).expect("cert").0);
        let tcp = TcpStream::connect(addr).await.expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        assert!(untrusting.connect(name, tcp).await.is_err());

        let response = https_get(&connector_trusting(cert), addr, "localhost").await;
        assert!(response.ends_with("\r\n\r\nok"), "{response}");
        let _ = stop.send(());
    }
}
