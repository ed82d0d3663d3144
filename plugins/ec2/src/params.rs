//! The plugin's parameters (the original's names where it had them), checked before any
//! work so a typo fails the build at once with one line naming it.

use std::time::Duration;

use imagefactory_plugin_api::ops::{parameter_as_bool, Parameters, TargetContent};
use serde_json::Value;

use crate::retry::RetryPolicy;
use imagefactory_plugin_api::sdk::PluginError;

/// How the image gets to EC2.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UploadMethod {
    /// EBS direct APIs into a snapshot (the default).
    Ebs,
    /// Multipart upload to S3, then ImportSnapshot.
    S3,
}

impl UploadMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            UploadMethod::Ebs => "ebs",
            UploadMethod::S3 => "s3",
        }
    }
}

/// Everything a push reads from its parameters and the host settings.
#[derive(Debug, Clone)]
pub struct PushOptions {
    pub method: UploadMethod,
    pub ami_name: Option<String>,
    /// Requests in flight; `None` for the method's default.
    pub concurrency: Option<usize>,
    pub snapshot_timeout: Duration,
    pub import_timeout: Duration,
    pub ena_support: bool,
    pub retry: RetryPolicy,
}

fn bool_param(p: &Parameters, key: &str, default: bool) -> Result<bool, PluginError> {
    match (p.get(key), parameter_as_bool(p, key)) {
        (None, _) => Ok(default),
        (Some(_), Some(b)) => Ok(b),
        (Some(v), None) => Err(PluginError::new(format!("{key} must be true or false, not {v}"))),
    }
}

fn number_param(p: &Parameters, key: &str, range: std::ops::RangeInclusive<u64>) -> Result<Option<u64>, PluginError> {
    let Some(v) = p.get(key) else { return Ok(None) };
    v.as_u64()
        .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
        .filter(|n| range.contains(n))
        .map(Some)
        .ok_or_else(|| {
            PluginError::new(format!("{key} must be a number from {} to {}, not {v}", range.start(), range.end()))
        })
}

fn text(v: &Value) -> Option<String> {
    v.as_str().map(|s| s.trim().to_ascii_lowercase())
}

/// Reads the push parameters.
pub fn push_options(p: &Parameters, settings: &Parameters) -> Result<PushOptions, PluginError> {
    let method_value = p
        .get("ec2_upload")
        .map(|v| ("ec2_upload", v))
        .or_else(|| p.get("ec2_ami_type").map(|v| ("ec2_ami_type", v)))
        .or_else(|| settings.get("ec2_ami_type").map(|v| ("ec2_ami_type (host setting)", v)));
    let method = match method_value {
        None => UploadMethod::Ebs,
        Some((key, v)) => match text(v).as_deref() {
            Some("ebs") => UploadMethod::Ebs,
            Some("s3") => UploadMethod::S3,
            _ => return Err(PluginError::new(format!("{key} must be ebs or s3, not {v}"))),
        },
    };
    if let Some(v) = p.get("ec2_virt_type") {
        match text(v).as_deref() {
            Some("hvm") => {}
            Some("paravirtual") => {
                return Err(PluginError::new(
                    "ec2_virt_type paravirtual is not supported: it needs pv-grub kernels (AKIs), which EC2 has \
                     retired; use hvm",
                ))
            }
            _ => return Err(PluginError::new(format!("ec2_virt_type must be hvm, not {v}"))),
        }
    }
    let ami_name = match p.get("ec2_ami_name") {
        None => None,
        Some(Value::String(s)) if valid_ami_name(s.trim()) => Some(s.trim().to_string()),
        Some(v) => {
            return Err(PluginError::new(format!(
                "ec2_ami_name must be 3-128 letters, digits, spaces or ()[]./-'@_ characters, not {v}"
            )))
        }
    };
    Ok(PushOptions {
        method,
        ami_name,
        concurrency: number_param(p, "ec2_upload_concurrency", 1..=32)?.map(|n| n as usize),
        snapshot_timeout: Duration::from_secs(number_param(p, "ec2_snapshot_timeout", 1..=86_400)?.unwrap_or(1200)),
        import_timeout: Duration::from_secs(number_param(p, "ec2_import_timeout", 1..=86_400)?.unwrap_or(7200)),
        ena_support: bool_param(p, "ec2_ena_support", true)?,
        retry: RetryPolicy::default(),
    })
}

/// AMI names: 3-128 characters of letters, digits and `()[] ./-'@_` (EC2's rule).
fn valid_ami_name(s: &str) -> bool {
    (3..=128).contains(&s.len()) && s.chars().all(|c| c.is_ascii_alphanumeric() || " ()[]./-'@_".contains(c))
}

/// The target content for `target` (the common cloud changes), after checking the
/// target parameters. `warn` hears of parameters accepted but without effect.
pub fn target_content(
    target: &str,
    p: &Parameters,
    settings: &Parameters,
    warn: &mut dyn FnMut(&str),
) -> Result<TargetContent, PluginError> {
    if let Some(v) = settings.get("ec2_image_format") {
        if text(v).as_deref() != Some("raw") {
            return Err(PluginError::new(format!("the host setting ec2_image_format must be raw, not {v}")));
        }
    }
    if bool_param(p, "ec2_flatten", false)? {
        return Err(PluginError::new(
            "ec2_flatten is not supported: a flat (partitionless) image needs a paravirtual pv-grub kernel, which EC2 \
             has retired; this plugin makes full-disk HVM images",
        ));
    }
    if p.contains_key("ec2_modify") {
        bool_param(p, "ec2_modify", true)?;
        warn("ec2_modify has no effect: its pv-grub and rc.local key changes are cloud-init's job on HVM images");
    }
    if bool_param(p, "skip_ec2_modifications", false)? {
        return Ok(TargetContent::default());
    }
    cloudkit::content::cloud_content(target, p).map_err(PluginError::new)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn params(v: Value) -> Parameters {
        v.as_object().cloned().unwrap_or_default()
    }

    #[test]
    fn upload_method_from_parameters_and_settings() {
        let none = Parameters::new();
        assert_eq!(push_options(&none, &none).unwrap().method, UploadMethod::Ebs);
        let s3 = params(json!({"ec2_ami_type": "s3"}));
        assert_eq!(push_options(&none, &s3).unwrap().method, UploadMethod::S3);
        assert_eq!(push_options(&params(json!({"ec2_upload": "EBS"})), &s3).unwrap().method, UploadMethod::Ebs);
        assert_eq!(push_options(&s3, &none).unwrap().method, UploadMethod::S3);
        let e = push_options(&params(json!({"ec2_upload": "ftp"})), &none).unwrap_err();
        assert_eq!(e.message, "ec2_upload must be ebs or s3, not \"ftp\"");
    }

    #[test]
    fn push_parameters_are_checked() {
        let none = Parameters::new();
        let o = push_options(
            &params(json!({"ec2_virt_type": "hvm", "ec2_upload_concurrency": "4", "ec2_ami_name": "my image (1)"})),
            &none,
        )
        .unwrap();
        assert_eq!((o.concurrency, o.ami_name.as_deref()), (Some(4), Some("my image (1)")));
        assert_eq!(o.snapshot_timeout, Duration::from_secs(1200));
        for (bad, want) in [
            (json!({"ec2_virt_type": "paravirtual"}), "pv-grub"),
            (json!({"ec2_upload_concurrency": 0}), "from 1 to 32"),
            (json!({"ec2_ami_name": "x"}), "ec2_ami_name must be"),
            (json!({"ec2_ena_support": "perhaps"}), "true or false"),
        ] {
            let e = push_options(&params(bad), &none).unwrap_err();
            assert!(e.message.contains(want) && !e.message.contains('\n'), "{}", e.message);
        }
    }

    #[test]
    fn target_content_and_its_switches() {
        let none = Parameters::new();
        let c = target_content("ec2", &none, &none, &mut |_| {}).unwrap();
        assert_eq!(c.files[0].file, "CLOUD_TYPE=\"ec2\"\n");
        let off = target_content("ec2", &params(json!({"skip_ec2_modifications": "yes"})), &none, &mut |_| {});
        assert!(off.unwrap().is_empty());
        let off = target_content("ec2", &params(json!({"cloud_modifications": false})), &none, &mut |_| {});
        assert!(off.unwrap().is_empty());
        let e = target_content("ec2", &params(json!({"ec2_flatten": true})), &none, &mut |_| {}).unwrap_err();
        assert!(e.message.contains("pv-grub"));
        let mut warned = Vec::new();
        target_content("ec2", &params(json!({"ec2_modify": "true"})), &none, &mut |w| warned.push(w.to_string()))
            .unwrap();
        assert_eq!(warned.len(), 1);
        let bad = params(json!({"ec2_image_format": "qcow2"}));
        assert!(target_content("ec2", &none, &bad, &mut |_| {}).is_err());
    }
}
