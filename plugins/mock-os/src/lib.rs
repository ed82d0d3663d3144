//! MockOS: an OS plugin for tests and development. It builds no VM: a "base image" is
//! a small text body naming the image id, written honestly to the body path.
//!
//! The steering parameters of `mock-support` make its operations fail, panic, crash or
//! sleep (`create_base_image`, `create_target_image`).
//!
//! For cloud plugin tests, which need a disk to convert and push, the parameter
//! `mock_disk_mib` makes the base image a sparse raw disk of that many MiB instead: a
//! text header in its first sector, then a deterministic pseudo-random MiB every 16 MiB
//! (real data between holes, as a real disk has). The target stage copies such a disk
//! sparsely and records the target content it was given in the image's properties
//! (`mock_applied_files`, `mock_applied_commands`, `mock_applied_packages`), since it
//! has no file system to apply it to.
//!
//! Source state (the host's build cache): a template whose install URL is `file://DIR/`
//! reads its "mirror" from DIR, whose `Release` file's digest is the source state; any
//! other URL has no state the plugin can tell, so such builds are never cached. The
//! manifest's version is `IMAGEFACTORY_MOCK_OS_VERSION` when that is set (to test that a
//! new plugin version misses the cache).

use imagefactory_plugin_api::prelude::*;

struct MockOs;

impl OsPlugin for MockOs {
    fn create_base_image(&self, host: &Host, req: BaseImageRequest) -> Result<BaseImageOutcome, PluginError> {
        mock_support::steer(host, &req.parameters, "MockOS", "create_base_image")?;
        host.activity("MockOS writing the base image body");
        // Tells the tests the plugin was handed the template as given (not as stored,
        // with the root password redacted) without logging the password itself.
        if let Some(start) = req.template.find("<rootpw>") {
            let rest = &req.template[start + "<rootpw>".len()..];
            let len = rest.find("</rootpw>").unwrap_or(0);
            host.info(&format!("MockOS was given a root password of {len} characters"));
        }
        match req.parameters.get("mock_disk_mib") {
            None => std::fs::write(host.body_path(), format!("MockOS base_image file for id ({})", req.image_id))?,
            Some(v) => {
                let mib = v
                    .as_u64()
                    .or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()))
                    .filter(|m| (1..=65536).contains(m))
                    .ok_or_else(|| {
                        PluginError::new(format!("mock_disk_mib must be a number of MiB (1-65536), not {v}"))
                    })?;
                write_mock_disk(&host.body_path(), &req.image_id, mib)?;
            }
        }
        host.info(&format!("MockOS wrote base image {}", req.image_id));
        Ok(BaseImageOutcome {
            icicle: Some("<icicle><packages><package name=\"mock-package-1.0-1.x86_64\"/></packages></icicle>".into()),
            ..Default::default()
        })
    }

    fn create_target_image(&self, host: &Host, req: TargetImageRequest) -> Result<TargetImageOutcome, PluginError> {
        mock_support::steer(host, &req.parameters, "MockOS", "create_target_image")?;
        host.activity("MockOS writing the target image body");
        if !std::fs::read(&req.base_body_path).map(|b| b.starts_with(b"MockOS base_image")).unwrap_or(false) {
            return copy_mock_disk(host, &req);
        }
        let mut body = format!("MockOS target_image file for id ({})", req.image_id);
        for p in &req.content.packages {
            body.push_str(&format!("\npackage {p}"));
        }
        std::fs::write(host.body_path(), body)?;
        Ok(TargetImageOutcome::default())
    }

    fn source_state(&self, _host: &Host, req: SourceStateRequest) -> Result<Option<SourceState>, PluginError> {
        use sha2::{Digest, Sha256};
        let template = imagefactory_plugin_api::tdl::Template::parse(&req.template, &Default::default())
            .map_err(|e| PluginError::new(e.to_string()))?;
        let imagefactory_plugin_api::tdl::Install::Url { url } = &template.os.install else { return Ok(None) };
        let Some(dir) = url.strip_prefix("file://") else { return Ok(None) };
        let release = std::path::Path::new(dir).join("Release");
        let bytes = std::fs::read(&release)
            .map_err(|e| PluginError::with_source(format!("cannot read {}", release.display()), &e))?;
        let digest = Sha256::digest(&bytes).iter().map(|b| format!("{b:02x}")).collect::<String>();
        let url = format!("file://{}", release.display());
        Ok(Some(SourceState { sources: vec![SourceFile { url, digest: format!("sha256:{digest}") }] }))
    }
}

/// The header a mock disk starts with.
pub const MOCK_DISK_HEADER: &str = "MockOS raw disk for id";

/// Writes a sparse raw disk of `mib` MiB (see the crate documentation).
fn write_mock_disk(path: &std::path::Path, id: &str, mib: u64) -> Result<(), PluginError> {
    use std::io::{Seek, SeekFrom, Write};
    const MIB: u64 = 1 << 20;
    let mut f = std::fs::File::create(path)?;
    f.set_len(mib * MIB)?;
    f.write_all(format!("{MOCK_DISK_HEADER} ({id})\n").as_bytes())?;
    let mut state: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut block = vec![0u8; MIB as usize];
    for m in (1..mib).step_by(16) {
        for chunk in block.chunks_mut(8) {
            // xorshift64: cheap, deterministic, incompressible enough for a test disk.
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            chunk.copy_from_slice(&state.to_le_bytes()[..chunk.len()]);
        }
        f.seek(SeekFrom::Start(m * MIB))?;
        f.write_all(&block)?;
    }
    f.sync_all()?;
    Ok(())
}

/// The target stage for a mock disk: a sparse copy, and the content recorded.
fn copy_mock_disk(host: &Host, req: &TargetImageRequest) -> Result<TargetImageOutcome, PluginError> {
    let status = std::process::Command::new("cp")
        .arg("--sparse=always")
        .arg(&req.base_body_path)
        .arg(host.body_path())
        .status()
        .map_err(|e| PluginError::with_source("cannot run cp", &e))?;
    if !status.success() {
        return Err(PluginError::new(format!("copying the base disk failed ({status})")));
    }
    let names = |v: Vec<String>| serde_json::Value::from(v);
    let mut properties = Parameters::new();
    properties.insert("mock_applied_files".into(), names(req.content.files.iter().map(|f| f.name.clone()).collect()));
    properties
        .insert("mock_applied_commands".into(), names(req.content.commands.iter().map(|c| c.name.clone()).collect()));
    properties.insert("mock_applied_packages".into(), names(req.content.packages.clone()));
    Ok(TargetImageOutcome { properties, ..Default::default() })
}

fn manifest() -> Manifest {
    let version = std::env::var("IMAGEFACTORY_MOCK_OS_VERSION").unwrap_or_else(|_| "1.0".to_string());
    Manifest::os(
        "MockOS",
        &version,
        "Mock OS plugin for tests: writes small text bodies, builds no VM",
        &[("MockOS_A", None, None), ("MockOS_B", Some("1"), Some("x86_64"))],
    )
    .maintainer("imagefactory developers", "", "")
    .license("Apache-2.0")
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    os: || Ok(MockOs),
}
