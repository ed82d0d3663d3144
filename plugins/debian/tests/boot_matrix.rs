//! The boot matrix: every image the project makes from a Debian base boots, and shows on
//! its serial console that what its target promised is in it.
//!
//! - One Debian 12 base from the shipped example `conf/examples/debian12-boot-marker.tdl`
//!   (its unit prints `cloud-info: ` lines from /etc/sysconfig/cloud-info, then
//!   `IMAGEFACTORY-BOOT-MARKER`), built once and shared by every target: `ec2` raw,
//!   `openstack-kvm` qcow2, `vsphere` streamOptimized VMDK and the disk of its OVA,
//!   `rhevm` qcow2. The base boots without a cloud-info line; each target boots with
//!   `CLOUD_TYPE="<target>"`. Each boot runs while the next target is made.
//! - Every Debian release the plugin knows that the host's mirror carries (read from its
//!   `dists/<suite>/InRelease` at run time), each built and booted.
//!
//! Every boot is `testkit::boot::Boot`: qemu under TCG from the image's first disk, the
//! image opened read-only (snapshot). Figures print with `--nocapture`:
//! `cargo test -p debian-os-plugin --test boot_matrix -- --nocapture`.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testkit::boot::{Boot, Booted};
use testkit::Factory;

const MARKER: &str = "IMAGEFACTORY-BOOT-MARKER";

/// Two guests boot at once beside a build on two cores: allow for it.
const BOOT_BOUND: Duration = Duration::from_secs(600);

const BUILD_DEADLINE: Duration = Duration::from_secs(2400);

/// The shipped example template, with its Debian version replaced by `version`.
fn marker_template(version: &str) -> String {
    let path = testkit::workspace_dir().join("conf/examples/debian12-boot-marker.tdl");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert!(text.contains("<version>12</version>"), "the example template changed: {}", path.display());
    text.replace("<version>12</version>", &format!("<version>{version}</version>"))
}

/// Builds with the CLI and returns the new image's id; panics with the build log's tail.
fn build(f: &Factory, args: &[&str]) -> String {
    common::build(f, args, BUILD_DEADLINE)
}

/// The image's SBOM: valid SPDX (pyspdxtools), the image described with its body's
/// SHA-256, every package the ICICLE lists as a `pkg:deb` purl, licenses read from the
/// packages' copyright files, and a target's document generated from its base's.
fn check_sbom(f: &Factory, id: &str, base: Option<&str>) {
    let path = f.storage().join(format!("{id}.files/sbom.spdx.json"));
    testkit::spdx::assert_valid(&path);
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&path).expect("the SBOM")).expect("the SBOM is JSON");
    let image = testkit::spdx::described(&doc);
    assert_eq!(image["checksums"][0]["checksumValue"], testkit::spdx::digest("sha256sum", &f.body(id)));
    let q = f.run(&["images", &format!("{{\"identifier\": \"{id}\"}}")], Duration::from_secs(60));
    let rec: serde_json::Value = serde_json::from_str(&q.stdout).expect("images prints JSON");
    let icicle = rec["icicle"].as_str().expect("an ICICLE");
    let packages: Vec<&serde_json::Value> =
        doc["packages"].as_array().expect("packages").iter().filter(|p| p["SPDXID"] != image["SPDXID"]).collect();
    // The ICICLE's entries are `name-version.arch`.
    for entry in icicle.split("<package name=\"").skip(1).filter_map(|e| e.split('"').next()) {
        let listed = packages.iter().any(|p| {
            let (n, v) = (p["name"].as_str().unwrap_or(""), p["versionInfo"].as_str().unwrap_or(""));
            entry.starts_with(&format!("{n}-{v}."))
        });
        assert!(listed, "{id}: the SBOM does not list the ICICLE's {entry}");
    }
    let bash = packages.iter().find(|p| p["name"] == "bash").expect("bash in the SBOM");
    assert!(bash["externalRefs"][0]["referenceLocator"]
        .as_str()
        .is_some_and(|l| l.starts_with("pkg:deb/debian/bash@")));
    assert!(bash["licenseDeclared"].as_str().is_some_and(|l| l.starts_with("GPL-3.0")), "bash: {bash}");
    let with_license = packages.iter().filter(|p| p["licenseDeclared"] != "NOASSERTION").count();
    println!("FIGURES: SBOM of {id}: {} packages, {with_license} with a declared license", packages.len());
    if let Some(base) = base {
        assert_eq!(
            doc["externalDocumentRefs"][0]["spdxDocument"],
            format!("https://imagefactory.invalid/spdxdocs/{base}"),
            "{id}: not generated from its base's document"
        );
    }
}

/// The boot-report lines (`cloud-info: ...`) the console shows, kernel messages cut.
fn cloud_lines(b: &Booted) -> Vec<String> {
    b.program_output()
        .lines()
        .filter_map(|l| l.trim_end_matches('\r').strip_prefix("cloud-info: ").map(str::to_string))
        .collect()
}

/// The VMDK inside an OVA, unpacked next to it with tar.
fn disk_of_ova(ova: &Path, into: &Path) -> PathBuf {
    std::fs::create_dir_all(into).expect("a directory for the OVA's members");
    let st = Command::new("tar").arg("-xf").arg(ova).arg("-C").arg(into).status().expect("tar");
    assert!(st.success(), "tar could not read the OVA {}", ova.display());
    let members: Vec<PathBuf> =
        std::fs::read_dir(into).expect("the OVA's members").flatten().map(|e| e.path()).collect();
    assert!(members.iter().any(|p| p.extension().is_some_and(|e| e == "ovf")), "no OVF descriptor in {members:?}");
    members
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "vmdk"))
        .unwrap_or_else(|| panic!("no VMDK in the OVA {}", ova.display()))
}

#[test]
fn every_cloud_target_of_a_debian12_base_boots_with_its_changes() {
    let f = Factory::new(
        &["libdebian_os.so", "libec2_cloud.so", "libopenstack_cloud.so", "libvsphere_cloud.so", "librhevm_cloud.so"],
        serde_json::json!({}),
    );
    let t = f.file("debian12-boot-marker.tdl", &marker_template("12"));
    let started = Instant::now();
    let base = build(&f, &["base_image", t.to_str().expect("utf-8")]);
    println!("FIGURES: Debian 12 base built in {:.0} s", started.elapsed().as_secs_f64());
    check_sbom(&f, &base, None);

    // (label, target, extra CLI arguments, the format qemu must find)
    let targets: [(&str, &str, &[&str], &str); 5] = [
        ("ec2", "ec2", &[], "raw"),
        ("openstack-kvm", "openstack-kvm", &[], "qcow2"),
        ("vsphere", "vsphere", &[], "vmdk"),
        ("vsphere OVA", "vsphere", &["--parameter", "vsphere_ova", "true"], "vmdk"),
        ("rhevm", "rhevm", &[], "qcow2"),
    ];
    std::thread::scope(|s| {
        let base_body = f.body(&base);
        let base_boot = s.spawn(move || Boot::disk(base_body).within(BOOT_BOUND).until(MARKER));
        let mut boots = Vec::new();
        for (label, target, extra, format) in targets {
            let mut args = vec!["target_image", "--id", &base];
            args.extend_from_slice(extra);
            args.push(target);
            let t0 = Instant::now();
            let id = build(&f, &args);
            let made = t0.elapsed();
            check_sbom(&f, &id, Some(&base));
            let mut disk = f.body(&id);
            if label.ends_with("OVA") {
                disk = disk_of_ova(&disk, &f.dir.path().join(format!("{id}.ova.d")));
            }
            boots.push((
                label,
                target,
                made,
                s.spawn(move || {
                    let b = Boot::disk(disk).within(BOOT_BOUND).until(MARKER);
                    assert_eq!(b.format, format, "{label}: the target image is not {format}");
                    b
                }),
            ));
        }

        let b = base_boot.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
        assert!(cloud_lines(&b).is_empty(), "the base image shows a cloud target's changes: {:?}", cloud_lines(&b));
        println!("FIGURES: base (raw) booted to the marker in {:.0} s", b.elapsed.as_secs_f64());
        for (label, target, made, handle) in boots {
            let b = handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            let lines = cloud_lines(&b);
            assert_eq!(
                lines,
                vec![format!("CLOUD_TYPE=\"{target}\"")],
                "{label}: the console does not show the target's cloud-info:\n{}",
                testkit::boot::tail(&b.console, 30)
            );
            println!(
                "FIGURES: {label} ({}) made in {:.0} s, booted to the marker in {:.0} s",
                b.format,
                made.as_secs_f64(),
                b.elapsed.as_secs_f64()
            );
        }
    });
}

/// Whether the mirror has the suite (its InRelease answers).
fn mirror_carries(mirror: &str, suite: &str) -> bool {
    let url = format!("{}/dists/{suite}/InRelease", mirror.trim_end_matches('/'));
    let out = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "30", "-I", &url])
        .output()
        .expect("curl (Debian package curl; run scripts/setup.sh)");
    String::from_utf8_lossy(&out.stdout) == "200"
}

#[test]
fn every_debian_release_the_host_mirror_carries_builds_and_boots() {
    let mirror = debian_os::mirror::host_mirror().expect("this host's apt sources name no Debian mirror");
    let carried: Vec<_> =
        debian_os::release::RELEASES.iter().filter(|r| mirror_carries(&mirror, r.codename)).copied().collect();
    let names: Vec<_> = carried.iter().map(|r| format!("{} ({})", r.number, r.codename)).collect();
    println!("FIGURES: the host mirror carries Debian {}", names.join(", "));
    assert!(carried.iter().any(|r| r.number == 12), "the host mirror does not carry bookworm: {names:?}");

    let f = Factory::new(&["libdebian_os.so"], serde_json::json!({}));
    std::thread::scope(|s| {
        let mut boots = Vec::new();
        for r in carried {
            // Debian 12 is the base every target of the test above is made of, booted there.
            if r.number == 12 {
                continue;
            }
            let t = f.file(&format!("debian{}.tdl", r.number), &marker_template(&r.number.to_string()));
            let t0 = Instant::now();
            let id = build(&f, &["base_image", t.to_str().expect("utf-8")]);
            let made = t0.elapsed();
            let body = f.body(&id);
            boots.push((r, made, s.spawn(move || Boot::disk(body).format("raw").within(BOOT_BOUND).until(MARKER))));
        }
        for (r, made, handle) in boots {
            let b = handle.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            assert!(
                b.console.contains(&format!("Debian GNU/Linux {}", r.number)) || b.console.contains(r.codename),
                "Debian {} booted, but its console does not name the release:\n{}",
                r.number,
                testkit::boot::tail(&b.console, 30)
            );
            println!(
                "FIGURES: Debian {} ({}) built in {:.0} s, booted to the marker in {:.0} s",
                r.number,
                r.codename,
                made.as_secs_f64(),
                b.elapsed.as_secs_f64()
            );
        }
    });
}
