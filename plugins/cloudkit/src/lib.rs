//! What imagefactory's cloud plugins share.
//!
//! - [`Secret`]: a credential value that cannot be printed by accident;
//! - [`provider::ProviderDoc`]: a provider definition in any of the original's shapes (a
//!   name, a JSON object, an XML document), with the `endpoint` override;
//! - [`credentials::section`]: the `<provider_credentials><X_credentials>` document;
//! - [`http::agent`]: the HTTP agent of the plugins that speak HTTP themselves, with the
//!   TLS trust (`ca_certificate`, `tls_verify`) a provider definition sets;
//! - [`content::cloud_content`]: the in-image changes the original made for every cloud
//!   (persistent network rules and MAC addresses removed, a cloud-info file written),
//!   handed to the OS plugin's second stage as target content;
//! - [`report::Report`]: where push and conversion code reports, so that benchmarks run
//!   the same code a build runs.
//!
//! Each cloud plugin keeps what is its own (its service's protocol, its target format);
//! only what every cloud needs the same way lives here.

pub mod content;
pub mod credentials;
pub mod http;
pub mod provider;
pub mod report;
mod secret;

pub use secret::Secret;
