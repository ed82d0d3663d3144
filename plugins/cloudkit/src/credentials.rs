//! The original's credentials document:
//! `<provider_credentials><ec2_credentials><access_key>…</access_key>…</ec2_credentials></provider_credentials>`.
//!
//! Values come back as [`Secret`]s, and no error message ever contains one.

use std::collections::BTreeMap;

use crate::Secret;

/// Why a credentials document cannot be used. One line, never a credential value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider credentials: {0}")]
pub struct CredentialsError(pub String);

/// The children of `<element>` inside `<provider_credentials>` (or of a bare `<element>`
/// document), by element name. Each name may appear once.
pub fn section(xml: &str, element: &str) -> Result<BTreeMap<String, Secret>, CredentialsError> {
    let err = |m: String| CredentialsError(m);
    let opts = roxmltree::ParsingOptions { allow_dtd: false, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(xml, opts).map_err(|e| {
        let pos = e.pos();
        err(format!("not well-formed XML (error at line {}, column {})", pos.row, pos.col))
    })?;
    let root = doc.root_element();
    let creds = if root.has_tag_name(element) {
        root
    } else if root.has_tag_name("provider_credentials") {
        root.children()
            .find(|n| n.has_tag_name(element))
            .ok_or_else(|| err(format!("no <{element}> element inside <provider_credentials>")))?
    } else {
        return Err(err(format!(
            "the document's root is <{}>, expected <provider_credentials><{element}>",
            root.tag_name().name()
        )));
    };
    let mut values = BTreeMap::new();
    for child in creds.children().filter(|n| n.is_element()) {
        let name = child.tag_name().name().to_string();
        if values.contains_key(&name) {
            return Err(err(format!("<{name}> is given twice in <{element}>")));
        }
        values.insert(name, Secret::new(child.text().unwrap_or("").trim()));
    }
    Ok(values)
}

/// A required value of a [`section`]; the error names the element.
pub fn required<'a>(
    values: &'a BTreeMap<String, Secret>,
    name: &str,
    element: &str,
) -> Result<&'a Secret, CredentialsError> {
    values
        .get(name)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| CredentialsError(format!("<{name}> is missing or empty in <{element}>")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_section_and_hides_values() {
        let xml = "<provider_credentials><ec2_credentials><access_key>AK</access_key>\
<secret_access_key>s3cr3t</secret_access_key></ec2_credentials></provider_credentials>";
        let v = section(xml, "ec2_credentials").unwrap();
        assert_eq!(required(&v, "access_key", "ec2_credentials").unwrap().expose(), "AK");
        assert!(!format!("{v:?}").contains("s3cr3t"));
        let e = required(&v, "account_number", "ec2_credentials").unwrap_err().to_string();
        assert_eq!(e, "provider credentials: <account_number> is missing or empty in <ec2_credentials>");
    }

    #[test]
    fn errors_never_show_values() {
        let dup =
            "<provider_credentials><x><password>p4ss</password><password>p4ss</password></x></provider_credentials>";
        let e = section(dup, "x").unwrap_err().to_string();
        assert!(e.contains("given twice") && !e.contains("p4ss"), "{e}");
        assert!(section("<other/>", "x").unwrap_err().to_string().contains("expected <provider_credentials><x>"));
        assert!(section("<provider_credentials/>", "x").unwrap_err().to_string().contains("no <x> element"));
        assert!(section("<provider_credentials>", "x").unwrap_err().to_string().contains("not well-formed"));
    }
}
