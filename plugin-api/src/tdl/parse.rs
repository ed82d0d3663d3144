//! The XML layer: turns text into a `roxmltree` document under limits fit for
//! untrusted input, and offers the [`Checker`] the rule code reports through.
//!
//! Templates arrive over HTTP from anyone who can reach the daemon, so the parser
//! never processes a DTD (no entity definitions, so no entity expansion beyond
//! the five predefined ones and character references, and nothing external is
//! ever fetched), and size, node count and nesting are bounded before any rule
//! runs.

use roxmltree::{Document, Node, ParsingOptions};

use super::error::{Diagnostic, TdlError};

/// Largest document accepted, in bytes. Real templates are a few KiB; 4 MiB
/// leaves room for large embedded files while bounding memory.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;

/// Most XML nodes (elements, text, comments) accepted in one document.
pub const MAX_NODES: u32 = 250_000;

/// Deepest element nesting accepted. The TDL grammar itself is five levels deep.
pub const MAX_DEPTH: usize = 32;

/// Parses `xml` into a tree, enforcing the limits above. Every failure is a
/// single diagnostic, because nothing else can be checked without a tree.
pub(crate) fn parse_xml(xml: &str) -> Result<Document<'_>, TdlError> {
    if xml.len() > MAX_DOCUMENT_BYTES {
        return Err(document_error(
            1,
            1,
            format!("Document is {} bytes; the limit is {MAX_DOCUMENT_BYTES} bytes (4 MiB)", xml.len()),
        ));
    }
    let options = ParsingOptions { allow_dtd: false, nodes_limit: MAX_NODES, ..ParsingOptions::default() };
    let doc = Document::parse_with_options(xml, options).map_err(|e| syntax_error(xml, &e))?;
    check_depth(&doc)?;
    Ok(doc)
}

fn document_error(line: u32, column: u32, message: String) -> TdlError {
    TdlError::single(Diagnostic { line, column, element: String::new(), message })
}

fn syntax_error(xml: &str, error: &roxmltree::Error) -> TdlError {
    match error {
        roxmltree::Error::DtdDetected => {
            // roxmltree reports 1:1; point at the DOCTYPE itself instead.
            let (line, column) = xml.find("<!DOCTYPE").map(|offset| line_column(xml, offset)).unwrap_or((1, 1));
            document_error(
                line,
                column,
                "DOCTYPE declarations are not allowed in TDL (no DTDs, no entity definitions)".to_string(),
            )
        }
        roxmltree::Error::NodesLimitReached => document_error(
            1,
            1,
            format!("Document has more than {MAX_NODES} XML nodes (or is nested too deeply); refusing to read it"),
        ),
        other => {
            let pos = other.pos();
            // roxmltree's text ends with " at L:C"; the diagnostic carries the
            // position already, so drop the repetition.
            let text = other.to_string();
            let suffix = format!(" at {pos}");
            let text = text.strip_suffix(&suffix).unwrap_or(&text);
            document_error(pos.row, pos.col, format!("XML syntax error: {}", one_line(text)))
        }
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_column(text: &str, offset: usize) -> (u32, u32) {
    let before = text.get(..offset).unwrap_or(text);
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let column = before[line_start..].chars().count() + 1;
    (u32::try_from(line).unwrap_or(u32::MAX), u32::try_from(column).unwrap_or(u32::MAX))
}

/// Refuses documents nested deeper than [`MAX_DEPTH`]. Nodes come in document
/// order, parents before children, so one pass with a depth per node id suffices;
/// no recursion, so the check itself cannot overflow the stack.
fn check_depth(doc: &Document<'_>) -> Result<(), TdlError> {
    let mut depths: Vec<usize> = Vec::new();
    for node in doc.descendants() {
        let parent_depth = node.parent().and_then(|p| depths.get(p.id().get_usize()).copied()).unwrap_or(0);
        let depth = parent_depth + usize::from(node.is_element());
        let index = node.id().get_usize();
        if depths.len() <= index {
            depths.resize(index + 1, 0);
        }
        depths[index] = depth;
        if depth > MAX_DEPTH {
            let pos = doc.text_pos_at(node.range().start);
            return Err(TdlError::single(Diagnostic {
                line: pos.row,
                column: pos.col,
                element: node.tag_name().name().to_string(),
                message: format!(
                    "Elements are nested more than {MAX_DEPTH} levels deep; refusing to read the document"
                ),
            }));
        }
    }
    Ok(())
}

/// Shows a value from the template inside a message: control characters
/// escaped, so a diagnostic always stays on one line, and long values cut short,
/// so a 1 MiB attribute does not become a 1 MiB error.
pub(crate) fn shown(value: &str) -> String {
    const MAX_CHARS: usize = 80;
    let mut out = one_line(value);
    if let Some((cut, _)) = out.char_indices().nth(MAX_CHARS) {
        out.truncate(cut);
        out.push_str("...");
    }
    out
}

/// Escapes control characters (newlines above all) so text fits on one line.
fn one_line(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_string();
    }
    text.chars().map(|c| if c.is_control() { c.escape_default().to_string() } else { c.to_string() }).collect()
}

/// Most diagnostics kept for one document. A hostile document can break a rule
/// a hundred thousand times; nobody reads past the first screens, and the cap
/// bounds memory.
pub const MAX_DIAGNOSTICS: usize = 1000;

/// Collects diagnostics while the rule code walks the tree.
///
/// Problems are recorded by byte offset and turned into line and column once, in
/// a single pass over the text, when the walk ends: roxmltree's own position
/// lookup rescans the text from the start each time, which would make a
/// document with many errors quadratic.
pub(crate) struct Checker<'a, 'input> {
    doc: &'a Document<'input>,
    pending: Vec<Pending>,
    dropped: usize,
}

struct Pending {
    offset: usize,
    element: String,
    message: String,
}

/// The element children of one element, grouped by name, with unknown elements
/// already reported.
pub(crate) struct Children<'a, 'input> {
    pub(crate) parent: Node<'a, 'input>,
    groups: Vec<(&'static str, Vec<Node<'a, 'input>>)>,
}

impl<'a, 'input> Children<'a, 'input> {
    /// All children with this name, in document order.
    pub(crate) fn all(&self, name: &str) -> &[Node<'a, 'input>] {
        self.groups.iter().find(|(n, _)| *n == name).map_or(&[], |(_, nodes)| nodes.as_slice())
    }
}

impl<'a, 'input> Checker<'a, 'input> {
    pub(crate) fn new(doc: &'a Document<'input>) -> Self {
        Checker { doc, pending: Vec::new(), dropped: 0 }
    }

    /// Ends the walk: `Ok` with the value when nothing was reported.
    pub(crate) fn finish<T>(self, value: Option<T>) -> Result<T, TdlError> {
        let diagnostics = self.into_diagnostics();
        match (TdlError::new(diagnostics), value) {
            (Some(error), _) => Err(error),
            (None, Some(value)) => Ok(value),
            // A rule returned nothing without saying why: a bug here, but the
            // caller still deserves an error rather than a panic.
            (None, None) => Err(TdlError::single(Diagnostic {
                line: 1,
                column: 1,
                element: String::new(),
                message: "Template could not be read".to_string(),
            })),
        }
    }

    /// Resolves every recorded offset to a line and column in one sweep.
    fn into_diagnostics(mut self) -> Vec<Diagnostic> {
        self.pending.sort_by_key(|p| p.offset);
        let text = self.doc.input_text();
        let mut diagnostics = Vec::with_capacity(self.pending.len() + 1);
        let (mut line, mut column, mut at) = (1u32, 1u32, 0usize);
        for pending in self.pending {
            let target = pending.offset.min(text.len());
            for c in text.get(at..target).unwrap_or_default().chars() {
                if c == '\n' {
                    line = line.saturating_add(1);
                    column = 1;
                } else {
                    column = column.saturating_add(1);
                }
            }
            at = at.max(target);
            diagnostics.push(Diagnostic { line, column, element: pending.element, message: pending.message });
        }
        if self.dropped > 0 {
            diagnostics.push(Diagnostic {
                line,
                column,
                element: String::new(),
                message: format!("Too many errors: {} more not shown (the limit is {MAX_DIAGNOSTICS})", self.dropped),
            });
        }
        diagnostics
    }

    pub(crate) fn error_count(&self) -> usize {
        self.pending.len() + self.dropped
    }

    /// Reports a problem with an element, at the element's start tag.
    pub(crate) fn report(&mut self, node: Node<'_, '_>, message: impl Into<String>) {
        self.report_at(node.range().start, node, message);
    }

    /// Reports a problem with an attribute, at the attribute itself.
    pub(crate) fn report_attribute(&mut self, node: Node<'_, '_>, attribute: &str, message: impl Into<String>) {
        let offset = node
            .attributes()
            .find(|a| a.name() == attribute && a.namespace().is_none())
            .map_or(node.range().start, |a| a.range().start);
        self.report_at(offset, node, message);
    }

    fn report_at(&mut self, offset: usize, node: Node<'_, '_>, message: impl Into<String>) {
        if self.pending.len() >= MAX_DIAGNOSTICS {
            self.dropped += 1;
            return;
        }
        self.pending.push(Pending {
            offset,
            element: node.tag_name().name().to_string(),
            message: one_line(&message.into()),
        });
    }

    /// Groups the element children of `parent` by name. Elements not in
    /// `allowed`, non-blank text and unknown attributes are reported: the TDL
    /// schema is closed, and a misspelt element silently ignored is a build that
    /// quietly does the wrong thing.
    pub(crate) fn children(
        &mut self,
        parent: Node<'a, 'input>,
        allowed: &[&'static str],
        allowed_attributes: &[&str],
    ) -> Children<'a, 'input> {
        self.check_attributes(parent, allowed_attributes);
        let mut groups: Vec<(&'static str, Vec<Node<'a, 'input>>)> =
            allowed.iter().map(|name| (*name, Vec::new())).collect();
        for child in parent.children() {
            if child.is_text() {
                if child.text().is_some_and(|t| !t.trim().is_empty()) {
                    self.report(
                        parent,
                        format!("Unexpected text in <{}>; it may only contain elements", parent.tag_name().name()),
                    );
                }
                continue;
            }
            if !child.is_element() {
                continue; // comments and processing instructions carry no meaning
            }
            let name = child.tag_name();
            let slot = groups.iter_mut().find(|(n, _)| name.namespace().is_none() && *n == name.name());
            match slot {
                Some((_, nodes)) => nodes.push(child),
                None => self.report_unknown(parent, child, allowed),
            }
        }
        Children { parent, groups }
    }

    fn report_unknown(&mut self, parent: Node<'_, '_>, child: Node<'_, '_>, allowed: &[&str]) {
        let expected = if allowed.is_empty() {
            "no elements are allowed here".to_string()
        } else {
            format!("expected one of: {}", allowed.join(", "))
        };
        let shown = super::validate::qualified_name(child);
        self.report(child, format!("Unknown element <{shown}> in <{}>; {expected}", parent.tag_name().name()));
    }

    /// Reports attributes of `node` that are not in `allowed`.
    pub(crate) fn check_attributes(&mut self, node: Node<'_, '_>, allowed: &[&str]) {
        for attribute in node.attributes() {
            let known = attribute.namespace().is_none() && allowed.contains(&attribute.name());
            if !known {
                let offset = attribute.range().start;
                self.report_at(
                    offset,
                    node,
                    format!("Unknown attribute '{}' on <{}>", shown(attribute.name()), node.tag_name().name()),
                );
            }
        }
    }

    /// The text of a leaf element (one that holds only text), untrimmed.
    /// Child elements and unknown attributes are reported.
    pub(crate) fn leaf_text(&mut self, node: Node<'a, 'input>, allowed_attributes: &[&str]) -> String {
        self.check_attributes(node, allowed_attributes);
        let mut text = String::new();
        for child in node.children() {
            if child.is_element() {
                self.report_unknown(node, child, &[]);
            } else if child.is_text() {
                text.push_str(child.text().unwrap_or_default());
            }
        }
        text
    }

    /// An optional single-valued element: at most one may appear. Returns the
    /// trimmed text of the first one, or `None` when absent or blank (Oz treats
    /// an empty element like a missing one).
    pub(crate) fn optional_value(
        &mut self,
        children: &Children<'a, 'input>,
        element: &str,
        component: &str,
    ) -> Option<(Node<'a, 'input>, String)> {
        let nodes = children.all(element);
        if let Some(extra) = nodes.get(1) {
            self.report(*extra, format!("Expected 0 or 1 {component} in TDL, saw {}", nodes.len()));
        }
        let node = *nodes.first()?;
        let text = self.leaf_text(node, &[]);
        let trimmed = text.trim();
        if trimmed.is_empty() {
            None
        } else {
            Some((node, trimmed.to_string()))
        }
    }

    /// Like [`Checker::optional_value`] but keeps the text exactly as written
    /// (passwords, keys and descriptions may mean their spaces).
    pub(crate) fn optional_verbatim(
        &mut self,
        children: &Children<'a, 'input>,
        element: &str,
        component: &str,
    ) -> Option<String> {
        let nodes = children.all(element);
        if let Some(extra) = nodes.get(1) {
            self.report(*extra, format!("Expected 0 or 1 {component} in TDL, saw {}", nodes.len()));
        }
        let node = *nodes.first()?;
        let text = self.leaf_text(node, &[]);
        if text.trim().is_empty() {
            None
        } else {
            Some(text)
        }
    }

    /// A required single-valued element, with Oz's messages for missing and
    /// repeated elements. An empty element counts as missing.
    pub(crate) fn required_value(
        &mut self,
        children: &Children<'a, 'input>,
        element: &str,
        component: &str,
    ) -> Option<(Node<'a, 'input>, String)> {
        let present = !children.all(element).is_empty();
        let value = self.optional_value(children, element, component);
        if value.is_none() {
            let message = if present {
                format!("Found an empty {component} in TDL")
            } else {
                format!("Failed to find {component} in TDL")
            };
            let at = children.all(element).first().copied().unwrap_or(children.parent);
            self.report(at, message);
        }
        value
    }
}
