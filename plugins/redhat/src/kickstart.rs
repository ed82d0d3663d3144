//! The kickstart: generated from the template for one release's anaconda.
//!
//! One install boot does everything: the command section partitions the disk, sets the
//! root password (as a hash) and the serial console, `%packages` installs the base group
//! and the template's packages (from the tree and the template's repositories), and one
//! `%post` applies the rest of the template, then reports to the serial console:
//!
//! 1. persisted repositories are written to `/etc/yum.repos.d/<name>.repo`;
//! 2. precommands run, then files are written, then commands run, in template order.
//!    (Oz ran precommands before its package install, in a second boot over SSH; here
//!    packages come from `%packages`, so precommands run after them, before the files.)
//!    A failing one prints a failure marker and stops the `%post`;
//! 3. the ICICLE (`rpm -qa` as `name-version-release.arch`, and the template's
//!    `<icicle><extra_command>`) is printed between markers;
//! 4. a done marker is printed. The guest then powers off (`poweroff`).
//!
//! The markers carry a per-build random nonce, so nothing a template prints can forge
//! them. Choosing `%post` over a second, customizing boot keeps a build to one boot, needs
//! no SSH or network path into the guest, and works the same for Fedora 7 and RHEL 10.
//!
//! Content is written with `printf` (octal escapes for anything but plain printable
//! text), which every installer's shell has; `base64` is missing from RHEL 5.

use imagefactory_plugin_api::tdl::{Repository, Template};

use crate::distro::{ArgStyle, Auth, Profile, Release};

/// The console the `%post` reports to. `/dev/ttyS0` is the first serial port, which the
/// guest engine logs; the chroot's /dev is the installer's.
pub const CONSOLE: &str = "/dev/ttyS0";

/// The markers a build's `%post` prints, unique to the build.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Markers {
    nonce: String,
}

impl Markers {
    pub fn new(nonce: impl Into<String>) -> Markers {
        Markers { nonce: nonce.into() }
    }

    pub fn done(&self) -> String {
        format!("IMAGEFACTORY-INSTALL-DONE-{}", self.nonce)
    }

    /// Followed by ` <kind> <index> <exit status>`.
    pub fn failed(&self) -> String {
        format!("IMAGEFACTORY-STEP-FAILED-{}", self.nonce)
    }

    pub fn icicle_begin(&self) -> String {
        format!("IMAGEFACTORY-ICICLE-BEGIN-{}", self.nonce)
    }

    pub fn icicle_end(&self) -> String {
        format!("IMAGEFACTORY-ICICLE-END-{}", self.nonce)
    }

    pub fn extra_begin(&self) -> String {
        format!("IMAGEFACTORY-ICICLE-EXTRA-BEGIN-{}", self.nonce)
    }

    pub fn extra_end(&self) -> String {
        format!("IMAGEFACTORY-ICICLE-EXTRA-END-{}", self.nonce)
    }
}

/// Where the installer takes its packages from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A network tree, as the guest reaches it (see [`crate::guesturl`]).
    Url(String),
    /// The installation DVD the guest boots from.
    Cdrom,
}

/// One piece of template content with its bytes resolved (url content fetched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    pub name: String,
    pub data: Vec<u8>,
}

/// Everything the kickstart is made from.
#[derive(Debug, Clone)]
pub struct Input<'a> {
    pub template: &'a Template,
    pub release: Release,
    pub source: Source,
    /// The root password's crypt hash; `None` locks root's password.
    pub root_hash: Option<String>,
    pub markers: Markers,
    pub files: Vec<Content>,
    pub commands: Vec<Content>,
    pub precommands: Vec<Content>,
    /// Print the ICICLE (`parameters.generate_icicle`, default true).
    pub icicle: bool,
}

/// The installer's kernel arguments, after the kernel and initrd: where the kickstart
/// and the packages are, text mode, the serial console, and the template's
/// `<kernelparam>` last so it can override.
pub fn kernel_args(profile: &Profile, source: &Source, ks_location: &str, kernelparam: Option<&str>) -> String {
    let mut args = Vec::new();
    let (ks, text) = match profile.args {
        ArgStyle::Inst => ("inst.ks", "inst.text"),
        _ => ("ks", "text"),
    };
    args.push(format!("{ks}={ks_location}"));
    match (profile.args, source) {
        (ArgStyle::Inst, Source::Url(u)) => args.push(format!("inst.repo={u}")),
        (ArgStyle::Repo, Source::Url(u)) => args.push(format!("repo={u}")),
        (ArgStyle::Method, Source::Url(u)) => args.push(format!("method={u}")),
        (_, Source::Cdrom) => {}
    }
    args.push(text.to_string());
    args.push("console=ttyS0,115200n8".into());
    if let Some(k) = kernelparam.map(str::trim).filter(|k| !k.is_empty()) {
        args.push(k.to_string());
    }
    args.join(" ")
}

/// Where the kickstart is, as the installer's `ks=` names it: in the initrd for a
/// direct kernel boot, at the root of the remastered DVD for an ISO boot.
pub fn ks_location(source: &Source) -> &'static str {
    match source {
        Source::Url(_) => "file:/ks.cfg",
        Source::Cdrom => "cdrom:/ks.cfg",
    }
}

/// The generated kickstart.
pub fn generate(input: &Input) -> String {
    let p = input.release.profile();
    let mut ks = String::new();
    let mut line = |s: &str| {
        ks.push_str(s);
        ks.push('\n');
    };
    line(&format!(
        "# Kickstart generated by imagefactory for {} (template '{}')",
        input.release,
        one_line(&input.template.name)
    ));
    if p.install_keyword {
        line("install");
    }
    match &input.source {
        Source::Url(u) => line(&format!("url --url={u}")),
        Source::Cdrom => line("cdrom"),
    }
    line("text");
    if p.key_skip {
        line("key --skip");
    }
    line("keyboard us");
    line("lang en_US.UTF-8");
    line("skipx");
    line(if p.network_device { "network --device eth0 --bootproto dhcp" } else { "network --bootproto=dhcp" });
    match (&input.root_hash, p.rootpw_lock) {
        (Some(h), _) => line(&format!("rootpw --iscrypted {h}")),
        (None, true) => line("rootpw --lock"),
        (None, false) => line("rootpw --iscrypted !!"),
    }
    line("firewall --disabled");
    match p.auth {
        Auth::AuthconfigMd5 => line("authconfig --enableshadow --enablemd5"),
        Auth::AuthconfigSha512 => line("authconfig --enableshadow --passalgo=sha512"),
        Auth::Authselect => {}
    }
    line("selinux --enforcing");
    line("timezone --utc UTC");
    line("bootloader --location=mbr --append=\"console=ttyS0,115200n8\"");
    line(if p.zerombr_yes { "zerombr yes" } else { "zerombr" });
    line("clearpart --all --initlabel");
    if p.reqpart {
        line("reqpart");
    }
    line(&format!("part / --fstype={} --size=1024 --grow", p.root_fs));
    for r in &input.template.repositories {
        line(&repo_line(r, &p));
    }
    line("poweroff");
    line("");
    line("%packages");
    line(p.base_group);
    for pkg in &input.template.packages {
        line(pkg.name.trim());
    }
    if p.end {
        line("%end");
    }
    line("");
    ks.push_str(&post(input, &p));
    ks
}

/// The user's own kickstart (`parameters.install_script`) with the `%post` that applies
/// the template's content and reports the ICICLE and the done marker appended: the
/// install is judged the same way as with a generated kickstart.
pub fn with_custom(custom: &str, input: &Input) -> String {
    let p = input.release.profile();
    let mut ks = custom.trim_end().to_string();
    ks.push_str("\n\n# Appended by imagefactory: the template's content, the ICICLE, the done marker\n");
    ks.push_str(&post(input, &p));
    ks
}

fn repo_line(r: &Repository, p: &Profile) -> String {
    let mut l = format!("repo --name=\"{}\" --baseurl={}", quote_free(&r.name), r.url.trim());
    if !r.sslverify && p.noverifyssl {
        l.push_str(" --noverifyssl");
    }
    l
}

/// A repository name as a file name: anything outside `[A-Za-z0-9._-]` becomes `_`.
pub fn repo_file_name(name: &str) -> String {
    name.chars().map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' }).collect()
}

fn quote_free(s: &str) -> String {
    s.chars().filter(|c| *c != '"' && *c != '\n').collect()
}

fn one_line(s: &str) -> String {
    s.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `s` in single quotes for sh.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// `printf` lines writing `data` to `path` (first line truncates, later ones append),
/// 2048 input bytes a line.
fn printf_to(path: &str, data: &[u8]) -> String {
    let mut out = String::new();
    if data.is_empty() {
        out.push_str(&format!(": > {}\n", sh_quote(path)));
    }
    for (i, chunk) in data.chunks(2048).enumerate() {
        let redirect = if i == 0 { ">" } else { ">>" };
        out.push_str(&format!("printf '{}' {redirect} {}\n", printf_escape(chunk), sh_quote(path)));
    }
    out
}

/// A printf format printing exactly `data`: printable ASCII as itself, except `'`, `\`
/// and `%`; newlines as `\n`; everything else as a 3-digit octal escape.
fn printf_escape(data: &[u8]) -> String {
    let mut s = String::with_capacity(data.len());
    for &b in data {
        match b {
            b'%' => s.push_str("%%"),
            b'\\' => s.push_str("\\\\"),
            b'\'' => s.push_str("\\047"),
            b'\n' => s.push_str("\\n"),
            b' '..=b'~' => s.push(b as char),
            _ => s.push_str(&format!("\\{b:03o}")),
        }
    }
    s
}

fn post(input: &Input, p: &Profile) -> String {
    let m = &input.markers;
    let mut s = String::from("%post\n");
    s.push_str("# imagefactory: apply the template, report to the serial console\n");
    s.push_str(&format!("IF_CONSOLE={CONSOLE}\n[ -w \"$IF_CONSOLE\" ] || IF_CONSOLE=/dev/console\n"));
    s.push_str(&format!("if_fail() {{ echo \"{} $1 $2 $3\" > \"$IF_CONSOLE\"; exit 1; }}\n", m.failed()));
    s.push_str("mkdir -p /tmp\n");
    let persisted: Vec<&Repository> = input.template.repositories.iter().filter(|r| r.persisted).collect();
    if !persisted.is_empty() {
        s.push_str("mkdir -p /etc/yum.repos.d\n");
    }
    for r in persisted {
        let text = format!(
            "[{name}]\nname={name}\nbaseurl={url}\nenabled=1\nskip_if_unavailable=1\ngpgcheck={gpg}\nsslverify={ssl}\n",
            name = repo_file_name(&r.name),
            url = r.url.trim(),
            gpg = u8::from(r.signed),
            ssl = u8::from(r.sslverify),
        );
        s.push_str(&printf_to(&format!("/etc/yum.repos.d/{}.repo", repo_file_name(&r.name)), text.as_bytes()));
    }
    for (i, c) in input.precommands.iter().enumerate() {
        s.push_str(&run_script("precommand", i, c));
    }
    for f in &input.files {
        let dir = f.name.rsplit_once('/').map(|(d, _)| d).filter(|d| !d.is_empty()).unwrap_or("/");
        s.push_str(&format!("mkdir -p {}\n", sh_quote(dir)));
        s.push_str(&printf_to(&f.name, &f.data));
        s.push_str(&format!(
            "chmod 0644 {q}\ncommand -v restorecon >/dev/null 2>&1 && restorecon -F {q}\n",
            q = sh_quote(&f.name)
        ));
    }
    for (i, c) in input.commands.iter().enumerate() {
        s.push_str(&run_script("command", i, c));
    }
    if input.icicle {
        s.push_str(&format!("echo {} > \"$IF_CONSOLE\"\n", m.icicle_begin()));
        s.push_str(&format!("rpm -qa --qf '{}' > \"$IF_CONSOLE\"\n", ICICLE_QUERYFORMAT));
        s.push_str(&format!("echo {} > \"$IF_CONSOLE\"\n", m.icicle_end()));
        if let Some(extra) = &input.template.os.icicle_extra_command {
            s.push_str(&format!("echo {} > \"$IF_CONSOLE\"\n", m.extra_begin()));
            s.push_str(&format!("( {} ) > \"$IF_CONSOLE\" 2>/dev/null\n", extra.trim()));
            s.push_str(&format!("echo {} > \"$IF_CONSOLE\"\n", m.extra_end()));
        }
    }
    s.push_str("sync\n");
    s.push_str(&format!("echo {} > \"$IF_CONSOLE\"\n", m.done()));
    if p.end {
        s.push_str("%end\n");
    }
    s
}

/// The `rpm --queryformat` whose lines are the ICICLE's package names, as plain
/// `rpm -qa` prints them on current releases (and Oz stored them).
pub const ICICLE_QUERYFORMAT: &str = "%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\\n";

fn run_script(kind: &str, index: usize, c: &Content) -> String {
    let path = format!("/tmp/imagefactory-{kind}-{index}");
    let mut s = format!("# {kind} {}\n", one_line(&c.name));
    s.push_str(&printf_to(&path, &c.data));
    s.push_str(&format!("/bin/sh {path} > \"$IF_CONSOLE\" 2>&1 || if_fail {kind} {index} $?\nrm -f {path}\n"));
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::distro::Family;
    use imagefactory_plugin_api::tdl::ParseOptions;

    fn template(extra_os: &str, body: &str) -> Template {
        let xml = format!(
            "<template><name>ks test</name><os><name>Fedora</name><version>40</version><arch>x86_64</arch>\
<install type='url'><url>http://127.0.0.1:8000/f40/</url></install>{extra_os}</os>{body}</template>"
        );
        Template::parse(&xml, &ParseOptions::default()).unwrap()
    }

    fn input<'a>(t: &'a Template, name: &str, version: &str, family: Family) -> Input<'a> {
        Input {
            template: t,
            release: Release::parse(family, name, version).unwrap(),
            source: Source::Url("http://10.0.2.2:8000/f40/".into()),
            root_hash: Some("$6$salt$hashhash".into()),
            markers: Markers::new("n0nce"),
            files: vec![Content { name: "/etc/motd".into(), data: b"it's 100% \\ fine\n\x01".to_vec() }],
            commands: vec![Content { name: "hello".into(), data: b"echo hello > /etc/hello".to_vec() }],
            precommands: vec![Content { name: "pre".into(), data: b"touch /etc/pre".to_vec() }],
            icicle: true,
        }
    }

    #[test]
    fn fedora_kickstart() {
        let t = template(
            "<icicle><extra_command>rpm -qa --qf '%{SIGMD5}\\n'</extra_command></icicle>",
            "<packages><package name='less'/><package name='vim-minimal'/></packages>\
<repositories><repository name='extra repo'><url>http://repo.example/x/</url><persisted>no</persisted></repository>\
<repository name='kept'><url>http://repo.example/k/</url><signed>yes</signed></repository></repositories>",
        );
        let ks = generate(&input(&t, "Fedora", "40", Family::Fedora));
        let lines: Vec<&str> = ks.lines().collect();
        for want in [
            "url --url=http://10.0.2.2:8000/f40/",
            "text",
            "rootpw --iscrypted $6$salt$hashhash",
            "bootloader --location=mbr --append=\"console=ttyS0,115200n8\"",
            "zerombr",
            "clearpart --all --initlabel",
            "reqpart",
            "part / --fstype=ext4 --size=1024 --grow",
            "repo --name=\"extra repo\" --baseurl=http://repo.example/x/ --noverifyssl",
            "poweroff",
            "%packages",
            "@core",
            "less",
            "vim-minimal",
            "%end",
            "%post",
            "echo IMAGEFACTORY-INSTALL-DONE-n0nce > \"$IF_CONSOLE\"",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in:\n{ks}");
        }
        for absent in ["install", "authconfig --enableshadow --passalgo=sha512", "key --skip"] {
            assert!(!lines.contains(&absent), "unexpected {absent:?} in:\n{ks}");
        }
        assert!(ks.contains("printf '[kept]\\nname=kept\\nbaseurl=http://repo.example/k/\\nenabled=1\\nskip_if_unavailable=1\\ngpgcheck=1\\nsslverify=0\\n' > '/etc/yum.repos.d/kept.repo'"), "{ks}");
        assert!(!ks.contains("extra_repo.repo"), "an unpersisted repository stays out of the image");
        assert!(ks.contains("printf 'it\\047s 100%% \\\\ fine\\n\\001' > '/etc/motd'"), "{ks}");
        assert!(ks.contains("/bin/sh /tmp/imagefactory-command-0 > \"$IF_CONSOLE\" 2>&1 || if_fail command 0 $?"));
        // Order inside %post: precommand, file, command, ICICLE, done.
        let pos = |s: &str| ks.find(s).unwrap_or_else(|| panic!("{s} missing"));
        assert!(pos("imagefactory-precommand-0") < pos("'/etc/motd'"));
        assert!(pos("'/etc/motd'") < pos("imagefactory-command-0"));
        assert!(pos("imagefactory-command-0") < pos("IMAGEFACTORY-ICICLE-BEGIN-n0nce"));
        assert!(pos("IMAGEFACTORY-ICICLE-EXTRA-BEGIN-n0nce") < pos("IMAGEFACTORY-INSTALL-DONE-n0nce"));
        assert!(ks.contains("rpm -qa --qf '%{NAME}-%{VERSION}-%{RELEASE}.%{ARCH}\\n'"));
    }

    #[test]
    fn rhel5_kickstart_is_old_syntax() {
        let t = template("", "");
        let mut i = input(&t, "RHEL-5", "U4", Family::Rhel);
        i.root_hash = None;
        let ks = generate(&i);
        let lines: Vec<&str> = ks.lines().collect();
        for want in [
            "install",
            "key --skip",
            "network --device eth0 --bootproto dhcp",
            "rootpw --iscrypted !!",
            "authconfig --enableshadow --enablemd5",
            "zerombr yes",
            "part / --fstype=ext3 --size=1024 --grow",
            "@base",
        ] {
            assert!(lines.contains(&want), "missing {want:?} in:\n{ks}");
        }
        assert!(!lines.contains(&"%end") && !lines.contains(&"reqpart"), "{ks}");
    }

    #[test]
    fn rhel7_and_8() {
        let t = template("", "");
        let ks7 = generate(&input(&t, "RHEL-7", "9", Family::Rhel));
        assert!(ks7.lines().any(|l| l == "install") && ks7.contains("authconfig --enableshadow --passalgo=sha512"));
        let ks8 = generate(&input(&t, "RHEL-8", "4", Family::Rhel));
        assert!(!ks8.lines().any(|l| l == "install") && !ks8.contains("authconfig") && ks8.contains("\nreqpart\n"));
        let mut locked = input(&t, "Rocky-9", "3", Family::Rhel);
        locked.root_hash = None;
        locked.source = Source::Cdrom;
        let ks = generate(&locked);
        assert!(ks.contains("\nrootpw --lock\n") && ks.contains("\ncdrom\n"), "{ks}");
    }

    #[test]
    fn kernel_arguments_per_style() {
        let u = Source::Url("http://10.0.2.2:8000/t/".into());
        let prof = |n, v| Release::parse(Family::Rhel, n, v).unwrap().profile();
        let fed = Release::parse(Family::Fedora, "Fedora", "40").unwrap().profile();
        assert_eq!(
            kernel_args(&fed, &u, ks_location(&u), Some(" fixture.mode=ok ")),
            "inst.ks=file:/ks.cfg inst.repo=http://10.0.2.2:8000/t/ inst.text console=ttyS0,115200n8 fixture.mode=ok"
        );
        assert_eq!(
            kernel_args(&prof("RHEL-6", "4"), &u, "file:/ks.cfg", None),
            "ks=file:/ks.cfg repo=http://10.0.2.2:8000/t/ text console=ttyS0,115200n8"
        );
        assert_eq!(
            kernel_args(&prof("RHEL-5", "U4"), &u, "file:/ks.cfg", None),
            "ks=file:/ks.cfg method=http://10.0.2.2:8000/t/ text console=ttyS0,115200n8"
        );
        assert_eq!(
            kernel_args(&prof("RHEL-9", "0"), &Source::Cdrom, ks_location(&Source::Cdrom), None),
            "inst.ks=cdrom:/ks.cfg inst.text console=ttyS0,115200n8"
        );
    }

    #[test]
    fn custom_kickstart_gets_the_reporting_post() {
        let t = template("", "");
        let i = input(&t, "Fedora", "40", Family::Fedora);
        let ks = with_custom("text\nrootpw --iscrypted $6$mine\npoweroff\n%packages\n@core\n%end\n", &i);
        assert!(ks.starts_with("text\nrootpw --iscrypted $6$mine\n"));
        assert!(ks.contains("IMAGEFACTORY-INSTALL-DONE-n0nce") && ks.trim_end().ends_with("%end"));
    }

    #[test]
    fn escaping_round_trips_through_sh() {
        let data: Vec<u8> = (0u8..=255).chain(b"%s %d \\n '\"$HOME`x`".iter().copied()).collect();
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("o'ut");
        let mut script = printf_to(out.to_str().unwrap(), &data[..100]);
        script.push_str(&printf_to(&format!("{}2", out.display()), &data));
        let st = std::process::Command::new("sh").arg("-c").arg(&script).status().unwrap();
        assert!(st.success());
        assert_eq!(std::fs::read(&out).unwrap(), &data[..100]);
        assert_eq!(std::fs::read(format!("{}2", out.display())).unwrap(), data);
        let big = vec![b'a'; 5000];
        let s = printf_to("/x", &big);
        assert_eq!(s.lines().count(), 3);
        assert!(s.lines().nth(1).unwrap().ends_with(">> '/x'"));
    }
}
