//! Plugin discovery (`PluginRegistry::discover` of a directory holding MockOS and
//! MockCloud) against a plain `dlopen` of the same two files through libloading, without
//! abi_stable's checks, in the same run. The ratio is what discovery adds to the dynamic
//! loader's own work: the abi_stable header and layout checks, the manifest, `init`.
//!
//! Loaded plugins are never unloaded, and the loader hands back the library it already
//! has for a path (or a file) it has seen, so loading the same file twice measures
//! nothing. Every iteration therefore loads fresh copies: new files in a new directory,
//! made before the clock starts. Bounded: `ITERATIONS` iterations, each loading two
//! plugins both ways (`4 * ITERATIONS` libraries stay mapped until the process ends).

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::{fmt_duration, median, percentile, print_header, print_row};
use imagefactory::plugins::PluginRegistry;

const ITERATIONS: usize = 50;
const PLUGINS: [&str; 2] = ["libmock_os.so", "libmock_cloud.so"];

/// Where the plugins are taken from: `IMAGEFACTORY_BENCH_PLUGIN_DIR`, or the build
/// directory of this bench binary (`cargo build --release --workspace` puts them there).
/// Missing plugins stop the bench: without them there is nothing to measure.
fn plugin_source() -> PathBuf {
    let dir = std::env::var_os("IMAGEFACTORY_BENCH_PLUGIN_DIR").map(PathBuf::from).unwrap_or_else(common::build_dir);
    for name in PLUGINS {
        let path = dir.join(name);
        assert!(
            path.is_file(),
            "{} is missing: build the test plugins first (cargo build --release --workspace), \
             or point IMAGEFACTORY_BENCH_PLUGIN_DIR at a directory holding {PLUGINS:?}",
            path.display()
        );
    }
    dir
}

/// Copies both plugins into a new directory `dir` (new files: new inodes, new paths).
fn fresh_copies(source: &Path, dir: &Path) -> Vec<PathBuf> {
    std::fs::create_dir(dir).expect("cannot make a scratch directory");
    PLUGINS
        .iter()
        .map(|name| {
            let to = dir.join(name);
            std::fs::copy(source.join(name), &to).expect("cannot copy a plugin");
            to
        })
        .collect()
}

/// Discovery of one directory; every plugin in it must load, or the time is of
/// something else (an error entry is much cheaper than a load).
fn time_discover(dir: &Path) -> Duration {
    let start = Instant::now();
    let registry = PluginRegistry::discover(&[dir.to_path_buf()]);
    let elapsed = start.elapsed();
    let entries = registry.entries();
    assert_eq!(entries.len(), PLUGINS.len(), "discovery found {} plugins in {}", entries.len(), dir.display());
    for e in entries {
        assert!(e.error.is_none(), "plugin {} did not load: {}", e.path.display(), e.error.as_deref().unwrap_or(""));
    }
    elapsed
}

/// `dlopen` of each file and nothing else. The libraries are leaked, as abi_stable leaks
/// the plugins, so both sides leave the process in the same state.
fn time_dlopen(files: &[PathBuf]) -> Duration {
    let start = Instant::now();
    for file in files {
        // SAFETY: the mock plugins' initialisers are the ones discovery runs too.
        let lib = unsafe { libloading::Library::new(file) }.expect("dlopen failed");
        std::mem::forget(lib);
    }
    start.elapsed()
}

fn main() {
    let source = plugin_source();
    let scratch = tempfile::tempdir().expect("cannot make a scratch directory");
    let (mut discover, mut dlopen) = (Vec::with_capacity(ITERATIONS), Vec::with_capacity(ITERATIONS));
    for i in 0..ITERATIONS {
        let registry_dir = scratch.path().join(format!("discover-{i}"));
        fresh_copies(&source, &registry_dir);
        let raw_dir = scratch.path().join(format!("dlopen-{i}"));
        let raw_files = fresh_copies(&source, &raw_dir);
        // Alternate which goes first, so neither always finds the other's work warm.
        if i % 2 == 0 {
            discover.push(time_discover(&registry_dir));
            dlopen.push(time_dlopen(&raw_files));
        } else {
            dlopen.push(time_dlopen(&raw_files));
            discover.push(time_discover(&registry_dir));
        }
        // The mappings stay; only the files go, to bound the disk used.
        for dir in [registry_dir, raw_dir] {
            std::fs::remove_dir_all(dir).expect("cannot remove a scratch directory");
        }
    }

    let mapped = mapped_copies(scratch.path());
    assert_eq!(mapped, 4 * ITERATIONS, "some loads reused a library already mapped: the figures are not of real loads");

    let (first_discover, first_dlopen) = (discover[0], dlopen[0]);
    let (discover_med, dlopen_med) = (median(&mut discover), median(&mut dlopen));
    let two = PLUGINS.len() as u32;
    print_header(
        &format!("discovery: {} plugins, {ITERATIONS} iterations of fresh copies", PLUGINS.len()),
        "discover",
        "plain dlopen",
    );
    let ratio = common::ratio(discover_med, dlopen_med);
    print_row("median, whole directory", &fmt_duration(discover_med), &fmt_duration(dlopen_med), ratio);
    print_row("median, per plugin", &fmt_duration(discover_med / two), &fmt_duration(dlopen_med / two), ratio);
    let (discover_p90, dlopen_p90) = (percentile(&discover, 0.9), percentile(&dlopen, 0.9));
    print_row(
        "p90, whole directory",
        &fmt_duration(discover_p90),
        &fmt_duration(dlopen_p90),
        common::ratio(discover_p90, dlopen_p90),
    );
    print_row(
        "first iteration, whole directory",
        &fmt_duration(first_discover),
        &fmt_duration(first_dlopen),
        common::ratio(first_discover, first_dlopen),
    );
    println!("(plugins from {}; {mapped} distinct copies loaded)", source.display());
}

/// How many distinct plugin copies under `scratch` this process has mapped: proof that
/// every load above was a real one, not the loader's cache.
fn mapped_copies(scratch: &Path) -> usize {
    let maps = std::fs::read_to_string("/proc/self/maps").expect("cannot read /proc/self/maps");
    let prefix = scratch.to_string_lossy();
    let files: std::collections::HashSet<&str> =
        maps.lines().filter_map(|l| l.split_whitespace().nth(5)).filter(|f| f.starts_with(prefix.as_ref())).collect();
    files.len()
}
