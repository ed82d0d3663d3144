//! The operator's guest settings, read from a plugin's `settings` map so every OS
//! plugin reads them the same way.
//!
//! - `accelerator`: `kvm` or `tcg` (default `tcg`: only the operator knows whether KVM
//!   really runs guests on this host);
//! - `libvirt_uri`: run guests through libvirt at this URI (e.g. `qemu:///system`);
//!   absent or empty: qemu directly;
//! - `timeout`: the hard limit on an install, in seconds (a number or a numeric string).

use std::time::Duration;

use serde_json::{Map, Value};

use crate::accel::Accel;
use crate::config::GuestConfig;
use crate::GuestError;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GuestSettings {
    pub accel: Accel,
    pub libvirt_uri: Option<String>,
    pub timeout: Option<Duration>,
}

impl GuestSettings {
    /// Reads the settings; an unknown accelerator or a bad timeout is a one-line error.
    pub fn from_settings(settings: &Map<String, Value>) -> Result<GuestSettings, GuestError> {
        let accel = match settings.get("accelerator") {
            None | Some(Value::Null) => Accel::default(),
            Some(Value::String(s)) => s.parse()?,
            Some(other) => return Err(GuestError::UnknownAccel(other.to_string())),
        };
        let libvirt_uri = match settings.get("libvirt_uri") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.trim().is_empty() => None,
            Some(Value::String(s)) => Some(s.trim().to_string()),
            Some(other) => return Err(GuestError::Config(format!("libvirt_uri must be a string, not {other}"))),
        };
        let bad_timeout =
            |v: &Value| GuestError::Config(format!("timeout must be a positive number of seconds, not {v}"));
        let timeout = match settings.get("timeout") {
            None | Some(Value::Null) => None,
            Some(v @ Value::Number(n)) => Some(n.as_f64().filter(|s| *s > 0.0).ok_or_else(|| bad_timeout(v))?),
            Some(v @ Value::String(s)) => {
                Some(s.trim().parse::<f64>().ok().filter(|s| *s > 0.0).ok_or_else(|| bad_timeout(v))?)
            }
            Some(v) => return Err(bad_timeout(v)),
        }
        .map(Duration::from_secs_f64);
        Ok(GuestSettings { accel, libvirt_uri, timeout })
    }

    /// Puts these settings into a guest's config (the timeout only when set).
    pub fn apply(&self, config: &mut GuestConfig) {
        config.accel = self.accel;
        config.libvirt_uri = self.libvirt_uri.clone();
        if let Some(t) = self.timeout {
            config.timeout = t;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<GuestSettings, GuestError> {
        GuestSettings::from_settings(v.as_object().unwrap())
    }

    #[test]
    fn reads_the_three_settings() {
        assert_eq!(parse(json!({})).unwrap(), GuestSettings::default());
        let s = parse(json!({"accelerator": "kvm", "libvirt_uri": "qemu:///system", "timeout": 1800})).unwrap();
        assert_eq!(s.accel, Accel::Kvm);
        assert_eq!(s.libvirt_uri.as_deref(), Some("qemu:///system"));
        assert_eq!(s.timeout, Some(Duration::from_secs(1800)));
        assert_eq!(parse(json!({"timeout": "90", "libvirt_uri": ""})).unwrap().timeout, Some(Duration::from_secs(90)));
        assert_eq!(parse(json!({"libvirt_uri": " "})).unwrap().libvirt_uri, None);
        assert_eq!(
            parse(json!({"accelerator": "xen"})).unwrap_err().to_string(),
            "unknown accelerator 'xen' (use kvm or tcg)"
        );
        assert!(parse(json!({"timeout": -3})).is_err());
        assert!(parse(json!({"timeout": "soon"})).is_err());
        let mut c = GuestConfig::new("x", "/r", crate::Boot::Disk);
        s.apply(&mut c);
        assert_eq!((c.accel, c.timeout), (Accel::Kvm, Duration::from_secs(1800)));
        assert_eq!(c.libvirt_uri.as_deref(), Some("qemu:///system"));
    }
}
