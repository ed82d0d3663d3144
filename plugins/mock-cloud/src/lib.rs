//! MockCloud: a cloud plugin for tests and development. It talks to no provider: a push
//! or snapshot sets a fresh `identifier_on_provider` and `mock_user` as the account.
//!
//! The same steering parameters as MockOS (`mock_fail_at`, `mock_panic_at`,
//! `mock_crash_at`, `mock_sleep_seconds`, `mock_progress_steps`) apply to its operations:
//! `builder_will_create_target_image`, `builder_did_create_target_image`,
//! `push_image_to_provider`, `snapshot_image_on_provider`, `delete_from_provider`.
//! `mock_skip_target_stage` makes `builder_should_create_target_image` answer false.

use imagefactory_plugin_api::prelude::*;

struct MockCloud;

impl CloudPlugin for MockCloud {
    fn builder_should_create_target_image(&self, _host: &Host, req: TargetHookRequest) -> Result<bool, PluginError> {
        Ok(parameter_as_bool(&req.parameters, "mock_skip_target_stage") != Some(true))
    }

    fn builder_will_create_target_image(
        &self,
        host: &Host,
        req: TargetHookRequest,
    ) -> Result<TargetContent, PluginError> {
        mock_support::steer(host, &req.parameters, "MockCloud", "builder_will_create_target_image")?;
        Ok(TargetContent::default())
    }

    fn builder_did_create_target_image(&self, host: &Host, req: TargetHookRequest) -> Result<(), PluginError> {
        mock_support::steer(host, &req.parameters, "MockCloud", "builder_did_create_target_image")?;
        host.info(&format!("MockCloud finished target image {} for {}", req.image_id, req.target));
        Ok(())
    }

    fn push_image_to_provider(&self, host: &Host, req: PushRequest) -> Result<ProviderOutcome, PluginError> {
        mock_support::steer(host, &req.parameters, "MockCloud", "push_image_to_provider")?;
        host.activity(&format!("MockCloud pushing {} to {}", req.target_image_id, req.provider));
        let mut out = ProviderOutcome::new(uuid::Uuid::new_v4().to_string());
        out.provider_account_identifier = Some("mock_user".into());
        Ok(out)
    }

    fn snapshot_image_on_provider(&self, host: &Host, req: SnapshotRequest) -> Result<ProviderOutcome, PluginError> {
        mock_support::steer(host, &req.parameters, "MockCloud", "snapshot_image_on_provider")?;
        let mut out = ProviderOutcome::new(uuid::Uuid::new_v4().to_string());
        out.provider_account_identifier = Some("mock_user".into());
        Ok(out)
    }

    fn delete_from_provider(&self, host: &Host, req: DeleteRequest) -> Result<(), PluginError> {
        mock_support::steer(host, &req.parameters, "MockCloud", "delete_from_provider")?;
        host.info(&format!("MockCloud deleted {:?} from {}", req.identifier_on_provider, req.provider));
        Ok(())
    }
}

fn manifest() -> Manifest {
    Manifest::cloud(
        "MockCloud",
        "1.0",
        "Mock cloud plugin for tests: pushes nowhere",
        &["MockCloud", "mock", "mockcloud", "mocksphere", "rhevmock", "ecmock", "mockspace", "mockstack"],
    )
    .maintainer("imagefactory developers", "", "")
    .license("Apache-2.0")
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    cloud: || Ok(MockCloud),
}
