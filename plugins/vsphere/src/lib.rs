//! The vSphere cloud plugin: target `vsphere`.
//!
//! Target image: the base image converted by qemu-img to a streamOptimized VMDK (LSI Logic
//! adapter; `vsphere_vmdk_format=standard` for a plain monolithicSparse one), or with
//! `vsphere_ova=true` an OVA package (OVF descriptor first, then the disk). The result is
//! read back (format, subformat, virtual size; the package's members) before the build is
//! COMPLETE. The common cloud changes (cloudkit) and, for RHEL-5/CentOS-5 templates, the
//! original's initrd fix for vSphere's SCSI adapter travel as target content to the OS
//! plugin; with no content to apply the conversion reads the base image directly, so the
//! base is never copied. See [`target`].
//!
//! Push: the vSphere Web Services API (SOAP, `urn:vim25`, a small client in [`soap`] and
//! [`vim`]): the disk streamed to a datastore, a VM `factory-image-<provider image id>`
//! registered with it, marked as a template when `vsphere_template` is true. Delete
//! destroys the VM and removes its datastore folder. See [`push`]. Snapshot builds do not
//! exist on vSphere (there is no way to boot an installer there from a template alone).
//!
//! Parameters at push: `vsphere_template` (false), `vsphere_task_timeout` (seconds, 600).
//! The provider definition and credentials are described in [`provider`]; credentials are
//! used for the request only: never logged, stored or returned.
//!
//! Known limit: vSphere's own importer (OVF deploy) turns a streamOptimized disk into a
//! VMFS disk; a disk uploaded to a datastore as this plugin does (as the brief and the
//! simulator allow) is registered as is, which ESXi hosts may refuse to power on without
//! a `vmkfstools -i` copy. Use `vsphere_ova=true` and deploy the OVA where that matters.

pub mod ova;
pub mod provider;
pub mod push;
pub use cloudkit::report;
pub mod soap;
pub mod target;
pub mod vim;

use std::path::Path;
use std::time::Duration;

use imagefactory_plugin_api::prelude::*;
use serde_json::Value;

/// The targets this plugin builds for.
pub const TARGETS: &[&str] = &["vsphere"];

/// The VM name the original gave a pushed image.
pub fn vm_name(provider_image_id: &str) -> String {
    format!("factory-image-{provider_image_id}")
}

/// The plugin object.
pub struct VSphere;

fn vim_error(e: soap::VimError) -> PluginError {
    match e {
        soap::VimError::Cancelled => PluginError::cancelled(),
        other => PluginError::new(other.to_string()),
    }
}

fn parse_request(
    provider: &str,
    credentials: &str,
) -> Result<(provider::Provider, provider::Credentials), PluginError> {
    let p = provider::parse(provider).map_err(|e| PluginError::new(e.to_string()))?;
    let c = provider::credentials(credentials, &p).map_err(|e| PluginError::new(e.to_string()))?;
    Ok((p, c))
}

fn task_timeout(parameters: &Parameters) -> Result<Duration, PluginError> {
    match parameters.get("vsphere_task_timeout") {
        None => Ok(Duration::from_secs(600)),
        Some(v) => v
            .as_u64()
            .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
            .filter(|s| *s > 0)
            .map(Duration::from_secs)
            .ok_or_else(|| PluginError::new(format!("vsphere_task_timeout must be a number of seconds, not {v}"))),
    }
}

fn push_spec(req: &PushRequest) -> Result<push::PushSpec, PluginError> {
    let mut spec = push::PushSpec::new(&vm_name(&req.image_id));
    spec.template =
        match (req.parameters.get("vsphere_template"), parameter_as_bool(&req.parameters, "vsphere_template")) {
            (None, _) => false,
            (Some(_), Some(b)) => b,
            (Some(v), None) => {
                return Err(PluginError::new(format!("vsphere_template must be true or false, not {v}")))
            }
        };
    spec.task_timeout = task_timeout(&req.parameters)?;
    Ok(spec)
}

impl CloudPlugin for VSphere {
    fn builder_should_create_target_image(&self, _host: &Host, req: TargetHookRequest) -> Result<bool, PluginError> {
        target::spec(&req.parameters)?;
        let ours = target::content(&req.parameters, &req.template)?;
        Ok(!cloudkit::content::merged(ours, &req.content).is_empty())
    }

    fn builder_will_create_target_image(
        &self,
        host: &Host,
        req: TargetHookRequest,
    ) -> Result<TargetContent, PluginError> {
        let spec = target::spec(&req.parameters)?;
        let ours = target::content(&req.parameters, &req.template)?;
        if cloudkit::content::merged(ours.clone(), &req.content).is_empty() {
            // Nothing to apply: convert straight from the base image, never copying it.
            let name = target::template_name(&req.template, &vm_name(&req.image_id));
            target::make_body(host, Path::new(&req.base_body_path), &host.body_path(), &spec, &name)?;
        }
        Ok(ours)
    }

    fn builder_did_create_target_image(&self, host: &Host, req: TargetHookRequest) -> Result<(), PluginError> {
        let spec = target::spec(&req.parameters)?;
        let name = target::template_name(&req.template, &vm_name(&req.image_id));
        let body = host.body_path();
        target::make_body(host, &body, &body, &spec, &name)
    }

    fn push_image_to_provider(&self, host: &Host, req: PushRequest) -> Result<ProviderOutcome, PluginError> {
        let (p, c) = parse_request(&req.provider, &req.credentials)?;
        let spec = push_spec(&req)?;
        let pushed = push::push(host, &p, &c, Path::new(&req.target_body_path), &spec).map_err(vim_error)?;
        let mut out = ProviderOutcome::new(spec.vm_name.clone());
        out.provider_account_identifier = Some(c.username.clone());
        out.properties.insert("vsphere_vm".into(), Value::String(pushed.vm.value.clone()));
        out.properties.insert("vsphere_disk".into(), Value::String(pushed.disk_path.clone()));
        out.properties.insert("vsphere_template".into(), Value::Bool(spec.template));
        Ok(out)
    }

    fn snapshot_image_on_provider(&self, _host: &Host, _req: SnapshotRequest) -> Result<ProviderOutcome, PluginError> {
        Err(PluginError::new(
            "Snapshot builds are not supported on vSphere: build a vsphere target image and push it instead",
        ))
    }

    fn delete_from_provider(&self, host: &Host, req: DeleteRequest) -> Result<(), PluginError> {
        let name = req.provider_id().map_or_else(|| vm_name(&req.image_id), str::to_string);
        let (p, c) = parse_request(&req.provider, &req.credentials)?;
        let timeout = task_timeout(&req.parameters)?;
        let found = push::delete(host, &p, &c, &name, timeout).map_err(vim_error)?;
        if !found {
            host.warn(&format!("VM {name} and its files were already gone from {}", p.base));
        }
        Ok(())
    }
}

fn manifest() -> Manifest {
    Manifest::cloud(
        "vSphere",
        "1.0",
        "vSphere cloud plugin: streamOptimized VMDK or OVA target images registered through the vSphere API",
        TARGETS,
    )
    .maintainer("imagefactory developers", "", "")
    .license("Apache-2.0")
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    cloud: || Ok(VSphere),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_examples_parse() {
        let p = provider::parse(include_str!("../../../conf/examples/vsphere-provider.json")).unwrap();
        assert_eq!(p.datastore, "datastore1");
        let x = provider::parse(include_str!("../../../conf/examples/vsphere-provider.xml")).unwrap();
        assert_eq!(x.base, p.base);
        let c = provider::credentials(include_str!("../../../conf/examples/vsphere-credentials.xml"), &p).unwrap();
        assert_eq!(c.username, "administrator@vsphere.local");
    }
}
