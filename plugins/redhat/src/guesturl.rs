//! URLs as the installer guest sees them.
//!
//! The guest runs with qemu's user-mode networking, where the build host's loopback is
//! `10.0.2.2`. The template may name an install tree on the build host
//! (`http://127.0.0.1:8000/f40/`: TDL allows it for installs, only repositories must not
//! be localhost); the plugin fetches the kernel and initrd from that URL itself, and
//! hands the guest (`inst.repo=`, the kickstart's `url`) the same URL with its host
//! rewritten to `10.0.2.2`. Any other URL is passed unchanged.

/// The build host as seen from a user-mode-networked guest.
pub const HOST_FROM_GUEST: &str = "10.0.2.2";

/// `url` with a loopback host (`localhost`, `127.x.y.z`, `[::1]`) replaced by
/// [`HOST_FROM_GUEST`]; the port, path and any user info are kept.
pub fn for_guest(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let (authority, path) = match rest.find('/') {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        match v6.split_once(']') {
            Some((h, p)) => (h, p),
            None => return url.to_string(),
        }
    } else {
        match hostport.rsplit_once(':') {
            Some((h, _)) => (h, &hostport[h.len()..]),
            None => (hostport, ""),
        }
    };
    if !is_loopback(host) {
        return url.to_string();
    }
    let user = userinfo.map(|u| format!("{u}@")).unwrap_or_default();
    format!("{scheme}://{user}{HOST_FROM_GUEST}{port}{path}")
}

fn is_loopback(host: &str) -> bool {
    let h = host.to_ascii_lowercase();
    h == "localhost"
        || h == "localhost.localdomain"
        || h == "::1"
        || h.parse::<std::net::Ipv4Addr>().is_ok_and(|a| a.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts_are_rewritten() {
        assert_eq!(for_guest("http://127.0.0.1:8000/f40/"), "http://10.0.2.2:8000/f40/");
        assert_eq!(for_guest("http://localhost/tree"), "http://10.0.2.2/tree");
        assert_eq!(for_guest("http://127.1.2.3"), "http://10.0.2.2");
        assert_eq!(for_guest("http://[::1]:81/x"), "http://10.0.2.2:81/x");
        assert_eq!(for_guest("http://u:p@LOCALHOST:9/x"), "http://u:p@10.0.2.2:9/x");
    }

    #[test]
    fn other_urls_are_kept() {
        for u in [
            "http://mirror.example/f40/",
            "https://10.1.2.3:8443/x",
            "file:///srv/tree",
            "cdrom",
            "http://127.0.0.1.example/",
        ] {
            assert_eq!(for_guest(u), u);
        }
    }
}
