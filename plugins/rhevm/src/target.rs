//! The target image: qcow2 (default) or raw, read back before COMPLETE.
//!
//! - `rhevm_image_format`: `qcow2` (default) or `raw`; parameter first, then the host
//!   setting of the same name (the original's config key).
//! - `rhevm_qcow_compat`: the qcow2 `compat` level, `0.10` (default: what every RHEV-M
//!   and oVirt engine reads, as the original asked for when qemu-img supported it) or
//!   `1.1`; parameter first, then the host setting.
//! - `cloud_modifications` (default true): the common cloud changes (see cloudkit).

use std::path::Path;

use imagefactory_plugin_api::ops::{Parameters, TargetContent};
use imagefactory_plugin_api::sdk::PluginError;
use serde_json::Value;

use crate::report::Report;

/// What the target body is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetSpec {
    /// `qcow2` or `raw`.
    pub format: &'static str,
    /// qcow2 only.
    pub compat: Option<&'static str>,
}

fn setting<'a>(parameters: &'a Parameters, settings: &'a Parameters, key: &str) -> Option<&'a Value> {
    parameters.get(key).or_else(|| settings.get(key))
}

/// Reads the target parameters.
pub fn spec(parameters: &Parameters, settings: &Parameters) -> Result<TargetSpec, PluginError> {
    let format = match setting(parameters, settings, "rhevm_image_format") {
        None => "qcow2",
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("qcow2") => "qcow2",
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("raw") => "raw",
        Some(v) => return Err(PluginError::new(format!("rhevm_image_format must be qcow2 or raw, not {v}"))),
    };
    let compat = match setting(parameters, settings, "rhevm_qcow_compat") {
        None => "0.10",
        Some(Value::String(s)) if s.trim() == "0.10" => "0.10",
        Some(Value::String(s)) if s.trim() == "1.1" => "1.1",
        Some(Value::Number(n)) if n.as_f64() == Some(1.1) => "1.1",
        Some(v) => return Err(PluginError::new(format!("rhevm_qcow_compat must be 0.10 or 1.1, not {v}"))),
    };
    Ok(TargetSpec { format, compat: (format == "qcow2").then_some(compat) })
}

/// The content this plugin wants applied: the common cloud changes.
pub fn content(parameters: &Parameters) -> Result<TargetContent, PluginError> {
    cloudkit::content::cloud_content("rhevm", parameters).map_err(PluginError::new)
}

pub(crate) fn disk_error(e: diskformat::DiskFormatError) -> PluginError {
    match e {
        diskformat::DiskFormatError::Cancelled => PluginError::cancelled(),
        other => PluginError::new(other.to_string()),
    }
}

/// Converts `src` into the target body at `dst` (may be the same file) and checks it.
pub fn make_body(r: &dyn Report, src: &Path, dst: &Path, want: &TargetSpec) -> Result<(), PluginError> {
    let source = diskformat::info(src).map_err(disk_error)?;
    if let Some(b) = &source.backing_file {
        return Err(PluginError::new(format!(
            "{} has the backing file {b}; cannot make a target image of it",
            src.display()
        )));
    }
    let already = src == dst && source.format == want.format && source.compat.as_deref() == want.compat;
    if !already {
        let compat = want.compat.map_or(String::new(), |c| format!(" (compat {c})"));
        r.activity(&format!("Converting the {} image to {}{compat} for RHEV-M", source.format, want.format));
        let opts = diskformat::ConvertOptions { compat: want.compat.map(str::to_string), ..Default::default() };
        diskformat::convert(src, &source.format, dst, want.format, &opts, &mut |p| r.percent(p as u8), &|| {
            r.cancelled()
        })
        .map_err(disk_error)?;
    }
    r.activity("Checking the target image");
    let got = diskformat::verify(dst, want.format, Some(source.virtual_size)).map_err(disk_error)?;
    if got.compat.as_deref() != want.compat {
        return Err(PluginError::new(format!(
            "the converted qcow2 has compat {}, expected {}",
            got.compat.as_deref().unwrap_or("unknown"),
            want.compat.unwrap_or("none")
        )));
    }
    r.info(&format!(
        "target image for RHEV-M: {}{}, virtual size {} bytes, {} bytes on disk",
        got.format,
        got.compat.map_or(String::new(), |c| format!(" compat {c}")),
        got.virtual_size,
        got.actual_size
    ));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(v: Value) -> Parameters {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn formats_from_parameters_and_settings() {
        let none = Parameters::new();
        assert_eq!(spec(&none, &none).unwrap(), TargetSpec { format: "qcow2", compat: Some("0.10") });
        let s = p(serde_json::json!({"rhevm_image_format": "raw"}));
        assert_eq!(spec(&none, &s).unwrap(), TargetSpec { format: "raw", compat: None });
        let q = p(serde_json::json!({"rhevm_image_format": "QCOW2", "rhevm_qcow_compat": "1.1"}));
        assert_eq!(spec(&q, &s).unwrap(), TargetSpec { format: "qcow2", compat: Some("1.1") });
        for bad in [serde_json::json!({"rhevm_image_format": "vmdk"}), serde_json::json!({"rhevm_qcow_compat": "2"})] {
            assert!(!spec(&p(bad), &none).unwrap_err().message.contains('\n'));
        }
    }
}
