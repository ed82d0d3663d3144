//! The PostgreSQL store against a real server (a private cluster per test, from Debian's
//! `postgresql` package; see `scripts/setup.d/60-postgres.sh`).

use std::time::Duration;

use imagefactory::image::{ImageKind, ImageRecord, Status};
use imagefactory::store::{ImageStore, PgStore, Query, StoreError};
use testkit::postgres::PgServer;

fn record(kind: ImageKind, id: &str) -> ImageRecord {
    ImageRecord::new(kind, id.to_string(), format!("/x/{id}.body"))
}

const B1: &str = "6a0e1c3e-0000-4000-8000-0000000000b1";
const B2: &str = "6a0e1c3e-0000-4000-8000-0000000000b2";
const T1: &str = "6a0e1c3e-0000-4000-8000-0000000000f1";

#[test]
fn records_logs_and_files_round_trip_and_two_stores_share_them() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = PgStore::open(&pg.url(), dir.path()).expect("open the store (and migrate)");
    // A second daemon on the same database and the same bodies directory.
    let b = PgStore::open(&pg.url(), dir.path()).expect("open it again (nothing to migrate)");
    assert_eq!(pg.psql("SELECT count(*) FROM refinery_schema_history").trim(), "3", "every migration applied");

    let g0 = b.generation().unwrap();
    assert_eq!(b.generation().unwrap(), g0, "nothing changed");
    let mut base = record(ImageKind::BaseImage, B1);
    base.created = 100;
    a.add(&base).unwrap();
    assert!(dir.path().join(format!("{B1}.body")).exists(), "add makes the empty body");
    let g1 = b.generation().unwrap();
    assert_ne!(g1, g0, "an add by one store moves the other's generation");
    assert_eq!(b.get(B1).unwrap().unwrap(), base, "the other store reads the same record");

    let mut target = record(ImageKind::TargetImage, T1);
    target.created = 50;
    target.base_image_id = Some(B1.into());
    b.add(&target).unwrap();
    let mut other = record(ImageKind::BaseImage, B2);
    other.created = 10;
    a.add(&other).unwrap();

    base.status = Status::Complete;
    base.percent_complete = 100;
    a.save(&base).unwrap();
    assert_eq!(b.get(B1).unwrap().unwrap().status, Status::Complete);
    assert_eq!(a.query(&Query::default()).unwrap().len(), 3);
    let bases: Vec<String> = b.query_ids(&Query::kind(ImageKind::BaseImage)).unwrap();
    assert_eq!(bases, vec![B2.to_string(), B1.to_string()], "oldest first");
    let children = b.query(&Query { base_image_id: Some(B1.into()), ..Query::default() }).unwrap();
    assert_eq!(children.iter().map(|r| r.identifier.as_str()).collect::<Vec<_>>(), vec![T1]);
    let complete = a.query(&Query { status: Some(Status::Complete), ..Query::default() }).unwrap();
    assert_eq!(complete.len(), 1);
    assert!(a.get("../etc/passwd").unwrap().is_none());
    assert!(a.get("6a0e1c3e-0000-4000-8000-000000000000").unwrap().is_none());

    a.append_log(B1, "INFO first");
    b.append_log(B1, "INFO second\nline");
    a.append_log(T1, "INFO other image");
    assert_eq!(b.build_log(B1).unwrap(), "INFO first\nINFO second line\n");

    let g2 = a.generation().unwrap();
    (&a as &dyn ImageStore).write_file(B1, "console.log", b"boot\n").unwrap();
    b.remove(B1).unwrap();
    assert_ne!(a.generation().unwrap(), g2, "a remove moves the generation");
    assert!(a.get(B1).unwrap().is_none());
    assert_eq!(a.build_log(B1).unwrap(), "", "the log goes with the image");
    assert_eq!(a.build_log(T1).unwrap(), "INFO other image\n", "other logs stay");
    assert!(!dir.path().join(format!("{B1}.body")).exists());
    assert!(!dir.path().join(format!("{B1}.files")).exists());
}

#[test]
fn build_locks_are_exclusive_across_stores_and_end_with_their_holder() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let a = PgStore::open(&pg.url(), dir.path()).unwrap();
    let b = PgStore::open(&pg.url(), dir.path()).unwrap();
    let held = a.try_lock(B1).unwrap().expect("a free lock");
    assert!(b.try_lock(B1).unwrap().is_none(), "another store must not get a held lock");
    assert!(a.try_lock(B1).unwrap().is_none(), "nor the same store twice");
    assert!(b.try_lock(B2).unwrap().is_some(), "another image's lock is free");
    drop(held);
    let again = b.try_lock(B1).unwrap().expect("free once its holder let go");
    // A holder that vanishes (its process or machine gone) loses its connection, and the
    // lock with it.
    pg.psql("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'imagefactoryd' AND query LIKE '%pg_try_advisory_lock%'");
    testkit::wait_until(Duration::from_secs(10), "the lock of a dead holder to be free", || {
        a.try_lock(B1).unwrap().is_some()
    });
    drop(again);
}

#[test]
fn a_database_newer_than_this_build_is_refused_in_one_line() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    drop(PgStore::open(&pg.url(), dir.path()).unwrap());
    pg.psql(
        "INSERT INTO refinery_schema_history (version, name, applied_on, checksum) VALUES (999, 'from_the_future', '', '0')",
    );
    let err = match PgStore::open(&pg.url(), dir.path()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("a database with schema version 999 was accepted"),
    };
    assert!(err.contains("schema version 999") && err.contains("upgrade imagefactory"), "{err}");
    assert!(!err.contains('\n'), "one line: {err}");
}

#[test]
fn an_unreachable_server_is_one_line_and_the_store_recovers_when_it_returns() {
    let mut pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    // A password in the URL (trust auth ignores it) must never show up in an error.
    let url = pg.url().replace("postgres@", "postgres:s3cret-pw@");
    let store = PgStore::open(&url, dir.path()).unwrap();
    store.add(&record(ImageKind::BaseImage, B1)).unwrap();
    pg.stop();
    let err = store.get(B1).expect_err("a stopped server cannot answer");
    assert!(matches!(err, StoreError::Unavailable(_)), "{err:?}");
    let text = err.to_string();
    assert!(text.contains(&format!("127.0.0.1:{}/imagefactory", pg.port)), "names the server: {text}");
    assert!(!text.contains("s3cret-pw") && !text.contains('\n'), "{text}");
    assert!(store.generation().is_err() && store.query(&Query::default()).is_err());
    pg.start_again();
    // The pooled connections died with the server; the store reconnects by itself.
    assert_eq!(store.get(B1).unwrap().unwrap().identifier, B1);
    assert_eq!(store.query_ids(&Query::default()).unwrap(), vec![B1.to_string()]);
    let fresh = PgStore::open(&url, dir.path()).unwrap();
    assert!(fresh.get(B1).unwrap().is_some(), "nothing was lost");
}

#[test]
fn an_unreachable_server_at_open_is_one_line() {
    let port = testkit::free_port();
    let dir = tempfile::tempdir().unwrap();
    let err = match PgStore::open(&format!("postgres://u:pw@127.0.0.1:{port}/db"), dir.path()) {
        Err(e) => e.to_string(),
        Ok(_) => panic!("opened a store on a port nobody listens on"),
    };
    assert!(err.contains(&format!("127.0.0.1:{port}/db")) && !err.contains("pw@") && !err.contains('\n'), "{err}");
}

#[test]
fn prepared_statements_survive_a_lost_connection_and_a_changed_table() {
    let pg = PgServer::start();
    let dir = tempfile::tempdir().unwrap();
    let store = PgStore::open(&pg.url(), dir.path()).unwrap();
    let mut base = record(ImageKind::BaseImage, B1);
    base.created = 1;
    store.add(&base).unwrap();
    let mut target = record(ImageKind::TargetImage, T1);
    target.created = 2;
    target.base_image_id = Some(B1.into());
    store.add(&target).unwrap();
    let children = Query { base_image_id: Some(B1.into()), ..Query::kind(ImageKind::TargetImage) };
    // Every hot statement prepared (and cached) on the one pooled connection.
    for _ in 0..2 {
        assert_eq!(store.get(B1).unwrap().unwrap(), base);
        assert_eq!(store.query_ids(&children).unwrap(), vec![T1.to_string()]);
        store.generation().unwrap();
    }
    let backends = |pg: &PgServer| {
        pg.psql("SELECT pid FROM pg_stat_activity WHERE application_name = 'imagefactoryd'").trim().to_string()
    };
    let before = backends(&pg);
    assert!(!before.is_empty(), "the store keeps a pooled connection");

    // The server ends the pooled connection (an administrator, a failover, a restart).
    pg.psql(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE application_name = 'imagefactoryd' AND pid <> pg_backend_pid()",
    );
    testkit::wait_until(Duration::from_secs(10), "the terminated backend to be gone", || backends(&pg).is_empty());
    // The call that finds the connection dead runs again on a new one, which prepares
    // its statements afresh: no error reaches the caller.
    assert_eq!(store.get(B1).unwrap().unwrap(), base, "the first call after the loss");
    let after = backends(&pg);
    assert!(!after.is_empty() && after != before, "a new connection: {before} then {after}");
    assert_eq!(store.query_ids(&children).unwrap(), vec![T1.to_string()]);
    store.generation().unwrap();
    base.status = Status::Complete;
    store.save(&base).unwrap();
    store.append_log(B1, "INFO after the loss");
    assert_eq!(store.build_log(B1).unwrap(), "INFO after the loss\n");
    assert_eq!(store.get(B1).unwrap().unwrap(), base);
    assert_eq!(backends(&pg), after, "all of it on that one connection");

    // A statement prepared before the table changed (a newer daemon migrated) no longer
    // runs as prepared ("cached plan must not change result type"): it is prepared again.
    pg.psql("ALTER TABLE images ALTER COLUMN record TYPE varchar");
    assert_eq!(store.get(B1).unwrap().unwrap(), base, "get after the table changed");
    assert_eq!(store.query(&children).unwrap().len(), 1);
    assert_eq!(backends(&pg), after, "the same connection, its cache emptied");
}
