//! The fast failure paths: each fails in seconds, with one line naming the cause.

mod common;

use std::time::Duration;

use common::{debian_factory, template, Factory};
use debian_os::customize;
use diskimage::chroot::Chroot;
use diskimage::process::Quiet;
use imagefactory_plugin_api::tdl::{Command, ContentType};

fn assert_one_line_failure(f: &Factory, tdl: &str, expected: &str) {
    let t = f.file("t.tdl", tdl);
    let run = f.run(&["base_image", t.to_str().expect("utf-8 path")], Duration::from_secs(120));
    assert_eq!(run.code, Some(1), "stdout:\n{}\nstderr:\n{}", run.stdout, run.stderr);
    let line = run.failure().unwrap_or_else(|| panic!("no failure line in:\n{}", run.stdout));
    assert!(line.contains(expected), "{line}");
    assert!(run.elapsed < Duration::from_secs(60), "a refusal should be quick, took {:?}", run.elapsed);
}

#[test]
fn an_unknown_version_fails_with_one_line() {
    let f = debian_factory();
    assert_one_line_failure(
        &f,
        &template("old", "10", "x86_64", "", ""),
        "unsupported Debian version '10': supported are 11 (bullseye), 12 (bookworm), 13 (trixie)",
    );
}

#[test]
fn an_unsupported_architecture_fails_with_one_line() {
    let f = debian_factory();
    assert_one_line_failure(
        &f,
        &template("arm", "12", "aarch64", "", ""),
        "unsupported architecture 'aarch64' for Debian: supported is x86_64",
    );
}

/// A template command that fails stops the build with its name and exit status. Run in
/// a real chroot (unshare + chroot, as in a build) of a one-binary root: a static
/// busybox as /bin/sh.
#[test]
fn a_failing_command_names_itself_and_its_status() {
    let busybox = std::path::Path::new("/bin/busybox");
    assert!(busybox.is_file(), "/bin/busybox is missing (Debian package busybox-static; run scripts/setup.sh)");
    let dir = tempfile::tempdir().expect("tempdir");
    let root = dir.path().join("root");
    for d in ["bin", "proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(root.join(d)).expect("create root dirs");
    }
    std::fs::copy(busybox, root.join("bin/sh")).expect("copy busybox");
    let chroot = Chroot::new(&root);

    let ok = Command { name: "writes".into(), content_type: ContentType::Raw, content: "echo hi > /tmp/out".into() };
    customize::run_command(&chroot, &ok, "command", &Quiet).expect("a good command runs");
    assert_eq!(std::fs::read_to_string(root.join("tmp/out")).expect("the command's output"), "hi\n");

    let bad =
        Command { name: "fail-here".into(), content_type: ContentType::Raw, content: "echo doomed\nexit 3".into() };
    let err = customize::run_command(&chroot, &bad, "command", &Quiet).expect_err("exit 3 must fail");
    assert_eq!(err.to_string(), "template command 'fail-here' failed with exit status 3");
    assert_eq!(err.tail(), ["doomed".to_string()]);
    // The staged scripts are gone; nothing is left mounted (the mounts lived in a
    // private namespace): the tree can be removed at once.
    let left: Vec<_> = std::fs::read_dir(root.join("tmp")).expect("tmp").flatten().map(|e| e.file_name()).collect();
    assert_eq!(left, vec![std::ffi::OsString::from("out")]);
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").expect("mountinfo");
    assert!(!mounts.contains(root.to_str().expect("utf-8")), "a mount leaked into the host namespace");
}
