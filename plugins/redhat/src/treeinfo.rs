//! An install tree's `.treeinfo`: where its installer kernel and initrd are.
//!
//! `.treeinfo` is an INI file. Old trees (Fedora 7 on) give `[general] family/version/arch`
//! and `[images-<arch>] kernel=, initrd=`; productmd trees (Fedora 21 on, RHEL 7 on) add
//! `[header]`, `[release]`, `[tree] arch=` and keep the same images section. A tree
//! without `.treeinfo`, or without the images section, has its files at the places every
//! Red Hat tree has used: `images/pxeboot/vmlinuz` and `images/pxeboot/initrd.img`.

use std::collections::BTreeMap;

/// The fallback kernel path inside a tree.
pub const PXEBOOT_KERNEL: &str = "images/pxeboot/vmlinuz";
/// The fallback initrd path inside a tree.
pub const PXEBOOT_INITRD: &str = "images/pxeboot/initrd.img";

/// An INI document: section -> key -> value (keys lowercased, values trimmed).
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TreeInfo {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

/// The installer's kernel and initrd, as paths relative to the tree's root.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootFiles {
    pub kernel: String,
    pub initrd: String,
    /// Where the paths came from, for the build log.
    pub source: &'static str,
}

impl TreeInfo {
    /// Parses INI text; lines that are neither sections nor `key = value` are ignored
    /// (comments start with `#` or `;`).
    pub fn parse(text: &str) -> TreeInfo {
        let mut info = TreeInfo::default();
        let mut current: Option<String> = None;
        for raw in text.lines() {
            let line = raw.trim();
            if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
                continue;
            }
            if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
                let name = name.trim().to_string();
                info.sections.entry(name.clone()).or_default();
                current = Some(name);
                continue;
            }
            let (Some(section), Some((k, v))) = (&current, line.split_once(['=', ':'])) else { continue };
            if let Some(s) = info.sections.get_mut(section) {
                s.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        info
    }

    pub fn get(&self, section: &str, key: &str) -> Option<&str> {
        self.sections.get(section)?.get(key).map(String::as_str)
    }

    /// The tree's family and version (`[general]`, or productmd's `[release]`), for the log.
    pub fn describe(&self) -> Option<String> {
        let name = self.get("release", "name").or_else(|| self.get("general", "family"))?;
        let version = self.get("release", "version").or_else(|| self.get("general", "version")).unwrap_or("");
        Some(format!("{name} {version}").trim().to_string())
    }

    /// The tree's architecture, when it states one.
    pub fn arch(&self) -> Option<&str> {
        self.get("tree", "arch").or_else(|| self.get("general", "arch"))
    }

    /// The kernel and initrd for `arch`, from `[images-<arch>]`, else the pxeboot paths.
    pub fn boot_files(&self, arch: &str) -> BootFiles {
        let section = format!("images-{arch}");
        match (self.get(&section, "kernel"), self.get(&section, "initrd")) {
            (Some(k), Some(i)) if safe_relative(k) && safe_relative(i) => {
                BootFiles { kernel: k.to_string(), initrd: i.to_string(), source: ".treeinfo" }
            }
            _ => fallback(),
        }
    }
}

/// The pxeboot paths, for trees without a usable `.treeinfo`.
pub fn fallback() -> BootFiles {
    BootFiles { kernel: PXEBOOT_KERNEL.into(), initrd: PXEBOOT_INITRD.into(), source: "images/pxeboot" }
}

/// A path the tree may name: relative, no `..`, no scheme. A tree is remote input; it
/// must not send the fetch elsewhere.
fn safe_relative(p: &str) -> bool {
    !p.is_empty() && !p.starts_with('/') && !p.contains("://") && !p.split('/').any(|c| c == "..")
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRODUCTMD: &str = "[header]\ntype = productmd.treeinfo\nversion = 1.2\n\n\
[release]\nname = Fedora\nshort = Fedora\nversion = 40\n\n[tree]\narch = x86_64\nplatforms = x86_64,xen\n\n\
[images-x86_64]\nboot.iso = images/boot.iso\ninitrd = images/pxeboot/initrd.img\nkernel = images/pxeboot/vmlinuz\n\n\
[images-xen]\ninitrd = images/pxeboot/initrd-xen.img\nkernel = images/pxeboot/vmlinuz-xen\n";

    #[test]
    fn productmd_tree() {
        let t = TreeInfo::parse(PRODUCTMD);
        assert_eq!(t.describe().as_deref(), Some("Fedora 40"));
        assert_eq!(t.arch(), Some("x86_64"));
        let b = t.boot_files("x86_64");
        assert_eq!((b.kernel.as_str(), b.initrd.as_str(), b.source), (PXEBOOT_KERNEL, PXEBOOT_INITRD, ".treeinfo"));
    }

    #[test]
    fn old_tree_with_other_paths() {
        let t = TreeInfo::parse(
            "# old\n[general]\nfamily = Red Hat Enterprise Linux Server\nversion = 5.4\narch = x86_64\n\
[images-x86_64]\nkernel = images/vmlinuz-x\ninitrd: images/initrd-x.img\n",
        );
        assert_eq!(t.describe().as_deref(), Some("Red Hat Enterprise Linux Server 5.4"));
        let b = t.boot_files("x86_64");
        assert_eq!((b.kernel.as_str(), b.initrd.as_str()), ("images/vmlinuz-x", "images/initrd-x.img"));
    }

    #[test]
    fn fallbacks() {
        assert_eq!(TreeInfo::parse("").boot_files("x86_64"), fallback());
        assert_eq!(TreeInfo::parse(PRODUCTMD).boot_files("aarch64").source, "images/pxeboot");
        let evil = TreeInfo::parse("[images-x86_64]\nkernel = ../../etc/passwd\ninitrd = http://x/y\n");
        assert_eq!(evil.boot_files("x86_64"), fallback());
    }
}
