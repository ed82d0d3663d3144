//! The host's view of a template: validated once at request time, so a bad template is
//! rejected with a line-numbered reason before any record is made.

use imagefactory_plugin_api::tdl::{ParseOptions, Template};

/// What the engine needs to know of a valid template.
#[derive(Debug, Clone)]
pub struct TemplateInfo {
    pub name: String,
    pub os_name: String,
    pub os_version: String,
    pub os_arch: String,
}

/// Parses and validates a template; the error is the TDL library's one-line message.
pub fn check(xml: &str, require_root_pw: bool) -> Result<TemplateInfo, String> {
    let opts = ParseOptions { require_root_pw };
    let t = Template::parse(xml, &opts).map_err(|e| format!("invalid template: {e}"))?;
    Ok(TemplateInfo { name: t.name, os_name: t.os.name, os_version: t.os.version, os_arch: t.os.arch })
}

/// What stands in a stored template for the root password.
pub const REDACTED_ROOTPW: &str = "REDACTED";

/// The template with the text of every `<rootpw>` element replaced by `REDACTED`: what
/// is stored in image records and returned by the API. The root password is a
/// credential; the build itself is handed the template as given (kept in memory only).
pub fn redact_rootpw(xml: &str) -> String {
    let mut out = String::with_capacity(xml.len());
    let mut rest = xml;
    while let Some(open) = rest.find("<rootpw") {
        let after_name = &rest[open + "<rootpw".len()..];
        // `<rootpwx>` is another element; `<rootpw/>` is empty.
        let Some(gt) = after_name.find('>') else { break };
        let tag_end = open + "<rootpw".len() + gt + 1;
        let is_element = after_name.starts_with(|c: char| c == '>' || c == '/' || c.is_whitespace());
        if !is_element || rest[..tag_end].ends_with("/>") {
            out.push_str(&rest[..tag_end]);
            rest = &rest[tag_end..];
            continue;
        }
        let Some(close) = rest[tag_end..].find("</rootpw>") else { break };
        out.push_str(&rest[..tag_end]);
        out.push_str(REDACTED_ROOTPW);
        rest = &rest[tag_end + close..];
        out.push_str("</rootpw>");
        rest = &rest["</rootpw>".len()..];
    }
    out.push_str(rest);
    out
}

/// The root password a template gives, for scrubbing it from log lines.
pub fn root_password(xml: &str) -> Option<String> {
    Template::parse(xml, &ParseOptions::default()).ok()?.os.rootpw.filter(|p| !p.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rootpw_is_redacted_and_nothing_else_changes() {
        let t = "<template><os><rootpw>s3cr3t</rootpw><rootpwx>keep</rootpwx></os><x><rootpw/></x>\
<rootpw >two</rootpw></template>";
        assert_eq!(
            redact_rootpw(t),
            "<template><os><rootpw>REDACTED</rootpw><rootpwx>keep</rootpwx></os><x><rootpw/></x>\
<rootpw >REDACTED</rootpw></template>"
        );
        assert_eq!(redact_rootpw("<template/>"), "<template/>");
        assert_eq!(redact_rootpw("<rootpw>unclosed"), "<rootpw>unclosed");
    }
}
