//! The parsed form of a template: plain data, already validated.
//!
//! Everything here is produced by [`Template::parse`](super::Template::parse) or
//! [`Fragment::parse`](super::Fragment::parse); a value of these types therefore
//! satisfies Oz's rules (see the module docs of [`super`]). Fields are public so
//! plugins can read them directly; if you build or edit values by hand, you are
//! responsible for keeping them sensible.

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};

/// The architectures Oz knows how to install, in the order of its error message.
pub const ARCHITECTURES: &[&str] = &["i386", "x86_64", "ppc64", "ppc64le", "armv7l", "aarch64", "s390x"];

/// The highest TDL version this library understands (the `version` attribute of
/// `<template>`).
pub const KNOWN_TDL_VERSION: &str = "1.0";

/// Options that change how strict parsing is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ParseOptions {
    /// Require `<os><rootpw>`: imagefactory's `tdl_require_root_pw` setting, for
    /// sites that refuse to build images with Oz's default root password.
    pub require_root_pw: bool,
}

/// A complete template (TDL document): what to install and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Template {
    /// The `version` attribute of `<template>`, as written (at most `1.0`).
    pub version: Option<String>,
    pub name: String,
    pub description: Option<String>,
    pub os: Os,
    pub packages: Vec<Package>,
    /// Unique by name: a later `<repository>` with the same name replaces an
    /// earlier one, as in Oz.
    pub repositories: Vec<Repository>,
    /// Unique by name: a later `<file>` with the same path replaces an earlier
    /// one, as in Oz.
    pub files: Vec<File>,
    /// In execution order (sorted by `position` when positions were given).
    pub commands: Vec<Command>,
    /// In execution order, like `commands`; run before the package install.
    pub precommands: Vec<Command>,
    /// `<disk><size>` in bytes; `None` lets the OS plugin choose (Oz: 10 GiB).
    pub disk_size: Option<u64>,
}

/// The `<os>` section: which operating system to install, and how.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Os {
    pub name: String,
    pub version: String,
    /// One of [`ARCHITECTURES`].
    pub arch: String,
    pub install: Install,
    pub rootpw: Option<String>,
    pub key: Option<String>,
    pub kernelparam: Option<String>,
    /// `<icicle><extra_command>`: a command whose output is added to the ICICLE.
    pub icicle_extra_command: Option<String>,
}

/// Where the installer comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Install {
    /// A network install tree.
    Url { url: String },
    /// An installation ISO, optionally checked against a checksum file and
    /// extended with extra files and directories.
    Iso { iso: String, checksum: Option<Checksum>, extras: Vec<Extra> },
}

/// The URL of a checksum file for an ISO install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub kind: ChecksumKind,
    pub url: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChecksumKind {
    Md5,
    Sha1,
    Sha256,
}

impl ChecksumKind {
    /// The TDL element name (`md5sum`, `sha1sum`, `sha256sum`).
    pub fn element(self) -> &'static str {
        match self {
            ChecksumKind::Md5 => "md5sum",
            ChecksumKind::Sha1 => "sha1sum",
            ChecksumKind::Sha256 => "sha256sum",
        }
    }
}

/// An `<extras>` entry: something copied onto the installation ISO.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Extra {
    pub kind: ExtraKind,
    pub source: String,
    pub destination: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExtraKind {
    Directory,
    File,
}

/// A package to install.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub repository: Option<String>,
    pub file: Option<String>,
    pub arguments: Option<String>,
}

impl Package {
    /// A package with only a name, the common case.
    pub fn named(name: impl Into<String>) -> Package {
        Package { name: name.into(), repository: None, file: None, arguments: None }
    }
}

/// A package repository added to the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Repository {
    pub name: String,
    pub url: String,
    /// Default `false`.
    pub signed: bool,
    /// Keep the repository configured in the final image. Default `true`.
    pub persisted: bool,
    /// Default `false`.
    pub sslverify: bool,
}

/// How the text of a `<file>` or `<command>` is to be read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContentType {
    /// The text itself.
    #[default]
    Raw,
    /// Base64 of the content (checked when parsing).
    Base64,
    /// A `file://` or `http(s)://` URL to fetch the content from.
    Url,
}

impl ContentType {
    /// The value of the `type` attribute.
    pub fn as_str(self) -> &'static str {
        match self {
            ContentType::Raw => "raw",
            ContentType::Base64 => "base64",
            ContentType::Url => "url",
        }
    }
}

/// A file written into the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct File {
    /// An absolute path in the guest.
    pub name: String,
    pub content_type: ContentType,
    /// The element's text with surrounding whitespace removed (as Oz does).
    pub content: String,
}

impl File {
    /// The bytes to write, for `raw` and `base64` files; `None` for `url` files,
    /// which the caller has to fetch.
    pub fn data(&self) -> Option<Vec<u8>> {
        decode_content(self.content_type, &self.content)
    }
}

/// A command run in the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Command {
    pub name: String,
    pub content_type: ContentType,
    /// The element's text with surrounding whitespace removed; never empty.
    pub content: String,
}

impl Command {
    /// The script text, for `raw` and `base64` commands; `None` for `url`
    /// commands, which the caller has to fetch.
    pub fn data(&self) -> Option<Vec<u8>> {
        decode_content(self.content_type, &self.content)
    }
}

fn decode_content(content_type: ContentType, content: &str) -> Option<Vec<u8>> {
    match content_type {
        ContentType::Raw => Some(content.as_bytes().to_vec()),
        // Parsing checked the text, so decoding only fails for hand-built values.
        ContentType::Base64 => super::base64::decode(content),
        ContentType::Url => None,
    }
}

/// The content parts of a template, without name or OS: IndirectionCloud's
/// `utility_customizations` and the includes of `target_content.xml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fragment {
    pub packages: Vec<Package>,
    pub repositories: Vec<Repository>,
    pub files: Vec<File>,
    pub commands: Vec<Command>,
    pub precommands: Vec<Command>,
}

impl Fragment {
    /// True when the fragment adds nothing.
    pub fn is_empty(&self) -> bool {
        self.packages.is_empty()
            && self.repositories.is_empty()
            && self.files.is_empty()
            && self.commands.is_empty()
            && self.precommands.is_empty()
    }
}

impl Template {
    /// Adds a fragment's content, with Oz's merge rules: a package, repository or
    /// file with the same name as an existing one replaces it (the fragment is the
    /// more specific source); commands and precommands run after the template's own.
    pub fn merge(&mut self, content: &Fragment) {
        // Oz removes same-named packages one fragment package at a time; the
        // result is the template's other packages, then the fragment's packages
        // keeping the last of any repeated name. Computed with sets so a large
        // fragment cannot make this quadratic.
        let incoming: HashSet<&str> = content.packages.iter().map(|p| p.name.as_str()).collect();
        self.packages.retain(|p| !incoming.contains(p.name.as_str()));
        let last_index: HashMap<&str, usize> =
            content.packages.iter().enumerate().map(|(i, p)| (p.name.as_str(), i)).collect();
        self.packages.extend(
            content
                .packages
                .iter()
                .enumerate()
                .filter(|(i, p)| last_index.get(p.name.as_str()) == Some(i))
                .map(|(_, p)| p.clone()),
        );
        upsert_all(&mut self.repositories, content.repositories.iter().cloned(), |r| &r.name);
        upsert_all(&mut self.files, content.files.iter().cloned(), |f| &f.name);
        self.commands.extend(content.commands.iter().cloned());
        self.precommands.extend(content.precommands.iter().cloned());
    }
}

/// Adds items, replacing in place any existing item with the same key (and
/// appending the rest). Keeping the original slot mirrors a Python dict, which
/// is what Oz stores repositories and files in. A key index keeps this linear.
pub(crate) fn upsert_all<T>(items: &mut Vec<T>, new_items: impl IntoIterator<Item = T>, key: impl Fn(&T) -> &String) {
    let mut index: HashMap<String, usize> = items.iter().enumerate().map(|(i, item)| (key(item).clone(), i)).collect();
    for item in new_items {
        match index.get(key(&item)) {
            Some(&slot) => items[slot] = item,
            None => {
                index.insert(key(&item).clone(), items.len());
                items.push(item);
            }
        }
    }
}
