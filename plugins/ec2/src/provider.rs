//! The EC2 provider definition, in the original's shapes.
//!
//! - a region name: `ec2-us-east-1` (the original's provider names) or `us-east-1`;
//! - a JSON object (or XML document) with `name` (such a region name) or `region`, and:
//!   - `endpoint`: a URL that replaces the AWS endpoints of all three services (EC2, EBS,
//!     S3): a private region, a proxy, or the tests' moto server on loopback;
//!   - `s3_bucket`: the bucket the `s3` upload method puts the image into;
//!   - the original's per-region overrides `boto_loc`, `host`, `i386`, `x86_64` (pv-grub
//!     kernel ids for paravirtual AMIs) are accepted and ignored: this plugin registers HVM
//!     AMIs only, which need no kernel id.
//!
//! Any other key is refused with its name, so a typo never silently falls back to a
//! default.

use cloudkit::provider::{ProviderDoc, ProviderError};

/// Keys of the original's JSON definitions that this plugin reads no more.
const LEGACY_KEYS: &[&str] = &["boto_loc", "host", "i386", "x86_64"];
const KNOWN_KEYS: &[&str] = &["name", "region", "endpoint", "s3_bucket"];

/// Where and how to reach EC2.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provider {
    /// The AWS region, `us-east-1`.
    pub region: String,
    /// The endpoint override for every service, without a trailing `/`.
    pub endpoint: Option<String>,
    /// The bucket of the `s3` upload method.
    pub s3_bucket: Option<String>,
    /// Keys of the definition that were accepted but have no effect (for a log line).
    pub ignored: Vec<String>,
}

impl Provider {
    /// How the definition names where it goes, for messages: the endpoint, else the region.
    pub fn describe(&self) -> String {
        match &self.endpoint {
            Some(e) => format!("{e} (region {})", self.region),
            None => format!("region {}", self.region),
        }
    }
}

/// Why a definition cannot be used. One line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EC2 provider definition: {0}")]
pub struct Ec2ProviderError(String);

impl From<ProviderError> for Ec2ProviderError {
    fn from(e: ProviderError) -> Self {
        Ec2ProviderError(e.0)
    }
}

/// Reads a provider definition (see the module documentation).
pub fn parse(definition: &str) -> Result<Provider, Ec2ProviderError> {
    let doc = ProviderDoc::parse(definition)?;
    let mut ignored = Vec::new();
    for key in doc.fields.keys() {
        if LEGACY_KEYS.contains(&key.as_str()) {
            ignored.push(key.clone());
        } else if !KNOWN_KEYS.contains(&key.as_str()) {
            return Err(Ec2ProviderError(format!(
                "unknown key {key:?} (known: {}; ignored from the original: {})",
                KNOWN_KEYS.join(", "),
                LEGACY_KEYS.join(", ")
            )));
        }
    }
    let region = match (doc.str("region"), doc.name.as_deref()) {
        (Some(r), _) => region_name(&r)?,
        (None, Some(n)) => region_name(n)?,
        (None, None) => {
            return Err(Ec2ProviderError("no region: give a name like ec2-us-east-1 or a \"region\" key".into()));
        }
    };
    let endpoint = doc.endpoint()?;
    if let Some(e) = &endpoint {
        if e.contains('@') {
            return Err(Ec2ProviderError(
                "endpoint must not carry a user or password: put keys in the credentials file".into(),
            ));
        }
    }
    let s3_bucket = match doc.str("s3_bucket") {
        None => None,
        Some(b) => Some(bucket_name(&b)?),
    };
    Ok(Provider { region, endpoint, s3_bucket, ignored })
}

/// `ec2-us-east-1` or `us-east-1` → `us-east-1`, checked to look like a region.
fn region_name(name: &str) -> Result<String, Ec2ProviderError> {
    let r = name.trim();
    let r = r.strip_prefix("ec2-").unwrap_or(r);
    let ok = r.len() >= 3
        && r.len() <= 32
        && r.contains('-')
        && r.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !r.starts_with('-')
        && !r.ends_with('-');
    if !ok {
        return Err(Ec2ProviderError(format!("{name:?} is not an EC2 region name (like ec2-us-east-1 or us-east-1)")));
    }
    Ok(r.to_string())
}

/// Checks an S3 bucket name against S3's rules (3-63 lower-case letters, digits, `.`, `-`).
fn bucket_name(b: &str) -> Result<String, Ec2ProviderError> {
    let ok = (3..=63).contains(&b.len())
        && b.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
        && b.starts_with(|c: char| c.is_ascii_alphanumeric())
        && b.ends_with(|c: char| c.is_ascii_alphanumeric());
    if !ok {
        return Err(Ec2ProviderError(format!("s3_bucket {b:?} is not a valid S3 bucket name")));
    }
    Ok(b.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_of_the_original() {
        assert_eq!(parse("ec2-us-east-1").unwrap().region, "us-east-1");
        assert_eq!(parse("eu-west-2").unwrap().region, "eu-west-2");
        let p = parse("us-west-2").unwrap();
        assert_eq!((p.endpoint, p.s3_bucket), (None, None));
    }

    #[test]
    fn json_with_endpoint_and_bucket() {
        let p =
            parse(r#"{"name": "ec2-us-east-1", "endpoint": "http://127.0.0.1:5000/", "s3_bucket": "images"}"#).unwrap();
        assert_eq!(p.region, "us-east-1");
        assert_eq!(p.endpoint.as_deref(), Some("http://127.0.0.1:5000"));
        assert_eq!(p.s3_bucket.as_deref(), Some("images"));
        let p = parse(r#"{"region": "ap-south-1", "x86_64": "aki-1234", "boto_loc": "x"}"#).unwrap();
        assert_eq!(p.region, "ap-south-1");
        assert_eq!(p.ignored, vec!["boto_loc".to_string(), "x86_64".to_string()]);
        let x = parse("<provider><name>ec2-eu-central-1</name><s3_bucket>b-1</s3_bucket></provider>").unwrap();
        assert_eq!((x.region.as_str(), x.s3_bucket.as_deref()), ("eu-central-1", Some("b-1")));
    }

    #[test]
    fn bad_definitions_are_one_line() {
        for (bad, want) in [
            ("", "it is empty"),
            ("ec2-US_EAST", "is not an EC2 region name"),
            (r#"{"endpoint": "http://127.0.0.1:1"}"#, "no region"),
            (r#"{"name": "us-east-1", "s3bucket": "x"}"#, "unknown key \"s3bucket\""),
            (r#"{"name": "us-east-1", "s3_bucket": "Bad_Bucket"}"#, "not a valid S3 bucket name"),
            (r#"{"name": "us-east-1", "endpoint": "ftp://h"}"#, "endpoint must be"),
            (r#"{"name": "us-east-1", "endpoint": "http://AK:SK@h"}"#, "must not carry"),
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("EC2 provider definition: ") && e.contains(want), "{bad}: {e}");
            assert!(!e.contains('\n') && !e.contains("SK@"), "{e}");
        }
    }
}
