//! The `imagefactory` command: builds in-process with the same engine and store as the
//! daemon, the original's output block, options and exit codes.

use imagefactory_blackbox::*;
use serde_json::Value;

const BANNER: &str = "============ Final Image Details ============";

#[track_caller]
fn uuid_of(out: &CmdOutput) -> String {
    field(&out.stdout, "UUID:").unwrap_or_else(|| panic!("no UUID line: {out:#?}")).to_string()
}

#[test]
fn base_image_prints_the_final_details_block_and_exits_0() {
    let env = CliEnv::new();
    let t = env.file("t.tdl", &mock_tdl());
    let out = env.run(&["base_image".as_ref(), t.as_os_str()]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains(BANNER), "{out:#?}");
    let id = uuid_of(&out);
    assert_eq!(field(&out.stdout, "Type:"), Some("base_image"));
    let body = env.storage().join(format!("{id}.body"));
    assert_eq!(field(&out.stdout, "Image filename:"), Some(body.to_str().unwrap()));
    assert!(out.stdout.contains("Image build completed SUCCESSFULLY!"), "{out:#?}");
    assert!(!out.stdout.contains("Image ID on provider:"));
    assert_eq!(std::fs::read_to_string(&body).unwrap(), format!("MockOS base_image file for id ({id})"));
    let meta: Value =
        serde_json::from_slice(&std::fs::read(env.storage().join(format!("{id}.meta"))).unwrap()).unwrap();
    assert_eq!(meta["status"], "COMPLETE");

    // --output json prints the record.
    let out = env.run(&["--output".as_ref(), "json".as_ref(), "base_image".as_ref(), t.as_os_str()]);
    assert_eq!(out.code, 0, "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("not JSON: {e}: {out:#?}"));
    assert_eq!(v["type"], "BaseImage");
    assert_eq!(v["status"], "COMPLETE");
    assert_eq!(v["percent_complete"], 100);
    assert!(v["identifier"].as_str().is_some_and(|s| s != id), "{v}");
    assert!(!out.stdout.contains(BANNER));
}

#[test]
fn a_failing_build_prints_the_error_and_exits_1() {
    let env = CliEnv::new();
    let t = env.file("t.tdl", &mock_tdl());
    let out = env.run(&[
        "base_image".as_ref(),
        "--parameter".as_ref(),
        "mock_fail_at".as_ref(),
        "create_base_image".as_ref(),
        t.as_os_str(),
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains(BANNER), "{out:#?}");
    let line = out.stdout.lines().find(|l| l.starts_with("Image build FAILED with error: ")).unwrap_or_else(|| {
        panic!("no FAILED line: {out:#?}");
    });
    assert!(line.contains("Failure encountered while: MockOS create_base_image: step"), "{line}");
    assert!(!out.stdout.contains("SUCCESSFULLY"));
    // A crashing plugin fails the build, not the command.
    let out = env.run(&[
        "base_image".as_ref(),
        "--parameter".as_ref(),
        "mock_crash_at".as_ref(),
        "create_base_image".as_ref(),
        t.as_os_str(),
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("Image build FAILED with error: ") && out.stdout.contains("SIGSEGV"), "{out:#?}");
}

#[test]
fn target_and_provider_images_by_id_and_template() {
    let env = CliEnv::new();
    let t = env.file("t.tdl", &mock_tdl());
    let base = env.run(&["base_image".as_ref(), t.as_os_str()]);
    assert_eq!(base.code, 0, "{base:#?}");
    let bid = uuid_of(&base);

    let target = env.run(&["target_image", "--id", &bid, "mock"]);
    assert_eq!(target.code, 0, "{target:#?}");
    assert_eq!(field(&target.stdout, "Type:"), Some("target_image"));
    let tid = uuid_of(&target);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(env.storage().join(format!("{tid}.meta"))).unwrap()).unwrap();
    assert_eq!(meta["base_image_id"], bid.as_str());
    assert_eq!(meta["target"], "mock");

    let secret = unique("cli-secret");
    let creds = env.file("creds.xml", &credentials(&secret));
    let prov = env.run(&[
        "provider_image".as_ref(),
        "--id".as_ref(),
        tid.as_ref(),
        "mock".as_ref(),
        "@prov".as_ref(),
        creds.as_os_str(),
    ]);
    assert_eq!(prov.code, 0, "{prov:#?}");
    assert_eq!(field(&prov.stdout, "Type:"), Some("provider_image"));
    let on_provider = field(&prov.stdout, "Image ID on provider:").unwrap_or_else(|| panic!("{prov:#?}"));
    assert!(!on_provider.is_empty());
    let pid = uuid_of(&prov);
    let meta: Value =
        serde_json::from_slice(&std::fs::read(env.storage().join(format!("{pid}.meta"))).unwrap()).unwrap();
    assert_eq!(meta["identifier_on_provider"], on_provider);
    assert_eq!(meta["provider"], "prov");
    assert_eq!(meta["target_image_id"], tid.as_str());
    for e in std::fs::read_dir(env.storage()).unwrap().flatten() {
        let c = std::fs::read(e.path()).unwrap_or_default();
        assert!(!String::from_utf8_lossy(&c).contains(&secret), "{} holds the credentials", e.path().display());
    }
    assert!(!prov.stdout.contains(&secret) && !prov.stderr.contains(&secret), "the CLI printed the credentials");

    // From a template: base and target are built in cascade.
    let target2 = env.run(&["target_image".as_ref(), "--template".as_ref(), t.as_os_str(), "MockCloud".as_ref()]);
    assert_eq!(target2.code, 0, "{target2:#?}");
    let snap = env.run(&[
        "provider_image".as_ref(),
        "--template".as_ref(),
        t.as_os_str(),
        "--snapshot".as_ref(),
        "mock".as_ref(),
        "@prov".as_ref(),
        creds.as_os_str(),
    ]);
    assert_eq!(snap.code, 0, "{snap:#?}");
    assert!(field(&snap.stdout, "Image ID on provider:").is_some(), "{snap:#?}");

    // An unknown target fails before building, naming what is supported.
    let bad = env.run(&["target_image", "--id", &bid, "nosuchcloud"]);
    assert_eq!(bad.code, 1, "{bad:#?}");
    assert!(bad.stderr.contains("nosuchcloud") && bad.stderr.contains("mock"), "{bad:#?}");
}

#[test]
fn parameter_options_apply_in_the_original_order() {
    let env = CliEnv::new();
    let t = env.file("t.tdl", &mock_tdl());
    let params =
        env.file("params.json", r#"{"a": "from-file", "b": "from-file", "c": "from-file", "mock_progress_steps": 2}"#);
    let cfile = env.file("c.txt", "from-file-parameter");
    let out = env.run(&[
        "--output".as_ref(),
        "json".as_ref(),
        "base_image".as_ref(),
        "--parameters".as_ref(),
        params.as_os_str(),
        "--parameter".as_ref(),
        "b".as_ref(),
        "from-parameter".as_ref(),
        "--parameter".as_ref(),
        "c".as_ref(),
        "from-parameter".as_ref(),
        "--file-parameter".as_ref(),
        "c".as_ref(),
        cfile.as_os_str(),
        t.as_os_str(),
    ]);
    assert_eq!(out.code, 0, "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    let p = &v["parameters"];
    assert_eq!(p["a"], "from-file", "{p}");
    assert_eq!(p["b"], "from-parameter", "{p}");
    assert_eq!(p["c"], "from-file-parameter", "{p}");
    assert_eq!(p["mock_progress_steps"], 2, "{p}");
    // The parameters reach the plugin: the activity shows two steps.
    let id = v["identifier"].as_str().unwrap();
    let log = std::fs::read_dir(env.storage())
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name().to_string_lossy().starts_with(id) && !e.file_name().to_string_lossy().ends_with(".meta")
        })
        .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
        .collect::<String>();
    assert!(log.contains("step 2 of 2"), "the plugin did not see mock_progress_steps=2: {log}");

    // A parameters file that is not JSON.
    let bad = env.file("bad.json", "{not json");
    let out = env.run(&["base_image".as_ref(), "--parameters".as_ref(), bad.as_os_str(), t.as_os_str()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(
        format!("{}{}", out.stdout, out.stderr).contains("Unable to read JSON from file provided in --parameters"),
        "{out:#?}"
    );
    assert!(!out.stdout.contains(BANNER));
}

#[test]
fn a_callback_url_that_is_not_http_is_refused_before_any_image_exists() {
    let env = CliEnv::new();
    let t = env.file("t.tdl", &mock_tdl());
    let out = env.run(&[
        "base_image".as_ref(),
        "--parameter".as_ref(),
        "callbacks".as_ref(),
        "file:///etc/passwd".as_ref(),
        t.as_os_str(),
    ]);
    assert_eq!(out.code, 1, "{out:#?}");
    let all = format!("{}{}", out.stdout, out.stderr);
    assert!(all.contains("invalid callback URL \"file:///etc/passwd\""), "{out:#?}");
    assert!(!out.stdout.contains(BANNER), "{out:#?}");
    assert_eq!(std::fs::read_dir(env.storage()).unwrap().count(), 0, "the CLI stored something");
    let params = env.file("p.json", r#"{"callbacks": ["ftp://x"]}"#);
    let out = env.run(&["base_image".as_ref(), "--parameters".as_ref(), params.as_os_str(), t.as_os_str()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(format!("{}{}", out.stdout, out.stderr).contains("\"ftp://x\""), "{out:#?}");
    assert_eq!(std::fs::read_dir(env.storage()).unwrap().count(), 0, "the CLI stored something");
}

#[test]
fn images_delete_and_plugins_subcommands() {
    let env = CliEnv::new();
    let t = env.file("t.tdl", &mock_tdl());
    let a = uuid_of(&env.run(&["base_image".as_ref(), t.as_os_str()]));
    let b = uuid_of(&env.run(&["base_image".as_ref(), t.as_os_str()]));
    let tid = uuid_of(&env.run(&["target_image", "--id", &a, "mock"]));

    let out = env.run(&["images", r#"{"type": "BaseImage"}"#]);
    assert_eq!(out.code, 0, "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    let mut ids: Vec<&str> =
        v["images"].as_array().expect("images").iter().map(|i| i["identifier"].as_str().unwrap()).collect();
    ids.sort();
    let mut want = vec![a.as_str(), b.as_str()];
    want.sort();
    assert_eq!(ids, want);
    // Exactly one match prints the record itself.
    let out = env.run(&["images", &format!(r#"{{"identifier": "{tid}"}}"#)]);
    assert_eq!(out.code, 0, "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["identifier"], tid.as_str());
    assert_eq!(v["type"], "TargetImage");

    let out = env.run(&["delete", &b]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert!(out.stdout.contains(&format!("Deleting image with id {b}")), "{out:#?}");
    assert!(!env.storage().join(format!("{b}.meta")).exists());
    assert!(!env.storage().join(format!("{b}.body")).exists());
    let out = env.run(&["delete", &b]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains(&format!("No image found with id: {b}")), "{out:#?}");
    let out = env.run(&["images", r#"{"type": "BaseImage"}"#]);
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["identifier"], a.as_str(), "one base image left: {v}");

    let out = env.run(&["plugins"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("{e}: {out:#?}"));
    let names: Vec<&str> = v.as_array().expect("a list").iter().map(|p| p["id"].as_str().unwrap()).collect();
    assert!(names.contains(&"MockOS") && names.contains(&"MockCloud"), "{v}");
    let out = env.run(&["plugins", "--id", "MockCloud"]);
    assert_eq!(out.code, 0, "{out:#?}");
    let v: Value = serde_json::from_str(&out.stdout).unwrap();
    assert_eq!(v["id"], "MockCloud");
    assert_eq!(v["type"], "cloud");
}

#[test]
fn validate_prints_ok_or_line_numbered_errors() {
    let env = CliEnv::new();
    let good = env.file("good.tdl", &mock_tdl());
    let out = env.run(&["validate".as_ref(), good.as_os_str()]);
    assert_eq!(out.code, 0, "{out:#?}");
    assert_eq!(out.stdout.trim(), "OK");

    let bad = env.file("bad.tdl", &mock_tdl().replace("<arch>x86_64</arch>", "<arch>sparc</arch>"));
    let out = env.run(&["validate".as_ref(), bad.as_os_str()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(!out.stdout.contains("OK"), "{out:#?}");
    let first = out.stdout.lines().next().unwrap_or_else(|| panic!("no errors printed: {out:#?}"));
    assert!(first.starts_with(&format!("{}:", bad.display())), "{first}");
    assert!(first.contains("line 6") || first.contains(":6:"), "no line number in: {first}");

    let broken = env.file("broken.tdl", "<template>\n  <name>x</name>\n  <os>\n");
    let out = env.run(&["validate".as_ref(), broken.as_os_str()]);
    assert_eq!(out.code, 1, "{out:#?}");
    assert!(out.stdout.contains("line"), "{out:#?}");
}
