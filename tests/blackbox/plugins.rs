//! Plugin discovery and loading: good plugins, a `.so` that is no plugin, a duplicate,
//! plugins built outside the workspace (one against this plugin-api, one against a
//! copy claiming version 2.0.0, one claiming a target another plugin holds).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use imagefactory_blackbox::*;
use serde_json::{json, Value};

fn plugin_list(d: &Daemon) -> Vec<Value> {
    let r = d.get("/imagefactory/plugins");
    r.expect(200);
    r.json()["plugins"].as_array().expect("plugins list").clone()
}

fn entry<'a>(list: &'a [Value], path_ends_with: &str) -> &'a Value {
    list.iter()
        .find(|p| p["path"].as_str().is_some_and(|s| s.ends_with(path_ends_with)))
        .unwrap_or_else(|| panic!("no plugin entry for {path_ends_with} in {list:#?}"))
}

fn assert_good(list: &[Value], name: &str) {
    let p = list.iter().find(|p| p["id"] == name && p.get("ERROR").is_none());
    assert!(p.is_some(), "{name} is not loaded: {list:#?}");
}

/// A system shared library that is certainly not an imagefactory plugin.
fn some_system_library() -> PathBuf {
    let candidates = [
        "/lib/x86_64-linux-gnu/libm.so.6",
        "/usr/lib/x86_64-linux-gnu/libm.so.6",
        "/lib64/libm.so.6",
        "/usr/lib64/libm.so.6",
        "/lib/aarch64-linux-gnu/libm.so.6",
        "/usr/lib/aarch64-linux-gnu/libm.so.6",
    ];
    candidates.iter().map(PathBuf::from).find(|p| p.is_file()).unwrap_or_else(|| {
        panic!("no libm.so.6 found at any of {candidates:?}; this test needs a non-plugin ELF library")
    })
}

#[test]
fn broken_and_duplicate_plugins_become_error_entries_and_the_rest_load() {
    let d = Daemon::start(DaemonOptions {
        extra_plugin_files: vec![
            ("junk.so".into(), PluginSource::Bytes(b"this is a text file, not a shared library\n".to_vec())),
            ("libnotaplugin.so".into(), PluginSource::File(some_system_library())),
            ("libmock_cloud_copy.so".into(), PluginSource::File(plugin_so("libmock_cloud.so"))),
            ("README.txt".into(), PluginSource::Bytes(b"not a .so: ignored".to_vec())),
        ],
        ..Default::default()
    });
    let list = plugin_list(&d);
    assert_eq!(list.len(), 5, "two good plugins and three error entries expected: {list:#?}");
    assert_good(&list, "MockOS");
    assert_good(&list, "MockCloud");

    let junk = entry(&list, "/junk.so");
    let err = junk["ERROR"].as_str().expect("junk.so has an ERROR field");
    assert!(err.contains("cannot load as a shared library"), "{err}");
    assert!(!err.contains('\n'), "not one line: {err:?}");
    assert_eq!(junk["_type"], "plugin");

    let lib = entry(&list, "/libnotaplugin.so");
    let err = lib["ERROR"].as_str().expect("an ERROR field");
    assert!(err.contains("not an imagefactory plugin"), "{err}");

    let copy = entry(&list, "/libmock_cloud_copy.so");
    let err = copy["ERROR"].as_str().expect("the duplicate has an ERROR field");
    assert!(!err.contains('\n'), "not one line: {err:?}");
    assert!(err.contains("MockCloud") && err.contains("already"), "{err}");
    // The error entries are logged with their reason too.
    let log = d.log();
    assert!(log.contains("junk.so") && log.contains("plugin not loaded"), "{log}");

    // The good ones still build, through the original MockCloud.
    let r = d.post_json(
        "/imagefactory/provider_images",
        &json!({"provider_image": {"provider": "p", "credentials": credentials("c"), "target": "mock", "template": mock_tdl()}}),
    );
    r.expect(202);
    let id = r.json()["provider_image"]["id"].as_str().unwrap().to_string();
    let p = d.wait_complete(&id, "provider_images");
    assert_eq!(p["provider_account_identifier"], "mock_user");
}

// ------------------------------------------------------------------------------------
// Plugins built outside the workspace

const GOOD_PLUGIN: &str = r#"
use imagefactory_plugin_api::prelude::*;

struct External;

impl CloudPlugin for External {
    fn builder_did_create_target_image(&self, host: &Host, req: TargetHookRequest) -> Result<(), PluginError> {
        host.activity("External plugin converting the target image");
        let body = std::fs::read_to_string(host.body_path())?;
        std::fs::write(host.body_path(), format!("{body}\nconverted by BBExternal for {}", req.target))?;
        host.info("BBExternal converted the target image");
        Ok(())
    }

    fn push_image_to_provider(&self, host: &Host, req: PushRequest) -> Result<ProviderOutcome, PluginError> {
        host.activity("Pretending to upload");
        host.percent(100);
        let mut out = ProviderOutcome::new(format!("external-{}", req.image_id));
        out.provider_account_identifier = Some("external_user".into());
        Ok(out)
    }
}

fn manifest() -> Manifest {
    Manifest::cloud("BBExternal", "0.1", "A plugin built outside the workspace", &["extcloud"])
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    cloud: || Ok(External),
}
"#;

const DUP_TARGET_PLUGIN: &str = r#"
use imagefactory_plugin_api::prelude::*;

struct Dup;

impl CloudPlugin for Dup {}

fn manifest() -> Manifest {
    Manifest::cloud("BBDupTarget", "0.1", "Claims a target MockCloud already serves", &["mock"])
}

imagefactory_plugin_api::export_plugin! {
    manifest: manifest,
    cloud: || Ok(Dup),
}
"#;

fn cargo_bin() -> PathBuf {
    std::env::var_os("CARGO").map(PathBuf::from).unwrap_or_else(|| require_tool("cargo"))
}

fn cargo_home() -> PathBuf {
    std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").expect("HOME")).join(".cargo"))
}

fn write(path: &Path, content: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, content).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
}

fn crate_manifest(name: &str, api_path: &Path) -> String {
    format!(
        "[package]\nname = \"{name}\"\nversion = \"0.1.0\"\nedition = \"2021\"\npublish = false\n\n\
         [lib]\ncrate-type = [\"cdylib\"]\n\n[dependencies]\nimagefactory-plugin-api = {{ path = {:?} }}\n\n[workspace]\n",
        api_path.display().to_string()
    )
}

/// `cargo build` in `dir` into the shared external-plugins target dir (dependencies stay
/// cached across runs). Offline first when the registry index is cached, then online.
fn cargo_build(dir: &Path) {
    let target = target_dir().join("external-plugins");
    let offline_possible = cargo_home().join("registry").join("index").is_dir();
    let attempts: &[bool] = if offline_possible { &[true, false] } else { &[false] };
    let mut last = None;
    for &offline in attempts {
        let mut cmd = Command::new(cargo_bin());
        cmd.arg("build").arg("--quiet").current_dir(dir).env("CARGO_TARGET_DIR", &target);
        if offline {
            cmd.arg("--offline");
        }
        // Build like a plugin author would, not with the outer test run's settings.
        for var in ["CARGO_MANIFEST_DIR", "CARGO_PKG_NAME", "CARGO_PRIMARY_PACKAGE", "RUSTC_WORKSPACE_WRAPPER"] {
            cmd.env_remove(var);
        }
        let out = run_cmd(cmd, Duration::from_secs(600));
        if out.code == 0 {
            return;
        }
        last = Some(out);
    }
    panic!("building the external plugin in {} failed: {last:#?}", dir.display());
}

/// Copies plugin-api to `dest` as a standalone crate whose version is `version`.
fn copy_plugin_api(dest: &Path, version: &str) {
    let src = workspace_dir().join("plugin-api");
    let manifest = std::fs::read_to_string(src.join("Cargo.toml")).expect("plugin-api/Cargo.toml");
    let mut out = String::new();
    let mut section = String::new();
    let mut version_done = false;
    for line in manifest.lines() {
        let t = line.trim();
        if t.starts_with('[') {
            section = t.to_string();
            if section == "[package]" {
                out.push_str("[package]\nautobenches = false\nautotests = false\nautoexamples = false\n");
                continue;
            }
        }
        // Keep only what building the library needs.
        if !(section == "[package]"
            || section == "[lib]"
            || section == "[dependencies]"
            || section.starts_with("[dependencies."))
        {
            continue;
        }
        if section == "[package]" && t.starts_with("version") && !version_done {
            out.push_str(&format!("version = \"{version}\"\n"));
            version_done = true;
            continue;
        }
        if t.starts_with("edition.workspace") {
            out.push_str("edition = \"2021\"\n");
            continue;
        }
        if t.starts_with("license.workspace") {
            out.push_str("license = \"Apache-2.0\"\n");
            continue;
        }
        assert!(!t.contains("workspace = true") && !t.contains(".workspace"), "cannot copy plugin-api: {line}");
        out.push_str(line);
        out.push('\n');
    }
    assert!(version_done, "plugin-api/Cargo.toml has no version");
    write(&dest.join("Cargo.toml"), &out);
    copy_dir(&src.join("src"), &dest.join("src"));
    if src.join("README.md").is_file() {
        std::fs::copy(src.join("README.md"), dest.join("README.md")).unwrap();
    }
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            copy_dir(&p, &to.join(e.file_name()));
        } else {
            std::fs::copy(&p, to.join(e.file_name())).unwrap();
        }
    }
}

/// Makes a plugin crate in `root/<name>` and builds it; returns its `.so`.
fn build_plugin(root: &Path, name: &str, api_path: &Path, source: &str) -> PathBuf {
    let dir = root.join(name);
    write(&dir.join("Cargo.toml"), &crate_manifest(name, api_path));
    write(&dir.join("src/lib.rs"), source);
    // The workspace's lock file pins the same dependency versions (cached, offline-safe).
    std::fs::copy(workspace_dir().join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy Cargo.lock");
    cargo_build(&dir);
    let so = target_dir().join("external-plugins/debug").join(format!("lib{}.so", name.replace('-', "_")));
    assert!(so.is_file(), "cargo built no {}", so.display());
    so
}

#[test]
fn plugins_built_outside_the_workspace_load_or_are_refused_with_a_reason() {
    let root = tempfile::Builder::new().prefix("imagefactory-ext-").tempdir().unwrap();
    let api = workspace_dir().join("plugin-api");
    let good = build_plugin(root.path(), "bb-external-plugin", &api, GOOD_PLUGIN);
    let dup = build_plugin(root.path(), "bb-dup-target-plugin", &api, DUP_TARGET_PLUGIN);
    let api_v2 = root.path().join("plugin-api-v2");
    copy_plugin_api(&api_v2, "2.0.0");
    let old = build_plugin(root.path(), "bb-other-api-plugin", &api_v2, GOOD_PLUGIN);
    // The plugin crates declare no abi_stable dependency of their own.
    for name in ["bb-external-plugin", "bb-dup-target-plugin", "bb-other-api-plugin"] {
        let m = std::fs::read_to_string(root.path().join(name).join("Cargo.toml")).unwrap();
        assert!(!m.contains("abi_stable"));
    }

    let d = Daemon::start(DaemonOptions {
        extra_plugin_files: vec![
            ("libexternal.so".into(), PluginSource::File(good)),
            // Sorted after libmock_cloud.so, so MockCloud holds "mock" first.
            ("zz_dup_target.so".into(), PluginSource::File(dup)),
            ("libother_api.so".into(), PluginSource::File(old)),
        ],
        ..Default::default()
    });
    let list = plugin_list(&d);
    assert_eq!(list.len(), 5, "{list:#?}");
    assert_good(&list, "MockOS");
    assert_good(&list, "MockCloud");
    assert_good(&list, "BBExternal");
    let ext = list.iter().find(|p| p["id"] == "BBExternal").unwrap();
    assert_eq!(ext["type"], "cloud");
    assert!(ext["targets"].to_string().contains("extcloud"), "{ext}");
    assert!(ext["api_version"].as_str().is_some_and(|v| v.starts_with("1.")), "{ext}");

    let other = entry(&list, "/libother_api.so");
    let err = other["ERROR"].as_str().expect("the 2.0.0 plugin has an ERROR field");
    assert!(err.contains("incompatible plugin-api"), "{err}");
    assert!(err.contains("2.0.0"), "the error does not name the version: {err}");
    assert!(!err.contains('\n'));

    let dup = entry(&list, "/zz_dup_target.so");
    let err = dup["ERROR"].as_str().expect("the duplicate target has an ERROR field");
    assert!(err.starts_with("Did not register BBDupTarget for mock"), "{err}");
    assert!(err.contains("Plugin MockCloud already registered"), "{err}");

    // "mock" still goes to MockCloud.
    let r = d.post_json(
        "/imagefactory/provider_images",
        &json!({"provider_image": {"provider": "p", "credentials": credentials("c"), "target": "mock", "template": mock_tdl()}}),
    );
    r.expect(202);
    let id = r.json()["provider_image"]["id"].as_str().unwrap().to_string();
    assert_eq!(d.wait_complete(&id, "provider_images")["provider_account_identifier"], "mock_user");

    // An image pushed through the external plugin, in cascade from a template.
    let r = d.post_json(
        "/imagefactory/provider_images",
        &json!({"provider_image": {"provider": "ext-provider", "credentials": credentials("c"), "target": "extcloud", "template": mock_tdl()}}),
    );
    r.expect(202);
    let id = r.json()["provider_image"]["id"].as_str().unwrap().to_string();
    let p = d.wait_complete(&id, "provider_images");
    assert_eq!(p["identifier_on_provider"], format!("external-{id}"));
    assert_eq!(p["provider_account_identifier"], "external_user");
    let tid = p["target_image"]["id"].as_str().unwrap().to_string();
    let body = d.get(&format!("/imagefactory/target_images/{tid}/raw_image"));
    body.expect(200);
    assert!(body.text().contains("converted by BBExternal for extcloud"), "{}", body.text());
    assert!(
        d.build_log("target_images", &tid).contains("BBExternal converted"),
        "{}",
        d.build_log("target_images", &tid)
    );
}
