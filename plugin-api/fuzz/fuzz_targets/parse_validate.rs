//! Feeds arbitrary text to every TDL entry point. The reader must never panic,
//! whatever the input; and what it accepts must be internally consistent.
#![no_main]

use imagefactory_plugin_api::tdl::{Fragment, ParseOptions, TargetContentIncludes, Template, ARCHITECTURES};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(xml) = std::str::from_utf8(data) else {
        return;
    };
    for require_root_pw in [false, true] {
        match Template::parse(xml, &ParseOptions { require_root_pw }) {
            Ok(template) => {
                assert!(!template.name.is_empty());
                assert!(ARCHITECTURES.contains(&template.os.arch.as_str()));
                assert!(!require_root_pw || template.os.rootpw.is_some());
                assert!(template.commands.iter().all(|c| !c.content.is_empty()));
                assert!(template
                    .files
                    .iter()
                    .all(|f| f.data().is_some() || f.content_type == imagefactory_plugin_api::tdl::ContentType::Url));
            }
            Err(error) => {
                // Never an empty error, and every diagnostic fits on one line.
                assert!(!error.diagnostics().is_empty());
                assert!(!error.to_string().contains('\n'));
                for diagnostic in error.diagnostics() {
                    assert!(!diagnostic.message.is_empty());
                    assert!(!diagnostic.message.contains(['\n', '\r']));
                    assert!(diagnostic.line >= 1 && diagnostic.column >= 1);
                }
            }
        }
    }
    if let Ok(fragment) = Fragment::parse(xml) {
        let _ = fragment.is_empty();
    }
    if let Ok(includes) = TargetContentIncludes::parse(xml) {
        let _ = includes.select("ec2", "Fedora", "18", "x86_64");
    }
});
