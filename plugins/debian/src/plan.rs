//! What a template asks of this plugin, checked before any work starts: a wrong version
//! or architecture fails in milliseconds with one line, not after a bootstrap.

use imagefactory_plugin_api::tdl::{Install, Template};

use crate::error::DebianError;
use crate::release::{debian_arch, Release};
use crate::system;

/// The install url that means "the build host's own apt mirror". TDL requires an
/// install url, and a template that names a mirror host is tied to one network; this
/// one builds anywhere the build host can install packages from.
pub const HOST_MIRROR: &str = "host";

/// The decisions taken from a template.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub release: Release,
    /// Debian's architecture name.
    pub arch: &'static str,
    /// The template's mirror, if it gave one (else the host's is used).
    pub install_url: Option<String>,
    pub hostname: String,
    /// Installed by mmdebstrap: the base system's packages.
    pub base_packages: Vec<&'static str>,
    /// Installed after the precommands: the template's packages.
    pub template_packages: Vec<String>,
}

impl Plan {
    pub fn new(t: &Template) -> Result<Plan, DebianError> {
        if !t.os.name.eq_ignore_ascii_case("debian") {
            return Err(DebianError::NotDebian(t.os.name.clone()));
        }
        let release = Release::parse(&t.os.version)?;
        let arch = debian_arch(&t.os.arch)?;
        let install_url = match &t.os.install {
            Install::Url { url } => {
                Some(url.trim().to_string()).filter(|u| !u.is_empty() && !u.eq_ignore_ascii_case(HOST_MIRROR))
            }
            Install::Iso { .. } => return Err(DebianError::IsoInstall),
        };
        Ok(Plan {
            release,
            arch,
            install_url,
            hostname: system::hostname(&t.name),
            base_packages: release.base_packages(),
            template_packages: t.packages.iter().map(|p| p.name.clone()).collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use imagefactory_plugin_api::tdl::ParseOptions;

    fn tdl(version: &str, arch: &str, install: &str) -> Template {
        let xml = format!(
            "<template><name>web 1</name><os><name>Debian</name><version>{version}</version><arch>{arch}</arch>{install}</os>\
<packages><package name='nginx'/></packages></template>"
        );
        Template::parse(&xml, &ParseOptions::default()).unwrap()
    }

    const URL: &str = "<install type='url'><url>http://m.example/debian</url></install>";

    #[test]
    fn a_good_template() {
        let p = Plan::new(&tdl("12", "x86_64", URL)).unwrap();
        assert_eq!(p.release.suite(), "bookworm");
        assert_eq!(p.arch, "amd64");
        assert_eq!(p.install_url.as_deref(), Some("http://m.example/debian"));
        assert_eq!(p.hostname, "web-1");
        assert_eq!(p.template_packages, vec!["nginx"]);
        assert!(p.base_packages.contains(&"linux-image-amd64"));
    }

    #[test]
    fn host_means_the_build_hosts_mirror() {
        let p = Plan::new(&tdl("bookworm", "x86_64", "<install type='url'><url>host</url></install>")).unwrap();
        assert_eq!(p.install_url, None);
    }

    #[test]
    fn refusals_are_one_line() {
        let e = Plan::new(&tdl("9", "x86_64", URL)).unwrap_err().to_string();
        assert!(e.starts_with("unsupported Debian version '9'"), "{e}");
        let e = Plan::new(&tdl("12", "aarch64", URL)).unwrap_err().to_string();
        assert!(e.starts_with("unsupported architecture 'aarch64'"), "{e}");
        let iso = "<install type='iso'><iso>http://m.example/d.iso</iso></install>";
        let e = Plan::new(&tdl("12", "x86_64", iso)).unwrap_err().to_string();
        assert!(e.starts_with("ISO installs are not supported"), "{e}");
    }
}
