//! The RHEV-M cloud plugin: target `rhevm`.
//!
//! Target image: the base image converted by qemu-img to qcow2 (compat 0.10 by default,
//! what every RHEV-M/oVirt engine reads) or raw, read back before COMPLETE; see
//! [`target`]. The common cloud changes (cloudkit) travel as target content to the OS
//! plugin; with none to apply the conversion reads the base image directly, never copying
//! it.
//!
//! Push: the disk and a template OVF written into an NFS export storage domain, where an
//! engine expects them (`<domain>/images/<group>/<volume>` with its `.meta`,
//! `<domain>/master/vms/<template>/<template>.ovf`); see [`domain`] and [`ovf`]. The
//! provider image's id on the provider is the template's UUID. The original then imported
//! the template through the engine's API (ovirt-engine-sdk); that call is **not
//! implemented** here: `rhevm_import=true` fails saying so, and with an `api-url` in the
//! provider the push logs that the template waits in the export domain for an import from
//! the engine (Storage → export domain → Template Import). Delete removes the template's
//! OVF and image groups from the export domain. Snapshot builds are not supported.
//!
//! Push parameters: `ovf_cpu_count` (1), `ovf_memory_mb` (512), `rhevm_import` (false).

pub mod domain;
pub mod ovf;
pub mod provider;
pub use cloudkit::report;
pub mod target;

use std::path::Path;

use imagefactory_plugin_api::prelude::*;
use imagefactory_plugin_api::tdl::{ParseOptions, Template};
use serde_json::Value;

/// The targets this plugin builds for.
pub const TARGETS: &[&str] = &["rhevm"];

/// The plugin object.
pub struct Rhevm;

fn domain_error(e: domain::DomainError) -> PluginError {
    match e {
        domain::DomainError::Cancelled => PluginError::cancelled(),
        other => PluginError::new(other.to_string()),
    }
}

fn template_name(template: &str, fallback: &str) -> String {
    match Template::parse(template, &ParseOptions::default()) {
        Ok(t) if !t.name.trim().is_empty() => t.name.trim().to_string(),
        _ => fallback.to_string(),
    }
}

/// Pushes `body` into the export domain the provider names; the core of
/// [`CloudPlugin::push_image_to_provider`], callable without a host (benchmarks).
pub fn push_body(
    r: &dyn report::Report,
    p: &provider::Provider,
    body: &Path,
    spec: &domain::TemplateSpec,
) -> Result<(domain::Domain, domain::Placed), PluginError> {
    let remote = match (&p.nfs_host, &p.nfs_path) {
        (Some(h), Some(path)) => format!("{h}:{path}"),
        _ => p.nfs_dir.display().to_string(),
    };
    let (d, created) =
        domain::Domain::open(&p.nfs_dir, p.storage_domain.as_deref(), Some(&remote)).map_err(domain_error)?;
    if created {
        r.info(&format!("initialised a new export storage domain {} in {}", d.uuid, p.nfs_dir.display()));
    }
    let placed = domain::place(r, &d, body, spec).map_err(domain_error)?;
    Ok((d, placed))
}

impl CloudPlugin for Rhevm {
    fn builder_should_create_target_image(&self, _host: &Host, req: TargetHookRequest) -> Result<bool, PluginError> {
        target::spec(&req.parameters, &req.settings)?;
        let ours = target::content(&req.parameters)?;
        Ok(!cloudkit::content::merged(ours, &req.content).is_empty())
    }

    fn builder_will_create_target_image(
        &self,
        host: &Host,
        req: TargetHookRequest,
    ) -> Result<TargetContent, PluginError> {
        let want = target::spec(&req.parameters, &req.settings)?;
        let ours = target::content(&req.parameters)?;
        if cloudkit::content::merged(ours.clone(), &req.content).is_empty() {
            target::make_body(host, Path::new(&req.base_body_path), &host.body_path(), &want)?;
        }
        Ok(ours)
    }

    fn builder_did_create_target_image(&self, host: &Host, req: TargetHookRequest) -> Result<(), PluginError> {
        let want = target::spec(&req.parameters, &req.settings)?;
        let body = host.body_path();
        target::make_body(host, &body, &body, &want)
    }

    fn push_image_to_provider(&self, host: &Host, req: PushRequest) -> Result<ProviderOutcome, PluginError> {
        let p = provider::parse(&req.provider).map_err(|e| PluginError::new(e.to_string()))?;
        let user = provider::credentials(&req.credentials).map_err(|e| PluginError::new(e.to_string()))?;
        if parameter_flag(&req.parameters, "rhevm_import", false).map_err(PluginError::new)? {
            return Err(PluginError::new(
                "rhevm_import: importing templates through the RHEV-M API is not implemented; \
                 push without it and import the template from the export domain in the engine",
            ));
        }
        let spec = domain::TemplateSpec {
            name: template_name(&req.template, &format!("factory-image-{}", req.image_id)),
            description: format!("Created by imagefactory from target image {}", req.target_image_id),
            cpus: parameter_number(&req.parameters, "ovf_cpu_count", 1, 128).map_err(PluginError::new)? as u32,
            memory_mb: parameter_number(&req.parameters, "ovf_memory_mb", 512, 4 << 20).map_err(PluginError::new)?,
        };
        let (d, placed) = push_body(host, &p, Path::new(&req.target_body_path), &spec)?;
        let c = placed.copy;
        host.info(&format!(
            "copied {:.1} MiB ({:.1} MiB of data) into export domain {} in {:.2} s ({:.1} MiB/s, {} retried writes); template {}",
            c.bytes as f64 / 1048576.0,
            c.written as f64 / 1048576.0,
            d.uuid,
            c.secs,
            c.bytes as f64 / 1048576.0 / c.secs.max(1e-6),
            c.retries,
            placed.template_id
        ));
        if let Some(api) = &p.api_url {
            host.warn(&format!(
                "the template is in the export domain; importing it through the API at {api} (cluster {}) is not \
                 implemented: import it from the engine",
                p.cluster
            ));
        }
        let mut out = ProviderOutcome::new(placed.template_id.clone());
        out.provider_account_identifier = user;
        for (k, v) in [
            ("rhevm_storage_domain", d.uuid.clone()),
            ("rhevm_image_group", placed.image_group.clone()),
            ("rhevm_volume", placed.volume.clone()),
            ("rhevm_ovf", placed.ovf_path.display().to_string()),
        ] {
            out.properties.insert(k.into(), Value::String(v));
        }
        Ok(out)
    }

    fn snapshot_image_on_provider(&self, _host: &Host, _req: SnapshotRequest) -> Result<ProviderOutcome, PluginError> {
        Err(PluginError::new(
            "Snapshot builds are not supported on RHEV-M: build a rhevm target image and push it instead",
        ))
    }

    fn delete_from_provider(&self, host: &Host, req: DeleteRequest) -> Result<(), PluginError> {
        let id = req
            .provider_id()
            .ok_or_else(|| PluginError::new("this provider image has no RHEV-M template id to delete"))?;
        let p = provider::parse(&req.provider).map_err(|e| PluginError::new(e.to_string()))?;
        provider::credentials(&req.credentials).map_err(|e| PluginError::new(e.to_string()))?;
        let (d, _) = domain::Domain::open(&p.nfs_dir, p.storage_domain.as_deref(), None).map_err(domain_error)?;
        host.activity(&format!("Removing template {id} from export domain {}", d.uuid));
        if domain::remove(&d, id).map_err(domain_error)? {
            host.info(&format!("removed template {id} and its disks from export domain {}", d.uuid));
        } else {
            host.warn(&format!("template {id} was already gone from export domain {}", d.uuid));
        }
        Ok(())
    }
}

fn manifest() -> Manifest {
    Manifest::cloud(
        "RHEVM",
        "1.0",
        "RHEV-M cloud plugin: qcow2 target images with an OVF, laid out in an NFS export storage domain",
        TARGETS,
    )
    .maintainer("imagefactory developers", "", "")
    .license("Apache-2.0")
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    cloud: || Ok(Rhevm),
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_shipped_examples_parse() {
        let p = super::provider::parse(include_str!("../../../conf/examples/rhevm-provider.json")).unwrap();
        assert_eq!(p.cluster, "Default");
        let x = super::provider::parse(include_str!("../../../conf/examples/rhevm-provider.xml")).unwrap();
        assert_eq!(x.nfs_dir, p.nfs_dir);
        let u = super::provider::credentials(include_str!("../../../conf/examples/rhevm-credentials.xml")).unwrap();
        assert_eq!(u.as_deref(), Some("admin@internal"));
    }
}
