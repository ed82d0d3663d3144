//! The root password, hashed on the build host before it goes into the kickstart
//! (`rootpw --iscrypted`). The plain text only travels on openssl's stdin: never in a
//! command line, a file, the kickstart kept with the image, the image or the log.

use std::io::Write;
use std::process::{Command, Stdio};

use crate::distro::PasswordHash;
use crate::error::RedHatError;

/// A crypt(3) hash of `password` with a fresh random salt, in the form the installer
/// understands (`$6$` SHA-512, or `$1$` MD5 for RHEL 5 and Fedora 7-9).
pub fn hash(password: &str, kind: PasswordHash) -> Result<String, RedHatError> {
    let (flag, prefix) = match kind {
        PasswordHash::Sha512 => ("-6", "$6$"),
        PasswordHash::Md5 => ("-1", "$1$"),
    };
    let mut child = Command::new("openssl")
        .args(["passwd", flag, "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|_| RedHatError::MissingTool("openssl", "openssl"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A failed write shows up as a missing hash below.
        let _ = stdin.write_all(format!("{password}\n").as_bytes());
    }
    let out = child.wait_with_output().map_err(|e| RedHatError::Guest(format!("openssl passwd: {e}")))?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !out.status.success() || !hash.starts_with(prefix) || hash.contains(char::is_whitespace) {
        return Err(RedHatError::Template(format!("openssl passwd {flag} did not print a {prefix} crypt hash")));
    }
    Ok(hash)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn salted_hashes_never_echo_the_password() {
        let a = hash("s3cret pw", PasswordHash::Sha512).unwrap();
        let b = hash("s3cret pw", PasswordHash::Sha512).unwrap();
        assert!(a.starts_with("$6$") && a != b, "{a} {b}");
        assert!(!a.contains("s3cret"));
        assert!(hash("x", PasswordHash::Md5).unwrap().starts_with("$1$"));
    }
}
