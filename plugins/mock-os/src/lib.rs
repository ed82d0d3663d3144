//! MockOS: an OS plugin for tests and development. It builds no VM: a "base image" is
//! a small text body naming the image id, written honestly to the body path.
//!
//! The steering parameters of `mock-support` make its operations fail, panic, crash or
//! sleep (`create_base_image`, `create_target_image`).

use imagefactory_plugin_api::prelude::*;

struct MockOs;

impl OsPlugin for MockOs {
    fn create_base_image(&self, host: &Host, req: BaseImageRequest) -> Result<BaseImageOutcome, PluginError> {
        mock_support::steer(host, &req.parameters, "MockOS", "create_base_image")?;
        host.activity("MockOS writing the base image body");
        std::fs::write(host.body_path(), format!("MockOS base_image file for id ({})", req.image_id))?;
        host.info(&format!("MockOS wrote base image {}", req.image_id));
        Ok(BaseImageOutcome {
            icicle: Some("<icicle><packages><package name=\"mock-package-1.0-1.x86_64\"/></packages></icicle>".into()),
            ..Default::default()
        })
    }

    fn create_target_image(&self, host: &Host, req: TargetImageRequest) -> Result<TargetImageOutcome, PluginError> {
        mock_support::steer(host, &req.parameters, "MockOS", "create_target_image")?;
        host.activity("MockOS writing the target image body");
        let mut body = format!("MockOS target_image file for id ({})", req.image_id);
        for p in &req.content.packages {
            body.push_str(&format!("\npackage {p}"));
        }
        std::fs::write(host.body_path(), body)?;
        Ok(TargetImageOutcome::default())
    }
}

fn manifest() -> Manifest {
    Manifest::os(
        "MockOS",
        "1.0",
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
