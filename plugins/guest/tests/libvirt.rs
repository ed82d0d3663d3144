//! The guest engine through libvirt (`qemu:///system`, domain type `qemu`, i.e. TCG),
//! with the same real guests as the direct tests. Starts libvirtd when it is not running.
//!
//! Figures: `cargo test -p imagefactory-guest --test libvirt -- --nocapture`.

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use common::{guest_config, never, Rig};
use guest::{Guest, GuestError};
use virt::connect::Connect;

const URI: &str = "qemu:///system";

fn domain_exists(name: &str) -> bool {
    Connect::open(Some(URI)).expect("connect to libvirt").lookup_domain_by_name(name).is_ok()
}

#[test]
fn a_libvirt_guest_that_powers_off_succeeds() {
    testkit::guestkit::ensure_libvirtd();
    let rig = Rig::new(
        "lv-poweroff",
        "dd if=/dev/urandom of=/dev/vda bs=64k count=16 2>/dev/null; sync; echo GUEST-WROTE; sleep 1; poweroff -f",
    );
    let mut cfg = guest_config(&rig, Duration::from_secs(240), Some(Duration::from_secs(120)));
    cfg.libvirt_uri = Some(URI.into());
    let t0 = std::time::Instant::now();
    let mut g = Guest::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    let started = t0.elapsed();
    assert!(domain_exists(&cfg.name), "no domain {} while it runs", cfg.name);
    let report = g.wait_for_poweroff(&never, None).unwrap_or_else(|e| panic!("{e}"));
    drop(g);
    println!(
        "FIGURES: libvirt ({URI}, type qemu): busybox guest from Guest::start to power-off {:.1} s \
         (domain creation {:.1} s)",
        t0.elapsed().as_secs_f64(),
        started.as_secs_f64()
    );
    let log = std::fs::read_to_string(cfg.serial_log()).unwrap();
    assert!(log.contains("GUEST-WROTE"), "{log}");
    assert!(report.disk_bytes_written >= 1 << 20, "{report:?}");
    assert!(!domain_exists(&cfg.name), "domain {} is left", cfg.name);
    assert!(std::fs::read(&rig.disk).unwrap()[..1 << 20].iter().any(|b| *b != 0));
}

#[test]
fn cancelling_a_libvirt_guest_removes_its_domain() {
    testkit::guestkit::ensure_libvirtd();
    let rig = Rig::new("lv-cancel", "echo GUEST-IDLE; while true; do sleep 1; done");
    let mut cfg = guest_config(&rig, Duration::from_secs(240), None);
    cfg.libvirt_uri = Some(URI.into());
    let mut g = Guest::start(&cfg).unwrap_or_else(|e| panic!("{e}"));
    g.wait_for_serial("GUEST-IDLE", Duration::from_secs(120)).unwrap_or_else(|e| panic!("{e}"));
    assert!(domain_exists(&cfg.name));
    // A screenshot through libvirt's stream works while it runs.
    let png = rig.dir.path().join("shot.png");
    g.screenshot(&png).unwrap_or_else(|e| panic!("{e}"));
    let (w, h) = common::assert_valid_png(&png);
    assert!(w >= 320 && h >= 200, "{w}x{h}");
    let cancelled = AtomicBool::new(true);
    let err = g.wait_for_poweroff(&|| cancelled.load(Ordering::SeqCst), None).unwrap_err();
    assert!(matches!(err, GuestError::Cancelled), "{err}");
    assert!(!domain_exists(&cfg.name), "domain {} outlived the cancel", cfg.name);
    drop(g);
}

#[test]
fn a_killed_owner_takes_its_domain_with_it() {
    testkit::guestkit::ensure_libvirtd();
    let rig = Rig::new("lv-orphan", "echo GUEST-IDLE; while true; do sleep 1; done");
    common::start_in_a_process_then_kill_it(&rig, Some(URI));
    // Autodestroy: libvirtd destroys the domain when its creator's connection closes.
    testkit::wait_until(Duration::from_secs(30), "the domain ending with its creator", || !domain_exists(&rig.name));
}
