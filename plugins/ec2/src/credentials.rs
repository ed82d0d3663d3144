//! The original's EC2 `provider_credentials` document.
//!
//! ```xml
//! <provider_credentials>
//!   <ec2_credentials>
//!     <account_number>123456789012</account_number>
//!     <access_key>AKIA...</access_key>
//!     <secret_access_key>...</secret_access_key>
//!     <session_token>...</session_token>   <!-- optional: temporary (STS) credentials -->
//!     <certificate>...</certificate>       <!-- optional, the original's S3 bundles; unused -->
//!     <key>...</key>                       <!-- optional, likewise -->
//!   </ec2_credentials>
//! </provider_credentials>
//! ```
//!
//! The access key id is not secret: it is recorded as the provider image's
//! `provider_account_identifier`, as the original did. The secret key and the session
//! token stay in [`Secret`]s and go nowhere but into request signatures.

use cloudkit::credentials::{required, section};
use cloudkit::Secret;

const ELEMENT: &str = "ec2_credentials";
const KNOWN: &[&str] = &[
    "account_number",
    "access_key",
    "secret_access_key",
    "session_token",
    "certificate",
    "key",
    "x509_public",
    "x509_private",
];

/// AWS keys for one request.
#[derive(Debug, Clone)]
pub struct Ec2Credentials {
    pub access_key: String,
    pub secret_key: Secret,
    pub session_token: Option<Secret>,
    /// The AWS account number, when given (the owner of the AMIs made).
    pub account_number: Option<String>,
}

/// Why credentials cannot be used. One line, never a credential value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("EC2 credentials: {0}")]
pub struct Ec2CredentialsError(String);

/// Parses the credentials document.
pub fn parse(xml: &str) -> Result<Ec2Credentials, Ec2CredentialsError> {
    let values = section(xml, ELEMENT).map_err(|e| Ec2CredentialsError(e.0))?;
    if let Some(unknown) = values.keys().find(|k| !KNOWN.contains(&k.as_str())) {
        return Err(Ec2CredentialsError(format!(
            "unknown element <{unknown}> in <{ELEMENT}> (known: {})",
            KNOWN.join(", ")
        )));
    }
    let req = |name: &str| required(&values, name, ELEMENT).map_err(|e| Ec2CredentialsError(e.0));
    let access_key = req("access_key")?.expose().to_string();
    if !access_key.chars().all(|c| c.is_ascii_alphanumeric()) {
        // Do not echo it: a secret pasted into the wrong element must not end up in a log.
        return Err(Ec2CredentialsError("<access_key> must be letters and digits only (an AWS access key id)".into()));
    }
    let secret_key = req("secret_access_key")?.clone();
    let session_token = values.get("session_token").filter(|s| !s.is_empty()).cloned();
    let account_number = values.get("account_number").map(|s| s.expose().trim().to_string()).filter(|s| !s.is_empty());
    if let Some(a) = &account_number {
        if !a.chars().all(|c| c.is_ascii_digit() || c == '-') {
            return Err(Ec2CredentialsError("<account_number> must be the 12-digit AWS account number".into()));
        }
    }
    Ok(Ec2Credentials { access_key, secret_key, session_token, account_number })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wrap(inner: &str) -> String {
        format!("<provider_credentials><ec2_credentials>{inner}</ec2_credentials></provider_credentials>")
    }

    #[test]
    fn the_original_shape() {
        let c = parse(&wrap(
            "<account_number>1234-5678-9012</account_number><access_key>AKIDEXAMPLE</access_key>\
             <secret_access_key> wJalr/XUtnFEMI </secret_access_key><certificate>c</certificate><key>k</key>",
        ))
        .unwrap();
        assert_eq!(c.access_key, "AKIDEXAMPLE");
        assert_eq!(c.secret_key.expose(), "wJalr/XUtnFEMI");
        assert_eq!(c.account_number.as_deref(), Some("1234-5678-9012"));
        assert!(c.session_token.is_none());
        assert!(!format!("{c:?}").contains("wJalr"));
    }

    #[test]
    fn errors_are_one_line_without_values() {
        let secret = "hunter2/xyz";
        for (xml, want) in [
            (wrap(&format!("<access_key>AK</access_key><secret>{secret}</secret>")), "unknown element <secret>"),
            (wrap(&format!("<secret_access_key>{secret}</secret_access_key>")), "<access_key> is missing"),
            (
                wrap(&format!("<access_key>{secret}</access_key><secret_access_key>x</secret_access_key>")),
                "letters and digits",
            ),
            (wrap("<access_key>AK</access_key>"), "<secret_access_key> is missing"),
            (format!("<provider_credentials><ec2_credentials><secret_access_key>{secret}"), "not well-formed"),
            ("<provider_credentials/>".to_string(), "no <ec2_credentials>"),
        ] {
            let e = parse(&xml).unwrap_err().to_string();
            assert!(e.starts_with("EC2 credentials: ") && e.contains(want), "{e}");
            assert!(!e.contains("hunter2") && !e.contains('\n'), "{e}");
        }
    }
}
