//! The OpenStack cloud plugin: targets `openstack-kvm` (the original's name) and
//! `openstack`.
//!
//! Target image: the base image converted by qemu-img to qcow2 (or raw), zlib-compressed
//! when asked, and read back before the build is COMPLETE. The OS plugin's target stage
//! first applies the in-image changes every cloud gets (`cloudkit::content`: cloud-info
//! file, persistent network naming removed) and the host's target content to a copy, and
//! the plugin converts that in `builder_did_create_target_image`. With
//! `cloud_modifications=false` and no host content, the conversion reads the base image
//! directly, so the base is never copied.
//!
//! Push: Glance v2. Create the image (name from the template, `disk_format` read from the
//! real body, `container_format` bare, private), stream the body into it from disk,
//! wait for `active`, check Glance stored the same size and sha512, and report the Glance
//! image id. Delete removes the image from Glance. Snapshot builds do not exist in Glance.
//!
//! Parameters:
//! - `openstack_image_format`: `qcow2` (default) or `raw`; the host config key of the same
//!   name (the original's) is the default when the parameter is absent.
//! - `compress`: true for a zlib-compressed qcow2 (smaller upload, slower conversion).
//! - `openstack_active_timeout`: seconds to wait for the image to become active (600).
//!
//! The provider definition and the credentials are described in [`provider`] and
//! [`credentials`]. Credentials are used for the request only: never logged, stored or
//! returned.

pub mod credentials;
pub mod glance;
pub mod provider;

use std::path::Path;
use std::time::Duration;

use imagefactory_plugin_api::prelude::*;
use serde_json::{Map, Value};

use crate::credentials::{Auth, Secret};
use crate::glance::{Glance, GlanceError, RetryPolicy};

/// The targets this plugin builds for.
pub const TARGETS: &[&str] = &["openstack-kvm", "openstack"];

const DEFAULT_ACTIVE_TIMEOUT: Duration = Duration::from_secs(600);

/// The plugin object.
pub struct OpenStack;

/// The target body's format, from parameters and settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TargetFormat {
    pub format: &'static str,
    pub compress: bool,
}

/// Reads `openstack_image_format` (parameter, then host setting, then qcow2) and `compress`.
pub fn target_format(parameters: &Parameters, settings: &Parameters) -> Result<TargetFormat, PluginError> {
    let raw = parameters.get("openstack_image_format").or_else(|| settings.get("openstack_image_format"));
    let format = match raw {
        None => "qcow2",
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("qcow2") => "qcow2",
        Some(Value::String(s)) if s.trim().eq_ignore_ascii_case("raw") => "raw",
        Some(other) => {
            return Err(PluginError::new(format!("openstack_image_format must be qcow2 or raw, not {other}")));
        }
    };
    let compress = match (parameters.get("compress"), parameter_as_bool(parameters, "compress")) {
        (None, _) => false,
        (Some(_), Some(b)) => b,
        (Some(v), None) => return Err(PluginError::new(format!("compress must be true or false, not {v}"))),
    };
    if compress && format != "qcow2" {
        return Err(PluginError::new("compress applies to qcow2 only; openstack_image_format is raw"));
    }
    Ok(TargetFormat { format, compress })
}

fn disk_error(e: diskformat::DiskFormatError) -> PluginError {
    match e {
        diskformat::DiskFormatError::Cancelled => PluginError::cancelled(),
        other => PluginError::new(other.to_string()),
    }
}

/// The in-image changes every cloud gets (see `cloudkit::content`), with the host's
/// target content: what the OS plugin's target stage applies.
fn cloud_content(req: &TargetHookRequest) -> Result<TargetContent, PluginError> {
    let ours = cloudkit::content::cloud_content(&req.target, &req.parameters).map_err(PluginError::new)?;
    Ok(cloudkit::content::merged(ours, &req.content))
}

fn glance_error(e: GlanceError) -> PluginError {
    match e {
        GlanceError::Cancelled => PluginError::cancelled(),
        other => PluginError::new(other.to_string()),
    }
}

/// Converts `src` into the target body at `dst` and checks the result.
fn make_target_body(host: &Host, src: &Path, dst: &Path, want: TargetFormat, target: &str) -> Result<(), PluginError> {
    let source = diskformat::info(src).map_err(disk_error)?;
    if source.backing_file.is_some() {
        return Err(PluginError::new(format!(
            "{} has a backing file; cannot make a target image of it",
            src.display()
        )));
    }
    let compressed = if want.compress { "zlib-compressed " } else { "" };
    host.activity(&format!("Converting the {} image to {compressed}{} for {target}", source.format, want.format));
    let opts = diskformat::ConvertOptions { compress: want.compress, ..Default::default() };
    let same_file = src == dst;
    if !(same_file && source.format == want.format && !want.compress) {
        diskformat::convert(src, &source.format, dst, want.format, &opts, &mut |p| host.percent(p as u8), &|| {
            host.is_cancelled()
        })
        .map_err(disk_error)?;
    }
    host.activity("Checking the target image");
    let got = diskformat::verify(dst, want.format, Some(source.virtual_size)).map_err(disk_error)?;
    host.info(&format!(
        "target image for {target}: {}, virtual size {} bytes, {} bytes on disk",
        got.format, got.virtual_size, got.actual_size
    ));
    Ok(())
}

/// Glance's `disk_format` for a qemu format name.
pub fn glance_disk_format(qemu_format: &str) -> Option<&'static str> {
    Some(match qemu_format {
        "raw" => "raw",
        "qcow2" => "qcow2",
        "vmdk" => "vmdk",
        "vpc" => "vhd",
        "vhdx" => "vhdx",
        "vdi" => "vdi",
        _ => return None,
    })
}

/// The image name: the provider definition's `name`, else the template's, else the
/// original's fallback.
fn image_name(template: &str, target_image_id: &str) -> String {
    let opts = imagefactory_plugin_api::tdl::ParseOptions::default();
    match imagefactory_plugin_api::tdl::Template::parse(template, &opts) {
        Ok(t) if !t.name.trim().is_empty() => t.name.trim().to_string(),
        _ => format!("ImageFactory created image - {target_image_id}"),
    }
}

/// Glance at the provider's endpoint with the credentials' token (asking Keystone for
/// one when they hold a password).
fn connect(
    host: &Host,
    provider: &provider::Provider,
    creds: &credentials::Credentials,
) -> Result<Glance, PluginError> {
    if provider.trust.is_unchecked() {
        host.warn(&format!("the certificate of {} is not checked (tls_verify false)", provider.endpoint));
    }
    let agent = glance::agent(&provider.trust).map_err(glance_error)?;
    let retry = RetryPolicy::default();
    let token: Option<Secret> = match &creds.auth {
        Auth::NoAuth => None,
        Auth::Token(t) => Some(t.clone()),
        Auth::Keystone(k) => {
            host.activity(&format!("Authenticating as {} with Keystone at {}", k.username, k.auth_url));
            Some(glance::keystone_token(&agent, k, retry, &|| host.is_cancelled()).map_err(glance_error)?)
        }
    };
    Ok(Glance::new(agent, &provider.endpoint, token, retry))
}

fn parse_request(
    provider: &str,
    credentials: &str,
) -> Result<(provider::Provider, credentials::Credentials), PluginError> {
    let p = provider::parse(provider).map_err(|e| PluginError::new(e.to_string()))?;
    let c = credentials::parse(credentials).map_err(|e| PluginError::new(e.to_string()))?;
    Ok((p, c))
}

fn active_timeout(parameters: &Parameters) -> Result<Duration, PluginError> {
    match parameters.get("openstack_active_timeout") {
        None => Ok(DEFAULT_ACTIVE_TIMEOUT),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| PluginError::new(format!("openstack_active_timeout must be a number of seconds, not {v}"))),
    }
}

impl OpenStack {
    fn push(&self, host: &Host, req: &PushRequest) -> Result<ProviderOutcome, PluginError> {
        let (provider, creds) = parse_request(&req.provider, &req.credentials)?;
        let timeout = active_timeout(&req.parameters)?;
        let body = Path::new(&req.target_body_path);
        let info = diskformat::info(body).map_err(disk_error)?;
        if let Some(b) = &info.backing_file {
            return Err(PluginError::new(format!(
                "the target image depends on the backing file {b}; cannot upload it"
            )));
        }
        let disk_format = glance_disk_format(&info.format).ok_or_else(|| {
            PluginError::new(format!("the target image is {}, which Glance has no disk_format for", info.format))
        })?;
        let glance = connect(host, &provider, &creds)?;

        let mut image = Map::new();
        image.insert("name".into(), Value::String(image_name(&req.template, &req.target_image_id)));
        image.insert("disk_format".into(), Value::String(disk_format.into()));
        image.insert("container_format".into(), Value::String("bare".into()));
        image.insert("visibility".into(), Value::String("private".into()));
        image.insert("min_disk".into(), Value::from(0));
        image.insert("min_ram".into(), Value::from(0));
        image.extend(provider.image_properties.clone());
        let name = image.get("name").and_then(Value::as_str).unwrap_or_default().to_string();

        host.activity(&format!("Creating image \"{name}\" ({disk_format}) in Glance at {}", glance.endpoint()));
        let cancelled = || host.is_cancelled();
        let mut warn = |l: &str| host.warn(l);
        let created = glance.create_image(&Value::Object(image), &cancelled, &mut warn).map_err(glance_error)?;
        let id = created.get("id").and_then(Value::as_str).unwrap_or_default().to_string();
        host.info(&format!("created Glance image {id} at {}", glance.endpoint()));

        match self.upload_and_check(host, &glance, &id, body, timeout) {
            Ok(props) => {
                let mut out = ProviderOutcome::new(id);
                out.provider_account_identifier = creds.username.clone();
                out.properties = props;
                Ok(out)
            }
            Err(e) => {
                // Leave no half-made image behind on the provider (best effort, uncancellable).
                match glance.delete_image(&id, &|| false, &mut |l| host.warn(l)) {
                    Ok(_) => host.info(&format!("removed the unfinished Glance image {id}")),
                    Err(d) => host.warn(&format!("could not remove the unfinished Glance image {id}: {d}")),
                }
                Err(e)
            }
        }
    }

    fn upload_and_check(
        &self,
        host: &Host,
        glance: &Glance,
        id: &str,
        body: &Path,
        timeout: Duration,
    ) -> Result<Map<String, Value>, PluginError> {
        let size = std::fs::metadata(body)
            .map_err(|e| PluginError::with_source(format!("cannot read {}", body.display()), &e))?
            .len();
        host.activity(&format!("Uploading {:.1} MiB to Glance image {id}", size as f64 / 1048576.0));
        let mut last = u8::MAX;
        let mut on_progress = |sent: u64| {
            let pct = sent.saturating_mul(90).checked_div(size).map_or(95, |q| (5 + q).min(95) as u8);
            if pct != last {
                last = pct;
                host.percent(pct);
            }
        };
        let cancelled = || host.is_cancelled();
        let stats =
            glance.upload(id, body, &mut on_progress, &cancelled, &mut |l| host.warn(l)).map_err(glance_error)?;
        host.activity(&format!("Waiting for Glance image {id} to become active"));
        let image = glance.wait_active(id, timeout, &cancelled, &mut |l| host.warn(l)).map_err(glance_error)?;

        let stored = image.get("size").and_then(Value::as_u64);
        if stored != Some(size) {
            return Err(PluginError::new(format!(
                "Glance stored {} bytes for image {id}, but the target image has {size}",
                stored.map_or("an unknown number of".to_string(), |s| s.to_string())
            )));
        }
        let algo = image.get("os_hash_algo").and_then(Value::as_str);
        let value = image.get("os_hash_value").and_then(Value::as_str);
        if let (Some(sent), Some("sha512"), Some(stored)) = (&stats.sha512, algo, value) {
            if !sent.eq_ignore_ascii_case(stored) {
                return Err(PluginError::new(format!(
                    "Glance image {id} has a different sha512 than the data sent: the upload was corrupted"
                )));
            }
        }
        let secs = stats.elapsed.as_secs_f64().max(1e-6);
        let mib = stats.bytes as f64 / 1048576.0;
        let rss = cloudkit::report::peak_rss_note();
        host.info(&format!(
            "uploaded {mib:.1} MiB to Glance in {secs:.2} s ({:.1} MiB/s, {} tr{}){rss}",
            mib / secs,
            stats.attempts,
            if stats.attempts == 1 { "y" } else { "ies" }
        ));
        let mut props = Map::new();
        props.insert("glance_endpoint".into(), Value::String(glance.endpoint().to_string()));
        props.insert("glance_disk_format".into(), image.get("disk_format").cloned().unwrap_or(Value::Null));
        if let Some(v) = value {
            props.insert("glance_os_hash_value".into(), Value::String(v.to_string()));
        }
        Ok(props)
    }
}

impl CloudPlugin for OpenStack {
    fn builder_should_create_target_image(&self, _host: &Host, req: TargetHookRequest) -> Result<bool, PluginError> {
        // Check the parameters now, before any work, so a typo fails the build at once.
        target_format(&req.parameters, &req.settings)?;
        // With nothing for the OS plugin to apply, convert straight from the base image.
        Ok(!cloud_content(&req)?.is_empty())
    }

    fn builder_will_create_target_image(
        &self,
        host: &Host,
        req: TargetHookRequest,
    ) -> Result<TargetContent, PluginError> {
        let content = cloud_content(&req)?;
        if content.is_empty() {
            let want = target_format(&req.parameters, &req.settings)?;
            make_target_body(host, Path::new(&req.base_body_path), &host.body_path(), want, &req.target)?;
        }
        Ok(content)
    }

    fn builder_did_create_target_image(&self, host: &Host, req: TargetHookRequest) -> Result<(), PluginError> {
        let want = target_format(&req.parameters, &req.settings)?;
        let body = host.body_path();
        make_target_body(host, &body, &body, want, &req.target)
    }

    fn push_image_to_provider(&self, host: &Host, req: PushRequest) -> Result<ProviderOutcome, PluginError> {
        self.push(host, &req)
    }

    fn snapshot_image_on_provider(&self, _host: &Host, _req: SnapshotRequest) -> Result<ProviderOutcome, PluginError> {
        Err(PluginError::new(
            "Snapshot builds are not supported on OpenStack: Glance only stores uploaded images; \
             build a target image and push it instead",
        ))
    }

    fn delete_from_provider(&self, host: &Host, req: DeleteRequest) -> Result<(), PluginError> {
        let id = req
            .provider_id()
            .ok_or_else(|| PluginError::new("this provider image has no Glance image id to delete"))?;
        let (provider, creds) = parse_request(&req.provider, &req.credentials)?;
        let glance = connect(host, &provider, &creds)?;
        host.activity(&format!("Deleting Glance image {id} at {}", glance.endpoint()));
        let existed = glance.delete_image(id, &|| host.is_cancelled(), &mut |l| host.warn(l)).map_err(glance_error)?;
        if existed {
            host.info(&format!("deleted Glance image {id}"));
        } else {
            host.warn(&format!("Glance image {id} was already gone from {}", glance.endpoint()));
        }
        Ok(())
    }
}

fn manifest() -> Manifest {
    Manifest::cloud("OpenStack", "1.0", "OpenStack cloud plugin: qcow2 target images pushed to Glance v2", TARGETS)
        .maintainer("imagefactory developers", "", "")
        .license("Apache-2.0")
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    cloud: || Ok(OpenStack),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(v: Value) -> Parameters {
        match v {
            Value::Object(m) => m,
            _ => Parameters::new(),
        }
    }

    #[test]
    fn target_format_from_parameters_and_settings() {
        let none = Parameters::new();
        assert_eq!(target_format(&none, &none).unwrap(), TargetFormat { format: "qcow2", compress: false });
        let settings = params(serde_json::json!({"openstack_image_format": "raw"}));
        assert_eq!(target_format(&none, &settings).unwrap().format, "raw");
        let p = params(serde_json::json!({"openstack_image_format": "QCOW2", "compress": "yes"}));
        assert_eq!(target_format(&p, &settings).unwrap(), TargetFormat { format: "qcow2", compress: true });
        for bad in [
            serde_json::json!({"openstack_image_format": "vmdk"}),
            serde_json::json!({"compress": "maybe"}),
            serde_json::json!({"openstack_image_format": "raw", "compress": true}),
        ] {
            let e = target_format(&params(bad), &none).unwrap_err();
            assert!(!e.message.contains('\n'));
        }
    }

    #[test]
    fn the_shipped_examples_parse() {
        let p = provider::parse(include_str!("../../../conf/examples/openstack-provider.json")).unwrap();
        assert_eq!(p.endpoint, "http://127.0.0.1:9292");
        assert_eq!(p.image_properties["os_distro"], "fedora");
        let c = credentials::parse(include_str!("../../../conf/examples/openstack-credentials.xml")).unwrap();
        assert!(matches!(c.auth, Auth::Keystone(_)), "{c:?}");
    }

    #[test]
    fn names_and_disk_formats() {
        assert_eq!(image_name("<template><name>f12jeos</name></template>", "t1"), "ImageFactory created image - t1");
        let tdl = "<template><name>f12jeos</name><os><name>Fedora</name><version>12</version><arch>x86_64</arch>\
                   <install type='url'><url>http://example.invalid/</url></install></os></template>";
        assert_eq!(image_name(tdl, "t1"), "f12jeos");
        assert_eq!(glance_disk_format("vpc"), Some("vhd"));
        assert_eq!(glance_disk_format("qed"), None);
    }
}
