//! Helpers shared by the Debian plugin's tests, over the workspace's testkit.

#![allow(dead_code, unused_imports)]

pub use testkit::{token, Factory};

/// A private imagefactory with the Debian plugin (see `testkit::Factory`).
pub fn debian_factory() -> Factory {
    Factory::new(&["libdebian_os.so"], serde_json::json!({}))
}

/// A Debian template: `os_extra` goes inside `<os>` (rootpw...), `body` after it.
pub fn template(name: &str, version: &str, arch: &str, os_extra: &str, body: &str) -> String {
    format!(
        "<template><name>{name}</name><os><name>Debian</name><version>{version}</version><arch>{arch}</arch>\
<install type='url'><url>host</url></install>{os_extra}</os>{body}</template>"
    )
}

/// Builds with the CLI and returns the new image's id; panics with the build log's tail.
pub fn build(f: &Factory, args: &[&str], deadline: std::time::Duration) -> String {
    let run = f.run(args, deadline);
    let id = run.field("UUID:").unwrap_or_default();
    if !run.stdout.contains("Image build completed SUCCESSFULLY!") {
        panic!(
            "imagefactory {args:?} failed:\n{}\n{}\nbuild log (tail):\n{}",
            run.stdout,
            run.stderr,
            testkit::boot::tail(&f.build_log(&id), 60)
        );
    }
    id
}
