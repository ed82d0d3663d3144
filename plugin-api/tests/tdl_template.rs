//! What a parsed template holds, and the behaviour around parsing: options,
//! fragments, merging, error formatting and the limits for untrusted input.

use imagefactory_plugin_api::tdl::*;

fn corpus(file: &str) -> String {
    let path = format!("{}/tests/tdl/{file}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}

fn parse(file: &str) -> Template {
    Template::parse(&corpus(file), &ParseOptions::default()).unwrap_or_else(|e| panic!("{file} should parse: {e}"))
}

fn messages(xml: &str, opts: ParseOptions) -> Vec<String> {
    match Template::parse(xml, &opts) {
        Ok(_) => Vec::new(),
        Err(e) => e.messages().into_iter().map(String::from).collect(),
    }
}

#[test]
fn seed_f18utility_reads_every_field() {
    let t = parse("seed-f18utility.tdl");
    assert_eq!(t.name, "f18utility");
    assert_eq!(t.version, None);
    assert_eq!(t.os.name, "Fedora");
    assert_eq!(t.os.version, "18");
    assert_eq!(t.os.arch, "x86_64");
    assert_eq!(t.os.rootpw.as_deref(), Some("ozrootpw"));
    assert_eq!(
        t.os.install,
        Install::Url { url: "http://download.fedora.com/install_trees/fedora/F-18/64bit/".into() }
    );
    assert_eq!(t.description.as_deref(), Some("Fedora 18 64 bit image with packages needed for live CD\ncreation"));
    assert_eq!(t.packages, vec![Package::named("lorax"), Package::named("hfsplus-tools")]);
    assert_eq!(t.disk_size, None);
}

#[test]
fn seed_f12jeos_is_an_iso_install() {
    let t = parse("seed-f12jeos.tdl");
    assert_eq!(t.name, "f12jeos");
    assert_eq!(t.os.rootpw.as_deref(), Some("p@55word!"));
    match &t.os.install {
        Install::Iso { iso, checksum, extras } => {
            assert!(iso.ends_with("/releases/12/Fedora/x86_64/os/"));
            assert_eq!(*checksum, None);
            assert!(extras.is_empty());
        }
        other => panic!("expected an ISO install, got {other:?}"),
    }
}

#[test]
fn seed_fragment_keeps_commands_in_order_with_their_text() {
    let f = Fragment::parse(&corpus("seed-fragment-livecd-commands.tdl")).unwrap();
    let names: Vec<&str> = f.commands.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["mount", "livecd"]);
    assert_eq!(f.commands[0].content, "mount /dev/vdb1 /mnt");
    assert_eq!(
        f.commands[1].content,
        "livemedia-creator --make-iso\n--disk-image /mnt/input_image.raw --resultdir /mnt/results"
    );
    assert!(f.packages.is_empty() && f.files.is_empty());
    // The same document is not a complete template.
    assert_eq!(
        messages(&corpus("seed-fragment-livecd-commands.tdl"), ParseOptions::default()),
        ["Failed to find template name in TDL", "Expected 1 OS section in TDL, saw 0"]
    );
}

#[test]
fn checksums_are_read_by_kind() {
    for (file, kind) in [
        ("valid-22-md5sum.tdl", ChecksumKind::Md5),
        ("valid-23-sha1sum.tdl", ChecksumKind::Sha1),
        ("valid-24-sha256sum.tdl", ChecksumKind::Sha256),
    ] {
        let Install::Iso { checksum, .. } = parse(file).os.install else {
            panic!("{file}: not an ISO install");
        };
        assert_eq!(checksum.map(|c| c.kind), Some(kind), "{file}");
    }
}

#[test]
fn iso_extras_are_kept_directories_first() {
    let Install::Iso { extras, .. } = parse("valid-71-extras-on-iso-install.tdl").os.install else {
        panic!("not an ISO install");
    };
    assert_eq!(
        extras,
        vec![
            Extra { kind: ExtraKind::Directory, source: "file:///srv/extra".into(), destination: "extra".into() },
            Extra { kind: ExtraKind::File, source: "http://example.org/ks.cfg".into(), destination: "ks.cfg".into() },
        ]
    );
}

#[test]
fn repository_flags_have_oz_defaults_and_any_case() {
    let t = parse("valid-43-persisted-repos.tdl");
    let flags: Vec<(&str, bool, bool, bool)> =
        t.repositories.iter().map(|r| (r.name.as_str(), r.signed, r.persisted, r.sslverify)).collect();
    assert_eq!(flags, [("default", false, true, false), ("kept", false, true, true), ("dropped", true, false, false),]);
    assert!(parse("valid-16-signed-repository.tdl").repositories[0].signed);
}

#[test]
fn files_are_trimmed_and_base64_decodes() {
    let t = parse("valid-29-files.tdl");
    assert_eq!(t.files[0].name, "/etc/motd");
    assert_eq!(t.files[0].content, "Welcome to the test image");
    assert_eq!(t.files[0].content_type, ContentType::Raw);
    assert_eq!(t.files[1].data(), Some(Vec::new()));

    let t = parse("valid-32-file-base64-type.tdl");
    assert_eq!(t.files[0].content_type, ContentType::Base64);
    assert_eq!(t.files[0].data().as_deref(), Some(&b"hello world\n"[..]));

    let t = parse("valid-48-file-empty-base64.tdl");
    assert_eq!(t.files[0].data(), Some(Vec::new()));

    let t = parse("valid-53-files-http-url.tdl");
    assert_eq!(t.files[0].content_type, ContentType::Url);
    assert_eq!(t.files[0].data(), None);
    assert_eq!(t.files[0].content, "http://config.example.org/extra.repo");
}

#[test]
fn duplicate_files_and_repositories_keep_the_last_in_the_first_slot() {
    let t = parse("valid-98-duplicate-files-and-repos-last-wins.tdl");
    let files: Vec<(&str, &str)> = t.files.iter().map(|f| (f.name.as_str(), f.content.as_str())).collect();
    assert_eq!(files, [("/etc/motd", "second"), ("/etc/issue", "issue")]);
    assert_eq!(t.repositories.len(), 1);
    assert_eq!(t.repositories[0].url, "http://b.example.org/");
}

#[test]
fn commands_decode_and_sort_by_position() {
    let t = parse("valid-40-command-base64-type.tdl");
    assert_eq!(t.commands[0].data().as_deref(), Some(&b"echo hi"[..]));

    let t = parse("valid-39-command-raw-type.tdl");
    assert_eq!(t.commands[0].content, "echo \"a < b\" > /tmp/x");

    let t = parse("valid-59-command-sorting.tdl");
    let names: Vec<&str> = t.commands.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["first", "second", "third"]);

    let t = parse("valid-68-precommands.tdl");
    let pre: Vec<&str> = t.precommands.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(pre, ["a", "b"]);
    assert_eq!(t.commands.len(), 1);
}

#[test]
fn disk_sizes_use_oz_units() {
    let cases = [
        ("valid-51-disk-size.tdl", 15u64 << 30),
        ("valid-58-disk-size-terabyte.tdl", 2 << 40),
        ("valid-63-disk-size-exbibyte.tdl", 1 << 60),
        ("valid-64-disk-size-si.tdl", 500_000_000_000),
        ("valid-65-disk-size-byte.tdl", 1 << 30),
    ];
    for (file, bytes) in cases {
        assert_eq!(parse(file).disk_size, Some(bytes), "{file}");
    }
}

#[test]
fn optional_os_fields_are_read() {
    let t = parse("valid-92-icicle-kernelparam.tdl");
    assert_eq!(t.os.kernelparam.as_deref(), Some("console=ttyS0"));
    assert_eq!(t.os.icicle_extra_command.as_deref(), Some("rpm -qa --qf '%{NAME}\\n'"));
    assert_eq!(parse("valid-19-key.tdl").os.key.as_deref(), Some("ABCD-1234"));
    // Passwords keep their spaces.
    assert_eq!(parse("valid-18-rootpw.tdl").os.rootpw.as_deref(), Some("s3cret pass"));
    assert_eq!(parse("valid-96-empty-rootpw-counts-as-absent.tdl").os.rootpw, None);
    assert_eq!(parse("valid-44-version.tdl").version.as_deref(), Some("1.0"));
    let p = &parse("valid-87-package-details.tdl").packages[0];
    assert_eq!(p.repository.as_deref(), Some("local-extras"));
    assert_eq!(p.file.as_deref(), Some("custom-1.0-1.noarch.rpm"));
    assert_eq!(p.arguments.as_deref(), Some("--nodeps"));
}

#[test]
fn every_architecture_in_the_list_is_accepted() {
    let base = corpus("valid-02-simple-url.tdl");
    for arch in ARCHITECTURES {
        let xml = base.replace("<arch>x86_64</arch>", &format!("<arch>{arch}</arch>"));
        let t = Template::parse(&xml, &ParseOptions::default()).unwrap();
        assert_eq!(t.os.arch, *arch);
    }
    let xml = base.replace("<arch>x86_64</arch>", "<arch>X86_64</arch>");
    assert_eq!(
        messages(&xml, ParseOptions::default()),
        ["Architecture must be one of 'i386, x86_64, ppc64, ppc64le, armv7l, aarch64, or s390x'"]
    );
}

#[test]
fn root_password_is_required_only_when_asked() {
    let strict = ParseOptions { require_root_pw: true };
    let without = corpus("valid-02-simple-url.tdl");
    assert_eq!(messages(&without, ParseOptions::default()), Vec::<String>::new());
    let err = Template::parse(&without, &strict).unwrap_err();
    assert_eq!(err.to_string(), "line 3, column 3: <os>: Failed to find root/Administrator password in TDL");
    assert_eq!(
        messages(&corpus("valid-96-empty-rootpw-counts-as-absent.tdl"), strict),
        ["Found an empty root/Administrator password in TDL"]
    );
    let with = corpus("valid-18-rootpw.tdl");
    assert_eq!(Template::parse(&with, &strict).unwrap().os.rootpw.as_deref(), Some("s3cret pass"));
}

#[test]
fn error_display_is_the_first_diagnostic_and_a_count() {
    let err = Template::parse(&corpus("invalid-86-many-errors.tdl"), &ParseOptions::default()).unwrap_err();
    assert_eq!(err.diagnostics().len(), 6);
    assert_eq!(
        err.to_string(),
        "line 1, column 1: <template>: Failed to find template name in TDL (and 5 more errors)"
    );
    let err = Template::parse(&corpus("invalid-72-extras-without-source-destination.tdl"), &ParseOptions::default())
        .unwrap_err();
    assert!(err.to_string().ends_with(" (and 1 more error)"), "{err}");
    let first = &err.diagnostics()[0];
    assert_eq!((first.line, first.column, first.element.as_str()), (10, 9, "directory"));
    let err = Template::parse("<template", &ParseOptions::default()).unwrap_err();
    assert_eq!(err.diagnostics().len(), 1);
    assert!(err.to_string().starts_with("line 1, column "), "{err}");
    assert!(err.to_string().contains("XML syntax error"), "{err}");
}

#[test]
fn messages_stay_on_one_line_even_with_hostile_values() {
    let xml =
        corpus("valid-02-simple-url.tdl").replace("<install type='url'>", "<install type='url&#10;injected: line'>");
    let err = Template::parse(&xml, &ParseOptions::default()).unwrap_err();
    assert_eq!(err.messages(), ["Unknown install type url\\ninjected: line in TDL"]);
    let long = "x".repeat(10_000);
    let xml = corpus("valid-02-simple-url.tdl").replace("<install type='url'>", &format!("<install type='{long}'>"));
    let err = Template::parse(&xml, &ParseOptions::default()).unwrap_err();
    assert!(err.to_string().len() < 200, "{}", err.to_string().len());
}

#[test]
fn doctype_and_entities_are_refused() {
    let err = Template::parse(&corpus("invalid-80-doctype-entities.tdl"), &ParseOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        "line 2, column 1: DOCTYPE declarations are not allowed in TDL (no DTDs, no entity definitions)"
    );
    // Even an external entity declaration that would never be fetched.
    let xxe = "<!DOCTYPE t [<!ENTITY x SYSTEM 'file:///etc/passwd'>]><template>&x;</template>";
    assert_eq!(
        messages(xxe, ParseOptions::default()),
        ["DOCTYPE declarations are not allowed in TDL (no DTDs, no entity definitions)"]
    );
    // Predefined entities and character references still work.
    let xml = corpus("valid-02-simple-url.tdl").replace("<name>test</name>", "<name>a&amp;b&#x41;</name>");
    assert_eq!(Template::parse(&xml, &ParseOptions::default()).unwrap().name, "a&bA");
}

/// A valid template padded with packages to about `bytes` long.
fn big_template(bytes: usize) -> String {
    let base = corpus("valid-02-simple-url.tdl");
    let mut packages = String::from("  <packages>\n");
    let mut i = 0;
    while base.len() + packages.len() < bytes - 60 {
        packages.push_str(&format!("    <package name='package-{i:06}'/>\n"));
        i += 1;
    }
    packages.push_str("  </packages>\n");
    base.replace("</template>", &format!("{packages}</template>"))
}

#[test]
fn a_one_mebibyte_template_parses() {
    let xml = big_template(1 << 20);
    assert!(xml.len() > 1_000_000 && xml.len() <= 1 << 20, "{}", xml.len());
    let t = Template::parse(&xml, &ParseOptions::default()).unwrap();
    assert!(t.packages.len() > 25_000, "{}", t.packages.len());
}

#[test]
fn oversized_documents_are_refused_with_one_line() {
    let xml = format!("<template><description>{}</description></template>", "x".repeat(MAX_DOCUMENT_BYTES));
    assert_eq!(
        messages(&xml, ParseOptions::default()),
        [format!("Document is {} bytes; the limit is 4194304 bytes (4 MiB)", xml.len())]
    );
}

#[test]
fn too_many_nodes_are_refused() {
    let xml = format!("<template>{}</template>", "<a/>".repeat(MAX_NODES as usize));
    assert!(xml.len() < MAX_DOCUMENT_BYTES);
    assert_eq!(
        messages(&xml, ParseOptions::default()),
        ["Document has more than 250000 XML nodes (or is nested too deeply); refusing to read it"]
    );
}

#[test]
fn deep_nesting_is_refused() {
    let depth = MAX_DEPTH + 1;
    let xml = format!("<template>{}{}</template>", "<a>".repeat(depth), "</a>".repeat(depth));
    let err = Template::parse(&xml, &ParseOptions::default()).unwrap_err();
    assert_eq!(err.messages(), ["Elements are nested more than 32 levels deep; refusing to read the document"]);
    // Just inside the limit the document is read, and the stray element reported.
    let xml = format!("<template>{}{}</template>", "<a>".repeat(MAX_DEPTH - 1), "</a>".repeat(MAX_DEPTH - 1));
    let err = Template::parse(&xml, &ParseOptions::default()).unwrap_err();
    let messages = err.messages();
    assert!(messages.iter().any(|m| m.starts_with("Unknown element <a> in <template>")), "{messages:?}");
    assert!(!messages.iter().any(|m| m.contains("nested")));
}

#[test]
fn merge_follows_oz_rules() {
    let mut t = parse("valid-11-description-packages-repositories.tdl");
    let fragment = Fragment::parse(
        "<template>
           <packages><package name='httpd'><arguments>-y</arguments></package><package name='extra'/></packages>
           <repositories><repository name='updates'><url>http://other.example.org/</url></repository></repositories>
           <files><file name='/etc/motd'>merged</file></files>
           <commands><command name='late'>echo late</command></commands>
           <precommands><command name='early'>echo early</command></precommands>
         </template>",
    )
    .unwrap();
    t.merge(&fragment);
    let packages: Vec<(&str, Option<&str>)> =
        t.packages.iter().map(|p| (p.name.as_str(), p.arguments.as_deref())).collect();
    assert_eq!(packages, [("mod_ssl", None), ("httpd", Some("-y")), ("extra", None)]);
    assert_eq!(t.repositories.len(), 1);
    assert_eq!(t.repositories[0].url, "http://other.example.org/");
    assert_eq!(t.files[0].content, "merged");
    assert_eq!(t.commands[0].name, "late");
    assert_eq!(t.precommands[0].name, "early");
}

#[test]
fn fragments_check_their_content_and_any_os_they_carry() {
    assert_eq!(
        Fragment::parse("<template><commands><command name='x'/></commands></template>").unwrap_err().messages(),
        ["Empty commands are not allowed"]
    );
    assert!(Fragment::parse("<template/>").unwrap().is_empty());
    let err = Fragment::parse("<template><os><name>Fedora</name></os></template>").unwrap_err();
    assert_eq!(
        err.messages(),
        [
            "Failed to find OS version in TDL",
            "Failed to find OS architecture in TDL",
            "Expected 1 OS install section in TDL, saw 0"
        ]
    );
    // A complete template is also a valid fragment.
    let f = Fragment::parse(&corpus("valid-11-description-packages-repositories.tdl")).unwrap();
    assert_eq!(f.packages.len(), 2);
    assert_eq!(
        Fragment::parse("<commands/>").unwrap_err().messages(),
        ["Expected 1 template section in TDL, saw 0 (the document element is <commands>)"]
    );
}

#[test]
fn templates_round_trip_through_json() {
    let t = parse("valid-71-extras-on-iso-install.tdl");
    let json = serde_json::to_string(&t).unwrap();
    let back: Template = serde_json::from_str(&json).unwrap();
    assert_eq!(back, t);
    assert!(json.contains("\"type\":\"iso\""), "{json}");
}

#[test]
fn a_document_with_many_errors_is_reported_quickly_and_capped() {
    // 100,000 nameless packages on one line: each one breaks a rule, and every
    // position is on the same very long line.
    let xml = format!("<template><packages>{}</packages></template>", "<package/>".repeat(100_000));
    let start = std::time::Instant::now();
    let err = Template::parse(&xml, &ParseOptions::default()).unwrap_err();
    assert!(start.elapsed() < std::time::Duration::from_secs(10));
    let diagnostics = err.diagnostics();
    assert_eq!(diagnostics.len(), MAX_DIAGNOSTICS + 1);
    assert_eq!(diagnostics[2].to_string(), "line 1, column 21: <package>: Package without a name was given");
    assert_eq!(diagnostics[MAX_DIAGNOSTICS].message, "Too many errors: 99002 more not shown (the limit is 1000)");
}

#[test]
fn merging_repeated_package_names_keeps_the_last() {
    let mut t = parse("valid-02-simple-url.tdl");
    t.packages = vec![Package::named("a"), Package::named("keep")];
    let fragment = Fragment {
        packages: vec![
            Package { arguments: Some("first".into()), ..Package::named("a") },
            Package::named("b"),
            Package { arguments: Some("second".into()), ..Package::named("a") },
        ],
        ..Fragment::default()
    };
    t.merge(&fragment);
    let got: Vec<(&str, Option<&str>)> = t.packages.iter().map(|p| (p.name.as_str(), p.arguments.as_deref())).collect();
    assert_eq!(got, [("keep", None), ("b", None), ("a", Some("second"))]);
}
