//! The target image's parameters, read and checked before any work starts.
//!
//! The original's keys and defaults (see the README): `utility_image` (default: the input
//! base image), `utility_customizations`, `input_image_file` (the original's code read
//! `input_image_filename`; both are accepted; default `/input_image.raw`),
//! `input_image_device`, `working_space_device` (`vdb`, the only value), `utility_cpus`,
//! `results_location` (default `/results/images/boot.iso`). Added here, because a VM
//! needs limits: `utility_memory` (MiB), `utility_timeout` and `utility_inactivity`
//! (seconds), `working_space_size` (GiB).

use std::time::Duration;

use imagefactory_plugin_api::ops::{parameter_as_bool, Parameters};
use serde_json::Value;

use crate::error::IndirectionError;

/// Where the input image lands on the working disk when nothing else is asked.
pub const DEFAULT_INPUT_FILE: &str = "/input_image.raw";
/// Where the results are expected on the working disk when nothing else is asked.
pub const DEFAULT_RESULTS: &str = "/results/images/boot.iso";
/// The working disk's device in the utility VM (the seed's `/dev/vdb1`).
pub const WORKING_DEVICE: &str = "vdb";
/// The device the input image is attached as when asked for as a device.
pub const INPUT_DEVICE: &str = "vdc";
/// The directory of the working disk the plugin keeps its own files in.
pub const PLUGIN_DIR: &str = "/.imagefactory";
/// The original's working disk size: sparse, so it costs only what is written.
pub const DEFAULT_WORKING_GIB: u64 = 30;
pub const DEFAULT_MEMORY_MIB: u32 = 2048;
pub const DEFAULT_CPUS: u32 = 1;
/// The VM's hard limit when neither the parameter nor the host's `timeout` says.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(3600);
/// No disk request and no network traffic for this long stops the VM (Oz's watchdog).
pub const DEFAULT_INACTIVITY: Duration = Duration::from_secs(300);

/// How the input base image reaches the utility VM.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Input {
    /// Copied (sparse) into the working disk's file system at this absolute path.
    File(String),
    /// Attached read-only as `/dev/vdc`, never copied.
    Device,
}

/// Everything the parameters ask for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Params {
    /// `None`: the input base image is the utility image too.
    pub utility_image: Option<String>,
    pub customizations: Option<String>,
    pub input: Input,
    pub results_location: String,
    pub cpus: u32,
    pub memory_mib: u32,
    /// `None`: the host's `timeout` setting, else [`DEFAULT_TIMEOUT`].
    pub timeout: Option<Duration>,
    pub inactivity: Duration,
    pub working_gib: u64,
}

fn string(parameters: &Parameters, key: &str) -> Result<Option<String>, IndirectionError> {
    match parameters.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) if s.trim().is_empty() => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.trim().to_string())),
        Some(other) => Err(IndirectionError::Parameter(format!("{key} must be a string, not {other}"))),
    }
}

fn number(parameters: &Parameters, key: &str, min: u64, max: u64) -> Result<Option<u64>, IndirectionError> {
    let Some(v) = parameters.get(key).filter(|v| !v.is_null()) else { return Ok(None) };
    let n = v.as_u64().or_else(|| v.as_str().and_then(|s| s.trim().parse().ok()));
    match n {
        Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
        _ => Err(IndirectionError::Parameter(format!("{key} must be a whole number from {min} to {max}, not {v}"))),
    }
}

/// Checks a path inside the working disk's file system: absolute, plain components,
/// nothing debugfs or a shell would read differently, and outside the plugin's own
/// directory.
pub fn check_fs_path(key: &str, path: &str) -> Result<String, IndirectionError> {
    let bad = |why: &str| IndirectionError::Parameter(format!("{key} '{path}' {why}"));
    if !path.starts_with('/') {
        return Err(bad("must be an absolute path on the working disk"));
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control() || "\"'\\$`".contains(c)) {
        return Err(bad("must not hold spaces, quotes, backslashes, $ or backquotes"));
    }
    let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
    if parts.is_empty() {
        return Err(bad("names no file"));
    }
    if parts.iter().any(|p| *p == "." || *p == "..") {
        return Err(bad("must not contain . or .. components"));
    }
    let clean = format!("/{}", parts.join("/"));
    if clean == PLUGIN_DIR || clean.starts_with(&format!("{PLUGIN_DIR}/")) || clean == "/lost+found" {
        return Err(bad(&format!("is reserved ({PLUGIN_DIR} holds the plugin's own files)")));
    }
    Ok(clean)
}

impl Params {
    /// Reads and checks the parameters.
    pub fn read(parameters: &Parameters) -> Result<Params, IndirectionError> {
        let utility_image = string(parameters, "utility_image")?;
        let customizations = string(parameters, "utility_customizations")?;

        let file = match (string(parameters, "input_image_file")?, string(parameters, "input_image_filename")?) {
            (Some(a), Some(b)) if a != b => {
                return Err(IndirectionError::Parameter(
                    "input_image_file and input_image_filename name different files; give one".into(),
                ))
            }
            (a, b) => a.or(b),
        };
        let device = match parameters.get("input_image_device") {
            None | Some(Value::Null) => false,
            Some(Value::Bool(_)) | Some(Value::Number(_)) => {
                parameter_as_bool(parameters, "input_image_device").unwrap_or(false)
            }
            Some(Value::String(s)) => match s.trim().trim_start_matches("/dev/") {
                "" => false,
                d if d == INPUT_DEVICE => true,
                _ => match parameter_as_bool(parameters, "input_image_device") {
                    Some(b) => b,
                    None => {
                        return Err(IndirectionError::Parameter(format!(
                            "input_image_device must be {INPUT_DEVICE} (the utility VM's third disk), not '{}'",
                            s.trim()
                        )))
                    }
                },
            },
            Some(other) => {
                return Err(IndirectionError::Parameter(format!("input_image_device must be a string, not {other}")))
            }
        };
        let input = match (device, file) {
            (true, Some(_)) => {
                return Err(IndirectionError::Parameter(
                    "You can specify either an input_image_device or an input_image_file but not both".into(),
                ))
            }
            (true, None) => Input::Device,
            (false, Some(f)) => Input::File(check_fs_path("input_image_file", &f)?),
            (false, None) => Input::File(DEFAULT_INPUT_FILE.to_string()),
        };
        if let Some(w) = string(parameters, "working_space_device")? {
            if w.trim_start_matches("/dev/") != WORKING_DEVICE {
                return Err(IndirectionError::Parameter(format!(
                    "working_space_device must be {WORKING_DEVICE} (the utility VM's second disk), not '{w}'"
                )));
            }
        }
        let results_location = match string(parameters, "results_location")? {
            Some(r) => check_fs_path("results_location", &r)?,
            None => DEFAULT_RESULTS.to_string(),
        };
        if let Input::File(f) = &input {
            if *f == results_location {
                return Err(IndirectionError::Parameter(format!(
                    "results_location and input_image_file are the same file {f}"
                )));
            }
        }
        Ok(Params {
            utility_image,
            customizations,
            input,
            results_location,
            cpus: number(parameters, "utility_cpus", 1, 64)?.map_or(DEFAULT_CPUS, |n| n as u32),
            memory_mib: number(parameters, "utility_memory", 256, 1 << 20)?.map_or(DEFAULT_MEMORY_MIB, |n| n as u32),
            timeout: number(parameters, "utility_timeout", 1, 7 * 24 * 3600)?.map(Duration::from_secs),
            inactivity: number(parameters, "utility_inactivity", 10, 7 * 24 * 3600)?
                .map_or(DEFAULT_INACTIVITY, Duration::from_secs),
            working_gib: number(parameters, "working_space_size", 1, 16 * 1024)?.unwrap_or(DEFAULT_WORKING_GIB),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn read(v: Value) -> Result<Params, IndirectionError> {
        Params::read(v.as_object().unwrap())
    }

    #[test]
    fn defaults_are_the_originals() {
        let p = read(json!({})).unwrap();
        assert_eq!(p.utility_image, None);
        assert_eq!(p.input, Input::File("/input_image.raw".into()));
        assert_eq!(p.results_location, "/results/images/boot.iso");
        assert_eq!((p.cpus, p.memory_mib, p.working_gib), (1, 2048, 30));
        assert_eq!(p.timeout, None);
    }

    #[test]
    fn reads_every_key() {
        let p = read(json!({
            "utility_image": " 6d5aad23-7368-4e60-8fe5-b289bb2623d8 ",
            "utility_customizations": "<template/>",
            "input_image_filename": "/in/disk.raw",
            "results_location": "/out//x.iso",
            "utility_cpus": "2", "utility_memory": 1024, "utility_timeout": 90, "utility_inactivity": "60",
            "working_space_device": "/dev/vdb", "working_space_size": 8
        }))
        .unwrap();
        assert_eq!(p.utility_image.as_deref(), Some("6d5aad23-7368-4e60-8fe5-b289bb2623d8"));
        assert_eq!(p.input, Input::File("/in/disk.raw".into()));
        assert_eq!(p.results_location, "/out/x.iso");
        assert_eq!((p.cpus, p.memory_mib, p.working_gib), (2, 1024, 8));
        assert_eq!(p.timeout, Some(Duration::from_secs(90)));
        assert_eq!(p.inactivity, Duration::from_secs(60));
        assert_eq!(read(json!({"input_image_file": "/a.raw"})).unwrap().input, Input::File("/a.raw".into()));
    }

    #[test]
    fn input_device() {
        for v in [json!("vdc"), json!("/dev/vdc"), json!(true), json!("yes")] {
            assert_eq!(read(json!({ "input_image_device": v })).unwrap().input, Input::Device, "{v}");
        }
        for v in [json!(""), json!(false), json!("no")] {
            assert_eq!(read(json!({ "input_image_device": v })).unwrap().input, Input::File(DEFAULT_INPUT_FILE.into()));
        }
        let e = read(json!({"input_image_device": "vdc", "input_image_file": "/x.raw"})).unwrap_err();
        assert_eq!(e.to_string(), "You can specify either an input_image_device or an input_image_file but not both");
        let e = read(json!({"input_image_device": "sdb"})).unwrap_err();
        assert_eq!(e.to_string(), "input_image_device must be vdc (the utility VM's third disk), not 'sdb'");
    }

    #[test]
    fn refuses_bad_values() {
        let msg = |v: Value| read(v).unwrap_err().to_string();
        assert_eq!(
            msg(json!({"results_location": "out.iso"})),
            "results_location 'out.iso' must be an absolute path on the working disk"
        );
        assert!(msg(json!({"results_location": "/a b.iso"})).contains("must not hold spaces"));
        assert!(msg(json!({"input_image_file": "/x/../y"})).contains(". or .."));
        assert!(msg(json!({"input_image_file": "/.imagefactory/x"})).contains("reserved"));
        assert!(msg(json!({"results_location": "/"})).contains("names no file"));
        assert!(msg(json!({"input_image_file": "/a", "results_location": "/a"})).contains("the same file"));
        assert!(msg(json!({"utility_cpus": 0})).starts_with("utility_cpus must be a whole number from 1 to 64"));
        assert!(msg(json!({"utility_timeout": "soon"})).starts_with("utility_timeout must be"));
        assert!(msg(json!({"working_space_device": "vdd"})).starts_with("working_space_device must be vdb"));
        assert!(msg(json!({"utility_image": 5})).starts_with("utility_image must be a string"));
        assert!(msg(json!({"input_image_file": "/a", "input_image_filename": "/b"})).contains("different files"));
    }
}
