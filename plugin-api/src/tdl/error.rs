//! Errors from reading a template: a list of one-line [`Diagnostic`]s.
//!
//! `imagefactory validate` prints every problem in a template at once, so the
//! reader collects diagnostics instead of stopping at the first one. Each
//! diagnostic names the element, the line and the column, so the user can find
//! the spot in an editor without guessing.

use std::fmt;

/// One problem found in a template.
///
/// `element` is the XML element the problem is about (without angle brackets),
/// or empty when the problem concerns the document as a whole (an XML syntax
/// error, a size limit). `line` and `column` count from 1.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Diagnostic {
    pub line: u32,
    pub column: u32,
    pub element: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "line {}, column {}: ", self.line, self.column)?;
        if !self.element.is_empty() {
            write!(f, "<{}>: ", self.element)?;
        }
        f.write_str(&self.message)
    }
}

/// A template could not be read. Holds at least one [`Diagnostic`], sorted by
/// position in the document.
///
/// `Display` shows the first diagnostic on one line, followed by
/// `" (and N more errors)"` when there are more, so a log line stays short while
/// [`TdlError::diagnostics`] still gives callers the full list.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", summary(&self.diagnostics))]
pub struct TdlError {
    // Invariant: never empty. Only `TdlError::new` builds this value.
    diagnostics: Vec<Diagnostic>,
}

fn summary(diagnostics: &[Diagnostic]) -> String {
    match diagnostics {
        [] => String::from("invalid template"),
        [only] => only.to_string(),
        [first, rest @ ..] => {
            let noun = if rest.len() == 1 { "error" } else { "errors" };
            format!("{first} (and {} more {noun})", rest.len())
        }
    }
}

impl TdlError {
    /// Builds an error from diagnostics; `None` when there are none, so an empty
    /// error can never exist.
    pub fn new(mut diagnostics: Vec<Diagnostic>) -> Option<TdlError> {
        if diagnostics.is_empty() {
            return None;
        }
        // A stable sort keeps problems found at the same spot in the order the
        // rules were checked.
        diagnostics.sort_by_key(|d| (d.line, d.column));
        Some(TdlError { diagnostics })
    }

    /// An error with a single diagnostic.
    pub(crate) fn single(diagnostic: Diagnostic) -> TdlError {
        TdlError { diagnostics: vec![diagnostic] }
    }

    /// Every problem found, in document order. Never empty.
    pub fn diagnostics(&self) -> &[Diagnostic] {
        &self.diagnostics
    }

    /// The messages alone, in document order: handy for tests and for callers
    /// that show positions some other way.
    pub fn messages(&self) -> Vec<&str> {
        self.diagnostics.iter().map(|d| d.message.as_str()).collect()
    }
}
