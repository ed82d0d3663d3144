//! `target_content.xml`: extra packages, repositories, files and commands that a
//! site adds to every build for a given cloud (and OS, version, architecture).
//!
//! ```xml
//! <template_includes>
//!   <include target="ec2" os="Fedora" version="18" arch="x86_64">
//!     <packages><package name="cloud-init"/></packages>
//!   </include>
//! </template_includes>
//! ```

use super::error::TdlError;
use super::model::Fragment;
use super::parse::{parse_xml, Checker};
use super::validate::{qualified_name, read_content, CONTENT_CHILDREN};

/// One `<include>`: which builds it applies to, and what it adds. An absent
/// attribute matches nothing on its own; see [`TargetContentIncludes::select`].
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Include {
    pub target: Option<String>,
    pub os: Option<String>,
    pub version: Option<String>,
    pub arch: Option<String>,
    pub content: Fragment,
}

/// The parsed `<template_includes>` document.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TargetContentIncludes {
    pub includes: Vec<Include>,
}

impl TargetContentIncludes {
    /// Parses and checks a `target_content.xml` document. The content of each
    /// include follows the same rules as in a template.
    pub fn parse(xml: &str) -> Result<Self, TdlError> {
        let doc = parse_xml(xml)?;
        let mut ck = Checker::new(&doc);
        let root = doc.root_element();
        if root.tag_name().name() != "template_includes" || root.tag_name().namespace().is_some() {
            ck.report(root, format!("Expected a <template_includes> document, saw <{}>", qualified_name(root)));
            return ck.finish(None);
        }
        let children = ck.children(root, &["include"], &[]);
        let mut includes = Vec::new();
        for node in children.all("include") {
            let content_children = ck.children(*node, CONTENT_CHILDREN, &["target", "os", "version", "arch"]);
            let content = read_content(&mut ck, &content_children);
            let attribute = |name: &str| node.attribute(name).map(str::to_string);
            includes.push(Include {
                target: attribute("target"),
                os: attribute("os"),
                version: attribute("version"),
                arch: attribute("arch"),
                content,
            });
        }
        ck.finish(Some(TargetContentIncludes { includes }))
    }

    /// The content for a build, or `None` when no include applies.
    ///
    /// Like imagefactory's TinMan plugin, this tries five patterns from most to
    /// least specific and takes the first include (in document order) matching
    /// the first pattern that matches any:
    /// 1. target, os, version and arch all equal;
    /// 2. target, os and version equal, no arch attribute;
    /// 3. target and os equal, no version or arch;
    /// 4. target equal, no os, version or arch;
    /// 5. no attributes at all (applies to every build).
    ///
    /// Other shapes (an include with `os` but no `target`, say) never match.
    pub fn select(&self, target: &str, os: &str, version: &str, arch: &str) -> Option<&Fragment> {
        let wanted = [Some(target), Some(os), Some(version), Some(arch)];
        // How many leading attributes each pattern pins; the rest must be absent.
        (0..=4usize).rev().find_map(|pinned| {
            self.includes
                .iter()
                .find(|include| {
                    let have = [
                        include.target.as_deref(),
                        include.os.as_deref(),
                        include.version.as_deref(),
                        include.arch.as_deref(),
                    ];
                    have.iter().zip(wanted).enumerate().all(
                        |(i, (have, want))| {
                            if i < pinned {
                                *have == want
                            } else {
                                have.is_none()
                            }
                        },
                    )
                })
                .map(|include| &include.content)
        })
    }
}
