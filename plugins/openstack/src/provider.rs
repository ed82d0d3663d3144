//! The OpenStack provider definition: where Glance is, and image properties to set.
//!
//! Three shapes are accepted:
//! - The original's JSON: `{"glance-host": "glance.example.com", "glance-port": 9292}`. Any
//!   other key is an image property the upload sets (the original passed extra keys as
//!   `image_meta`): `name`, `visibility`, `min_disk`, `min_ram`, `tags`, `protected`,
//!   `os_hidden` as Glance defines them, anything else as a string property
//!   (`"os_distro": "debian"`).
//! - The same JSON with `endpoint`, a URL that overrides host and port (https, a path
//!   prefix behind a proxy, the tests' Glance on a random loopback port):
//!   `{"endpoint": "http://127.0.0.1:9292"}`.
//! - A plain name: `host` or `host:port` (port 9292 when absent), reached over http as
//!   the original did.
//!
//! Two keys are not image properties but say which server certificates are accepted
//! (see `cloudkit::http`): `ca_certificate`, the cloud's CA as PEM text or a PEM file's
//! path, and `tls_verify: false`, which turns the check off. They apply to Keystone too.
//!
//! What describes the uploaded data (`disk_format`, `container_format`) and what Glance
//! itself owns (`id`, `status`, `size`, checksums...) cannot be set here: the disk format
//! always comes from the real body, so a definition cannot mislabel it.

use cloudkit::http::{self, TlsTrust};
use serde_json::{Map, Value};
use url::Url;

/// Glance's usual port (the original's default).
pub const DEFAULT_PORT: u16 = 9292;

/// A parsed provider definition.
#[derive(Debug, Clone, PartialEq)]
pub struct Provider {
    /// The Glance base URL, without a trailing slash or `/v2`.
    pub endpoint: String,
    /// Image properties to set when the image is created.
    pub image_properties: Map<String, Value>,
    /// Which server certificates Glance and Keystone may show.
    pub trust: TlsTrust,
}

/// Why a provider definition cannot be used. One line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("OpenStack provider definition: {0}")]
pub struct ProviderError(String);

/// Image fields the upload decides, or Glance owns.
const RESERVED: &[&str] = &[
    "disk_format",
    "container_format",
    "id",
    "status",
    "size",
    "virtual_size",
    "checksum",
    "os_hash_algo",
    "os_hash_value",
    "created_at",
    "updated_at",
    "file",
    "self",
    "schema",
    "locations",
    "direct_url",
    "stores",
];

/// Glance's own image fields, passed with their JSON type; other properties are strings.
const CORE: &[&str] = &["name", "visibility", "min_disk", "min_ram", "tags", "protected", "os_hidden", "owner"];

/// Parses a provider definition (see the module documentation for the shapes).
pub fn parse(definition: &str) -> Result<Provider, ProviderError> {
    let text = definition.trim();
    if text.is_empty() {
        return Err(ProviderError(
            "it is empty: give {\"glance-host\": HOST, \"glance-port\": PORT}, {\"endpoint\": URL} or a host name"
                .into(),
        ));
    }
    if text.starts_with('{') {
        return parse_json(text);
    }
    let json_array = text.starts_with('[') && serde_json::from_str::<Value>(text).is_ok();
    if text.starts_with('<') || json_array {
        return Err(ProviderError(
            "expected a JSON object such as {\"glance-host\": HOST, \"glance-port\": 9292} or a host name".into(),
        ));
    }
    let (host, port) = split_host_port(text)?;
    Ok(Provider { endpoint: endpoint_from(&host, port)?, image_properties: Map::new(), trust: TlsTrust::default() })
}

fn parse_json(text: &str) -> Result<Provider, ProviderError> {
    let value: Value = serde_json::from_str(text).map_err(|e| ProviderError(format!("not valid JSON ({e})")))?;
    let Value::Object(map) = value else {
        return Err(ProviderError("expected a JSON object".into()));
    };
    let mut host = None;
    let mut port = None;
    let mut endpoint = None;
    let mut image_properties = Map::new();
    let trust = TlsTrust::from_fields(map.get(http::CA_FIELD), map.get(http::VERIFY_FIELD)).map_err(ProviderError)?;
    for (key, val) in map {
        match key.as_str() {
            "glance-host" => match val {
                Value::String(s) if !s.trim().is_empty() => host = Some(s.trim().to_string()),
                _ => return Err(ProviderError("glance-host must be a non-empty string".into())),
            },
            "glance-port" => port = Some(parse_port(&val)?),
            "endpoint" => match val {
                Value::String(s) => endpoint = Some(normalize_endpoint(&s)?),
                _ => return Err(ProviderError("endpoint must be a URL string".into())),
            },
            http::CA_FIELD | http::VERIFY_FIELD => {}
            k if RESERVED.contains(&k) => {
                return Err(ProviderError(format!(
                    "{k} cannot be set here (the plugin sets disk_format from the image itself; Glance owns the rest)"
                )))
            }
            k if CORE.contains(&k) => {
                image_properties.insert(key, val);
            }
            _ => {
                let s = match val {
                    Value::String(s) => s,
                    Value::Number(n) => n.to_string(),
                    Value::Bool(b) => b.to_string(),
                    _ => {
                        return Err(ProviderError(format!(
                            "image property {key} must be a string, number or boolean (Glance stores strings)"
                        )))
                    }
                };
                image_properties.insert(key, Value::String(s));
            }
        }
    }
    let endpoint = match (endpoint, host) {
        (Some(e), _) => e,
        (None, Some(h)) => endpoint_from(&h, port.unwrap_or(DEFAULT_PORT))?,
        (None, None) => {
            return Err(ProviderError("it needs glance-host (and glance-port) or endpoint".into()));
        }
    };
    Ok(Provider { endpoint, image_properties, trust })
}

fn parse_port(val: &Value) -> Result<u16, ProviderError> {
    let n = match val {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => s.trim().parse::<u64>().ok(),
        _ => None,
    };
    n.filter(|p| (1..=65535).contains(p))
        .and_then(|p| u16::try_from(p).ok())
        .ok_or_else(|| ProviderError(format!("glance-port must be a port number from 1 to 65535, not {val}")))
}

fn split_host_port(text: &str) -> Result<(String, u16), ProviderError> {
    let bad = || ProviderError(format!("{text:?} is neither a JSON object nor a host name (HOST or HOST:PORT)"));
    let (host, port) = match text.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') || h.ends_with(']') => {
            let port = p.parse::<u16>().ok().filter(|p| *p > 0).ok_or_else(bad)?;
            (h, port)
        }
        Some(_) if text.starts_with('[') => return Err(bad()),
        _ => (text, DEFAULT_PORT),
    };
    let plain = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
    let ok = !plain.is_empty()
        && plain.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | ':'))
        && (plain.contains(':') == host.starts_with('['));
    if !ok {
        return Err(bad());
    }
    Ok((host.to_string(), port))
}

fn endpoint_from(host: &str, port: u16) -> Result<String, ProviderError> {
    let host = if host.contains(':') && !host.starts_with('[') { format!("[{host}]") } else { host.to_string() };
    normalize_endpoint(&format!("http://{host}:{port}"))
}

/// Checks an endpoint URL and strips a trailing `/` or `/v2` (the plugin adds `/v2/...`).
fn normalize_endpoint(raw: &str) -> Result<String, ProviderError> {
    let url = Url::parse(raw.trim()).map_err(|e| ProviderError(format!("endpoint {raw:?} is not a URL ({e})")))?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err(ProviderError(format!("endpoint {raw:?} must be an http or https URL")));
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(ProviderError(format!("endpoint {raw:?} has no host")));
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(ProviderError(
            "endpoint must not carry a user or password: put them in the credentials file".into(),
        ));
    }
    if url.query().is_some() || url.fragment().is_some() {
        return Err(ProviderError(format!("endpoint {raw:?} must not have a query or fragment")));
    }
    let mut s = url.as_str().trim_end_matches('/').to_string();
    for suffix in ["/v2.0", "/v2"] {
        if let Some(stripped) = s.strip_suffix(suffix) {
            s = stripped.to_string();
            break;
        }
    }
    Ok(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn original_json_shape() {
        let p = parse(r#"{"glance-host": "127.0.0.1", "glance-port": 9393}"#).unwrap();
        assert_eq!(p.endpoint, "http://127.0.0.1:9393");
        assert!(p.image_properties.is_empty());
        let p = parse(
            r#"{"glance-host": "glance.example.com", "glance-port": "9292", "os_distro": "debian",
                         "min_disk": 2, "tags": ["a"], "hw_qemu_guest_agent": true}"#,
        )
        .unwrap();
        assert_eq!(p.endpoint, "http://glance.example.com:9292");
        assert_eq!(p.image_properties["os_distro"], "debian");
        assert_eq!(p.image_properties["min_disk"], 2);
        assert_eq!(p.image_properties["hw_qemu_guest_agent"], "true");
    }

    #[test]
    fn endpoint_overrides_host_and_drops_version_suffix() {
        let p = parse(r#"{"glance-host": "ignored", "endpoint": "https://cloud.example.com/image/v2/"}"#).unwrap();
        assert_eq!(p.endpoint, "https://cloud.example.com/image");
    }

    #[test]
    fn tls_keys_are_not_image_properties() {
        let p = parse(r#"{"endpoint": "https://cloud.example.com", "tls_verify": false, "os_distro": "x"}"#).unwrap();
        assert!(p.trust.is_unchecked());
        assert_eq!(p.image_properties.keys().collect::<Vec<_>>(), ["os_distro"]);
        let e = parse(r#"{"endpoint": "https://h", "ca_certificate": "/nonexistent.pem"}"#).unwrap_err().to_string();
        assert!(e.contains("ca_certificate: cannot read /nonexistent.pem"), "{e}");
    }

    #[test]
    fn plain_names() {
        assert_eq!(parse("glance.local").unwrap().endpoint, "http://glance.local:9292");
        assert_eq!(parse("10.0.0.5:9000").unwrap().endpoint, "http://10.0.0.5:9000");
        assert_eq!(parse("[::1]:9000").unwrap().endpoint, "http://[::1]:9000");
    }

    #[test]
    fn bad_definitions_are_one_line_errors() {
        for bad in [
            "",
            "{",
            "[1]",
            "<provider/>",
            r#"{"glance-port": 9292}"#,
            r#"{"glance-host": "h", "glance-port": 70000}"#,
            r#"{"glance-host": "h", "disk_format": "raw"}"#,
            r#"{"endpoint": "ftp://h"}"#,
            r#"{"endpoint": "http://user:pw@h"}"#,
            r#"{"glance-host": "h", "meta": {"a": 1}}"#,
            "two words",
            "host:notaport",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.starts_with("OpenStack provider definition: "), "{bad}: {e}");
            assert!(!e.contains('\n'), "{bad}: {e:?}");
        }
        let e = parse(r#"{"endpoint": "http://user:pw@h"}"#).unwrap_err().to_string();
        assert!(!e.contains("pw"), "{e}");
    }
}
