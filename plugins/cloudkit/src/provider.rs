//! Provider definitions in the original's shapes.
//!
//! The original accepted, per cloud, a provider name (`ec2-us-east-1`), a JSON object
//! (`{"glance-host": ..., "glance-port": ...}`) or an XML document
//! (`<provider><api-url>...</api-url></provider>`). [`ProviderDoc::parse`] reads all
//! three into one shape: an optional name and a map of fields; each plugin then checks
//! the fields it needs. A field `endpoint` (a URL) overrides the service's address:
//! private regions, proxies, and the tests' services on loopback.

use serde_json::{Map, Value};

/// Why a provider definition cannot be read. One line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("provider definition: {0}")]
pub struct ProviderError(pub String);

/// A provider definition, whatever its shape.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderDoc {
    /// The plain name, or the `name` field of a JSON or XML definition.
    pub name: Option<String>,
    /// Every field of a JSON or XML definition (XML: child elements and root attributes,
    /// as strings).
    pub fields: Map<String, Value>,
}

impl ProviderDoc {
    /// Reads a definition: JSON when it starts with `{`, XML when it starts with `<`, a
    /// plain name otherwise.
    pub fn parse(definition: &str) -> Result<ProviderDoc, ProviderError> {
        let text = definition.trim();
        if text.is_empty() {
            return Err(ProviderError("it is empty: give a provider name, a JSON object or an XML document".into()));
        }
        if text.starts_with('{') {
            return parse_json(text);
        }
        if text.starts_with('<') {
            return parse_xml(text);
        }
        if text.starts_with('[') || text.chars().any(char::is_whitespace) {
            return Err(ProviderError("expected a provider name, a JSON object or an XML document".into()));
        }
        Ok(ProviderDoc { name: Some(text.to_string()), fields: Map::new() })
    }

    /// A field as a non-empty string (numbers and booleans are given as text).
    pub fn str(&self, key: &str) -> Option<String> {
        match self.fields.get(key)? {
            Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            Value::Number(n) => Some(n.to_string()),
            Value::Bool(b) => Some(b.to_string()),
            _ => None,
        }
    }

    /// A required string field; the error names it and what it is for.
    pub fn require(&self, key: &str, what: &str) -> Result<String, ProviderError> {
        self.str(key).ok_or_else(|| ProviderError(format!("{key} is missing ({what})")))
    }

    /// The `endpoint` override, checked to be an http(s) URL, without a trailing slash.
    pub fn endpoint(&self) -> Result<Option<String>, ProviderError> {
        let Some(e) = self.str("endpoint") else { return Ok(None) };
        if !(e.starts_with("http://") || e.starts_with("https://")) || e.len() < "http://x".len() {
            return Err(ProviderError(format!("endpoint must be an http:// or https:// URL, not '{e}'")));
        }
        Ok(Some(e.trim_end_matches('/').to_string()))
    }
}

fn parse_json(text: &str) -> Result<ProviderDoc, ProviderError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ProviderError(format!("not valid JSON ({e})")))?;
    let Value::Object(fields) = value else {
        return Err(ProviderError("expected a JSON object".into()));
    };
    let name = match fields.get("name") {
        None => None,
        Some(Value::String(s)) if !s.trim().is_empty() => Some(s.trim().to_string()),
        Some(_) => return Err(ProviderError("name must be a non-empty string".into())),
    };
    Ok(ProviderDoc { name, fields })
}

fn parse_xml(text: &str) -> Result<ProviderDoc, ProviderError> {
    let opts = roxmltree::ParsingOptions { allow_dtd: false, ..Default::default() };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| {
        let pos = e.pos();
        ProviderError(format!("not well-formed XML (error at line {}, column {})", pos.row, pos.col))
    })?;
    let root = doc.root_element();
    let mut fields = Map::new();
    for a in root.attributes() {
        fields.insert(a.name().to_string(), Value::String(a.value().trim().to_string()));
    }
    for child in root.children().filter(|n| n.is_element()) {
        let key = child.tag_name().name().to_string();
        if child.children().any(|n| n.is_element()) {
            return Err(ProviderError(format!("<{key}> must hold text, not elements")));
        }
        if fields.contains_key(&key) {
            return Err(ProviderError(format!("<{key}> is given twice")));
        }
        fields.insert(key, Value::String(child.text().unwrap_or("").trim().to_string()));
    }
    let name = fields.get("name").and_then(Value::as_str).filter(|s| !s.is_empty()).map(str::to_string);
    Ok(ProviderDoc { name, fields })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_three_shapes() {
        let n = ProviderDoc::parse(" ec2-us-east-1 ").unwrap();
        assert_eq!(n.name.as_deref(), Some("ec2-us-east-1"));
        assert!(n.fields.is_empty());

        let j = ProviderDoc::parse(r#"{"name": "r1", "endpoint": "http://127.0.0.1:5000/", "port": 9}"#).unwrap();
        assert_eq!(j.name.as_deref(), Some("r1"));
        assert_eq!(j.endpoint().unwrap().as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(j.str("port").as_deref(), Some("9"));

        let x = ProviderDoc::parse(
            "<provider kind='v'><api-url> https://vc/sdk </api-url><datastore>ds</datastore></provider>",
        )
        .unwrap();
        assert_eq!(x.str("api-url").as_deref(), Some("https://vc/sdk"));
        assert_eq!(x.str("kind").as_deref(), Some("v"));
        assert_eq!(
            x.require("network_name", "the VM's network").unwrap_err().to_string(),
            "provider definition: network_name is missing (the VM's network)"
        );
    }

    #[test]
    fn bad_definitions_get_one_line() {
        for (text, want) in [
            ("", "it is empty"),
            ("{not json", "not valid JSON"),
            ("[1]", "expected a provider name"),
            ("<a><b>", "not well-formed XML"),
            ("<a><b><c/></b></a>", "<b> must hold text"),
            ("two words", "expected a provider name"),
            (r#"{"endpoint": "ftp://x"}"#, "endpoint must be"),
        ] {
            let e = ProviderDoc::parse(text).and_then(|d| d.endpoint().map(|_| d));
            let msg = e.expect_err(text).to_string();
            assert!(msg.contains(want), "{text}: {msg}");
            assert!(!msg.contains('\n'));
        }
    }
}
