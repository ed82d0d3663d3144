//! ISO installs: the installation DVD remastered with xorriso so that its installer boots
//! with the kickstart.
//!
//! xorriso edits the ISO without unpacking it: `/ks.cfg` is added, the BIOS boot menu
//! (`isolinux/isolinux.cfg`) is replaced by one entry that boots the DVD's own first
//! kernel line with the kickstart argument added and the media check removed, the EFI
//! menu (`EFI/BOOT/grub.cfg`) gets the same argument on its kernel lines, the template's
//! `<extras>` are mapped in, and `-boot_image any replay` keeps the El Torito boot images
//! (BIOS and EFI) of the original. The volume id is kept, so the installer's own
//! `inst.stage2=hd:LABEL=...` still finds the DVD.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use imagefactory_plugin_api::tdl::{Extra, ExtraKind};

use crate::error::RedHatError;

const ISOLINUX_CFG: &str = "/isolinux/isolinux.cfg";
const GRUB_CFG: &str = "/EFI/BOOT/grub.cfg";

fn xorriso() -> Command {
    let mut c = Command::new("xorriso");
    c.stdin(Stdio::null());
    c
}

fn run(mut cmd: Command, what: &str) -> Result<String, RedHatError> {
    let out = cmd.output().map_err(|e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            RedHatError::MissingTool("xorriso", "xorriso")
        } else {
            RedHatError::Remaster(format!("{what}: {e}"))
        }
    })?;
    if !out.status.success() {
        let err = String::from_utf8_lossy(&out.stderr);
        let last =
            err.lines().rev().find(|l| l.contains("FAILURE") || l.contains("SORRY")).or_else(|| err.lines().last());
        return Err(RedHatError::Remaster(format!("{what}: {}", last.unwrap_or("xorriso failed").trim())));
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Copies `path` out of `iso` into `dest`; `Ok(false)` when the ISO has no such file.
pub fn extract(iso: &Path, path: &str, dest: &Path) -> Result<bool, RedHatError> {
    let mut c = xorriso();
    c.args(["-indev"]).arg(iso).args(["-ls", path]);
    let listed = run(c, "listing the ISO")?;
    if !listed.lines().any(|l| l.trim() == format!("'{path}'")) {
        return Ok(false);
    }
    let mut c = xorriso();
    c.args(["-osirrox", "on", "-indev"]).arg(iso).args(["-extract", path]).arg(dest);
    run(c, &format!("extracting {path}"))?;
    Ok(true)
}

/// The ISO's volume id.
pub fn volume_id(iso: &Path) -> Result<String, RedHatError> {
    let mut c = xorriso();
    c.args(["-indev"]).arg(iso).args(["-pvd_info"]);
    let out = run(c, "reading the volume descriptor")?;
    Ok(out.lines().find_map(|l| l.strip_prefix("Volume Id    :")).map(|v| v.trim().to_string()).unwrap_or_default())
}

/// A new isolinux.cfg with a single entry: the first `kernel` + `append initrd=` entry
/// of `original`, without `rd.live.check` and `quiet`, with `args` added. `None` when
/// the original has no such entry.
pub fn isolinux_cfg(original: &str, args: &str) -> Option<String> {
    let mut kernel: Option<String> = None;
    for line in original.lines().map(str::trim) {
        let lower = line.to_ascii_lowercase();
        if lower.starts_with("label ") {
            kernel = None;
        } else if lower.starts_with("kernel ") || lower.starts_with("linux ") {
            kernel = Some(line.split_once(' ').map(|(_, k)| k.trim().to_string()).unwrap_or_default());
        } else if lower.starts_with("append ") && lower.contains("initrd=") {
            if let Some(k) = &kernel {
                let kept: Vec<&str> =
                    line[7..].split_whitespace().filter(|w| *w != "rd.live.check" && *w != "quiet").collect();
                return Some(format!(
                    "default imagefactory\nprompt 0\ntimeout 1\nlabel imagefactory\n  kernel {k}\n  append {} {args}\n",
                    kept.join(" ")
                ));
            }
        }
    }
    None
}

/// `original` grub.cfg with `args` added to every `linux`/`linuxefi` line, the default
/// set to the first entry and the timeout to 1 s.
pub fn grub_cfg(original: &str, args: &str) -> String {
    let mut out = String::new();
    for line in original.lines() {
        let t = line.trim_start();
        if t.starts_with("set default=") {
            out.push_str("set default=\"0\"\n");
        } else if t.starts_with("set timeout=") {
            out.push_str("set timeout=1\n");
        } else if t.starts_with("linux ") || t.starts_with("linuxefi ") {
            let kept: Vec<&str> = line.split(' ').filter(|w| *w != "rd.live.check" && *w != "quiet").collect();
            out.push_str(&format!("{} {args}\n", kept.join(" ").trim_end()));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// Writes `out`: `iso` with `/ks.cfg`, the boot menus edited to pass `args`, and the
/// template's extras. Files are staged in `work`.
pub fn remaster(
    iso: &Path,
    out: &Path,
    ks: &str,
    args: &str,
    extras: &[Extra],
    work: &Path,
) -> Result<(), RedHatError> {
    std::fs::create_dir_all(work).map_err(|e| RedHatError::io("cannot create", work, e))?;
    let stage = |name: &str, text: &str| -> Result<PathBuf, RedHatError> {
        let p = work.join(name);
        std::fs::write(&p, text).map_err(|e| RedHatError::io("cannot write", &p, e))?;
        Ok(p)
    };
    let mut maps: Vec<(PathBuf, String)> = vec![(stage("ks.cfg", ks)?, "/ks.cfg".into())];
    let orig_isolinux = work.join("isolinux.cfg.orig");
    if extract(iso, ISOLINUX_CFG, &orig_isolinux)? {
        let text =
            std::fs::read_to_string(&orig_isolinux).map_err(|e| RedHatError::io("cannot read", &orig_isolinux, e))?;
        let new = isolinux_cfg(&text, args)
            .ok_or_else(|| RedHatError::Remaster(format!("{ISOLINUX_CFG} has no kernel entry with an initrd")))?;
        maps.push((stage("isolinux.cfg", &new)?, ISOLINUX_CFG.into()));
    }
    let orig_grub = work.join("grub.cfg.orig");
    if extract(iso, GRUB_CFG, &orig_grub)? {
        let text = std::fs::read_to_string(&orig_grub).map_err(|e| RedHatError::io("cannot read", &orig_grub, e))?;
        maps.push((stage("grub.cfg", &grub_cfg(&text, args))?, GRUB_CFG.into()));
    }
    if maps.len() == 1 {
        return Err(RedHatError::Remaster(format!("the ISO has neither {ISOLINUX_CFG} nor {GRUB_CFG}")));
    }
    for e in extras {
        let src = crate::fetch::local_path(&e.source).unwrap_or_else(|| PathBuf::from(&e.source));
        let ok = match e.kind {
            ExtraKind::Directory => src.is_dir(),
            ExtraKind::File => src.is_file(),
        };
        if !ok {
            return Err(RedHatError::Remaster(
                format!("extra {} is not a local {:?}", e.source, e.kind).to_lowercase(),
            ));
        }
        maps.push((src, format!("/{}", e.destination.trim_start_matches('/'))));
    }
    let _ = std::fs::remove_file(out);
    let mut c = xorriso();
    c.args(["-indev"]).arg(iso).args(["-outdev"]).arg(out).args(["-boot_image", "any", "replay"]);
    for (src, dest) in &maps {
        c.arg("-map").arg(src).arg(dest);
    }
    run(c, "writing the remastered ISO")?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const FEDORA_ISOLINUX: &str = "default vesamenu.c32\ntimeout 600\nmenu title Fedora 40\n\
label linux\n  menu label ^Install Fedora 40\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL=Fedora-S-dvd-x86_64-40 quiet\n\
label check\n  menu label Test this ^media & install Fedora 40\n  menu default\n  kernel vmlinuz\n  append initrd=initrd.img inst.stage2=hd:LABEL=Fedora-S-dvd-x86_64-40 rd.live.check quiet\n";

    #[test]
    fn isolinux_menu_is_replaced() {
        let cfg = isolinux_cfg(FEDORA_ISOLINUX, "inst.ks=cdrom:/ks.cfg inst.text").unwrap();
        assert_eq!(
            cfg,
            "default imagefactory\nprompt 0\ntimeout 1\nlabel imagefactory\n  kernel vmlinuz\n  \
append initrd=initrd.img inst.stage2=hd:LABEL=Fedora-S-dvd-x86_64-40 inst.ks=cdrom:/ks.cfg inst.text\n"
        );
        assert!(isolinux_cfg("default x\nlabel x\n  kernel memtest\n", "a").is_none());
    }

    #[test]
    fn grub_menu_gets_the_arguments() {
        let g = grub_cfg(
            "set default=\"1\"\nset timeout=60\nmenuentry 'Install' {\n\tlinux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=X quiet\n\tinitrd /images/pxeboot/initrd.img\n}\n",
            "inst.ks=cdrom:/ks.cfg",
        );
        assert!(g.contains("set default=\"0\"\nset timeout=1\n"), "{g}");
        assert!(g.contains("\tlinux /images/pxeboot/vmlinuz inst.stage2=hd:LABEL=X inst.ks=cdrom:/ks.cfg\n"), "{g}");
    }

    /// A real ISO with an isolinux El Torito image, remastered: the kickstart and the new
    /// menu are in it, the boot image and the volume id are kept.
    #[test]
    fn remaster_keeps_the_boot_image() {
        let isolinux_bin = Path::new("/usr/lib/ISOLINUX/isolinux.bin");
        assert!(isolinux_bin.is_file(), "isolinux is not installed (Debian package isolinux; run scripts/setup.sh)");
        let dir = tempfile::tempdir().unwrap();
        let tree = dir.path().join("tree");
        std::fs::create_dir_all(tree.join("isolinux")).unwrap();
        std::fs::copy(isolinux_bin, tree.join("isolinux/isolinux.bin")).unwrap();
        std::fs::write(tree.join("isolinux/isolinux.cfg"), FEDORA_ISOLINUX).unwrap();
        std::fs::write(tree.join("isolinux/vmlinuz"), b"kernel").unwrap();
        let iso = dir.path().join("in.iso");
        let st = Command::new("xorriso")
            .args([
                "-as",
                "mkisofs",
                "-quiet",
                "-V",
                "Fedora-S-dvd-x86_64-40",
                "-b",
                "isolinux/isolinux.bin",
                "-c",
                "isolinux/boot.cat",
            ])
            .args(["-no-emul-boot", "-boot-load-size", "4", "-boot-info-table", "-o"])
            .arg(&iso)
            .arg(&tree)
            .status()
            .expect("xorriso (Debian package xorriso; run scripts/setup.sh)");
        assert!(st.success());
        let extra = dir.path().join("extra.txt");
        std::fs::write(&extra, b"extra file").unwrap();
        let out = dir.path().join("out.iso");
        let extras = vec![Extra {
            kind: ExtraKind::File,
            source: extra.display().to_string(),
            destination: "/extra/e.txt".into(),
        }];
        remaster(&iso, &out, "text\n", "inst.ks=cdrom:/ks.cfg", &extras, &dir.path().join("work")).unwrap();

        let got = dir.path().join("got");
        std::fs::create_dir(&got).unwrap();
        assert!(extract(&out, "/ks.cfg", &got.join("ks.cfg")).unwrap());
        assert_eq!(std::fs::read_to_string(got.join("ks.cfg")).unwrap(), "text\n");
        assert!(extract(&out, ISOLINUX_CFG, &got.join("i.cfg")).unwrap());
        assert!(std::fs::read_to_string(got.join("i.cfg"))
            .unwrap()
            .contains("inst.stage2=hd:LABEL=Fedora-S-dvd-x86_64-40 inst.ks=cdrom:/ks.cfg"));
        assert!(extract(&out, "/extra/e.txt", &got.join("e.txt")).unwrap());
        assert!(!extract(&out, GRUB_CFG, &got.join("g.cfg")).unwrap());
        assert_eq!(volume_id(&out).unwrap(), "Fedora-S-dvd-x86_64-40");
        let report =
            Command::new("xorriso").args(["-indev"]).arg(&out).args(["-report_el_torito", "plain"]).output().unwrap();
        let report = String::from_utf8_lossy(&report.stdout);
        assert!(report.contains("El Torito boot img") && report.contains("BIOS"), "{report}");
        let e = remaster(
            &iso,
            &out,
            "x",
            "a",
            &[Extra { kind: ExtraKind::Directory, source: "/nonexistent".into(), destination: "/x".into() }],
            &dir.path().join("w2"),
        )
        .unwrap_err();
        assert!(e.to_string().starts_with("cannot remaster the ISO: extra /nonexistent"), "{e}");
    }
}
