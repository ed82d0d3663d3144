//! The image store and the API listing with 10,000 stored images, each against the same
//! operation on a store of 100 images (the baseline) in the same run: the ratio 10k/100
//! shows how an operation grows with the size of the store.
//!
//! For a listing of every image the answer itself grows 100-fold, so a ratio near 100 is
//! the floor there; for `get` of one id and for a selective query it should stay near 1.
//!
//! Both stores are written through `FileStore::add`, the product's own write path (atomic
//! and fsynced), once, before anything is timed. Bounded: fixed samples and iterations.

mod common;

use std::path::Path;

use common::{compare, print_comparison, print_header, Client};
use imagefactory::engine::Engine;
use imagefactory::image::ImageKind;
use imagefactory::store::{FileStore, ImageStore, Query};

const LARGE: usize = 10_000;
const SMALL: usize = 100;
/// Alternating samples per comparison; the medians are reported.
const SAMPLES: usize = 11;

/// One store under test: its directory, an engine over it, the API served over that
/// engine, and a connection to it.
struct Fixture {
    dir: tempfile::TempDir,
    ids: Vec<String>,
    engine: Engine,
    client: Client,
}

impl Fixture {
    fn new(runtime: &tokio::runtime::Runtime, count: usize) -> Fixture {
        let (dir, ids) = common::populated_dir(count);
        let engine = common::engine(dir.path());
        let client = runtime.block_on(async {
            let addr = common::serve(engine.clone(), dir.path()).await;
            Client::connect(addr).await
        });
        Fixture { dir, ids, engine, client }
    }

    fn store(&self) -> &dyn ImageStore {
        self.engine.store()
    }

    /// An id from the middle of the store, so no test favours the first or last written.
    fn some_id(&self) -> &str {
        &self.ids[self.ids.len() / 2]
    }
}

/// Runs `op` on the large fixture (`large_iters` calls per sample) and on the small one
/// (`small_iters`), alternating, and prints the row.
fn row(
    measure: &str,
    large: &mut Fixture,
    small: &mut Fixture,
    (large_iters, small_iters): (u32, u32),
    op: impl Fn(&mut Fixture),
) {
    let c = compare(SAMPLES, (large_iters, &mut || op(large)), (small_iters, &mut || op(small)));
    print_comparison(measure, c);
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("cannot start tokio");
    let started = std::time::Instant::now();
    let mut large = Fixture::new(&runtime, LARGE);
    let mut small = Fixture::new(&runtime, SMALL);
    eprintln!("store_list: wrote {} images through FileStore::add in {:.1?}", LARGE + SMALL, started.elapsed());

    print_header(
        &format!("store_list: {LARGE} stored images vs {SMALL}"),
        &format!("{LARGE} images"),
        &format!("{SMALL} images"),
    );
    let all_base = Query::kind(ImageKind::BaseImage);
    row("Store::query, all base images", &mut large, &mut small, (5, 400), |f| {
        assert_eq!(f.store().query(&all_base).unwrap().len(), f.ids.len());
    });
    // What GET of a base image asks for (its target images): a selective query.
    row("Store::query, target images of one base", &mut large, &mut small, (20, 2_000), |f| {
        let q = Query { base_image_id: Some(f.some_id().to_string()), ..Query::kind(ImageKind::TargetImage) };
        assert!(f.store().query(&q).unwrap().is_empty());
    });
    row("Store::get, one id", &mut large, &mut small, (20_000, 20_000), |f| {
        assert!(f.store().get(f.some_id()).unwrap().is_some());
    });
    row("Store::open (start-up scan)", &mut large, &mut small, (1, 100), |f| {
        let reopened = FileStore::open(f.dir.path()).expect("cannot reopen the store");
        assert_eq!(reopened.query(&all_base).unwrap().len(), f.ids.len());
    });
    row("API GET /imagefactory/base_images (list)", &mut large, &mut small, (2, 200), |f| {
        runtime.block_on(f.client.get("/imagefactory/base_images"));
    });
    row("API GET /imagefactory/base_images/<id>", &mut large, &mut small, (50, 2_000), |f| {
        let path = format!("/imagefactory/base_images/{}", f.some_id());
        runtime.block_on(f.client.get(&path));
    });
    print_sizes(&mut large, &runtime, LARGE);
    check_dir(large.dir.path());
}

/// The size of the 10,000-image listing, for the reader of the figures.
fn print_sizes(large: &mut Fixture, runtime: &tokio::runtime::Runtime, count: usize) {
    let bytes = runtime.block_on(large.client.get("/imagefactory/base_images"));
    println!("(the listing of {count} images is {:.1} MB of JSON)", bytes as f64 / 1e6);
}

/// The store directory must still hold exactly the images written (nothing timed above
/// writes), or the figures were taken over something else.
fn check_dir(dir: &Path) {
    let metas = std::fs::read_dir(dir)
        .expect("cannot list the store")
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().ends_with(".meta"))
        .count();
    assert_eq!(metas, LARGE, "the large store changed during the bench");
}
