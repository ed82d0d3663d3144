//! End to end: the real `imagefactory` CLI with the real Fedora and RHEL plugins installs
//! from the fixture tree (see `fixture/mod.rs`) in a qemu guest under TCG, and the
//! result is checked where it lands: the kernel arguments the guest got, the kickstart
//! kept with the image, the files on the installed disk, the ICICLE, and that the root
//! password is nowhere in the store in plain text.
//!
//! Needs `cargo build -p imagefactory -p fedora-os-plugin -p rhel-os-plugin` first, and
//! scripts/setup.sh (test kernel, busybox, xorriso, isolinux, debugfs).
//! `-- --nocapture` prints the figures.

mod fixture;

use std::process::{Command, Stdio};
use std::time::Duration;

use serde_json::json;
use testkit::{token, Factory, Run};

/// A build's bound, install and all (measured: 10-40 s under TCG on a shared machine).
const BUILD_BOUND: Duration = Duration::from_secs(600);

fn build(f: &Factory, tdl: &str, extra_args: &[&str]) -> (Run, String) {
    let t = f.file("t.tdl", tdl);
    let mut args = vec!["base_image"];
    args.extend_from_slice(extra_args);
    args.push(t.to_str().expect("utf-8 path"));
    let run = f.run(&args, BUILD_BOUND);
    let id = run.field("UUID:").unwrap_or_else(|| panic!("no UUID in:\n{}\n{}", run.stdout, run.stderr));
    (run, id)
}

fn assert_success(f: &Factory, run: &Run, id: &str) {
    if !run.stdout.contains("Image build completed SUCCESSFULLY!") {
        let console = std::fs::read_to_string(f.storage().join(format!("{id}.files/console.log"))).unwrap_or_default();
        panic!(
            "build failed:\n{}\nbuild log:\n{}\nconsole (tail):\n{}",
            run.stdout,
            f.build_log(id),
            tail(&console, 80)
        );
    }
    assert_eq!(run.code, Some(0));
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn meta(f: &Factory, id: &str) -> serde_json::Value {
    let text = std::fs::read_to_string(f.storage().join(format!("{id}.meta"))).expect("the image's .meta");
    serde_json::from_str(&text).expect("the .meta is JSON")
}

fn icicle(f: &Factory, id: &str) -> String {
    fn find(v: &serde_json::Value) -> Option<String> {
        match v {
            serde_json::Value::Object(m) => {
                m.get("icicle").and_then(|i| i.as_str()).map(str::to_string).or_else(|| m.values().find_map(find))
            }
            _ => None,
        }
    }
    find(&meta(f, id)).expect("an icicle in the image record")
}

/// Removes every `template` field (the user's own input, kept as given).
fn strip_templates(v: &mut serde_json::Value) {
    if let serde_json::Value::Object(m) = v {
        m.remove("template");
        m.values_mut().for_each(strip_templates);
    }
}

fn kept_file(f: &Factory, id: &str, name: &str) -> String {
    let p = f.storage().join(format!("{id}.files")).join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{} is not kept with the image: {e}", p.display()))
}

/// Whether `hash` is the crypt hash of `password` (openssl recomputes it with its salt).
fn hash_matches(hash: &str, password: &str) -> bool {
    let salt = hash.split('$').nth(2).expect("a $6$salt$hash");
    let mut child = Command::new("openssl")
        .args(["passwd", "-6", "-salt", salt, "-stdin"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("openssl");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(format!("{password}\n").as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout).trim() == hash
}

fn disk(f: &Factory, id: &str, path: &str) -> String {
    fixture::read_in_disk(&f.body(id), path).unwrap_or_else(|| panic!("{path} is not on the installed disk"))
}

#[test]
fn fedora_installs_from_a_url_tree_with_the_template_applied() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write_tree(dir.path(), true);
    let served = fixture::serve(dir.path());
    let guest_url = served.url.replace("127.0.0.1", "10.0.2.2");
    let rootpw = format!("pw-{}", token());
    let body = "<description>fixture fedora</description>\
<packages><package name='less'/><package name='vim-minimal'/></packages>\
<repositories><repository name='updates'><url>http://updates.example.invalid/f40/</url></repository>\
<repository name='scratch'><url>http://scratch.example.invalid/</url><persisted>no</persisted></repository></repositories>\
<files><file name='/etc/motd'>built by the imagefactory Fedora test</file>\
<file name='/opt/data/blob' type='base64'>AAECAwQFBgcICf8=</file></files>\
<precommands><command name='pre'>echo pre > /etc/imagefactory-pre</command></precommands>\
<commands><command name='order'>test -f /etc/imagefactory-pre &amp;&amp; test -f /etc/motd &amp;&amp; echo ordered > /etc/imagefactory-order</command>\
<command name='boot-report'>printf '#!/bin/sh\\necho fixture-test: motd says $(cat /etc/motd)\\n' > /etc/rc.boot &amp;&amp; chmod 755 /etc/rc.boot</command></commands>";
    let tdl = fixture::template(
        "Fedora",
        "40",
        &format!("<install type='url'><url>{}</url></install>", served.url),
        &format!(
            "<rootpw>{rootpw}</rootpw><kernelparam>fixture.mode=install</kernelparam>\
<icicle><extra_command>rpm -qa | cut -c1-3</extra_command></icicle>"
        ),
        body,
    );
    let f = Factory::new(&["libfedora_os.so"], json!({"inactivity_timeout": 120}));
    let (run, id) = build(&f, &tdl, &[]);
    assert_success(&f, &run, &id);
    println!("Fedora URL install through the CLI: {:?}", run.elapsed);

    // The kernel arguments: logged, and what the guest's kernel really got.
    let args =
        format!("inst.ks=file:/ks.cfg inst.repo={guest_url} inst.text console=ttyS0,115200n8 fixture.mode=install");
    let log = f.build_log(&id);
    println!("build log:\n{log}");
    assert!(log.contains(&format!("Installer kernel arguments: {args}")), "{log}");
    assert!(log.contains("from .treeinfo"), "{log}");
    assert!(disk(&f, &id, "/root/installer-cmdline").contains(&args));

    // The kickstart kept with the image is the one the installer read.
    let ks = kept_file(&f, &id, "anaconda-ks.cfg");
    assert_eq!(disk(&f, &id, "/root/anaconda-ks.cfg"), ks);
    assert!(ks.contains(&format!("\nurl --url={guest_url}\n")), "{ks}");
    assert!(ks.contains("\n%packages\n@core\nless\nvim-minimal\n%end\n"), "{ks}");
    assert!(ks.contains("\nrepo --name=\"scratch\" --baseurl=http://scratch.example.invalid/ --noverifyssl\n"), "{ks}");
    let hash = ks.lines().find_map(|l| l.strip_prefix("rootpw --iscrypted ")).expect("rootpw --iscrypted");
    assert!(hash_matches(hash, &rootpw), "the kickstart's hash is not the root password's");

    // The installed disk.
    let shadow = disk(&f, &id, "/etc/shadow");
    assert!(shadow.starts_with(&format!("root:{hash}:")), "{shadow}");
    assert_eq!(disk(&f, &id, "/etc/motd"), "built by the imagefactory Fedora test");
    let blob = Command::new("debugfs").args(["-R", "cat /opt/data/blob"]).arg(f.body(&id)).output().unwrap().stdout;
    assert_eq!(blob, [0u8, 1, 2, 3, 4, 5, 6, 7, 8, 9, 255]);
    assert_eq!(disk(&f, &id, "/etc/imagefactory-order"), "ordered\n");
    let repo = disk(&f, &id, "/etc/yum.repos.d/updates.repo");
    assert!(repo.contains("baseurl=http://updates.example.invalid/f40/") && repo.contains("enabled=1"), "{repo}");
    assert!(fixture::read_in_disk(&f.body(&id), "/etc/yum.repos.d/scratch.repo").is_none(), "unpersisted repo kept");

    // The ICICLE: @core plus the template's packages, with the extra command's lines.
    let icicle = icicle(&f, &id);
    assert!(icicle.starts_with("<icicle><description>fixture fedora</description><packages>"), "{icicle}");
    for (name, full, core) in fixture::PACKAGES {
        let wanted = *core || ["less", "vim-minimal"].contains(name);
        let prefix: String = full.chars().take(3).collect();
        let entry = format!("<package name=\"{full}\"><extra>{prefix}</extra></package>");
        assert_eq!(icicle.contains(&entry), wanted, "{name}: {icicle}");
    }
    assert!(kept_file(&f, &id, "console.log").contains("IMAGEFACTORY-INSTALL-DONE-"));

    // The root password, in plain text, nowhere in the store: not in the disk, the kept
    // files, the build log, or the record (except the template itself, which the record
    // stores as given, as the original did).
    let meta_file = f.storage().join(format!("{id}.meta"));
    let leaks: Vec<_> =
        fixture::files_containing(&f.storage(), rootpw.as_bytes()).into_iter().filter(|p| *p != meta_file).collect();
    assert!(leaks.is_empty(), "the plain root password is in {leaks:?}");
    let mut record = meta(&f, &id);
    strip_templates(&mut record);
    assert!(!record.to_string().contains(&rootpw), "the plain root password is in the record outside the template");

    // The disk boots by itself, through the boot loader the install wrote, into the
    // installed system, which runs what the template's %post left for its boot.
    let booted = fixture::boot_from_disk(&f.body(&id));
    assert!(
        booted.program_output().contains("fixture-test: motd says built by the imagefactory Fedora test"),
        "the installed system did not run the template's boot script:\n{}",
        tail(&booted.console, 30)
    );
    println!("Fedora fixture disk booted to its init in {:?}", booted.elapsed);

    // The build cache. The template's repositories do not answer, so the state of what
    // the build reads cannot be told: built again, and the log says why.
    let (again, again_id) = build(&f, &tdl, &[]);
    assert_success(&f, &again, &again_id);
    assert!(meta(&f, &again_id)["properties"].get("cached_from").is_none(), "cached without a source state");
    let log = f.build_log(&again_id);
    assert!(log.contains("cannot read the package sources' state") && log.contains("updates.example.invalid"), "{log}");
    // Without them, the tree's .treeinfo is the state: the second build is served from
    // the first, no second install.
    let start = tdl.find("<repositories>").expect("the template's repositories");
    let end = tdl.find("</repositories>").expect("their end") + "</repositories>".len();
    let tree_only = format!("{}{}", &tdl[..start], &tdl[end..]);
    let (built, built_id) = build(&f, &tree_only, &[]);
    assert_success(&f, &built, &built_id);
    let (hit, hit_id) = build(&f, &tree_only, &[]);
    assert_success(&f, &hit, &hit_id);
    let record = meta(&f, &hit_id);
    assert_eq!(record["properties"]["cached_from"], built_id.as_str(), "not served from the cache: {record}");
    assert_eq!(std::fs::read(f.body(&hit_id)).unwrap(), std::fs::read(f.body(&built_id)).unwrap());
    println!("Fedora: full build {:?}, cache hit {:?}", built.elapsed, hit.elapsed);
}

#[test]
fn rhel8_installs_from_a_tree_without_treeinfo() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write_tree(dir.path(), false);
    let served = fixture::serve(dir.path());
    let tdl = fixture::template(
        "RHEL-8",
        "4",
        &format!("<install type='url'><url>{}</url></install>", served.url),
        "",
        "<packages><package name='tmux'/></packages>",
    );
    let f = Factory::new(&["librhel_os.so"], json!({"inactivity_timeout": 120}));
    let (run, id) = build(&f, &tdl, &[]);
    assert_success(&f, &run, &id);
    println!("RHEL-8 URL install through the CLI: {:?}", run.elapsed);
    let log = f.build_log(&id);
    assert!(log.contains("The install tree has no .treeinfo: using images/pxeboot"), "{log}");
    let ks = kept_file(&f, &id, "anaconda-ks.cfg");
    assert!(ks.contains("for RHEL 8.4") && ks.contains("\nrootpw --lock\n") && !ks.contains("\ninstall\n"), "{ks}");
    assert!(disk(&f, &id, "/etc/shadow").starts_with("root:!!:"), "root is locked without <rootpw>");
    let icicle = icicle(&f, &id);
    assert!(icicle.contains("<package name=\"tmux-3.4-1.fc40.x86_64\"/>"), "{icicle}");
    assert!(!icicle.contains("less-"), "{icicle}");
    let booted = fixture::boot_from_disk(&f.body(&id));
    println!("RHEL-8 fixture disk booted to its init in {:?}", booted.elapsed);
}

#[test]
fn fedora_installs_from_a_remastered_iso_with_its_checksum_checked() {
    let dir = tempfile::tempdir().unwrap();
    let iso = fixture::write_iso(dir.path());
    let sum = dir.path().join("CHECKSUM");
    let digest =
        redhat::checksum::digest_file(imagefactory_plugin_api::tdl::ChecksumKind::Sha256, &iso, &redhat::fetch::Silent)
            .unwrap();
    std::fs::write(&sum, format!("SHA256 ({}) = {digest}\n", iso.file_name().unwrap().to_string_lossy())).unwrap();
    let served = fixture::serve(dir.path());
    let name = iso.file_name().unwrap().to_string_lossy().to_string();
    let tdl = fixture::template(
        "Fedora",
        "40",
        &format!(
            "<install type='iso'><iso>{url}{name}</iso><sha256sum>{url}CHECKSUM</sha256sum></install>",
            url = served.url
        ),
        "<rootpw>iso-pw</rootpw>",
        "<files><file name='/etc/from-iso'>yes</file></files>",
    );
    let f = Factory::new(&["libfedora_os.so"], json!({"inactivity_timeout": 120}));
    let (run, id) = build(&f, &tdl, &[]);
    assert_success(&f, &run, &id);
    println!("Fedora ISO install through the CLI: {:?}", run.elapsed);
    let log = f.build_log(&id);
    assert!(log.contains(&format!("SHA-256 of {name} matches the checksum file")), "{log}");
    let cmdline = disk(&f, &id, "/root/installer-cmdline");
    assert!(
        cmdline.contains("inst.stage2=hd:LABEL=FIXTURE-40 inst.ks=cdrom:/ks.cfg inst.text console=ttyS0,115200n8"),
        "{cmdline}"
    );
    assert!(!cmdline.contains("rd.live.check"), "{cmdline}");
    assert_eq!(disk(&f, &id, "/etc/from-iso"), "yes");
    assert!(kept_file(&f, &id, "anaconda-ks.cfg").contains("\ncdrom\n"));
}

#[test]
fn a_custom_kickstart_replaces_the_generated_one_and_keeps_the_template_post() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write_tree(dir.path(), true);
    let served = fixture::serve(dir.path());
    let tdl = fixture::template(
        "Fedora",
        "38",
        &format!("<install type='url'><url>{}</url></install>", served.url),
        "<rootpw>not-used</rootpw>",
        "<packages><package name='less'/></packages><files><file name='/etc/motd'>template file</file></files>",
    );
    let custom = "# my own kickstart\ntext\nrootpw --iscrypted $6$mysalt$myhash\nzerombr\nautopart\nreboot\n\
%packages\n@core\ntmux\n%end\n%post\necho mine > /etc/custom-post\n%end\n";
    let f = Factory::new(&["libfedora_os.so"], json!({"inactivity_timeout": 120}));
    let ks_file = f.file("custom.ks", custom);
    let (run, id) = build(&f, &tdl, &["--file-parameter", "install_script", ks_file.to_str().unwrap()]);
    assert_success(&f, &run, &id);
    let ks = kept_file(&f, &id, "anaconda-ks.cfg");
    assert!(ks.starts_with("# my own kickstart\n"), "{ks}");
    assert!(!ks.contains("\nless\n"), "the template's packages are the custom kickstart's business: {ks}");
    assert!(disk(&f, &id, "/etc/shadow").starts_with("root:$6$mysalt$myhash:"));
    assert_eq!(disk(&f, &id, "/etc/custom-post"), "mine\n");
    assert_eq!(disk(&f, &id, "/etc/motd"), "template file", "the appended %post applied the template's files");
    let icicle = icicle(&f, &id);
    assert!(icicle.contains("tmux-3.4-1.fc40.x86_64") && !icicle.contains("less-"), "{icicle}");
}

#[test]
fn centos5_gets_the_old_installer_arguments_and_kickstart() {
    let dir = tempfile::tempdir().unwrap();
    fixture::write_tree(dir.path(), true);
    let served = fixture::serve(dir.path());
    let guest_url = served.url.replace("127.0.0.1", "10.0.2.2");
    let tdl = fixture::template(
        "CentOS-5",
        "U11",
        &format!("<install type='url'><url>{}</url></install>", served.url),
        "<rootpw>old-pw</rootpw>",
        "<commands><command name='mark'>echo five > /etc/five</command></commands>",
    );
    let f = Factory::new(&["librhel_os.so"], json!({"inactivity_timeout": 120}));
    let (run, id) = build(&f, &tdl, &[]);
    assert_success(&f, &run, &id);
    println!("CentOS-5 URL install through the CLI: {:?}", run.elapsed);
    let args = format!("ks=file:/ks.cfg method={guest_url} text console=ttyS0,115200n8");
    assert!(disk(&f, &id, "/root/installer-cmdline").contains(&args));
    let ks = kept_file(&f, &id, "anaconda-ks.cfg");
    assert!(ks.contains("\ninstall\n") && ks.contains("\nauthconfig --enableshadow --enablemd5\n"), "{ks}");
    assert!(!ks.contains("%end") && !ks.contains("key --skip"), "CentOS 5: no %end, no RHEL key: {ks}");
    let hash = ks.lines().find_map(|l| l.strip_prefix("rootpw --iscrypted ")).expect("rootpw --iscrypted");
    assert!(hash.starts_with("$1$"), "RHEL 5's installer takes MD5 crypt: {hash}");
    assert!(disk(&f, &id, "/etc/shadow").starts_with(&format!("root:{hash}:")));
    assert_eq!(disk(&f, &id, "/etc/five"), "five\n");
}
