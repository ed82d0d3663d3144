//! Which distribution and release a template names, and what that release's installer
//! (anaconda) needs: the version table every other module reads.
//!
//! Names follow Oz's (`oz/GuestFactory.py`): `Fedora` with the release as the version
//! (`rawhide` is the newest); `RHEL-N`, `RedHatEnterpriseLinux-N`, `CentOS-N` with the
//! *update* as the version (`GOLD`, `U4` for 5, a number from 6 on), and, new here,
//! `Rocky-N` and `AlmaLinux-N`. The bare names `RHEL`, `CentOS`, `Rocky`, `AlmaLinux` take
//! a `major[.minor]` version instead.

use std::fmt;

use crate::error::RedHatError;

/// The newest Fedora release this table was written for. A higher number, or `rawhide`,
/// is built as this one with a warning (Oz's behaviour): kickstart syntax changes rarely,
/// so refusing would only force users to lie about the version.
pub const NEWEST_FEDORA: u32 = 43;
/// The oldest Fedora release whose installer takes a kickstart the way this plugin gives it.
pub const OLDEST_FEDORA: u32 = 7;

/// A distribution of the Red Hat family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distro {
    Fedora,
    Rhel,
    CentOs,
    Rocky,
    Alma,
}

impl Distro {
    /// The name used in messages.
    pub fn display(self) -> &'static str {
        match self {
            Distro::Fedora => "Fedora",
            Distro::Rhel => "RHEL",
            Distro::CentOs => "CentOS",
            Distro::Rocky => "Rocky",
            Distro::Alma => "AlmaLinux",
        }
    }

    /// The major releases the plugin builds (Fedora: see [`OLDEST_FEDORA`]).
    pub fn majors(self) -> std::ops::RangeInclusive<u32> {
        match self {
            Distro::Fedora => OLDEST_FEDORA..=NEWEST_FEDORA,
            Distro::Rhel | Distro::CentOs => 5..=10,
            Distro::Rocky | Distro::Alma => 8..=10,
        }
    }

    /// Which plugin builds it.
    pub fn family(self) -> Family {
        match self {
            Distro::Fedora => Family::Fedora,
            _ => Family::Rhel,
        }
    }
}

/// The two plugins sharing this crate.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Fedora,
    Rhel,
}

/// The TDL `<os><name>` values the RHEL plugin answers to, with their major release
/// (`None`: the major comes from `<version>`).
pub fn rhel_os_names() -> Vec<(String, Distro, Option<u32>)> {
    let mut names = Vec::new();
    for (prefixes, distro) in [
        (&["RHEL", "RedHatEnterpriseLinux"][..], Distro::Rhel),
        (&["CentOS"][..], Distro::CentOs),
        (&["Rocky"][..], Distro::Rocky),
        (&["AlmaLinux"][..], Distro::Alma),
    ] {
        for p in prefixes {
            names.push((p.to_string(), distro, None));
            for major in distro.majors() {
                names.push((format!("{p}-{major}"), distro, Some(major)));
            }
        }
    }
    names
}

/// One release, as the template names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Release {
    pub distro: Distro,
    pub major: u32,
    /// The minor release / update (RHEL 5's `U4` is 4, `GOLD` 0), when given.
    pub update: Option<u32>,
    /// Fedora only: the template asked for rawhide or a release newer than
    /// [`NEWEST_FEDORA`], which is built as the newest known.
    pub newer_than_known: bool,
}

impl fmt::Display for Release {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.distro.display(), self.major)?;
        if let Some(u) = self.update {
            write!(f, ".{u}")?;
        }
        Ok(())
    }
}

impl Release {
    /// The release a template's `<os><name>` and `<version>` name, for the plugin of
    /// `family`. Errors are one line and say what is supported.
    pub fn parse(family: Family, name: &str, version: &str) -> Result<Release, RedHatError> {
        let name = name.trim();
        let version = version.trim();
        match family {
            Family::Fedora => {
                if !name.eq_ignore_ascii_case("fedora") {
                    return Err(RedHatError::WrongOs { os: name.into(), plugin: "Fedora", supported: "Fedora".into() });
                }
                fedora(version)
            }
            Family::Rhel => {
                let found = rhel_os_names().into_iter().find(|(n, _, _)| n.eq_ignore_ascii_case(name));
                let Some((_, distro, major)) = found else {
                    return Err(RedHatError::WrongOs {
                        os: name.into(),
                        plugin: "RHEL",
                        supported:
                            "RHEL-N, CentOS-N (5 to 10), Rocky-N, AlmaLinux-N (8 to 10), or RHEL, CentOS, Rocky, \
                                    AlmaLinux with version N[.M]"
                                .into(),
                    });
                };
                match major {
                    Some(major) => {
                        Ok(Release { distro, major, update: update(distro, major, version)?, newer_than_known: false })
                    }
                    None => bare(distro, version),
                }
            }
        }
    }

    /// What this release's installer needs.
    pub fn profile(&self) -> Profile {
        Profile::of(self)
    }
}

fn unsupported(distro: Distro, version: &str) -> RedHatError {
    let r = distro.majors();
    let extra = match distro {
        Distro::Fedora => " or rawhide",
        Distro::Rhel | Distro::CentOs => " (5 takes GOLD or Un updates)",
        _ => "",
    };
    RedHatError::UnsupportedVersion {
        distro: distro.display(),
        version: version.into(),
        supported: format!("{} to {}{extra}", r.start(), r.end()),
    }
}

fn fedora(version: &str) -> Result<Release, RedHatError> {
    if version.eq_ignore_ascii_case("rawhide") {
        return Ok(Release { distro: Distro::Fedora, major: NEWEST_FEDORA, update: None, newer_than_known: true });
    }
    let major: u32 = version.parse().map_err(|_| unsupported(Distro::Fedora, version))?;
    if major < OLDEST_FEDORA {
        return Err(unsupported(Distro::Fedora, version));
    }
    Ok(Release {
        distro: Distro::Fedora,
        major: major.min(NEWEST_FEDORA),
        update: None,
        newer_than_known: major > NEWEST_FEDORA,
    })
}

/// The update of a `RHEL-N`-style name: `GOLD`/`Un` for 5 (as Oz), a number (or `N.M`)
/// from 6 on; empty means unspecified.
fn update(distro: Distro, major: u32, version: &str) -> Result<Option<u32>, RedHatError> {
    let v = version.to_ascii_uppercase();
    if v.is_empty() {
        return Ok(None);
    }
    if major == 5 {
        if v == "GOLD" {
            return Ok(Some(0));
        }
        if let Some(n) = v.strip_prefix('U').and_then(|n| n.parse().ok()) {
            return Ok(Some(n));
        }
    }
    // "4", or "8.4" repeating the major.
    let minor = match v.split_once('.') {
        Some((m, n)) if m.parse() == Ok(major) => n,
        Some(_) => return Err(unsupported(distro, version)),
        None => v.as_str(),
    };
    minor.parse().map(Some).map_err(|_| unsupported(distro, version))
}

/// A bare distro name with `major[.minor]` as the version.
fn bare(distro: Distro, version: &str) -> Result<Release, RedHatError> {
    let (major, minor) = match version.split_once('.') {
        Some((m, n)) => (m, Some(n)),
        None => (version, None),
    };
    let major: u32 = major.parse().map_err(|_| unsupported(distro, version))?;
    if !distro.majors().contains(&major) {
        return Err(unsupported(distro, version));
    }
    let update = match minor {
        Some(n) => Some(n.parse().map_err(|_| unsupported(distro, version))?),
        None => None,
    };
    Ok(Release { distro, major, update, newer_than_known: false })
}

/// How the installer is told where its kickstart and its packages are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArgStyle {
    /// `inst.ks=` / `inst.repo=` / `inst.text` (Fedora 19+, RHEL 7+).
    Inst,
    /// `ks=` / `repo=` / `text` (Fedora 9-18, RHEL 6).
    Repo,
    /// `ks=` / `method=` / `text` (Fedora 7-8, RHEL 5).
    Method,
}

/// How the kickstart sets up password hashing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Auth {
    /// `authconfig --enableshadow --enablemd5` (RHEL 5, Fedora 7-9).
    AuthconfigMd5,
    /// `authconfig --enableshadow --passalgo=sha512` (Fedora 10-27, RHEL 6-7).
    AuthconfigSha512,
    /// Nothing: from Fedora 28 and RHEL 8 authconfig is gone and anaconda's authselect
    /// default (shadow, SHA-512) is what an image wants, so no `authselect` line is written.
    Authselect,
}

/// The root password hash the installer understands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PasswordHash {
    /// `$1$`: RHEL 5 and Fedora 7-9 predate SHA-512 crypt in their installers.
    Md5,
    /// `$6$`.
    Sha512,
}

/// What one release's anaconda needs; each field is a kickstart or boot difference that
/// matters between Fedora 7 and today.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Profile {
    pub args: ArgStyle,
    /// Sections end with `%end` (not understood before Fedora 10 / RHEL 6).
    pub end: bool,
    /// The `install` command (removed after Fedora 28 / RHEL 7).
    pub install_keyword: bool,
    pub auth: Auth,
    pub hash: PasswordHash,
    /// `key --skip` (RHEL 5's installation number prompt).
    pub key_skip: bool,
    /// `zerombr yes` (Fedora 7-8, RHEL 5) rather than `zerombr`.
    pub zerombr_yes: bool,
    /// `network --device eth0` is required (RHEL 5).
    pub network_device: bool,
    /// `reqpart`: the boot partitions the platform needs (biosboot on GPT), Fedora 23+ and
    /// RHEL 8+.
    pub reqpart: bool,
    /// The root file system: ext3 before ext4 was the default (Fedora 7-10, RHEL 5).
    pub root_fs: &'static str,
    /// The base package group.
    pub base_group: &'static str,
    /// `repo --noverifyssl` is understood (Fedora 16+, RHEL 7+).
    pub noverifyssl: bool,
    /// `rootpw --lock` is understood (Fedora 18+, RHEL 7+).
    pub rootpw_lock: bool,
}

impl Profile {
    pub fn of(r: &Release) -> Profile {
        let m = r.major;
        let fedora = r.distro == Distro::Fedora;
        // The RHEL major each Fedora-era feature arrived in, as one comparable number:
        // RHEL 5 ~ Fedora 6, RHEL 6 ~ Fedora 12, RHEL 7 ~ Fedora 19, RHEL 8 ~ Fedora 28.
        let f = if fedora {
            m
        } else {
            match m {
                5 => 6,
                6 => 12,
                7 => 19,
                8 => 28,
                9 => 34,
                _ => 40,
            }
        };
        Profile {
            args: if f >= 19 {
                ArgStyle::Inst
            } else if f >= 9 {
                ArgStyle::Repo
            } else {
                ArgStyle::Method
            },
            end: f >= 10,
            install_keyword: f < 29 && !(r.distro != Distro::Fedora && m >= 8),
            auth: if f >= 28 {
                Auth::Authselect
            } else if f >= 10 {
                Auth::AuthconfigSha512
            } else {
                Auth::AuthconfigMd5
            },
            hash: if f >= 10 { PasswordHash::Sha512 } else { PasswordHash::Md5 },
            key_skip: r.distro == Distro::Rhel && m == 5,
            zerombr_yes: f < 9,
            network_device: !fedora && m == 5,
            reqpart: (fedora && m >= 23) || (!fedora && m >= 8),
            root_fs: if f <= 10 { "ext3" } else { "ext4" },
            base_group: if !fedora && m == 5 { "@base" } else { "@core" },
            noverifyssl: (fedora && m >= 16) || (!fedora && m >= 7),
            rootpw_lock: (fedora && m >= 18) || (!fedora && m >= 7),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rel(family: Family, name: &str, version: &str) -> Release {
        Release::parse(family, name, version).unwrap()
    }

    #[test]
    fn fedora_versions() {
        let r = rel(Family::Fedora, "Fedora", "30");
        assert_eq!((r.major, r.newer_than_known), (30, false));
        let raw = rel(Family::Fedora, "fedora", "rawhide");
        assert_eq!((raw.major, raw.newer_than_known), (NEWEST_FEDORA, true));
        let future = rel(Family::Fedora, "Fedora", "99");
        assert_eq!((future.major, future.newer_than_known), (NEWEST_FEDORA, true));
        assert_eq!(rel(Family::Fedora, "Fedora", "7").major, 7);
        for bad in ["6", "", "30.1", "beta"] {
            let e = Release::parse(Family::Fedora, "Fedora", bad).unwrap_err().to_string();
            assert!(e.starts_with(&format!("unsupported Fedora version '{bad}'")), "{e}");
            assert!(e.contains("7 to 43 or rawhide") && !e.contains('\n'), "{e}");
        }
        let e = Release::parse(Family::Fedora, "RHEL-8", "4").unwrap_err().to_string();
        assert_eq!(e, "the Fedora plugin does not build 'RHEL-8': it builds Fedora");
    }

    #[test]
    fn rhel_family_names_and_updates() {
        let r = rel(Family::Rhel, "RHEL-5", "U4");
        assert_eq!((r.distro, r.major, r.update), (Distro::Rhel, 5, Some(4)));
        assert_eq!(rel(Family::Rhel, "RHEL-5", "GOLD").update, Some(0));
        assert_eq!(rel(Family::Rhel, "RedHatEnterpriseLinux-6", "2").major, 6);
        assert_eq!(rel(Family::Rhel, "RHEL-7", "9").update, Some(9));
        assert_eq!(rel(Family::Rhel, "RHEL-8", "8.4").update, Some(4));
        assert_eq!(rel(Family::Rhel, "CentOS-7", "").update, None);
        let rocky = rel(Family::Rhel, "Rocky-9", "3");
        assert_eq!((rocky.distro, rocky.major), (Distro::Rocky, 9));
        let alma = rel(Family::Rhel, "AlmaLinux", "10.0");
        assert_eq!((alma.distro, alma.major, alma.update), (Distro::Alma, 10, Some(0)));
        assert_eq!(rel(Family::Rhel, "centos", "9").major, 9);
        assert_eq!(rel(Family::Rhel, "RHEL-10", "0").to_string(), "RHEL 10.0");
        for (name, v) in [("RHEL-8", "U4"), ("RHEL-8", "9.1"), ("RHEL", "4"), ("Rocky", "7"), ("RHEL", "x")] {
            let e = Release::parse(Family::Rhel, name, v).unwrap_err().to_string();
            assert!(e.starts_with("unsupported ") && !e.contains('\n'), "{name} {v}: {e}");
        }
        let e = Release::parse(Family::Rhel, "Rocky-7", "9").unwrap_err().to_string();
        assert!(e.starts_with("the RHEL plugin does not build 'Rocky-7'"), "{e}");
        let e = Release::parse(Family::Rhel, "Fedora", "30").unwrap_err().to_string();
        assert!(e.contains("RHEL-N, CentOS-N (5 to 10)"), "{e}");
    }

    #[test]
    fn the_version_table() {
        let p = |f, n, v| rel(f, n, v).profile();
        let rhel5 = p(Family::Rhel, "RHEL-5", "U4");
        assert_eq!(rhel5.args, ArgStyle::Method);
        assert!(!rhel5.end && rhel5.install_keyword && rhel5.key_skip && rhel5.zerombr_yes && rhel5.network_device);
        assert_eq!(
            (rhel5.auth, rhel5.hash, rhel5.root_fs, rhel5.base_group),
            (Auth::AuthconfigMd5, PasswordHash::Md5, "ext3", "@base")
        );
        assert!(!p(Family::Rhel, "CentOS-5", "U4").key_skip, "key --skip is RHEL's only");
        let rhel6 = p(Family::Rhel, "RHEL-6", "4");
        assert_eq!(
            (rhel6.args, rhel6.auth, rhel6.end, rhel6.root_fs),
            (ArgStyle::Repo, Auth::AuthconfigSha512, true, "ext4")
        );
        let rhel7 = p(Family::Rhel, "RHEL-7", "9");
        assert_eq!(rhel7.args, ArgStyle::Inst);
        assert!(rhel7.install_keyword && !rhel7.reqpart && rhel7.rootpw_lock);
        let rhel8 = p(Family::Rhel, "RHEL-8", "4");
        assert!(!rhel8.install_keyword && rhel8.reqpart);
        assert_eq!(rhel8.auth, Auth::Authselect);
        assert_eq!(p(Family::Rhel, "Rocky-10", "0").auth, Auth::Authselect);
        let f7 = p(Family::Fedora, "Fedora", "7");
        assert_eq!((f7.args, f7.end, f7.hash), (ArgStyle::Method, false, PasswordHash::Md5));
        let f12 = p(Family::Fedora, "Fedora", "12");
        assert_eq!((f12.args, f12.end, f12.auth), (ArgStyle::Repo, true, Auth::AuthconfigSha512));
        let f28 = p(Family::Fedora, "Fedora", "28");
        assert!(f28.install_keyword && f28.reqpart);
        assert_eq!(f28.auth, Auth::Authselect);
        assert!(!p(Family::Fedora, "Fedora", "29").install_keyword);
        assert_eq!(p(Family::Fedora, "Fedora", "rawhide").args, ArgStyle::Inst);
    }

    #[test]
    fn names_the_rhel_plugin_registers() {
        let names: Vec<String> = rhel_os_names().into_iter().map(|(n, _, _)| n).collect();
        for n in
            ["RHEL-5", "RHEL-10", "RedHatEnterpriseLinux-7", "CentOS-9", "Rocky-8", "AlmaLinux-10", "RHEL", "Rocky"]
        {
            assert!(names.iter().any(|x| x == n), "{n} missing");
        }
        assert!(!names.iter().any(|x| x == "Rocky-7"));
    }
}
