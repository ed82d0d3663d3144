//! Parse + validate throughput of the TDL reader: a typical template (the
//! f18utility example from imagefactory's documentation) and a 1 MiB template
//! (the same, padded with packages), the largest a user is likely to send.
//!
//! Run: `cargo bench -p imagefactory-plugin-api --bench tdl`

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use imagefactory_plugin_api::tdl::{ParseOptions, Template};

const TYPICAL: &str = include_str!("../tests/tdl/seed-f18utility.tdl");

fn one_mebibyte_template() -> String {
    let mut packages = String::from("  <packages>\n");
    let mut i = 0;
    while TYPICAL.len() + packages.len() < (1 << 20) - 60 {
        packages.push_str(&format!("    <package name='package-{i:06}'/>\n"));
        i += 1;
    }
    packages.push_str("  </packages>\n");
    // The seed already has a <packages>; a second section would be an error, so
    // put the padding inside the existing one.
    TYPICAL.replacen("  <packages>\n", &packages.replacen("  </packages>\n", "", 1), 1)
}

fn bench(c: &mut Criterion) {
    let options = ParseOptions::default();
    let large = one_mebibyte_template();
    assert!(Template::parse(&large, &options).is_ok(), "bench input must be valid");

    let mut group = c.benchmark_group("tdl_parse_validate");
    group.throughput(Throughput::Bytes(TYPICAL.len() as u64));
    group.bench_function("typical", |b| b.iter(|| Template::parse(black_box(TYPICAL), &options)));
    group.throughput(Throughput::Bytes(large.len() as u64));
    group.sample_size(20);
    group.bench_function("1MiB", |b| b.iter(|| Template::parse(black_box(&large), &options)));
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
