//! The AWS clients one operation uses, and the tokio runtime they run on.
//!
//! Plugin calls are blocking and no runtime of the host is visible inside a plugin, so
//! each operation builds a small runtime of its own (two worker threads: enough to keep
//! the uploads' hashing off the network's way on this kind of machine) and blocks on it.
//! All three services share one HTTP client (rustls with ring) and one endpoint override.

use aws_credential_types::Credentials;
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use s3kit::{retries, timeouts};

use crate::credentials::Ec2Credentials;
use crate::provider::Provider;

/// The SDK's retries for control calls (Describe*, RegisterImage, ...). The upload's data
/// calls are retried by [`crate::retry`] instead (see [`Aws::ebs_data`]).
const CONTROL_ATTEMPTS: u32 = 3;

/// The clients of one operation.
pub struct Aws {
    pub runtime: tokio::runtime::Runtime,
    pub ec2: aws_sdk_ec2::Client,
    pub ebs: aws_sdk_ebs::Client,
    /// EBS without SDK retries, for PutSnapshotBlock (retried by the plugin).
    pub ebs_data: aws_sdk_ebs::Client,
    pub s3: aws_sdk_s3::Client,
    /// S3 without SDK retries, for UploadPart (retried by the plugin).
    pub s3_data: aws_sdk_s3::Client,
    /// Where calls go, for messages: the endpoint override or `AWS <region>`.
    pub endpoint: String,
}

/// Why the clients could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot start the AWS client runtime: {0}")]
pub struct RuntimeError(#[from] std::io::Error);

impl Aws {
    /// Clients for `provider`, signing with `creds`.
    pub fn connect(provider: &Provider, creds: &Ec2Credentials) -> Result<Aws, RuntimeError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("ec2-plugin")
            .enable_all()
            .build()?;
        let http: SharedHttpClient = s3kit::https_client();
        let keys = Credentials::new(
            creds.access_key.clone(),
            creds.secret_key.expose().to_string(),
            creds.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "imagefactory-ec2-credentials",
        );
        let region = aws_sdk_ec2::config::Region::new(provider.region.clone());
        let timeouts = timeouts();

        let ec2 = {
            let mut b = aws_sdk_ec2::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(region.clone())
                .credentials_provider(keys.clone())
                .http_client(http.clone())
                .timeout_config(timeouts.clone())
                .retry_config(retries(CONTROL_ATTEMPTS));
            if let Some(e) = &provider.endpoint {
                b = b.endpoint_url(e);
            }
            aws_sdk_ec2::Client::from_conf(b.build())
        };
        let ebs_with = |attempts: u32| {
            let mut b = aws_sdk_ebs::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .region(region.clone())
                .credentials_provider(keys.clone())
                .http_client(http.clone())
                .timeout_config(timeouts.clone())
                .retry_config(retries(attempts));
            if let Some(e) = &provider.endpoint {
                b = b.endpoint_url(e);
            }
            aws_sdk_ebs::Client::from_conf(b.build())
        };
        let s3_target = s3kit::Target {
            region: &provider.region,
            endpoint: provider.endpoint.as_deref(),
            credentials: keys.clone(),
        };
        let s3_with = |attempts: u32| s3kit::client(&http, &s3_target, attempts);
        let endpoint = provider.endpoint.clone().unwrap_or_else(|| format!("AWS {}", provider.region));
        Ok(Aws {
            ec2,
            ebs: ebs_with(CONTROL_ATTEMPTS),
            ebs_data: ebs_with(1),
            s3: s3_with(CONTROL_ATTEMPTS),
            s3_data: s3_with(1),
            runtime,
            endpoint,
        })
    }
}
