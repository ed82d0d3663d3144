//! The job the utility VM runs: `utility_customizations` (a partial TDL) turned into a
//! shell script and its data files, staged on the working disk under `/.imagefactory/job`.
//!
//! The script runs once, as root, at boot: the kernel command line's `systemd.run=`
//! ([`KERNEL_RUN`]) copies the job into /run, unmounts the working disk again (the seed
//! promises the customizations an *unmounted* /dev/vdb1), and runs `run.sh`. That waits
//! for multi-user.target and the network (runlevel 3, as in the original), then does what
//! Oz did with a template's content, in Oz's order: repositories, precommands, packages
//! (installed before the commands run: the seed's next step 2), files, commands. It stops
//! at the first failure. Each step's start and exit status go to the console (for the
//! log, and so a timeout can say what was running) and to `/.imagefactory/status` on the
//! working disk, which the plugin reads once the VM has powered off
//! (`systemd.run_success_action=poweroff`).
//!
//! Names and paths from the template only ever reach the script single-quoted
//! ([`quote`]); command and file bodies are separate files, run or copied by index.

use std::path::Path;

use imagefactory_plugin_api::tdl;

use crate::error::IndirectionError;

/// The command systemd runs at boot (`systemd.run=`): mounts the working disk read-only,
/// copies the job out of it, unmounts it, and runs the job from /run.
/// Paths are relative to /run, the guest's tmpfs: `imagefactory/disk` (the working disk's
/// mountpoint) and `imagefactory/job` (the job's copy), as the job script's prelude names them.
pub const KERNEL_RUN: &str = "/bin/sh -c 'cd /run && mkdir -p imagefactory/disk && \
mount -o ro /dev/vdb1 imagefactory/disk && \
cp -a imagefactory/disk/.imagefactory/job imagefactory/job && \
umount imagefactory/disk && exec /bin/sh imagefactory/job/run.sh'";

/// Where the job lives on the working disk, relative to its root.
pub const JOB_DIR: &str = ".imagefactory/job";
/// Where the run's step record is left on the working disk.
pub const STATUS_PATH: &str = "/.imagefactory/status";

/// One step of the job, as the status record and the messages name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// `repositories`, `precommand`, `packages`, `file`, `command`.
    pub kind: &'static str,
    pub index: usize,
    /// How a message names it: `utility command 'livecd'`.
    pub label: String,
}

/// A job ready to stage: the script, the data files, and the steps in order.
#[derive(Debug, Clone)]
pub struct Job {
    pub script: String,
    /// Relative path under the job directory and content.
    pub data: Vec<(String, Vec<u8>)>,
    pub steps: Vec<Step>,
    /// The console marker this run's lines start with (random per build, so a command's
    /// own output cannot pass for the plugin's).
    pub marker: String,
}

/// The text of a content item: given, or fetched from its URL on the build host (as the
/// original did).
pub type Fetch<'a> = dyn Fn(&str) -> Result<Vec<u8>, IndirectionError> + 'a;

/// A string as one single-quoted shell word.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A repository name as a file name apt and yum accept.
fn file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "-_.".contains(c) { c } else { '_' }).collect()
}

/// Parses `utility_customizations`.
pub fn parse(xml: &str) -> Result<tdl::Fragment, IndirectionError> {
    tdl::Fragment::parse(xml).map_err(|e| {
        let first = e.messages().first().map(|m| m.to_string()).unwrap_or_else(|| e.to_string());
        IndirectionError::Customizations(first)
    })
}

const PRELUDE: &str = r#"#!/bin/sh
# Written by imagefactory's IndirectionCloud plugin. It runs once, as root, in the utility
# VM; the VM powers off when it ends.
R=/run/imagefactory
J=$R/job
W=$R/disk
S=$R/status
export DEBIAN_FRONTEND=noninteractive
mark() { echo "$M $*"; echo "$*" >> "$S"; }
finish() {
  mark "$1"
  mkdir -p "$W"
  if mount /dev/vdb1 "$W"; then
    mkdir -p "$W/.imagefactory" && cp "$S" "$W/.imagefactory/status"
    sync
    umount "$W"
  fi
  sync
  exit 0
}
step() {
  kind=$1; n=$2; shift 2
  mark "begin $kind $n"
  "$@" </dev/null
  rc=$?
  mark "end $kind $n $rc"
  [ "$rc" -eq 0 ] || finish failed
}
pm() {
  if command -v apt-get >/dev/null 2>&1; then echo apt
  elif command -v dnf >/dev/null 2>&1; then echo dnf
  elif command -v yum >/dev/null 2>&1; then echo yum
  else echo none
  fi
}
run_command() { cd /root 2>/dev/null || cd /; /bin/sh "$1"; }
"#;

/// Builds the job for `fragment`. `fetch` reads `url` content.
pub fn build(fragment: &tdl::Fragment, marker: &str, fetch: &Fetch) -> Result<Job, IndirectionError> {
    let mut script = String::from(PRELUDE);
    script.push_str(&format!("M={}\n", quote(marker)));
    let mut data = Vec::new();
    let mut steps = Vec::new();
    let mut body = String::from(
        "mark start\n\
# Runlevel 3, as the original's utility VM, and the network for package installs.\n\
systemctl start multi-user.target network-online.target\n\
mark \"multi-user $?\"\n",
    );

    if !fragment.repositories.is_empty() {
        let mut apt = String::new();
        let mut yum = String::new();
        for r in &fragment.repositories {
            let options = if r.signed { "" } else { "[trusted=yes] " };
            let url = r.url.trim();
            let list = format!("/etc/apt/sources.list.d/imagefactory-{}.list", file_name(&r.name));
            if url.contains(char::is_whitespace) {
                let words = url.split_whitespace().collect::<Vec<_>>().join(" ");
                apt.push_str(&format!(
                    "    printf '%s\\n' {} > {}\n",
                    quote(&format!("deb {options}{words}")),
                    quote(&list)
                ));
            } else {
                apt.push_str(&format!(
                    "    printf '%s %s main\\n' {} \"$suite\" > {}\n",
                    quote(&format!("deb {options}{url}")),
                    quote(&list)
                ));
            }
            let id = format!("imagefactory-{}", file_name(&r.name));
            let lines = [
                format!("[{id}]"),
                format!("name={}", r.name),
                format!("baseurl={}", url.split_whitespace().next().unwrap_or("")),
                "enabled=1".to_string(),
                format!("gpgcheck={}", u8::from(r.signed)),
                format!("sslverify={}", u8::from(r.sslverify)),
            ];
            let words: Vec<String> = lines.iter().map(|l| quote(l)).collect();
            yum.push_str(&format!(
                "    printf '%s\\n' {} > {}\n",
                words.join(" "),
                quote(&format!("/etc/yum.repos.d/{id}.repo"))
            ));
        }
        body.push_str(&format!(
            "add_repositories() {{\n  case $(pm) in\n  apt)\n    . /etc/os-release\n    suite=${{VERSION_CODENAME:-stable}}\n{apt}    ;;\n  dnf|yum)\n{yum}    ;;\n  *) echo 'no apt-get, dnf or yum in the utility image' >&2; return 127;;\n  esac\n}}\nstep repositories 0 add_repositories\n"
        ));
        let names: Vec<&str> = fragment.repositories.iter().map(|r| r.name.as_str()).collect();
        steps.push(Step {
            kind: "repositories",
            index: 0,
            label: format!("adding the utility repositories ({})", names.join(", ")),
        });
    }

    for (i, c) in fragment.precommands.iter().enumerate() {
        let text = match c.data() {
            Some(d) => d,
            None => fetch(&c.content)?,
        };
        data.push((format!("pre/{i}"), text));
        body.push_str(&format!("step precommand {i} run_command \"$J/pre/{i}\"\n"));
        steps.push(Step { kind: "precommand", index: i, label: format!("utility precommand '{}'", c.name) });
    }

    if !fragment.packages.is_empty() {
        let names: Vec<&str> = fragment.packages.iter().map(|p| p.name.as_str()).collect();
        let words = names.iter().map(|n| quote(n)).collect::<Vec<_>>().join(" ");
        body.push_str(&format!(
            "install_packages() {{\n  case $(pm) in\n  apt) apt-get -q -o Dpkg::Use-Pty=0 update && apt-get -q -o Dpkg::Use-Pty=0 install -y --no-install-recommends -- {words};;\n  dnf) dnf -y install {words};;\n  yum) yum -y install {words};;\n  *) echo 'no apt-get, dnf or yum in the utility image' >&2; return 127;;\n  esac\n}}\nstep packages 0 install_packages\n"
        ));
        steps.push(Step {
            kind: "packages",
            index: 0,
            label: format!("installing the utility packages ({})", names.join(", ")),
        });
    }

    for (i, f) in fragment.files.iter().enumerate() {
        let text = match f.data() {
            Some(d) => d,
            None => fetch(&f.content)?,
        };
        data.push((format!("files/{i}"), text));
        body.push_str(&format!("step file {i} install -D -m 0644 \"$J/files/{i}\" {}\n", quote(&f.name)));
        steps.push(Step { kind: "file", index: i, label: format!("writing utility file {}", f.name) });
    }

    for (i, c) in fragment.commands.iter().enumerate() {
        let text = match c.data() {
            Some(d) => d,
            None => fetch(&c.content)?,
        };
        data.push((format!("cmd/{i}"), text));
        body.push_str(&format!("step command {i} run_command \"$J/cmd/{i}\"\n"));
        steps.push(Step { kind: "command", index: i, label: format!("utility command '{}'", c.name) });
    }
    body.push_str("finish done\n");
    script.push_str(&body);
    Ok(Job { script, data, steps, marker: marker.to_string() })
}

impl Job {
    /// Writes the job into `root` (the tree the working disk's file system is made from).
    pub fn stage(&self, root: &Path) -> Result<(), IndirectionError> {
        let dir = root.join(JOB_DIR);
        let write = |rel: &str, bytes: &[u8]| -> Result<(), IndirectionError> {
            let p = dir.join(rel);
            if let Some(parent) = p.parent() {
                std::fs::create_dir_all(parent)
                    .map_err(|e| diskimage::DiskError::io("cannot create", parent.to_path_buf(), e))?;
            }
            std::fs::write(&p, bytes).map_err(|e| diskimage::DiskError::io("cannot write", p.clone(), e))?;
            Ok(())
        };
        write("run.sh", self.script.as_bytes())?;
        for (rel, bytes) in &self.data {
            write(rel, bytes)?;
        }
        Ok(())
    }

    /// The step a status line names.
    pub fn step(&self, kind: &str, index: usize) -> Option<&Step> {
        self.steps.iter().find(|s| s.kind == kind && s.index == index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_fetch(url: &str) -> Result<Vec<u8>, IndirectionError> {
        Err(IndirectionError::Parameter(format!("fetch {url}")))
    }

    #[test]
    fn quoting() {
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), "'it'\\''s'");
    }

    #[test]
    fn the_seeds_fragment() {
        let f = parse(
            "<template><commands><command name='mount'>mount /dev/vdb1 /mnt</command>\
<command name='livecd'>livemedia-creator --make-iso --disk-image /mnt/input_image.raw --resultdir /mnt/results</command>\
</commands></template>",
        )
        .unwrap();
        let job = build(&f, "MARK-1", &no_fetch).unwrap();
        assert_eq!(job.steps.len(), 2);
        assert_eq!(job.steps[1].label, "utility command 'livecd'");
        assert_eq!(job.data[0], ("cmd/0".to_string(), b"mount /dev/vdb1 /mnt".to_vec()));
        assert!(job.script.contains("step command 1 run_command \"$J/cmd/1\"\n"));
        assert!(job.script.contains("M='MARK-1'"));
        assert!(job.script.ends_with("finish done\n"));
        assert!(!job.script.contains("install_packages"), "no packages, no package step");
    }

    #[test]
    fn order_is_ozs_and_names_are_quoted() {
        let f = parse(
            "<template><commands><command name='c'>echo c</command></commands>\
<files><file name=\"/etc/it's\">x</file></files>\
<packages><package name='xorriso'/><package name='isolinux'/></packages>\
<precommands><command name='p'>echo p</command></precommands>\
<repositories><repository name='up dates'><url>http://m.example/debian bookworm-updates main</url></repository>\
<repository name='y'><url>http://m.example/y</url><signed>true</signed></repository></repositories></template>",
        )
        .unwrap();
        let job = build(&f, "M", &no_fetch).unwrap();
        let kinds: Vec<&str> = job.steps.iter().map(|s| s.kind).collect();
        assert_eq!(kinds, ["repositories", "precommand", "packages", "file", "command"]);
        let s = &job.script;
        let pos = |needle: &str| s.find(needle).unwrap_or_else(|| panic!("{needle} not in\n{s}"));
        assert!(pos("step repositories") < pos("step precommand") && pos("step precommand") < pos("step packages"));
        assert!(pos("step packages") < pos("step file") && pos("step file") < pos("step command"));
        assert!(s.contains("printf '%s\\n' 'deb [trusted=yes] http://m.example/debian bookworm-updates main' > '/etc/apt/sources.list.d/imagefactory-up_dates.list'"), "{s}");
        assert!(s.contains("printf '%s %s main\\n' 'deb http://m.example/y' \"$suite\""), "{s}");
        assert!(s.contains("'gpgcheck=1'"), "{s}");
        assert!(s.contains("install -y --no-install-recommends -- 'xorriso' 'isolinux'"), "{s}");
        assert!(s.contains("install -D -m 0644 \"$J/files/0\" '/etc/it'\\''s'"), "{s}");
        assert_eq!(job.step("packages", 0).unwrap().label, "installing the utility packages (xorriso, isolinux)");
    }

    #[test]
    fn url_content_is_fetched_on_the_host() {
        let f = parse(
            "<template><commands><command name='u' type='url'>http://h.example/x.sh</command></commands></template>",
        )
        .unwrap();
        let job = build(&f, "M", &|u: &str| Ok(format!("echo from {u}").into_bytes())).unwrap();
        assert_eq!(job.data[0].1, b"echo from http://h.example/x.sh");
        assert!(build(&f, "M", &no_fetch).is_err());
    }

    #[test]
    fn a_bad_fragment_is_one_line() {
        let e = parse("<template><commands><command>x</command></commands></template>").unwrap_err();
        let m = e.to_string();
        assert!(m.starts_with("utility_customizations is not a valid partial TDL: "), "{m}");
        assert!(!m.contains('\n'));
    }

    #[test]
    fn staging_writes_the_tree() {
        let f = parse("<template><commands><command name='a'>echo a</command></commands></template>").unwrap();
        let job = build(&f, "M", &no_fetch).unwrap();
        let d = tempfile::tempdir().unwrap();
        job.stage(d.path()).unwrap();
        assert_eq!(std::fs::read_to_string(d.path().join(".imagefactory/job/cmd/0")).unwrap(), "echo a");
        assert!(std::fs::read_to_string(d.path().join(".imagefactory/job/run.sh")).unwrap().starts_with("#!/bin/sh"));
    }
}
