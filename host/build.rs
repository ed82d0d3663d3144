//! Rebuilds the host when a schema migration changes: `store/postgres.rs` embeds
//! `migrations/` at compile time.
//!
//! Links the binaries with packed relative relocations (`DT_RELR`, binutils 2.38 and
//! glibc 2.36 or newer, as in Debian 12): the dynamic loader then reads a few kB of
//! relocations at start instead of a megabyte of `.rela.dyn`, which stays out of the
//! daemon's resident memory.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.ends_with("-linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
