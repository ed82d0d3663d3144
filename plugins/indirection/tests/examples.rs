//! The live-CD workflow's example files (conf/examples/indirection) and the scripts that
//! make its parameter files (scripts/indirection): the templates parse, the utility tasks
//! make jobs, and the committed parameter files are what the scripts print.

use std::path::PathBuf;
use std::process::Command;

use imagefactory_plugin_api::tdl::{ParseOptions, Template};
use indirection_cloud::job;

fn examples() -> PathBuf {
    testkit::workspace_dir().join("conf/examples/indirection")
}

fn script(name: &str) -> PathBuf {
    testkit::workspace_dir().join("scripts/indirection").join(name)
}

fn read(name: &str) -> String {
    std::fs::read_to_string(examples().join(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn python(args: &[&std::ffi::OsStr]) -> std::process::Output {
    Command::new("python3").args(args).output().expect("python3 (Debian package python3; run scripts/setup.sh)")
}

#[test]
fn the_templates_are_valid() {
    for t in ["f18_spinks.tdl", "f18_utility.tdl", "debian12-utility.tdl"] {
        Template::parse(&read(t), &ParseOptions::default()).unwrap_or_else(|e| panic!("{t}: {e}"));
    }
}

#[test]
fn the_utility_tasks_make_jobs() {
    for (t, steps) in [("utility_tasks.tdl", 2), ("iso-of-input.tdl", 2), ("bootable-iso-from-device.tdl", 4)] {
        let fragment = job::parse(&read(t)).unwrap_or_else(|e| panic!("{t}: {e}"));
        let j = job::build(&fragment, "M", &|u: &str| panic!("{t} fetches {u}")).unwrap();
        assert_eq!(j.steps.len(), steps, "{t}");
    }
}

#[test]
fn make_parameters_wraps_a_kickstart() {
    let ks = examples().join("livecd-minimal.ks");
    let out = python(&[script("make_parameters.py").as_os_str(), ks.as_os_str()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(got["install_script"], read("livecd-minimal.ks"));
    assert_eq!(got["generate_icicle"], false);
    let committed: serde_json::Value = serde_json::from_str(&read("f18_spin_ks.parameters.json")).expect("JSON");
    assert_eq!(got, committed, "f18_spin_ks.parameters.json is stale");
    let out = python(&[script("make_parameters.py").as_os_str()]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn make_target_parameters_names_the_utility_image_and_tasks() {
    let tasks = examples().join("utility_tasks.tdl");
    let out =
        python(&[script("make_target_parameters.py").as_os_str(), tasks.as_os_str(), "UTILITY_IMAGE_UUID".as_ref()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(got["utility_image"], "UTILITY_IMAGE_UUID");
    assert_eq!(got["utility_customizations"], read("utility_tasks.tdl"));
    let committed: serde_json::Value = serde_json::from_str(&read("f18_target_parameters.json")).expect("JSON");
    assert_eq!(got, committed, "f18_target_parameters.json is stale");

    let tasks = examples().join("bootable-iso-from-device.tdl");
    let out = python(&[
        script("make_target_parameters.py").as_os_str(),
        tasks.as_os_str(),
        "UTILITY_IMAGE_UUID".as_ref(),
        "input_image_device=vdc".as_ref(),
    ]);
    let got: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(got["input_image_device"], "vdc");
    let committed: serde_json::Value =
        serde_json::from_str(&read("debian12-bootable-iso.parameters.json")).expect("JSON");
    assert_eq!(got, committed, "debian12-bootable-iso.parameters.json is stale");
    // The parameters the plugin reads from it are valid.
    let p = indirection_cloud::params::Params::read(got.as_object().expect("object")).expect("valid parameters");
    assert_eq!(p.input, indirection_cloud::params::Input::Device);

    let out =
        python(&[script("make_target_parameters.py").as_os_str(), tasks.as_os_str(), "U".as_ref(), "novalue".as_ref()]);
    assert_eq!(out.status.code(), Some(2));
}
