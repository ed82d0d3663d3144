//! The template corpus in `tests/tdl/`: every file, its exact outcome, and the
//! exact text of every diagnostic (line, column, element and message).
//!
//! Files are named `valid-NN-*` or `invalid-NN-*`; numbers up to 65 follow Oz's
//! own `tests/tdl/test-NN-*.tdl` corpus so the two can be compared rule by rule,
//! later numbers cover what Oz's corpus does not. `seed-*` files are the
//! templates from imagefactory's documentation.

use std::collections::BTreeSet;
use std::path::Path;

use imagefactory_plugin_api::tdl::{Fragment, ParseOptions, Template};

#[derive(Clone, Copy, Debug)]
enum Kind {
    Template,
    Fragment,
}

/// One corpus file; `expect` empty means the file must parse.
struct Case {
    file: &'static str,
    kind: Kind,
    expect: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        file: "invalid-03-empty-template.tdl",
        kind: Kind::Template,
        expect: &[
            "line 1, column 1: <template>: Failed to find template name in TDL",
            "line 1, column 1: <template>: Expected 1 OS section in TDL, saw 0",
        ],
    },
    Case {
        file: "invalid-04-no-os.tdl",
        kind: Kind::Template,
        expect: &[
            "line 1, column 1: <template>: Expected 1 OS section in TDL, saw 0",
        ],
    },
    Case {
        file: "invalid-05-no-name.tdl",
        kind: Kind::Template,
        expect: &[
            "line 1, column 1: <template>: Failed to find template name in TDL",
        ],
    },
    Case {
        file: "invalid-09-os-invalid-arch.tdl",
        kind: Kind::Template,
        expect: &[
            "line 6, column 5: <arch>: Architecture must be one of 'i386, x86_64, ppc64, ppc64le, armv7l, aarch64, or s390x'",
        ],
    },
    Case {
        file: "invalid-10-os-invalid-install-type.tdl",
        kind: Kind::Template,
        expect: &[
            "line 7, column 14: <install>: Unknown install type floppy in TDL",
        ],
    },
    Case {
        file: "invalid-12-os-no-name.tdl",
        kind: Kind::Template,
        expect: &[
            "line 3, column 3: <os>: Failed to find OS name in TDL",
        ],
    },
    Case {
        file: "invalid-13-os-no-version.tdl",
        kind: Kind::Template,
        expect: &[
            "line 3, column 3: <os>: Failed to find OS version in TDL",
        ],
    },
    Case {
        file: "invalid-14-os-no-arch.tdl",
        kind: Kind::Template,
        expect: &[
            "line 3, column 3: <os>: Failed to find OS architecture in TDL",
        ],
    },
    Case {
        file: "invalid-15-os-no-install.tdl",
        kind: Kind::Template,
        expect: &[
            "line 3, column 3: <os>: Expected 1 OS install section in TDL, saw 0",
        ],
    },
    Case {
        file: "invalid-17-repo-invalid-signed.tdl",
        kind: Kind::Template,
        expect: &[
            "line 14, column 7: <signed>: Repository signed property must be 'true', 'yes', 'false', or 'no'",
        ],
    },
    Case {
        file: "invalid-20-multiple-install.tdl",
        kind: Kind::Template,
        expect: &[
            "line 10, column 5: <install>: Expected 1 OS install section in TDL, saw 2",
        ],
    },
    Case {
        file: "invalid-21-missing-install-type.tdl",
        kind: Kind::Template,
        expect: &[
            "line 7, column 5: <install>: Failed to find OS install type in TDL",
        ],
    },
    Case {
        file: "invalid-25-md5sum-and-sha1sum.tdl",
        kind: Kind::Template,
        expect: &[
            "line 10, column 7: <sha1sum>: Only one of <md5sum>, <sha1sum>, and <sha256sum> can be specified",
        ],
    },
    Case {
        file: "invalid-26-md5sum-and-sha256sum.tdl",
        kind: Kind::Template,
        expect: &[
            "line 10, column 7: <sha256sum>: Only one of <md5sum>, <sha1sum>, and <sha256sum> can be specified",
        ],
    },
    Case {
        file: "invalid-27-sha1sum-and-sha256sum.tdl",
        kind: Kind::Template,
        expect: &[
            "line 10, column 7: <sha1sum>: Only one of <md5sum>, <sha1sum>, and <sha256sum> can be specified",
        ],
    },
    Case {
        file: "invalid-28-package-no-name.tdl",
        kind: Kind::Template,
        expect: &[
            "line 13, column 5: <package>: Package without a name was given",
        ],
    },
    Case {
        file: "invalid-30-file-no-name.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <file>: File without a name was given",
        ],
    },
    Case {
        file: "invalid-33-file-invalid-type.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 28: <file>: Type for /etc/motd must be 'raw', 'url' or 'base64'",
        ],
    },
    Case {
        file: "invalid-34-file-invalid-base64.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <file>: Content of file /etc/motd is not valid base64",
        ],
    },
    Case {
        file: "invalid-35-repository-no-name.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <repository>: Repository without a name was given",
        ],
    },
    Case {
        file: "invalid-36-repository-no-url.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <repository>: Failed to find repository url in TDL",
        ],
    },
    Case {
        file: "invalid-38-command-no-name.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <command>: Command without a name was given",
        ],
    },
    Case {
        file: "invalid-41-command-bogus-base64.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <command>: Content of command b64 is not valid base64",
        ],
    },
    Case {
        file: "invalid-42-command-bogus-type.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 27: <command>: Type for weird must be 'raw', 'url' or 'base64'",
        ],
    },
    Case {
        file: "invalid-45-bogus-version.tdl",
        kind: Kind::Template,
        expect: &[
            "line 1, column 11: <template>: TDL version (2.0) is higher than our known version (1.0)",
        ],
    },
    Case {
        file: "invalid-46-duplicate-name.tdl",
        kind: Kind::Template,
        expect: &[
            "line 3, column 3: <name>: Expected 0 or 1 template name in TDL, saw 2",
        ],
    },
    Case {
        file: "invalid-47-invalid-template.tdl",
        kind: Kind::Template,
        expect: &[
            "line 1, column 1: <templat>: Expected 1 template section in TDL, saw 0 (the document element is <templat>)",
        ],
    },
    Case {
        file: "invalid-50-command-base64-empty.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <command>: Empty commands are not allowed",
        ],
    },
    Case {
        file: "invalid-56-invalid-disk-size.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <size>: Invalid disk size; it must be specified as an integer size with an optional SI or IEC unit suffix, e.g. '10TB' or '16GiB'",
        ],
    },
    Case {
        file: "invalid-57-invalid-disk-size-no-number.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <size>: Invalid disk size; it must be specified as an integer size with an optional SI or IEC unit suffix, e.g. '10TB' or '16GiB'",
        ],
    },
    Case {
        file: "invalid-60-command-mix-positions-and-not.tdl",
        kind: Kind::Template,
        expect: &[
            "line 11, column 3: <commands>: All command elements must have a position (explicit order), or none of them may (implicit order)",
        ],
    },
    Case {
        file: "invalid-61-command-duplicate-position.tdl",
        kind: Kind::Template,
        expect: &[
            "line 11, column 3: <commands>: Cannot have duplicate or sparse command position order!",
        ],
    },
    Case {
        file: "invalid-62-repository-localhost.tdl",
        kind: Kind::Template,
        expect: &[
            "line 13, column 7: <url>: Repositories cannot be localhost, since they must be reachable from the guest operating system",
        ],
    },
    Case {
        file: "invalid-66-command-sparse-position.tdl",
        kind: Kind::Template,
        expect: &[
            "line 11, column 3: <commands>: Cannot have duplicate or sparse command position order!",
        ],
    },
    Case {
        file: "invalid-67-command-whitespace-only.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <command>: Empty commands are not allowed",
        ],
    },
    Case {
        file: "invalid-69-precommands-position.tdl",
        kind: Kind::Template,
        expect: &[
            "line 11, column 3: <precommands>: Cannot have duplicate or sparse command position order!",
        ],
    },
    Case {
        file: "invalid-70-extras-on-url-install.tdl",
        kind: Kind::Template,
        expect: &[
            "line 9, column 7: <extras>: Extra ISO data can only be used with iso install type",
        ],
    },
    Case {
        file: "invalid-72-extras-without-source-destination.tdl",
        kind: Kind::Template,
        expect: &[
            "line 10, column 9: <directory>: Extra ISO element without a source was given",
            "line 11, column 9: <file>: Extra ISO element without a destination was given",
        ],
    },
    Case {
        file: "invalid-74-unknown-element.tdl",
        kind: Kind::Template,
        expect: &[
            "line 11, column 3: <packagez>: Unknown element <packagez> in <template>; expected one of: name, os, description, packages, repositories, files, commands, precommands, disk",
        ],
    },
    Case {
        file: "invalid-75-unknown-attribute.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 23: <package>: Unknown attribute 'version' on <package>",
        ],
    },
    Case {
        file: "invalid-76-text-in-os.tdl",
        kind: Kind::Template,
        expect: &[
            "line 3, column 3: <os>: Unexpected text in <os>; it may only contain elements",
        ],
    },
    Case {
        file: "invalid-77-repository-loopback-variants.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 26: <url>: Repositories cannot be localhost, since they must be reachable from the guest operating system",
            "line 13, column 26: <url>: Repositories cannot be localhost, since they must be reachable from the guest operating system",
            "line 14, column 26: <url>: Repositories cannot be localhost, since they must be reachable from the guest operating system",
            "line 15, column 26: <url>: Repositories cannot be localhost, since they must be reachable from the guest operating system",
            "line 16, column 26: <url>: Repositories cannot be localhost, since they must be reachable from the guest operating system",
        ],
    },
    Case {
        file: "invalid-78-repository-invalid-persisted-sslverify.tdl",
        kind: Kind::Template,
        expect: &[
            "line 14, column 7: <persisted>: Repository persisted property must be 'true', 'yes', 'false', or 'no'",
            "line 15, column 7: <sslverify>: Repository sslverify property must be 'true', 'yes', 'false', or 'no'",
        ],
    },
    Case {
        file: "invalid-79-file-relative-path.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 11: <file>: File name etc/motd must be an absolute path",
        ],
    },
    Case {
        file: "invalid-80-doctype-entities.tdl",
        kind: Kind::Template,
        expect: &[
            "line 2, column 1: DOCTYPE declarations are not allowed in TDL (no DTDs, no entity definitions)",
        ],
    },
    Case {
        file: "invalid-81-xml-syntax-error.tdl",
        kind: Kind::Template,
        expect: &[
            "line 2, column 15: XML syntax error: expected 'name' tag, not 'nam'",
        ],
    },
    Case {
        file: "invalid-82-version-not-a-number.tdl",
        kind: Kind::Template,
        expect: &[
            "line 1, column 11: <template>: TDL version (one) is not a number like 1.0",
        ],
    },
    Case {
        file: "invalid-84-disk-size-zero.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <size>: Disk size must be greater than zero",
        ],
    },
    Case {
        file: "invalid-85-disk-size-too-large.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 5: <size>: Disk size is too large; it must be less than 16 EiB",
        ],
    },
    Case {
        file: "invalid-86-many-errors.tdl",
        kind: Kind::Template,
        expect: &[
            "line 1, column 1: <template>: Failed to find template name in TDL",
            "line 5, column 5: <arch>: Architecture must be one of 'i386, x86_64, ppc64, ppc64le, armv7l, aarch64, or s390x'",
            "line 11, column 5: <package>: Package without a name was given",
            "line 14, column 26: <url>: Repositories cannot be localhost, since they must be reachable from the guest operating system",
            "line 17, column 5: <command>: Empty commands are not allowed",
            "line 19, column 9: <size>: Invalid disk size; it must be specified as an integer size with an optional SI or IEC unit suffix, e.g. '10TB' or '16GiB'",
        ],
    },
    Case {
        file: "invalid-88-package-repeated-child.tdl",
        kind: Kind::Template,
        expect: &[
            "line 14, column 7: <repository>: Expected 0 or 1 package repository section in TDL, saw 2",
        ],
    },
    Case {
        file: "invalid-89-install-elements-of-other-type.tdl",
        kind: Kind::Template,
        expect: &[
            "line 9, column 7: <iso>: <iso> cannot be used with the url install type",
        ],
    },
    Case {
        file: "invalid-90-url-install-without-url.tdl",
        kind: Kind::Template,
        expect: &[
            "line 7, column 5: <install>: Failed to find OS install URL in TDL",
        ],
    },
    Case {
        file: "invalid-91-iso-install-without-iso.tdl",
        kind: Kind::Template,
        expect: &[
            "line 7, column 5: <install>: Failed to find OS install ISO in TDL",
        ],
    },
    Case {
        file: "invalid-93-icicle-without-command.tdl",
        kind: Kind::Template,
        expect: &[
            "line 10, column 5: <icicle>: Failed to find extra icicle command in TDL",
        ],
    },
    Case {
        file: "invalid-94-namespaced-template.tdl",
        kind: Kind::Template,
        expect: &[
            "line 1, column 1: <template>: Expected 1 template section in TDL, saw 0 (the document element is <{http://example.org/tdl}template>)",
        ],
    },
    Case {
        file: "invalid-97-command-position-not-a-number.tdl",
        kind: Kind::Template,
        expect: &[
            "line 12, column 23: <command>: Command position 'first' must be a whole number",
        ],
    },
    Case {
        file: "invalid-99-two-os-sections.tdl",
        kind: Kind::Template,
        expect: &[
            "line 11, column 3: <os>: Expected 1 OS section in TDL, saw 2",
        ],
    },
    Case { file: "seed-f12jeos.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "seed-f18utility.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "seed-fragment-livecd-commands.tdl", kind: Kind::Fragment, expect: &[] },
    Case { file: "valid-01-simple-iso.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-02-simple-url.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-06-iso-description.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-07-packages-no-package.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-08-repositories-no-repository.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-11-description-packages-repositories.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-16-signed-repository.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-18-rootpw.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-19-key.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-22-md5sum.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-23-sha1sum.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-24-sha256sum.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-29-files.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-31-file-raw-type.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-32-file-base64-type.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-37-command.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-39-command-raw-type.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-40-command-base64-type.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-43-persisted-repos.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-44-version.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-48-file-empty-base64.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-49-file-empty-raw.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-51-disk-size.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-52-command-file-url.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-53-files-http-url.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-58-disk-size-terabyte.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-59-command-sorting.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-63-disk-size-exbibyte.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-64-disk-size-si.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-65-disk-size-byte.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-68-precommands.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-71-extras-on-iso-install.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-73-url-install-empty-extras.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-83-older-version.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-87-package-details.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-92-icicle-kernelparam.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-95-all-architectures-aarch64.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-96-empty-rootpw-counts-as-absent.tdl", kind: Kind::Template, expect: &[] },
    Case { file: "valid-98-duplicate-files-and-repos-last-wins.tdl", kind: Kind::Template, expect: &[] },
];

fn corpus_dir() -> &'static Path {
    Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/tests/tdl"))
}

fn outcome(case: &Case) -> Vec<String> {
    let path = corpus_dir().join(case.file);
    let xml = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("cannot read {}: {e}", path.display()));
    let result = match case.kind {
        Kind::Template => Template::parse(&xml, &ParseOptions::default()).map(drop),
        Kind::Fragment => Fragment::parse(&xml).map(drop),
    };
    match result {
        Ok(()) => Vec::new(),
        Err(error) => error.diagnostics().iter().map(|d| d.to_string()).collect(),
    }
}

#[test]
fn every_corpus_file_has_its_exact_outcome() {
    let mut failures = Vec::new();
    for case in CASES {
        let got = outcome(case);
        if got != case.expect {
            failures.push(format!("{}:\n  expected {:#?}\n  got {:#?}", case.file, case.expect, got));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn file_names_say_whether_the_template_is_valid() {
    for case in CASES {
        if case.file.starts_with("valid-") || case.file.starts_with("seed-") {
            assert!(case.expect.is_empty(), "{} should be valid", case.file);
        } else {
            assert!(case.file.starts_with("invalid-"), "{}", case.file);
            assert!(!case.expect.is_empty(), "{} should be invalid", case.file);
        }
    }
}

#[test]
fn the_corpus_is_large_and_fully_listed() {
    let listed: BTreeSet<&str> = CASES.iter().map(|c| c.file).collect();
    assert_eq!(listed.len(), CASES.len(), "a file is listed twice");
    let on_disk: BTreeSet<String> = std::fs::read_dir(corpus_dir())
        .expect("corpus directory")
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".tdl"))
        .collect();
    let listed: BTreeSet<String> = listed.iter().map(|s| s.to_string()).collect();
    assert_eq!(on_disk, listed, "every .tdl file in tests/tdl needs a CASES entry");
    assert!(CASES.len() >= 60, "only {} templates", CASES.len());
    let valid = CASES.iter().filter(|c| c.expect.is_empty()).count();
    assert!(valid >= 30 && CASES.len() - valid >= 30);
}
