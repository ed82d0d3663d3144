//! Rebuilds the host when a schema migration changes: `store/postgres.rs` embeds
//! `migrations/` at compile time.
fn main() {
    println!("cargo:rerun-if-changed=migrations");
}
