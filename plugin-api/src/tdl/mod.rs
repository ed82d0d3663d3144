//! The template (TDL) library: reads Oz's Template Description Language, checks
//! it with Oz's rules and reports every problem with its line and column.
//!
//! The host and every plugin use this one reader, so a template that
//! `imagefactory validate` accepts is a template every builder accepts.
//!
//! ```
//! use imagefactory_plugin_api::tdl::{Install, ParseOptions, Template};
//!
//! let xml = r#"<template>
//!   <name>f18utility</name>
//!   <os>
//!     <name>Fedora</name><version>18</version><arch>x86_64</arch>
//!     <install type='url'><url>http://example.org/f18/</url></install>
//!   </os>
//!   <disk><size>20GiB</size></disk>
//! </template>"#;
//! let template = Template::parse(xml, &ParseOptions::default()).unwrap();
//! assert_eq!(template.os.arch, "x86_64");
//! assert!(matches!(template.os.install, Install::Url { .. }));
//! assert_eq!(template.disk_size, Some(20 << 30));
//! ```
//!
//! # What is checked
//!
//! The document shape follows Oz's RelaxNG schema, which is closed: an unknown
//! element or attribute is an error, not something silently ignored. The
//! semantic rules and their messages are Oz's (`oz/TDL.py`), so the text of an
//! error matches what users of Oz already know. Where Oz stops at the first
//! problem, this reader carries on and reports them all.
//!
//! # Untrusted input
//!
//! Templates come from the network. DOCTYPEs are refused outright (so no entity
//! definitions and nothing fetched), and a document is limited in size
//! ([`MAX_DOCUMENT_BYTES`]), node count ([`MAX_NODES`]) and nesting
//! ([`MAX_DEPTH`]).

mod base64;
mod error;
mod model;
mod parse;
mod size;
mod target_content;
mod validate;

pub use error::{Diagnostic, TdlError};
pub use model::{
    Checksum, ChecksumKind, Command, ContentType, Extra, ExtraKind, File, Fragment, Install, Os, Package, ParseOptions,
    Repository, Template, ARCHITECTURES, KNOWN_TDL_VERSION,
};
pub use parse::{MAX_DEPTH, MAX_DIAGNOSTICS, MAX_DOCUMENT_BYTES, MAX_NODES};
pub use size::{parse_disk_size, DiskSizeError, INVALID_DISK_SIZE};
pub use target_content::{Include, TargetContentIncludes};

use parse::{parse_xml, Checker};
use validate::{into_template, read_template_document, Mode};

impl Template {
    /// Parses and validates a complete template. On failure the error lists
    /// every problem found.
    pub fn parse(xml: &str, opts: &ParseOptions) -> Result<Template, TdlError> {
        let doc = parse_xml(xml)?;
        let mut ck = Checker::new(&doc);
        let parts = read_template_document(&mut ck, doc.root_element(), Mode::Full(*opts));
        let template = parts.and_then(into_template);
        ck.finish(template)
    }
}

impl Fragment {
    /// Parses a partial template: a `<template>` document in which `<name>` and
    /// `<os>` are optional. Its packages, repositories, files, commands and
    /// precommands follow the same rules as in a full template; anything else it
    /// holds (name, os, description, disk) is checked too but not kept.
    pub fn parse(xml: &str) -> Result<Fragment, TdlError> {
        let doc = parse_xml(xml)?;
        let mut ck = Checker::new(&doc);
        let parts = read_template_document(&mut ck, doc.root_element(), Mode::Fragment);
        ck.finish(parts.map(|p| p.content))
    }
}
