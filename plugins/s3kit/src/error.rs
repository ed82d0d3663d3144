//! AWS call failures as one-line messages, and which of them are worth another try.
//!
//! The SDK's own error text is a nested chain ("dispatch failure: io error: ..."); a user
//! wants one line naming the call, the endpoint and the reason, and the log wants the
//! whole chain. [`AwsError`] keeps both.

use std::fmt;

use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

/// Why one AWS call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer: connection refused or reset, DNS, TLS.
    Unreachable(String),
    /// No answer in time.
    Timeout,
    /// The service answered with an error.
    Service { status: u16, code: String, message: String },
    /// An answer that could not be read, or a request that could not be built.
    Other(String),
}

/// A failed AWS call: the operation, where it went, why, and the full cause chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AwsError {
    pub operation: &'static str,
    pub endpoint: String,
    pub failure: Failure,
    pub chain: Vec<String>,
}

impl AwsError {
    /// From an SDK error of any of the three services.
    pub fn from_sdk<E>(operation: &'static str, endpoint: &str, e: SdkError<E, HttpResponse>) -> AwsError
    where
        E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
    {
        let chain = chain_of(&e);
        let failure = match &e {
            SdkError::DispatchFailure(d) => {
                if d.is_timeout() {
                    Failure::Timeout
                } else {
                    // The innermost cause says it best ("Connection refused (os error 111)").
                    Failure::Unreachable(chain.last().cloned().unwrap_or_else(|| "connection failed".into()))
                }
            }
            SdkError::TimeoutError(_) => Failure::Timeout,
            SdkError::ServiceError(s) => {
                let status = s.raw().status().as_u16();
                let err = s.err();
                Failure::Service {
                    status,
                    code: err.code().unwrap_or("").to_string(),
                    message: one_line(err.message().unwrap_or("")),
                }
            }
            SdkError::ResponseError(r) => {
                let status = r.raw().status().as_u16();
                Failure::Other(format!("unreadable answer (HTTP {status})"))
            }
            _ => Failure::Other(chain.last().cloned().unwrap_or_else(|| e.to_string())),
        };
        AwsError { operation, endpoint: endpoint.to_string(), failure, chain }
    }

    /// A failure of the plugin's own around a call (a local read, a bad answer).
    pub fn other(operation: &'static str, endpoint: &str, why: impl Into<String>) -> AwsError {
        AwsError { operation, endpoint: endpoint.to_string(), failure: Failure::Other(why.into()), chain: Vec::new() }
    }

    /// Whether trying the same call again may work: no answer, a timeout, throttling, or a
    /// server-side error. Client errors (bad request, bad keys, missing things) are final.
    pub fn retryable(&self) -> bool {
        match &self.failure {
            Failure::Unreachable(_) | Failure::Timeout => true,
            Failure::Service { status, code, .. } => {
                *status >= 500 && !self.not_implemented()
                    || *status == 429
                    || matches!(
                        code.as_str(),
                        "Throttling" | "ThrottlingException" | "RequestLimitExceeded" | "SlowDown"
                    )
            }
            Failure::Other(m) => m.starts_with("unreadable answer"),
        }
    }

    /// The endpoint has no such operation: an HTTP 501, a `NotImplemented` error code, or
    /// a server error that is no AWS error document at all (AWS always answers one with a
    /// code; an emulator such as moto answers an operation it lacks with a bare HTML 500).
    pub fn not_implemented(&self) -> bool {
        match &self.failure {
            Failure::Service { status, code, .. } => {
                *status == 501 || code.contains("NotImplemented") || (*status >= 500 && code.is_empty())
            }
            _ => false,
        }
    }

    /// The service's error code, when it answered one.
    pub fn code(&self) -> Option<&str> {
        match &self.failure {
            Failure::Service { code, .. } if !code.is_empty() => Some(code),
            _ => None,
        }
    }
}

impl fmt::Display for AwsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let (op, at) = (self.operation, &self.endpoint);
        if let (true, Failure::Service { status, code, .. }) = (self.not_implemented(), &self.failure) {
            let how = if code.is_empty() { "without an AWS error".to_string() } else { code.clone() };
            return write!(f, "the endpoint {at} does not implement {op} (HTTP {status} {how})");
        }
        match &self.failure {
            Failure::Unreachable(why) => write!(f, "{op} failed: cannot reach {at}: {why}"),
            Failure::Timeout => write!(f, "{op} failed: {at} did not answer in time"),
            Failure::Service { status, code, message } => {
                write!(f, "{op} at {at} failed: HTTP {status}")?;
                if !code.is_empty() {
                    write!(f, " {code}")?;
                }
                if !message.is_empty() {
                    write!(f, ": {message}")?;
                }
                Ok(())
            }
            Failure::Other(why) => write!(f, "{op} at {at} failed: {why}"),
        }
    }
}

impl std::error::Error for AwsError {}

fn chain_of(e: &(dyn std::error::Error + 'static)) -> Vec<String> {
    let mut out = Vec::new();
    let mut next = Some(e);
    while let Some(cur) = next {
        let s = one_line(&cur.to_string());
        if out.last() != Some(&s) {
            out.push(s);
        }
        next = cur.source();
    }
    out
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn service(status: u16, code: &str, message: &str) -> AwsError {
        AwsError {
            operation: "ImportSnapshot",
            endpoint: "http://127.0.0.1:1".into(),
            failure: Failure::Service { status, code: code.into(), message: message.into() },
            chain: vec![],
        }
    }

    #[test]
    fn classification() {
        let aws = service(500, "InternalError", "We encountered an internal error");
        assert!(!aws.not_implemented(), "an AWS 500 with a code is a server error");
        assert!(aws.retryable());
        let bare = service(500, "", "");
        assert!(bare.not_implemented() && !bare.retryable());
        assert_eq!(
            bare.to_string(),
            "the endpoint http://127.0.0.1:1 does not implement ImportSnapshot (HTTP 500 without an AWS error)"
        );
        let ni = service(501, "NotImplemented", "x");
        assert!(ni.not_implemented() && !ni.retryable());
        assert!(service(503, "SlowDown", "").retryable());
        assert!(service(400, "RequestLimitExceeded", "").retryable());
        let denied = service(403, "AuthFailure", "AWS was not able to validate the provided access credentials");
        assert!(!denied.retryable());
        assert_eq!(
            denied.to_string(),
            "ImportSnapshot at http://127.0.0.1:1 failed: HTTP 403 AuthFailure: AWS was not able to validate the provided access credentials"
        );
    }
}
