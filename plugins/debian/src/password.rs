//! The root password: hashed on the build host (SHA-512 crypt, `openssl passwd -6`) and
//! written into /etc/shadow as a hash. The plain text only ever travels on openssl's
//! stdin: never in a command line (visible in `ps`), a file, the image or the log.

use std::path::Path;
use std::process::Command;

use diskimage::process::{self, Options, Watch};
use diskimage::DiskError;

/// Hashes `password` with a fresh random salt.
pub fn hash(password: &str, watch: &dyn Watch) -> Result<String, DiskError> {
    let mut cmd = Command::new("openssl");
    cmd.args(["passwd", "-6", "-stdin"]);
    let out = process::run(
        "openssl passwd",
        cmd,
        Options { stdin: Some(format!("{password}\n").into_bytes()), capture_stdout: true, ..Default::default() },
        watch,
    )?;
    let hash = String::from_utf8_lossy(&out.stdout).trim().to_string();
    if !hash.starts_with("$6$") || hash.contains(':') || hash.contains('\n') {
        return Err(DiskError::Unexpected("openssl passwd -6 did not print a SHA-512 crypt hash".into()));
    }
    Ok(hash)
}

/// /etc/shadow with `user`'s password field replaced by `hash` and its last-change day
/// set to `today` (days since 1970), the other fields and lines untouched.
pub fn set_in_shadow(shadow: &str, user: &str, hash: &str, today: u64) -> Result<String, DiskError> {
    let mut found = false;
    let mut out = String::with_capacity(shadow.len() + hash.len());
    for line in shadow.lines() {
        let mut fields: Vec<&str> = line.split(':').collect();
        if fields.first() == Some(&user) && fields.len() >= 3 {
            found = true;
            let day = today.to_string();
            fields[1] = hash;
            fields[2] = &day;
            out.push_str(&fields.join(":"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    if !found {
        return Err(DiskError::Unexpected(format!("/etc/shadow has no entry for {user}")));
    }
    Ok(out)
}

/// Sets root's password in the tree at `root` to the hash of `password`.
pub fn set_root_password(root: &Path, password: &str, watch: &dyn Watch) -> Result<(), DiskError> {
    let hashed = hash(password, watch)?;
    let path = root.join("etc/shadow");
    let text = std::fs::read_to_string(&path).map_err(|e| DiskError::io("cannot read", &path, e))?;
    let today = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() / 86_400)
        .unwrap_or_default();
    let updated = set_in_shadow(&text, "root", &hashed, today)?;
    std::fs::write(&path, updated).map_err(|e| DiskError::io("cannot write", &path, e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use diskimage::process::Quiet;

    #[test]
    fn shadow_entry_is_replaced() {
        let shadow = "root:*:19000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n";
        let out = set_in_shadow(shadow, "root", "$6$salt$hash", 20000).unwrap();
        assert_eq!(out, "root:$6$salt$hash:20000:0:99999:7:::\ndaemon:*:19000:0:99999:7:::\n");
        assert!(set_in_shadow("daemon:*:1:0:99999:7:::\n", "root", "$6$x", 1).is_err());
    }

    #[test]
    fn hashing_is_salted_and_never_echoes_the_password() {
        let a = hash("s3cret-pw", &Quiet).unwrap();
        let b = hash("s3cret-pw", &Quiet).unwrap();
        assert!(a.starts_with("$6$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(!a.contains("s3cret-pw"));
    }

    #[test]
    fn root_password_lands_in_shadow_as_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        set_root_password(dir.path(), "hunter2-xyz", &Quiet).unwrap();
        let shadow = std::fs::read_to_string(dir.path().join("etc/shadow")).unwrap();
        assert!(shadow.starts_with("root:$6$"), "{shadow}");
        assert!(!shadow.contains("hunter2-xyz"));
    }
}
