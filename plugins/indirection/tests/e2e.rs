//! End to end, under qemu TCG, with the real CLI and the real Debian and IndirectionCloud
//! plugins: a Debian 12 utility image with xorriso is built once from the build host's
//! own mirror and shared by every test of this binary; each test then builds an
//! `indirection` target image from it.
//!
//! The tests run one at a time (they share the utility image and the host's two cores).
//! Figures are printed with `-- --nocapture --test-threads 1`.

use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use guest::{Boot, Guest, GuestConfig};
use testkit::{built, target_dir, token, Factory, Run};

/// How many tests below use the shared utility image (the last one removes it).
const TESTS: usize = 7;
const BUILD_BOUND: Duration = Duration::from_secs(2400);

struct Shared {
    f: Factory,
    utility: String,
}

static SHARED: Mutex<Option<Result<Shared, String>>> = Mutex::new(None);
static DONE: AtomicUsize = AtomicUsize::new(0);

/// A private factory in `<target>/indirection-e2e` (emptied first, so a run that was
/// interrupted leaves nothing behind for long), with both plugins.
fn factory() -> Factory {
    let base = target_dir().join("indirection-e2e");
    let _ = std::fs::remove_dir_all(&base);
    std::fs::create_dir_all(&base).expect("create the test area");
    let dir = tempfile::Builder::new().prefix("e2e-").tempdir_in(&base).expect("a test directory");
    for sub in ["plugins", "storage", "tmp"] {
        std::fs::create_dir(dir.path().join(sub)).expect("create a test directory");
    }
    for so in ["libdebian_os.so", "libindirection_cloud.so"] {
        std::fs::copy(built(so), dir.path().join("plugins").join(so)).expect("copy a plugin");
    }
    let conf = serde_json::json!({
        "plugins": dir.path().join("plugins"),
        "image_manager_args": {"storage_path": dir.path().join("storage")},
        "tmpdir": dir.path().join("tmp"),
        "timeout": 1800,
    });
    let config = dir.path().join("imagefactory.conf");
    std::fs::write(&config, conf.to_string()).expect("write the config");
    Factory { dir, config }
}

fn build_utility() -> Result<Shared, String> {
    let f = factory();
    let tdl = f.file(
        "utility.tdl",
        "<template><name>indirection utility</name><os><name>Debian</name><version>12</version><arch>x86_64</arch>\
<install type='url'><url>host</url></install></os><description>Debian 12 with xorriso</description>\
<packages><package name='xorriso'/></packages></template>",
    );
    let run = f.run(&["base_image", tdl.to_str().expect("utf-8")], BUILD_BOUND);
    let id = run.field("UUID:").ok_or_else(|| format!("no UUID from the utility build:\n{}", run.stdout))?;
    if run.code != Some(0) {
        return Err(format!("the utility image build failed:\n{}\n{}", run.stdout, tail(&f.build_log(&id), 40)));
    }
    println!("FIGURES: utility image (Debian 12 + xorriso) built in {:.1} s", run.elapsed.as_secs_f64());
    Ok(Shared { f, utility: id })
}

/// Runs `test` with the shared factory and utility image id.
fn with_utility(test: impl FnOnce(&Factory, &str)) {
    let mut guard = SHARED.lock().unwrap_or_else(|p| p.into_inner());
    if guard.is_none() {
        *guard = Some(build_utility());
    }
    let outcome = match guard.as_ref() {
        Some(Ok(s)) => catch_unwind(AssertUnwindSafe(|| test(&s.f, &s.utility))),
        Some(Err(e)) => catch_unwind(|| panic!("{e}")),
        None => unreachable!(),
    };
    if DONE.fetch_add(1, Ordering::SeqCst) + 1 == TESTS {
        *guard = None;
        let _ = std::fs::remove_dir_all(target_dir().join("indirection-e2e"));
    }
    drop(guard);
    if let Err(p) = outcome {
        resume_unwind(p);
    }
}

fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

fn target(f: &Factory, base: &str, args: &[&str]) -> (Run, String) {
    let mut all = vec!["target_image", "--id", base];
    all.extend_from_slice(args);
    all.push("indirection");
    let run = f.run(&all, BUILD_BOUND);
    let id = run.field("UUID:").unwrap_or_else(|| panic!("no UUID:\n{}\n{}", run.stdout, run.stderr));
    (run, id)
}

fn expect_complete(f: &Factory, run: &Run, id: &str) {
    assert!(
        run.stdout.contains("Image build completed SUCCESSFULLY!") && run.code == Some(0),
        "the target build failed:\n{}\nbuild log (tail):\n{}",
        run.stdout,
        tail(&f.build_log(id), 40)
    );
}

fn expect_failure(f: &Factory, run: &Run, id: &str) -> String {
    assert_eq!(run.code, Some(1), "the build should fail:\n{}", run.stdout);
    let line =
        run.failure().unwrap_or_else(|| panic!("no failure line:\n{}\n{}", run.stdout, tail(&f.build_log(id), 30)));
    assert!(!line.contains('\n'));
    line
}

fn kept_file(f: &Factory, id: &str, name: &str) -> PathBuf {
    f.storage().join(format!("{id}.files")).join(name)
}

fn nothing_left_in_tmp(f: &Factory) {
    let left: Vec<_> = std::fs::read_dir(f.dir.path().join("tmp")).expect("tmp").flatten().map(|e| e.path()).collect();
    assert!(left.is_empty(), "left in the work area: {left:?}");
}

fn file_says(path: &Path) -> String {
    let out =
        Command::new("file").arg("-b").arg(path).output().expect("file (Debian package file; run scripts/setup.sh)");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// An ISO 9660 root directory entry.
#[derive(Debug)]
struct IsoEntry {
    name: String,
    lba: u64,
    size: u64,
}

fn read_at(f: &std::fs::File, offset: u64, len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    std::os::unix::fs::FileExt::read_exact_at(f, &mut buf, offset).expect("read the ISO");
    buf
}

/// The root directory of an ISO 9660 image, read from its primary volume descriptor.
fn iso_root(path: &Path) -> Vec<IsoEntry> {
    let f = std::fs::File::open(path).expect("open the ISO");
    let pvd = read_at(&f, 16 * 2048, 2048);
    assert_eq!(&pvd[0..6], b"\x01CD001", "no ISO 9660 primary volume descriptor");
    let root = &pvd[156..190];
    let lba = u32::from_le_bytes(root[2..6].try_into().expect("4 bytes")) as u64;
    let len = u32::from_le_bytes(root[10..14].try_into().expect("4 bytes")) as usize;
    let dir = read_at(&f, lba * 2048, len);
    let mut out = Vec::new();
    let mut i = 0;
    while i < dir.len() {
        let rec = dir[i] as usize;
        if rec == 0 {
            i = (i / 2048 + 1) * 2048;
            continue;
        }
        let r = &dir[i..i + rec];
        let name_len = r[32] as usize;
        let name = String::from_utf8_lossy(&r[33..33 + name_len]).into_owned();
        out.push(IsoEntry {
            name,
            lba: u32::from_le_bytes(r[2..6].try_into().expect("4 bytes")) as u64,
            size: u32::from_le_bytes(r[10..14].try_into().expect("4 bytes")) as u64,
        });
        i += rec;
    }
    out
}

/// Whether the ISO has an El Torito boot record (volume descriptor 17).
fn has_el_torito(path: &Path) -> bool {
    let f = std::fs::File::open(path).expect("open the ISO");
    let brvd = read_at(&f, 17 * 2048, 2048);
    &brvd[0..6] == b"\x00CD001" && brvd[7..].starts_with(b"EL TORITO SPECIFICATION")
}

/// Compares `len` bytes of two files from the given offsets, 4 MiB at a time.
fn same_bytes(a: &Path, a_off: u64, b: &Path, len: u64) -> bool {
    let (fa, fb) = (std::fs::File::open(a).expect("open"), std::fs::File::open(b).expect("open"));
    let mut done = 0u64;
    while done < len {
        let n = (len - done).min(4 << 20) as usize;
        if read_at(&fa, a_off + done, n) != read_at(&fb, done, n) {
            return false;
        }
        done += n as u64;
    }
    true
}

/// The default workflow: the utility image is the input image too (utility_image left
/// out), the input is the file /input_image.raw on the working disk, the results are
/// taken from /results/images/boot.iso. The commands make an ISO 9660 image holding it.
#[test]
fn an_iso_holding_the_input_image_file() {
    with_utility(|f, util| {
        let tasks = f.file(
            "iso-of-input.tdl",
            "<template><commands>\
<command name='mount'>mount /dev/vdb1 /mnt</command>\
<command name='iso'>mkdir -p /mnt/results/images &amp;&amp; xorriso -as mkisofs -iso-level 3 -V INPUT \
-o /mnt/results/images/boot.iso /mnt/input_image.raw</command></commands></template>",
        );
        let util_body = f.body(util);
        let util_mtime = std::fs::metadata(&util_body).expect("utility body").modified().expect("mtime");
        let (run, id) =
            target(f, util, &["--file-parameter", "utility_customizations", tasks.to_str().expect("utf-8")]);
        expect_complete(f, &run, &id);
        assert_eq!(run.field("Type:").as_deref(), Some("target_image"));
        let body = f.body(&id);
        let described = file_says(&body);
        assert!(described.starts_with("ISO 9660 CD-ROM filesystem data 'INPUT"), "{described}");
        let input_len = std::fs::metadata(&util_body).expect("utility body").len();
        let entry = iso_root(&body)
            .into_iter()
            .find(|e| e.name.starts_with("INPUT_IMAGE.RAW"))
            .unwrap_or_else(|| panic!("no INPUT_IMAGE.RAW in the ISO: {:?}", iso_root(&body)));
        assert_eq!(entry.size, input_len, "the ISO's file has the input's size");
        assert!(same_bytes(&body, entry.lba * 2048, &util_body, input_len), "the ISO's file is the input image");
        assert_eq!(
            std::fs::metadata(&util_body).expect("utility body").modified().expect("mtime"),
            util_mtime,
            "the utility (and input) image was modified"
        );
        let console = std::fs::read_to_string(kept_file(f, &id, "console.log")).expect("console.log kept");
        assert!(
            console.contains("Reached target") && console.contains("multi-user.target"),
            "not booted to multi-user"
        );
        let log = f.build_log(&id);
        assert!(log.contains("Utility VM: utility command 'iso'"), "{}", tail(&log, 30));
        nothing_left_in_tmp(f);

        let saving = log.lines().find(|l| l.contains("overlay saving:")).expect("the overlay figure in the log");
        let nums: Vec<u64> = saving.split_whitespace().filter_map(|w| w.parse().ok()).collect();
        assert!(nums.len() >= 2 && nums[0] < nums[1] / 10, "the overlay is not much smaller than a copy: {saving}");
        println!(
            "FIGURES: end-to-end indirection build (ISO of a 2 GiB input file) under TCG: {:.1} s wall",
            run.elapsed.as_secs_f64()
        );
        println!(
            "FIGURES: overlay {} bytes allocated after the run vs {} bytes for a full copy of the utility image ({:.1}% , {} bytes saved)",
            nums[0],
            nums[1],
            nums[0] as f64 * 100.0 / nums[1] as f64,
            nums[1] - nums[0]
        );
        if let Some(l) = log.lines().find(|l| l.contains("utility VM powered off after")) {
            println!("FIGURES: {}", l.split_once("INFO ").map(|x| x.1).unwrap_or(l));
        }
        println!(
            "FIGURES: target body {} bytes apparent, {} allocated",
            std::fs::metadata(&body).expect("body").len(),
            diskimage::size::allocated(&body).expect("allocated")
        );
    });
}

/// Makes a small raw disk whose ext4 partition holds /boot/vmlinuz (the utility image's
/// kernel) and /boot/initrd.img (busybox printing `marker` on the serial port, then
/// powering off), and imports it as a base image: another input than the utility image.
fn import_small_input(f: &Factory, util: &str, marker: &str) -> String {
    let work = f.dir.path().join("small-input");
    let root = work.join("root");
    let initrd_root = work.join("initrd");
    std::fs::create_dir_all(root.join("boot")).expect("mkdir");
    std::fs::create_dir_all(initrd_root.join("bin")).expect("mkdir");
    let util_fs = indirection_cloud::debugfs::Fs::new(f.body(util), diskimage::layout::PARTITION_START);
    let boot = util_fs.list("/boot", &diskimage::process::Quiet).expect("list /boot");
    let kernel = boot.iter().find(|e| e.name.starts_with("vmlinuz-")).expect("a kernel in the utility image");
    util_fs
        .dump(&format!("/boot/{}", kernel.name), &root.join("boot/vmlinuz"), &diskimage::process::Quiet)
        .expect("dump the kernel");
    std::fs::copy("/bin/busybox", initrd_root.join("bin/busybox"))
        .expect("/bin/busybox (Debian package busybox-static; run scripts/setup.sh)");
    let init = format!(
        "#!/bin/busybox sh\n/bin/busybox mkdir -p /dev /proc\n/bin/busybox mount -t devtmpfs dev /dev\n\
/bin/busybox echo {marker} > /dev/ttyS0\n/bin/busybox poweroff -f\n"
    );
    std::fs::write(initrd_root.join("init"), init).expect("write init");
    std::fs::set_permissions(initrd_root.join("init"), std::os::unix::fs::PermissionsExt::from_mode(0o755))
        .expect("chmod init");
    let cpio = root.join("boot/initrd.img");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!("cd '{}' && find . | /bin/busybox cpio -o -H newc > '{}'", initrd_root.display(), cpio.display()))
        .status()
        .expect("cpio");
    assert!(st.success(), "building the initramfs failed");
    let disk = work.join("small-input.raw");
    let layout = diskimage::layout::Layout::single(64 << 20).expect("layout");
    layout.create(&disk, &diskimage::process::Quiet).expect("partition the small input");
    diskimage::ext4::Ext4 { uuid: diskimage::ext4::random_uuid().expect("uuid"), label: "small".into() }
        .write(&disk, &layout, &root, &diskimage::process::Quiet)
        .expect("mkfs the small input");
    // Named Debian: the host resolves an OS plugin for a target build's base image.
    let run = f.run(
        &[
            "import_base_image",
            "--parameter",
            "os_name",
            "Debian",
            "--parameter",
            "os_version",
            "12",
            disk.to_str().expect("utf-8"),
        ],
        Duration::from_secs(300),
    );
    assert_eq!(run.code, Some(0), "import failed:\n{}\n{}", run.stdout, run.stderr);
    let id = run.field("UUID:").expect("an imported base image");
    let _ = std::fs::remove_dir_all(&work);
    id
}

/// The input presented as a read-only device (/dev/vdc), another image than the utility
/// image, with repositories and packages installed in the utility VM before the commands
/// run: the commands make a bootable (isolinux) ISO of the input's kernel and initrd,
/// and the ISO then boots under qemu to the input initrd's marker.
#[test]
fn a_bootable_iso_from_another_image_given_as_a_device() {
    with_utility(|f, util| {
        let marker = format!("LIVE-ISO-BOOTED-{}", token());
        let input = import_small_input(f, util, &marker);
        let input_mtime = std::fs::metadata(f.body(&input)).expect("input").modified().expect("mtime");
        // The mirror the utility image was built from (the build host's), from its sources.list.
        let util_fs = indirection_cloud::debugfs::Fs::new(f.body(util), diskimage::layout::PARTITION_START);
        let sources = util_fs.cat("/etc/apt/sources.list", &diskimage::process::Quiet).expect("read sources.list");
        let mirror = sources.split_whitespace().nth(1).expect("a deb line in the utility image").to_string();
        let tasks = f.file(
            "bootable-iso.tdl",
            &format!(
                "<template>\
<repositories><repository name='updates'><url>{mirror} bookworm-updates main</url><signed>true</signed></repository></repositories>\
<packages><package name='isolinux'/><package name='syslinux-common'/></packages>\
<commands>\
<command name='mount-input'>mkdir -p /media/input &amp;&amp; mount -o ro /dev/vdc1 /media/input</command>\
<command name='tree'>mkdir -p /tmp/iso/isolinux /tmp/iso/live &amp;&amp; cp /media/input/boot/vmlinuz /media/input/boot/initrd.img /tmp/iso/live/ \
&amp;&amp; cp /usr/lib/ISOLINUX/isolinux.bin /usr/lib/syslinux/modules/bios/ldlinux.c32 /tmp/iso/isolinux/ \
&amp;&amp; printf 'default live\\nprompt 0\\nlabel live\\n  kernel /live/vmlinuz\\n  append initrd=/live/initrd.img console=ttyS0\\n' > /tmp/iso/isolinux/isolinux.cfg</command>\
<command name='iso'>mount /dev/vdb1 /mnt &amp;&amp; mkdir -p /mnt/results/images &amp;&amp; xorriso -as mkisofs -V LIVE \
-b isolinux/isolinux.bin -c isolinux/boot.cat -no-emul-boot -boot-load-size 4 -boot-info-table \
-o /mnt/results/images/boot.iso /tmp/iso</command>\
</commands></template>"
            ),
        );
        let (run, id) = target(
            f,
            &input,
            &[
                "--parameter",
                "utility_image",
                util,
                "--parameter",
                "input_image_device",
                "vdc",
                "--file-parameter",
                "utility_customizations",
                tasks.to_str().expect("utf-8"),
            ],
        );
        expect_complete(f, &run, &id);
        let log = f.build_log(&id);
        assert!(
            log.contains("Utility VM: installing the utility packages (isolinux, syslinux-common)"),
            "{}",
            tail(&log, 30)
        );
        assert!(!log.contains("copying the input image"), "the input was copied although it is a device");
        let console = std::fs::read_to_string(kept_file(f, &id, "console.log")).expect("console.log kept");
        assert!(
            console.contains("imagefactory-updates") || console.contains("bookworm-updates"),
            "the repository was not used"
        );
        assert_eq!(std::fs::metadata(f.body(&input)).expect("input").modified().expect("mtime"), input_mtime);
        let body = f.body(&id);
        let described = file_says(&body);
        assert!(
            described.contains("ISO 9660 CD-ROM filesystem data 'LIVE") && described.contains("(bootable)"),
            "{described}"
        );
        assert!(has_el_torito(&body), "no El Torito boot record");
        nothing_left_in_tmp(f);

        // Boot the ISO: isolinux, then the input's kernel and initrd.
        let run_dir = f.dir.path().join("iso-boot");
        std::fs::create_dir_all(&run_dir).expect("mkdir");
        let mut cfg = GuestConfig::new("iso-boot", &run_dir, Boot::Cdrom);
        cfg.cdrom = Some(body.clone());
        cfg.timeout = Duration::from_secs(300);
        let mut g = Guest::start(&cfg).expect("start qemu");
        let booted = g.wait_for_serial(&marker, Duration::from_secs(240));
        drop(g);
        let serial = std::fs::read_to_string(cfg.serial_log()).unwrap_or_default();
        let t = booted.unwrap_or_else(|e| panic!("the ISO did not boot: {e}\n{}", tail(&serial, 30)));
        println!("FIGURES: bootable ISO build (device input, packages installed in the VM) {:.1} s wall; ISO boots to the input's initrd in {:.1} s", run.elapsed.as_secs_f64(), t.as_secs_f64());
        let _ = std::fs::remove_dir_all(&run_dir);
    });
}

#[test]
fn a_failing_command_is_named_with_its_exit_status() {
    with_utility(|f, util| {
        let tasks = f.file(
            "fails.tdl",
            "<template><commands><command name='fine'>true</command>\
<command name='breaks'>echo about to fail; exit 3</command><command name='never'>touch /never</command></commands></template>",
        );
        let (run, id) =
            target(f, util, &["--file-parameter", "utility_customizations", tasks.to_str().expect("utf-8")]);
        let line = expect_failure(f, &run, &id);
        assert!(line.contains("utility command 'breaks' failed with exit status 3"), "{line}");
        let console = std::fs::read_to_string(kept_file(f, &id, "console.log")).expect("console.log kept");
        assert!(console.contains("about to fail"));
        assert!(!console.contains("begin command 2"), "a command ran after the failure");
        nothing_left_in_tmp(f);
    });
}

#[test]
fn a_missing_results_location_is_named() {
    with_utility(|f, util| {
        let tasks = f.file("noop.tdl", "<template><commands><command name='noop'>true</command></commands></template>");
        let (run, id) = target(
            f,
            util,
            &[
                "--file-parameter",
                "utility_customizations",
                tasks.to_str().expect("utf-8"),
                "--parameter",
                "results_location",
                "/results/none.iso",
                "--parameter",
                "input_image_device",
                "vdc",
            ],
        );
        let line = expect_failure(f, &run, &id);
        assert!(
            line.contains(
                "results_location /results/none.iso was not found on the working disk after the utility VM stopped"
            ),
            "{line}"
        );
        nothing_left_in_tmp(f);
    });
}

#[test]
fn a_utility_vm_that_runs_over_its_timeout_is_stopped() {
    with_utility(|f, util| {
        let tasks =
            f.file("slow.tdl", "<template><commands><command name='slow'>sleep 3600</command></commands></template>");
        let (run, id) = target(
            f,
            util,
            &[
                "--file-parameter",
                "utility_customizations",
                tasks.to_str().expect("utf-8"),
                "--parameter",
                "utility_timeout",
                "25",
                // No copy of the input: the timeout is about the VM.
                "--parameter",
                "input_image_device",
                "vdc",
            ],
        );
        let line = expect_failure(f, &run, &id);
        assert!(line.contains("the utility VM did not finish within 25 s"), "{line}");
        assert!(line.contains("console.log"), "{line}");
        assert!(kept_file(f, &id, "console.log").is_file(), "the console log was not kept");
        assert!(run.elapsed < Duration::from_secs(25 + 120), "the timeout was not kept: {:?}", run.elapsed);
        nothing_left_in_tmp(f);
    });
}

#[test]
fn an_unknown_utility_image_fails_at_once() {
    with_utility(|f, util| {
        let missing = "6d5aad23-7368-4e60-8fe5-b289bb2623d8";
        let (run, id) = target(f, util, &["--parameter", "utility_image", missing]);
        let line = expect_failure(f, &run, &id);
        assert!(line.contains(&format!("utility image {missing} not found")), "{line}");
        assert!(run.elapsed < Duration::from_secs(60), "{:?}", run.elapsed);
        nothing_left_in_tmp(f);
    });
}

/// Cancel through the daemon: DELETE of a target image whose utility VM is running stops
/// the VM, and afterwards no qemu process of it is alive, nothing of it is left in the
/// work area or the store, and the utility image is untouched (its overlay is gone).
#[test]
fn deleting_a_building_target_stops_the_utility_vm_and_leaves_nothing() {
    with_utility(|f, util| {
        let util_body = f.body(util);
        let util_before = std::fs::metadata(&util_body).expect("the utility body").modified().expect("mtime");
        let (_daemon, api) = f.start_daemon();
        let agent = ureq::AgentBuilder::new().timeout(Duration::from_secs(30)).build();
        let body = serde_json::json!({"target_image": {"target": "indirection", "parameters": {
            "utility_customizations": "<template><commands><command name='slow'>sleep 3600</command></commands></template>",
            "input_image_device": "vdc",
        }}});
        let answer = agent
            .post(&format!("{api}/base_images/{util}/target_images"))
            .set("Content-Type", "application/json")
            .send_string(&body.to_string())
            .expect("POST a target image");
        let created: serde_json::Value =
            serde_json::from_str(&answer.into_string().expect("the answer")).expect("JSON");
        let id = created["target_image"]["id"].as_str().expect("an id").to_string();
        let dir = f.dir.path();
        testkit::wait_until(Duration::from_secs(300), "the utility VM to start", || {
            !testkit::process::qemu_processes_under(dir).is_empty()
        });
        let status = |id: &str| match agent.get(&format!("{api}/target_images/{id}")).call() {
            Ok(r) => r.status(),
            Err(ureq::Error::Status(code, _)) => code,
            Err(e) => panic!("GET the target image: {e}"),
        };
        assert_eq!(status(&id), 200);

        let started = std::time::Instant::now();
        let r = agent.delete(&format!("{api}/target_images/{id}")).call().expect("DELETE");
        assert_eq!(r.status(), 204);
        testkit::wait_until(Duration::from_secs(60), "the image to be gone", || status(&id) == 404);
        testkit::wait_until(Duration::from_secs(30), "its qemu to be gone", || {
            testkit::process::qemu_processes_under(dir).is_empty()
        });
        println!("FIGURES: IndirectionCloud cancel to nothing left: {:.1} s", started.elapsed().as_secs_f64());
        nothing_left_in_tmp(f);
        let stored = f.stored_entries_of(&id);
        assert!(stored.is_empty(), "left in the store: {stored:?}");
        let util_after = std::fs::metadata(&util_body).expect("the utility body").modified().expect("mtime");
        assert_eq!(util_before, util_after, "the utility image's body was written to");
    });
}
