//! The configuration every image gets before the template's own content: how it finds
//! its root file system, its name, a serial console, and DHCP networking.

use std::path::Path;

use diskimage::DiskError;

/// /etc/fstab: the root by file system UUID (device names differ between virtio, IDE
/// and cloud disks; the UUID does not).
pub fn fstab(uuid: &str) -> String {
    format!("# <file system> <mount point> <type> <options> <dump> <pass>\nUUID={uuid} / ext4 errors=remount-ro 0 1\n")
}

/// A host name from the template's name: lower case letters, digits and dashes, at most
/// 63 characters (RFC 1123), "debian" if nothing is left.
pub fn hostname(template_name: &str) -> String {
    let mut h: String =
        template_name.to_ascii_lowercase().chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    h = h.trim_matches('-').to_string();
    h.truncate(63);
    let h = h.trim_end_matches('-').to_string();
    if h.is_empty() {
        "debian".to_string()
    } else {
        h
    }
}

pub fn hosts(hostname: &str) -> String {
    format!(
        "127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n\n::1\tlocalhost ip6-localhost ip6-loopback\nff02::1\tip6-allnodes\nff02::2\tip6-allrouters\n"
    )
}

/// The kernel command line: the root by UUID, the console on the screen and on the
/// first serial port (the last `console=` gets /dev/console, so boot messages and the
/// login prompt reach the serial log of a headless guest), then the template's
/// `<kernelparam>`.
pub fn kernel_cmdline(uuid: &str, kernelparam: Option<&str>) -> String {
    let mut c = format!("root=UUID={uuid} ro console=tty0 console=ttyS0,115200n8");
    if let Some(k) = kernelparam.map(str::trim).filter(|k| !k.is_empty()) {
        c.push(' ');
        c.push_str(k);
    }
    c
}

/// systemd-networkd: DHCP on every wired interface, whatever its name.
pub const DHCP_NETWORK: &str = "[Match]\nName=en* eth*\n\n[Network]\nDHCP=yes\n";

/// Where [`DHCP_NETWORK`] goes.
pub const DHCP_NETWORK_FILE: &str = "etc/systemd/network/80-imagefactory-dhcp.network";

/// Writes fstab, hostname, hosts and the network configuration into `root`.
pub fn write(root: &Path, uuid: &str, hostname: &str) -> Result<(), DiskError> {
    let files = [
        ("etc/fstab", fstab(uuid)),
        ("etc/hostname", format!("{hostname}\n")),
        ("etc/hosts", hosts(hostname)),
        (DHCP_NETWORK_FILE, DHCP_NETWORK.to_string()),
    ];
    for (rel, text) in files {
        let path = root.join(rel);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| DiskError::io("cannot create", parent, e))?;
        }
        // mmdebstrap copied the build host's hostname here; replace, never append.
        let _ = std::fs::remove_file(&path);
        std::fs::write(&path, text).map_err(|e| DiskError::io("cannot write", &path, e))?;
        diskimage::chroot::set_mode(&path, 0o644)?;
    }
    Ok(())
}

/// Points /etc/resolv.conf at systemd-resolved's stub, replacing the build host's copy
/// that mmdebstrap put there (it describes the build host's network, not the guest's).
pub fn link_resolv_conf(root: &Path) -> Result<(), DiskError> {
    let path = root.join("etc/resolv.conf");
    let is_link = std::fs::symlink_metadata(&path).map(|m| m.file_type().is_symlink()).unwrap_or(false);
    if !is_link {
        let _ = std::fs::remove_file(&path);
        std::os::unix::fs::symlink("../run/systemd/resolve/stub-resolv.conf", &path)
            .map_err(|e| DiskError::io("cannot link", &path, e))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files() {
        assert_eq!(fstab("u-1").lines().nth(1), Some("UUID=u-1 / ext4 errors=remount-ro 0 1"));
        assert_eq!(hostname("Debian 12 Web_Server!"), "debian-12-web-server");
        assert_eq!(hostname("---"), "debian");
        assert_eq!(hostname(&"x".repeat(100)).len(), 63);
        assert!(hosts("web").contains("127.0.1.1\tweb\n"));
        assert_eq!(kernel_cmdline("u", None), "root=UUID=u ro console=tty0 console=ttyS0,115200n8");
        assert_eq!(kernel_cmdline("u", Some(" quiet ")), "root=UUID=u ro console=tty0 console=ttyS0,115200n8 quiet");
    }

    #[test]
    fn writes_and_replaces() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/hostname"), "buildhost\n").unwrap();
        std::fs::write(dir.path().join("etc/resolv.conf"), "nameserver 10.0.0.1\n").unwrap();
        write(dir.path(), "u-2", "img").unwrap();
        assert_eq!(std::fs::read_to_string(dir.path().join("etc/hostname")).unwrap(), "img\n");
        assert!(std::fs::read_to_string(dir.path().join(DHCP_NETWORK_FILE)).unwrap().contains("DHCP=yes"));
        link_resolv_conf(dir.path()).unwrap();
        let target = std::fs::read_link(dir.path().join("etc/resolv.conf")).unwrap();
        assert_eq!(target, Path::new("../run/systemd/resolve/stub-resolv.conf"));
    }
}
