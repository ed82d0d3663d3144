//! Oz's rules: turns a parsed XML tree into [`Template`] / [`Fragment`] values,
//! reporting every problem found along the way.
//!
//! The structure follows the document: one function per element, each checking
//! its own element and returning `None` when it could not build a value. A
//! `None` never stops the walk, so one run reports every independent problem.

use roxmltree::Node;

use super::base64;
use super::model::{upsert_all, *};
use super::parse::{shown, Checker, Children};
use super::size::parse_disk_size;

const TEMPLATE_CHILDREN: &[&str] =
    &["name", "os", "description", "packages", "repositories", "files", "commands", "precommands", "disk"];

/// The elements that carry content rather than identity; the only children of a
/// `target_content.xml` include.
pub(crate) const CONTENT_CHILDREN: &[&str] = &["packages", "repositories", "files", "commands", "precommands"];

const OS_CHILDREN: &[&str] = &["name", "version", "arch", "kernelparam", "install", "rootpw", "key", "icicle"];

const INSTALL_CHILDREN: &[&str] = &["url", "iso", "md5sum", "sha1sum", "sha256sum", "extras"];

/// Hosts that name the build machine itself. A repository there is unreachable
/// from inside the guest being installed.
const LOCAL_HOSTS: &[&str] = &["localhost", "localhost.localdomain", "127.0.0.1", "::1"];

/// What a `<template>` element held; `name` and `os` are optional here so that
/// fragments can reuse the same reader.
pub(crate) struct TemplateParts {
    pub(crate) version: Option<String>,
    pub(crate) name: Option<String>,
    pub(crate) description: Option<String>,
    pub(crate) os: Option<Os>,
    pub(crate) content: Fragment,
    pub(crate) disk_size: Option<u64>,
}

/// Whether `<name>` and `<os>` must be present.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Full(ParseOptions),
    Fragment,
}

/// An element's name for messages, with its namespace URI in braces when it has
/// one: TDL elements have none, so `{http://...}template` is not `<template>`.
pub(crate) fn qualified_name(node: Node<'_, '_>) -> String {
    match node.tag_name().namespace() {
        Some(ns) => format!("{{{}}}{}", shown(ns), node.tag_name().name()),
        None => node.tag_name().name().to_string(),
    }
}

/// Checks the document element is `<template>` and reads it.
pub(crate) fn read_template_document<'a, 'i>(
    ck: &mut Checker<'a, 'i>,
    root: Node<'a, 'i>,
    mode: Mode,
) -> Option<TemplateParts> {
    if root.tag_name().name() != "template" || root.tag_name().namespace().is_some() {
        ck.report(
            root,
            format!("Expected 1 template section in TDL, saw 0 (the document element is <{}>)", qualified_name(root)),
        );
        return None;
    }
    Some(read_template(ck, root, mode))
}

fn read_template<'a, 'i>(ck: &mut Checker<'a, 'i>, node: Node<'a, 'i>, mode: Mode) -> TemplateParts {
    let children = ck.children(node, TEMPLATE_CHILDREN, &["version"]);
    let version = read_version(ck, node);

    let name = match mode {
        Mode::Full(_) => ck.required_value(&children, "name", "template name"),
        Mode::Fragment => ck.optional_value(&children, "name", "template name"),
    }
    .map(|(_, value)| value);

    let os_nodes = children.all("os");
    let os = match (os_nodes, mode) {
        ([os], Mode::Full(options)) => read_os(ck, *os, options),
        ([os], Mode::Fragment) => read_os(ck, *os, ParseOptions::default()),
        ([], Mode::Fragment) => None,
        (nodes, _) => {
            let at = nodes.get(1).copied().unwrap_or(node);
            ck.report(at, format!("Expected 1 OS section in TDL, saw {}", nodes.len()));
            None
        }
    };

    let description = ck.optional_verbatim(&children, "description", "description");
    let content = read_content(ck, &children);
    let disk_size = read_disk(ck, &children);

    TemplateParts { version, name, description, os, content, disk_size }
}

/// The `version` attribute: a decimal number no higher than
/// [`KNOWN_TDL_VERSION`]. Oz compares versions as floats; so do we, after
/// insisting on plain digits so that `inf` or `1e9` cannot sneak through.
fn read_version(ck: &mut Checker<'_, '_>, node: Node<'_, '_>) -> Option<String> {
    let raw = node.attribute("version")?;
    let version = raw.trim();
    let parts: Vec<&str> = version.split('.').collect();
    let well_formed = parts.len() <= 2 && parts.iter().all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()));
    let known: f64 = KNOWN_TDL_VERSION.parse().unwrap_or(1.0);
    match version.parse::<f64>() {
        Ok(number) if well_formed => {
            if number > known {
                ck.report_attribute(
                    node,
                    "version",
                    format!("TDL version ({}) is higher than our known version ({KNOWN_TDL_VERSION})", shown(version)),
                );
            }
        }
        _ => ck.report_attribute(
            node,
            "version",
            format!("TDL version ({}) is not a number like {KNOWN_TDL_VERSION}", shown(version)),
        ),
    }
    Some(version.to_string())
}

fn read_os<'a, 'i>(ck: &mut Checker<'a, 'i>, node: Node<'a, 'i>, options: ParseOptions) -> Option<Os> {
    let children = ck.children(node, OS_CHILDREN, &[]);
    let name = ck.required_value(&children, "name", "OS name");
    let version = ck.required_value(&children, "version", "OS version");
    let arch = ck.required_value(&children, "arch", "OS architecture");
    let arch = arch.and_then(|(arch_node, arch)| {
        if ARCHITECTURES.contains(&arch.as_str()) {
            Some(arch)
        } else {
            ck.report(
                arch_node,
                "Architecture must be one of 'i386, x86_64, ppc64, ppc64le, armv7l, aarch64, or s390x'",
            );
            None
        }
    });
    let kernelparam = ck.optional_value(&children, "kernelparam", "custom kernel parameter").map(|(_, v)| v);
    let install = read_install(ck, &children);
    let rootpw = ck.optional_verbatim(&children, "rootpw", "root/Administrator password");
    if options.require_root_pw && rootpw.is_none() {
        let at = children.all("rootpw").first().copied().unwrap_or(node);
        let message = if children.all("rootpw").is_empty() {
            "Failed to find root/Administrator password in TDL"
        } else {
            "Found an empty root/Administrator password in TDL"
        };
        ck.report(at, message);
    }
    let key = ck.optional_verbatim(&children, "key", "OS key");
    let icicle_extra_command = read_icicle(ck, &children);

    Some(Os {
        name: name?.1,
        version: version?.1,
        arch: arch?,
        install: install?,
        rootpw,
        key,
        kernelparam,
        icicle_extra_command,
    })
}

fn read_icicle<'a, 'i>(ck: &mut Checker<'a, 'i>, os: &Children<'a, 'i>) -> Option<String> {
    let nodes = os.all("icicle");
    if let Some(extra) = nodes.get(1) {
        ck.report(*extra, format!("Expected 0 or 1 OS icicle section in TDL, saw {}", nodes.len()));
    }
    let icicle = *nodes.first()?;
    let children = ck.children(icicle, &["extra_command"], &[]);
    let command = ck.optional_value(&children, "extra_command", "extra icicle command");
    if command.is_none() && children.all("extra_command").is_empty() {
        ck.report(icicle, "Failed to find extra icicle command in TDL");
    }
    command.map(|(_, v)| v)
}

fn read_install<'a, 'i>(ck: &mut Checker<'a, 'i>, os: &Children<'a, 'i>) -> Option<Install> {
    let nodes = os.all("install");
    if nodes.len() != 1 {
        let at = nodes.get(1).copied().unwrap_or(os.parent);
        ck.report(at, format!("Expected 1 OS install section in TDL, saw {}", nodes.len()));
        return None;
    }
    let node = nodes[0];
    let children = ck.children(node, INSTALL_CHILDREN, &["type"]);
    let Some(install_type) = node.attribute("type") else {
        ck.report(node, "Failed to find OS install type in TDL");
        return None;
    };
    let extras = read_extras(ck, &children, install_type == "iso");
    match install_type {
        "url" => {
            refuse_elements(ck, &children, &["iso", "md5sum", "sha1sum", "sha256sum"], "url");
            let url = ck.required_value(&children, "url", "OS install URL")?.1;
            Some(Install::Url { url })
        }
        "iso" => {
            refuse_elements(ck, &children, &["url"], "iso");
            let iso = ck.required_value(&children, "iso", "OS install ISO");
            let checksum = read_checksum(ck, &children);
            Some(Install::Iso { iso: iso?.1, checksum: checksum?, extras: extras? })
        }
        other => {
            ck.report_attribute(node, "type", format!("Unknown install type {} in TDL", shown(other)));
            None
        }
    }
}

/// Reports elements that the schema allows only with the other install type.
fn refuse_elements(ck: &mut Checker<'_, '_>, children: &Children<'_, '_>, names: &[&str], install_type: &str) {
    for name in names {
        for node in children.all(name) {
            ck.report(*node, format!("<{name}> cannot be used with the {install_type} install type"));
        }
    }
}

/// At most one checksum file. `Some(None)` means no checksum; `None` an error.
fn read_checksum<'a, 'i>(ck: &mut Checker<'a, 'i>, install: &Children<'a, 'i>) -> Option<Option<Checksum>> {
    let kinds = [
        (ChecksumKind::Md5, "OS install ISO MD5SUM"),
        (ChecksumKind::Sha1, "OS install ISO SHA1SUM"),
        (ChecksumKind::Sha256, "OS install ISO SHA256SUM"),
    ];
    let mut found: Vec<(Node<'a, 'i>, Checksum)> = Vec::new();
    for (kind, component) in kinds {
        if let Some((node, url)) = ck.optional_value(install, kind.element(), component) {
            found.push((node, Checksum { kind, url }));
        }
    }
    if found.len() > 1 {
        // Point at the later one: the first was fine until the second appeared.
        let node = found.iter().map(|(n, _)| *n).max_by_key(|n| n.range().start)?;
        ck.report(node, "Only one of <md5sum>, <sha1sum>, and <sha256sum> can be specified");
        return None;
    }
    Some(found.pop().map(|(_, c)| c))
}

/// The `<extras>` of an install. Oz allows them only for ISO installs, and only
/// complains when there is at least one entry.
fn read_extras<'a, 'i>(ck: &mut Checker<'a, 'i>, install: &Children<'a, 'i>, is_iso: bool) -> Option<Vec<Extra>> {
    let nodes = install.all("extras");
    if let Some(extra) = nodes.get(1) {
        ck.report(*extra, format!("Expected 0 or 1 OS install extras section in TDL, saw {}", nodes.len()));
    }
    let mut extras = Vec::new();
    let mut ok = true;
    for extras_node in nodes {
        let children = ck.children(*extras_node, &["directory", "file"], &[]);
        // Directories first, then files: the order Oz copies them in.
        let entries: Vec<(ExtraKind, Node<'a, 'i>)> = children
            .all("directory")
            .iter()
            .map(|n| (ExtraKind::Directory, *n))
            .chain(children.all("file").iter().map(|n| (ExtraKind::File, *n)))
            .collect();
        if !is_iso && !entries.is_empty() {
            ck.report(*extras_node, "Extra ISO data can only be used with iso install type");
            ok = false;
            continue;
        }
        for (kind, entry) in entries {
            ck.leaf_text(entry, &["source", "destination"]);
            let source = non_empty_attribute(entry, "source");
            let destination = non_empty_attribute(entry, "destination");
            if source.is_none() {
                ck.report(entry, "Extra ISO element without a source was given");
            }
            if destination.is_none() {
                ck.report(entry, "Extra ISO element without a destination was given");
            }
            match (source, destination) {
                (Some(source), Some(destination)) => extras.push(Extra { kind, source, destination }),
                _ => ok = false,
            }
        }
    }
    ok.then_some(extras)
}

fn non_empty_attribute(node: Node<'_, '_>, name: &str) -> Option<String> {
    node.attribute(name).map(str::trim).filter(|v| !v.is_empty()).map(str::to_string)
}

/// Packages, repositories, files, commands and precommands: shared by full
/// templates, fragments and target content includes.
pub(crate) fn read_content<'a, 'i>(ck: &mut Checker<'a, 'i>, children: &Children<'a, 'i>) -> Fragment {
    let mut content = Fragment::default();
    for section in sections(ck, children, "packages", "packages section") {
        let packages = ck.children(section, &["package"], &[]);
        for node in packages.all("package") {
            if let Some(package) = read_package(ck, *node) {
                content.packages.push(package);
            }
        }
    }
    for section in sections(ck, children, "repositories", "repositories section") {
        let repositories = ck.children(section, &["repository"], &[]);
        let read: Vec<Repository> =
            repositories.all("repository").iter().filter_map(|node| read_repository(ck, *node)).collect();
        upsert_all(&mut content.repositories, read, |r| &r.name);
    }
    for section in sections(ck, children, "files", "files section") {
        let files = ck.children(section, &["file"], &[]);
        let read: Vec<File> = files.all("file").iter().filter_map(|node| read_file(ck, *node)).collect();
        upsert_all(&mut content.files, read, |f| &f.name);
    }
    for section in sections(ck, children, "commands", "commands section") {
        content.commands.extend(read_commands(ck, section));
    }
    for section in sections(ck, children, "precommands", "precommands section") {
        content.precommands.extend(read_commands(ck, section));
    }
    content
}

/// The instances of a section element, reporting repeats (the schema allows
/// one) but still returning them all so their contents are checked too.
fn sections<'a, 'i>(
    ck: &mut Checker<'a, 'i>,
    children: &Children<'a, 'i>,
    name: &str,
    component: &str,
) -> Vec<Node<'a, 'i>> {
    let nodes = children.all(name);
    if let Some(extra) = nodes.get(1) {
        ck.report(*extra, format!("Expected 0 or 1 {component} in TDL, saw {}", nodes.len()));
    }
    nodes.to_vec()
}

fn read_package<'a, 'i>(ck: &mut Checker<'a, 'i>, node: Node<'a, 'i>) -> Option<Package> {
    let children = ck.children(node, &["repository", "file", "arguments"], &["name"]);
    let repository = ck.optional_value(&children, "repository", "package repository section").map(|(_, v)| v);
    let file = ck.optional_value(&children, "file", "package filename").map(|(_, v)| v);
    let arguments = ck.optional_value(&children, "arguments", "package arguments").map(|(_, v)| v);
    let Some(name) = non_empty_attribute(node, "name") else {
        ck.report(node, "Package without a name was given");
        return None;
    };
    Some(Package { name, repository, file, arguments })
}

fn read_repository<'a, 'i>(ck: &mut Checker<'a, 'i>, node: Node<'a, 'i>) -> Option<Repository> {
    let children = ck.children(node, &["url", "signed", "persisted", "sslverify"], &["name"]);
    let name = non_empty_attribute(node, "name");
    if name.is_none() {
        ck.report(node, "Repository without a name was given");
    }
    let url = ck.required_value(&children, "url", "repository url");
    let url = url.and_then(|(url_node, url)| {
        if is_local_url(&url) {
            ck.report(
                url_node,
                "Repositories cannot be localhost, since they must be reachable from the guest operating system",
            );
            None
        } else {
            Some(url)
        }
    });
    let signed = read_bool(ck, &children, "signed", false);
    let persisted = read_bool(ck, &children, "persisted", true);
    let sslverify = read_bool(ck, &children, "sslverify", false);
    Some(Repository { name: name?, url: url?, signed: signed?, persisted: persisted?, sslverify: sslverify? })
}

/// A repository flag: true/yes/false/no in any case, `default` when absent.
fn read_bool<'a, 'i>(
    ck: &mut Checker<'a, 'i>,
    children: &Children<'a, 'i>,
    element: &str,
    default: bool,
) -> Option<bool> {
    let nodes = children.all(element);
    if let Some(extra) = nodes.get(1) {
        ck.report(*extra, format!("Expected 0 or 1 {element} in TDL, saw {}", nodes.len()));
    }
    let Some(node) = nodes.first() else {
        return Some(default);
    };
    let text = ck.leaf_text(*node, &[]);
    match text.trim().to_ascii_lowercase().as_str() {
        "true" | "yes" => Some(true),
        "false" | "no" => Some(false),
        _ => {
            ck.report(*node, format!("Repository {element} property must be 'true', 'yes', 'false', or 'no'"));
            None
        }
    }
}

/// True when the URL's host is the build machine itself. Oz compares the whole
/// network location; this also looks past a port or user name, and treats all
/// of 127.0.0.0/8 and `[::1]` as local.
pub(crate) fn is_local_url(url: &str) -> bool {
    let after_scheme = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = after_scheme.split(['/', '?', '#']).next().unwrap_or_default();
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if let Some(bracketed) = host_port.strip_prefix('[') {
        bracketed.split(']').next().unwrap_or_default()
    } else {
        host_port.split(':').next().unwrap_or_default()
    };
    let host = host.trim_end_matches('.').to_ascii_lowercase();
    LOCAL_HOSTS.contains(&host.as_str()) || host.parse::<std::net::Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

fn read_content_type(ck: &mut Checker<'_, '_>, node: Node<'_, '_>, name: &str) -> Option<ContentType> {
    match node.attribute("type") {
        None | Some("raw") => Some(ContentType::Raw),
        Some("base64") => Some(ContentType::Base64),
        Some("url") => Some(ContentType::Url),
        Some(_) => {
            ck.report_attribute(node, "type", format!("Type for {} must be 'raw', 'url' or 'base64'", shown(name)));
            None
        }
    }
}

fn read_file<'a, 'i>(ck: &mut Checker<'a, 'i>, node: Node<'a, 'i>) -> Option<File> {
    let text = ck.leaf_text(node, &["name", "type"]);
    let content = text.trim().to_string();
    let Some(name) = non_empty_attribute(node, "name") else {
        ck.report(node, "File without a name was given");
        return None;
    };
    if !name.starts_with('/') {
        ck.report_attribute(node, "name", format!("File name {} must be an absolute path", shown(&name)));
        return None;
    }
    let content_type = read_content_type(ck, node, &name)?;
    match content_type {
        // Oz allows an empty base64 file: it means an empty file.
        ContentType::Base64 if !content.is_empty() && !base64::is_valid(&content) => {
            ck.report(node, format!("Content of file {} is not valid base64", shown(&name)));
            return None;
        }
        ContentType::Url if content.is_empty() => {
            ck.report(node, format!("File {} has type url but no URL", shown(&name)));
            return None;
        }
        _ => {}
    }
    Some(File { name, content_type, content })
}

/// A `<commands>` or `<precommands>` section, in execution order.
///
/// Oz's ordering rule: either no command has a `position` (document order), or
/// all do and the positions are exactly 1..N in some order.
fn read_commands<'a, 'i>(ck: &mut Checker<'a, 'i>, section: Node<'a, 'i>) -> Vec<Command> {
    let children = ck.children(section, &["command"], &[]);
    let errors_before = ck.error_count();
    let mut positions: Vec<Option<u64>> = Vec::new();
    let mut commands: Vec<Command> = Vec::new();
    let mut positions_readable = true;
    for node in children.all("command") {
        let position = match node.attribute("position") {
            None => None,
            Some(text) => match text.trim().parse::<u64>() {
                Ok(position) => Some(position),
                Err(_) => {
                    ck.report_attribute(
                        *node,
                        "position",
                        format!("Command position '{}' must be a whole number", shown(text)),
                    );
                    positions_readable = false;
                    None
                }
            },
        };
        positions.push(position);
        if let Some(command) = read_command(ck, *node) {
            commands.push(command);
        }
    }
    let with_position = positions.iter().filter(|p| p.is_some()).count();
    if positions_readable && with_position > 0 {
        if with_position != positions.len() {
            ck.report(
                section,
                "All command elements must have a position (explicit order), or none of them may (implicit order)",
            );
        } else {
            let mut sorted = positions.clone();
            sorted.sort_unstable();
            let in_sequence = sorted.iter().zip(1u64..).all(|(p, expected)| *p == Some(expected));
            if !in_sequence {
                ck.report(section, "Cannot have duplicate or sparse command position order!");
            }
        }
    }
    if ck.error_count() > errors_before {
        // Some command is unusable, so no order can be trusted; the caller
        // reports the errors and builds no value.
        return Vec::new();
    }
    // Every command was read and positions are 1..N or all absent: order by them
    // (a stable sort keeps document order when they are absent).
    let mut ordered: Vec<(Option<u64>, Command)> = positions.into_iter().zip(commands).collect();
    ordered.sort_by_key(|(p, _)| *p);
    ordered.into_iter().map(|(_, c)| c).collect()
}

fn read_command<'a, 'i>(ck: &mut Checker<'a, 'i>, node: Node<'a, 'i>) -> Option<Command> {
    let text = ck.leaf_text(node, &["name", "position", "type"]);
    let content = text.trim().to_string();
    let Some(name) = non_empty_attribute(node, "name") else {
        ck.report(node, "Command without a name was given");
        return None;
    };
    let content_type = read_content_type(ck, node, &name)?;
    if content.is_empty() {
        ck.report(node, "Empty commands are not allowed");
        return None;
    }
    if content_type == ContentType::Base64 && !base64::is_valid(&content) {
        ck.report(node, format!("Content of command {} is not valid base64", shown(&name)));
        return None;
    }
    Some(Command { name, content_type, content })
}

fn read_disk<'a, 'i>(ck: &mut Checker<'a, 'i>, template: &Children<'a, 'i>) -> Option<u64> {
    let nodes = template.all("disk");
    if let Some(extra) = nodes.get(1) {
        ck.report(*extra, format!("Expected 0 or 1 disk section in TDL, saw {}", nodes.len()));
    }
    let disk = *nodes.first()?;
    let children = ck.children(disk, &["size"], &[]);
    let (size_node, size) = ck.required_value(&children, "size", "disk size")?;
    match parse_disk_size(&size) {
        Ok(bytes) => Some(bytes),
        Err(error) => {
            ck.report(size_node, error.to_string());
            None
        }
    }
}

/// Builds a full template from its parts, which must include name and OS.
pub(crate) fn into_template(parts: TemplateParts) -> Option<Template> {
    let content = parts.content;
    Some(Template {
        version: parts.version,
        name: parts.name?,
        description: parts.description,
        os: parts.os?,
        packages: content.packages,
        repositories: content.repositories,
        files: content.files,
        commands: content.commands,
        precommands: content.precommands,
        disk_size: parts.disk_size,
    })
}
