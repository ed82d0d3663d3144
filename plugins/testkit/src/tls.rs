//! A private certificate authority for tests of HTTPS services on loopback: a CA and a
//! server certificate for `127.0.0.1` that it signed, made with the `openssl` command
//! (scripts/setup.sh installs it), as a vCenter's VMCA or a private cloud's CA would be.

use std::path::{Path, PathBuf};
use std::process::Command;

/// A CA and one server certificate for `127.0.0.1`, as PEM files in a temporary
/// directory (removed on drop).
pub struct LocalCa {
    _dir: tempfile::TempDir,
    /// The CA certificate: what a client trusts.
    pub ca_pem: PathBuf,
    /// The server's certificate, signed by the CA, with `IP:127.0.0.1` as its name.
    pub server_pem: PathBuf,
    /// The server certificate's private key.
    pub server_key: PathBuf,
}

impl LocalCa {
    /// Makes the CA and the server certificate (valid for two days).
    pub fn new() -> LocalCa {
        let dir = tempfile::Builder::new().prefix("local-ca-").tempdir().expect("a temp dir");
        let d = dir.path();
        let ec_key = "-newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes";
        openssl(
            d,
            &format!("req -x509 {ec_key} -keyout ca.key -out ca.pem -days 2"),
            &[
                "-subj",
                "/CN=imagefactory test CA",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        );
        openssl(d, &format!("req {ec_key} -keyout server.key -out server.csr"), &["-subj", "/CN=127.0.0.1"]);
        std::fs::write(
            d.join("server.ext"),
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1\n",
        )
        .expect("write server.ext");
        openssl(
            d,
            "x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2",
            &["-extfile", "server.ext"],
        );
        LocalCa {
            ca_pem: d.join("ca.pem"),
            server_pem: d.join("server.pem"),
            server_key: d.join("server.key"),
            _dir: dir,
        }
    }
}

impl Default for LocalCa {
    fn default() -> LocalCa {
        LocalCa::new()
    }
}

/// Runs `openssl` in `dir` with `args` (split at spaces) and then `more` (kept whole:
/// subjects and extensions hold spaces).
fn openssl(dir: &Path, args: &str, more: &[&str]) {
    let out = Command::new("openssl")
        .args(args.split_whitespace())
        .args(more)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package openssl; run scripts/setup.sh)");
    assert!(out.status.success(), "openssl {args} failed: {}", String::from_utf8_lossy(&out.stderr).trim());
}
