//! The root password: hashed on the build host (SHA-512 crypt, `openssl passwd -6`) and
//! written into /etc/shadow as a hash. The plain text only ever travels on openssl's
//! stdin: never in a command line (visible in `ps`), a file, the image or the log.
//!
//! A reproducible build gives the salt (from its build key, [`crate::seed`]) and the
//! day of the last change (from its SOURCE_DATE_EPOCH), so the same template makes the
//! same /etc/shadow; openssl would otherwise choose a random salt.

use std::path::Path;
use std::process::Command;

use diskimage::process::{self, Options, Watch};
use diskimage::DiskError;

/// Hashes `password` with `salt` (crypt's alphabet, at most 16 characters), or with a
/// fresh random salt when `None`.
pub fn hash(password: &str, salt: Option<&str>, watch: &dyn Watch) -> Result<String, DiskError> {
    let mut cmd = Command::new("openssl");
    cmd.args(["passwd", "-6"]);
    if let Some(salt) = salt {
        let ok = salt.len() <= 16 && salt.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'/');
        if !ok {
            return Err(DiskError::Unexpected("a crypt salt is at most 16 of [a-zA-Z0-9./]".into()));
        }
        cmd.args(["-salt", salt]);
    }
    cmd.arg("-stdin");
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

/// How a reproducible build hashes the password: the salt, and the moment of the change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fixed {
    pub salt: String,
    /// Seconds since 1970 (SOURCE_DATE_EPOCH); shadow keeps the day.
    pub epoch: u64,
}

/// Sets root's password in the tree at `root` to the hash of `password`: with `fixed`'s
/// salt and day, or a random salt and today.
pub fn set_root_password(
    root: &Path,
    password: &str,
    fixed: Option<&Fixed>,
    watch: &dyn Watch,
) -> Result<(), DiskError> {
    let hashed = hash(password, fixed.map(|f| f.salt.as_str()), watch)?;
    let path = root.join("etc/shadow");
    let text = std::fs::read_to_string(&path).map_err(|e| DiskError::io("cannot read", &path, e))?;
    let seconds = match fixed {
        Some(f) => f.epoch,
        None => {
            std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or_default()
        }
    };
    let updated = set_in_shadow(&text, "root", &hashed, seconds / 86_400)?;
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
        let a = hash("s3cret-pw", None, &Quiet).unwrap();
        let b = hash("s3cret-pw", None, &Quiet).unwrap();
        assert!(a.starts_with("$6$"), "{a}");
        assert_ne!(a, b, "each hash has its own salt");
        assert!(!a.contains("s3cret-pw"));
    }

    #[test]
    fn a_given_salt_makes_the_same_hash() {
        let a = hash("s3cret-pw", Some("abcdefgh./012345"), &Quiet).unwrap();
        assert!(a.starts_with("$6$abcdefgh./012345$"), "{a}");
        assert_eq!(a, hash("s3cret-pw", Some("abcdefgh./012345"), &Quiet).unwrap());
        assert_ne!(a, hash("other-pw", Some("abcdefgh./012345"), &Quiet).unwrap());
        assert!(hash("x", Some("bad salt"), &Quiet).is_err());
        assert!(hash("x", Some(&"a".repeat(17)), &Quiet).is_err());
    }

    #[test]
    fn root_password_lands_in_shadow_as_a_hash() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
        set_root_password(dir.path(), "hunter2-xyz", None, &Quiet).unwrap();
        let shadow = std::fs::read_to_string(dir.path().join("etc/shadow")).unwrap();
        assert!(shadow.starts_with("root:$6$"), "{shadow}");
        assert!(!shadow.contains("hunter2-xyz"));
    }

    #[test]
    fn a_fixed_salt_and_epoch_make_the_same_shadow() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        let fixed = Fixed { salt: "0123456789abcdef".into(), epoch: 1_768_039_644 };
        let mut shadows = Vec::new();
        for _ in 0..2 {
            std::fs::write(dir.path().join("etc/shadow"), "root:*:19000:0:99999:7:::\n").unwrap();
            set_root_password(dir.path(), "hunter2-xyz", Some(&fixed), &Quiet).unwrap();
            shadows.push(std::fs::read_to_string(dir.path().join("etc/shadow")).unwrap());
        }
        assert_eq!(shadows[0], shadows[1]);
        // 1768039644 s is in day 20463 since 1970.
        assert!(
            shadows[0].starts_with("root:$6$0123456789abcdef$") && shadows[0].contains(":20463:"),
            "{}",
            shadows[0]
        );
    }
}
