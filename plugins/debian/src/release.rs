//! Which Debian release a template asks for, and the architecture name Debian uses.

use crate::error::DebianError;

/// A Debian release this plugin can build.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub number: u8,
    pub codename: &'static str,
}

/// The releases built and tested with mmdebstrap from a Debian mirror. Older ones moved
/// to the archive mirror and use another kernel/init layout; newer ones get added here.
pub const RELEASES: &[Release] = &[
    Release { number: 11, codename: "bullseye" },
    Release { number: 12, codename: "bookworm" },
    Release { number: 13, codename: "trixie" },
];

impl Release {
    /// A template's `<version>`: the release number ("12", also "12.5") or its codename.
    pub fn parse(version: &str) -> Result<Release, DebianError> {
        let v = version.trim().to_ascii_lowercase();
        let major = v.split('.').next().unwrap_or("");
        RELEASES
            .iter()
            .find(|r| r.codename == v || r.number.to_string() == major)
            .copied()
            .ok_or_else(|| DebianError::UnsupportedVersion(version.trim().to_string()))
    }

    /// The apt suite to install from.
    pub fn suite(&self) -> &'static str {
        self.codename
    }

    /// Packages every image gets beyond the minimal base: a kernel, systemd as init,
    /// udev (the initramfs finds the root by UUID with it), zstd (the initramfs
    /// compressor), and a resolver for DHCP-configured DNS (its own package from 12 on;
    /// part of systemd before).
    pub fn base_packages(&self) -> Vec<&'static str> {
        let mut p = vec!["linux-image-amd64", "systemd-sysv", "udev", "zstd", "initramfs-tools"];
        if self.number >= 12 {
            p.push("systemd-resolved");
        }
        p
    }
}

/// Debian's name for a template architecture. Only x86_64 is built: the disk boots with
/// BIOS GRUB, which is i386-pc only.
pub fn debian_arch(arch: &str) -> Result<&'static str, DebianError> {
    match arch {
        "x86_64" => Ok("amd64"),
        other => Err(DebianError::UnsupportedArch(other.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_codenames() {
        assert_eq!(Release::parse("12").unwrap().suite(), "bookworm");
        assert_eq!(Release::parse("12.5").unwrap().number, 12);
        assert_eq!(Release::parse("Bookworm").unwrap().number, 12);
        assert_eq!(Release::parse("11").unwrap().suite(), "bullseye");
        assert_eq!(Release::parse("trixie").unwrap().number, 13);
        assert!(Release::parse("13").unwrap().base_packages().contains(&"systemd-resolved"));
        assert!(!Release::parse("11").unwrap().base_packages().contains(&"systemd-resolved"));
    }

    #[test]
    fn unknown_versions_are_one_line_errors() {
        for v in ["10", "buster", "", "sid", "1212"] {
            let e = Release::parse(v).unwrap_err().to_string();
            assert!(e.starts_with(&format!("unsupported Debian version '{v}'")), "{e}");
            assert!(e.contains("12 (bookworm)") && !e.contains('\n'), "{e}");
        }
    }

    #[test]
    fn architectures() {
        assert_eq!(debian_arch("x86_64").unwrap(), "amd64");
        assert_eq!(
            debian_arch("aarch64").unwrap_err().to_string(),
            "unsupported architecture 'aarch64' for Debian: supported is x86_64"
        );
    }
}
