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
