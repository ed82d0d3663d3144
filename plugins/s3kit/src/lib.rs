//! What every S3 client of the project shares: the HTTPS client (rustls with ring), the
//! time-outs, a client for S3 or an S3-compatible store (path-style addressing when an
//! endpoint is given, no trailing checksums), and the multipart arithmetic (part sizes
//! within S3's limits, the ETag S3 gives a multipart object).
//!
//! [`error`] turns an SDK error of any AWS service into one line naming the call, the
//! endpoint and the reason, and says whether another try may work.
//!
//! Two users: the EC2 plugin's `s3` upload method, and the host's image bodies in object
//! storage (`"bodies": "s3://BUCKET/PREFIX"`). Each keeps its own upload loop (the
//! plugin reports progress through the plugin API and retries parts itself; the host
//! waits out an unavailable store), and both agree here on how to talk to S3.

pub mod error;

use std::time::Duration;

use aws_smithy_http_client::tls::{self, rustls_provider::CryptoMode};
use aws_smithy_runtime_api::client::behavior_version::BehaviorVersion;
use aws_smithy_runtime_api::client::http::SharedHttpClient;
use aws_smithy_types::retry::RetryConfig;
use aws_smithy_types::timeout::TimeoutConfig;
use md5::{Digest, Md5};

pub use aws_credential_types::Credentials;
pub use aws_sdk_s3;
/// The SDK's error of one call, for code that maps it with [`AwsError::from_sdk`].
pub use aws_smithy_runtime_api::client::{orchestrator::HttpResponse, result::SdkError};
pub use aws_smithy_types::error::metadata::ProvideErrorMetadata;
pub use error::{AwsError, Failure};

const MIB: u64 = 1 << 20;
/// S3's limit on the number of parts of one upload.
pub const MAX_PARTS: u64 = 10_000;
/// The smallest part: S3 refuses parts under 5 MiB (but the last); 8 MiB is what the
/// AWS tools use.
pub const MIN_PART: u64 = 8 * MIB;

/// The HTTPS (and HTTP) client every AWS SDK client of one runtime can share.
pub fn https_client() -> SharedHttpClient {
    aws_smithy_http_client::Builder::new().tls_provider(tls::Provider::Rustls(CryptoMode::Ring)).build_https()
}

/// Connect within 15 s, a read may stall 120 s, one attempt may take 5 minutes (a part
/// of 8 MiB or more on a slow link).
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(Duration::from_secs(15))
        .read_timeout(Duration::from_secs(120))
        .operation_attempt_timeout(Duration::from_secs(300))
        .build()
}

/// The SDK's standard retries with `attempts` tries, or none for 1 (the caller retries).
pub fn retries(attempts: u32) -> RetryConfig {
    if attempts > 1 {
        RetryConfig::standard().with_max_attempts(attempts)
    } else {
        RetryConfig::disabled()
    }
}

/// Where and as whom an S3 client connects.
pub struct Target<'a> {
    pub region: &'a str,
    /// An endpoint override (`http://127.0.0.1:9000`, a Ceph or MinIO URL); `None` for AWS.
    pub endpoint: Option<&'a str>,
    pub credentials: Credentials,
}

/// An S3 client for `target` with `attempts` SDK tries per call.
pub fn client(http: &SharedHttpClient, target: &Target<'_>, attempts: u32) -> aws_sdk_s3::Client {
    let mut b = aws_sdk_s3::Config::builder()
        .behavior_version(BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new(target.region.to_string()))
        .credentials_provider(target.credentials.clone())
        .http_client(http.clone())
        .timeout_config(timeouts())
        .retry_config(retries(attempts))
        // Integrity is checked with Content-MD5 and the multipart ETag; no trailing CRC
        // checksums, which S3-compatible stores often lack.
        .request_checksum_calculation(aws_sdk_s3::config::RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(aws_sdk_s3::config::ResponseChecksumValidation::WhenRequired);
    if let Some(e) = target.endpoint {
        // An endpoint override is one host: buckets go in the path, not the name.
        b = b.endpoint_url(e).force_path_style(true);
    }
    aws_sdk_s3::Client::from_conf(b.build())
}

/// The part size for an object of `size` bytes: [`MIN_PART`], or larger (whole MiB)
/// when the object needs more than [`MAX_PARTS`] parts of it.
pub fn part_size(size: u64) -> u64 {
    let needed = size.div_ceil(MAX_PARTS).div_ceil(MIB) * MIB;
    MIN_PART.max(needed)
}

/// The ETag S3 gives a multipart object: the MD5 of the parts' MD5s, `-`, the part count.
pub fn multipart_etag(part_md5s: &[[u8; 16]]) -> String {
    let mut h = Md5::new();
    for m in part_md5s {
        h.update(m);
    }
    format!("{}-{}", hex(&h.finalize()), part_md5s.len())
}

/// Lower-case hex of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn part_sizes_stay_within_s3_limits() {
        assert_eq!(part_size(0), 8 * MIB);
        assert_eq!(part_size(64 * MIB), 8 * MIB);
        assert_eq!(part_size(80_000 * MIB), 8 * MIB);
        let big = 2u64 << 40; // 2 TiB
        assert!(big.div_ceil(part_size(big)) <= MAX_PARTS);
        assert_eq!(part_size(big) % MIB, 0);
    }

    #[test]
    fn etag_of_parts() {
        // The ETag of one empty part is the MD5 of md5("") and "-1".
        let e: [u8; 16] = Md5::digest(b"").into();
        assert_eq!(multipart_etag(&[e]), format!("{}-1", hex(&Md5::digest(e))));
    }
}
