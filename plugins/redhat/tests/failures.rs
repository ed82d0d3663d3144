//! The failure paths, through the real CLI: each build fails with one line in
//! `status_detail.error` naming the cause (and the kept console log and screenshot when
//! a guest ran). The fixture installer misbehaves on request (`fixture.mode=`).

mod fixture;

use std::time::Duration;

use serde_json::json;
use testkit::{Factory, Run};

fn run(f: &Factory, tdl: &str) -> (Run, String) {
    let t = f.file("t.tdl", tdl);
    let run = f.run(&["base_image", t.to_str().expect("utf-8 path")], Duration::from_secs(600));
    let id = run.field("UUID:").unwrap_or_else(|| panic!("no UUID in:\n{}\n{}", run.stdout, run.stderr));
    (run, id)
}

fn assert_fails_with(f: &Factory, tdl: &str, expected: &[&str]) -> (Run, String) {
    let (run, id) = run(f, tdl);
    assert_eq!(run.code, Some(1), "stdout:\n{}\nlog:\n{}", run.stdout, f.build_log(&id));
    let line = run.failure().unwrap_or_else(|| panic!("no failure line in:\n{}", run.stdout));
    for e in expected {
        assert!(line.contains(e), "{line:?} lacks {e:?}\nlog:\n{}", f.build_log(&id));
    }
    println!("{}: {line} ({:?})", expected[0], run.elapsed);
    (run, id)
}

fn kept(f: &Factory, id: &str, name: &str) -> bool {
    f.storage().join(format!("{id}.files")).join(name).is_file()
}

#[test]
fn an_idle_installer_trips_the_inactivity_watchdog() {
    let (_dir, _served, tdl) = fixture::fedora_url_install("hang", "", "");
    let f = Factory::new(&["libfedora_os.so"], json!({"inactivity_timeout": 15, "timeout": 300}));
    let (run, id) = assert_fails_with(&f, &tdl, &["no disk or network activity for 15 s", "console.log"]);
    assert!(run.elapsed < Duration::from_secs(200), "{:?}", run.elapsed);
    assert!(kept(&f, &id, "console.log"));
}

#[test]
fn a_busy_installer_hits_the_hard_timeout() {
    let (_dir, _served, tdl) = fixture::fedora_url_install("spin", "", "");
    let f = Factory::new(&["libfedora_os.so"], json!({"inactivity_timeout": 300, "timeout": 40}));
    let (run, id) = assert_fails_with(&f, &tdl, &["the install timed out after 40 s", "console.log"]);
    assert!(run.elapsed < Duration::from_secs(200), "{:?}", run.elapsed);
    assert!(kept(&f, &id, "console.log"));
}

#[test]
fn a_crashing_installer_is_reported_as_a_crash() {
    // /init exits: the kernel panics and (panic=1) resets, which ends qemu (-no-reboot).
    let (_dir, _served, tdl) = fixture::fedora_url_install("crash", "panic=1", "");
    let f = Factory::new(&["libfedora_os.so"], json!({"inactivity_timeout": 120}));
    let (_, id) = assert_fails_with(&f, &tdl, &["the installer crashed", "console.log"]);
    assert!(kept(&f, &id, "console.log"));
}

#[test]
fn a_failing_template_command_is_named() {
    let (_dir, _served, tdl) = fixture::fedora_url_install(
        "install",
        "",
        "<commands><command name='fine'>true</command><command name='boom'>echo about to fail; exit 3</command></commands>",
    );
    let f = Factory::new(&["libfedora_os.so"], json!({"inactivity_timeout": 120}));
    assert_fails_with(&f, &tdl, &["template command 'boom' failed with exit status 3"]);
}

#[test]
fn an_iso_whose_checksum_does_not_match_is_refused_before_any_guest_runs() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("Fixture-dvd.iso"), b"not the ISO the checksum file describes").unwrap();
    let wrong = "0".repeat(64);
    std::fs::write(dir.path().join("CHECKSUM"), format!("SHA256 (Fixture-dvd.iso) = {wrong}\n")).unwrap();
    let served = fixture::serve(dir.path());
    let tdl = fixture::template(
        "Fedora",
        "40",
        &format!(
            "<install type='iso'><iso>{u}Fixture-dvd.iso</iso><sha256sum>{u}CHECKSUM</sha256sum></install>",
            u = served.url
        ),
        "",
        "",
    );
    let f = Factory::new(&["libfedora_os.so"], json!({}));
    let (run, _) = assert_fails_with(
        &f,
        &tdl,
        &["checksum mismatch for Fixture-dvd.iso: SHA-256 is ", &format!("the checksum file says {wrong}")],
    );
    assert!(run.elapsed < Duration::from_secs(60), "{:?}", run.elapsed);
}

#[test]
fn refusals_are_quick_and_name_what_is_supported() {
    let f = Factory::new(&["libfedora_os.so", "librhel_os.so"], json!({}));
    let url = "<install type='url'><url>http://127.0.0.1:9/</url></install>";
    assert_fails_with(
        &f,
        &fixture::template("Fedora", "6", url, "", ""),
        &["unsupported Fedora version '6': supported are 7 to"],
    );
    assert_fails_with(
        &f,
        &fixture::template("RHEL-5", "U", url, "", ""),
        &["unsupported RHEL version 'U': supported are 5 to 10 (5 takes GOLD or Un updates)"],
    );
    assert_fails_with(&f, &fixture::template("Rocky-8", "x.y", url, "", ""), &["unsupported Rocky version 'x.y'"]);
    // Nothing listens on port 9: the tree cannot be reached.
    assert_fails_with(
        &f,
        &fixture::template("CentOS-9", "4", url, "", ""),
        &["cannot fetch http://127.0.0.1:9/.treeinfo"],
    );
    let empty = tempfile::tempdir().unwrap();
    let served = fixture::serve(empty.path());
    let tdl = fixture::template(
        "AlmaLinux-9",
        "4",
        &format!("<install type='url'><url>{}</url></install>", served.url),
        "",
        "",
    );
    assert_fails_with(&f, &tdl, &[&format!("the install tree at {} has no kernel and initrd", served.url)]);
}
