//! The farm store (`"image_manager": "postgres"`): image records, build logs and build
//! locks in PostgreSQL, shared by every daemon that names the same database; bodies and
//! kept files in a [`Bodies`] directory that every one of them mounts.
//!
//! - **Schema.** `migrations/V<n>__*.sql`, embedded at build time and applied at open by
//!   refinery, under an advisory lock so two daemons starting together do not both
//!   migrate. A database whose schema is newer than this build knows is refused in one
//!   line: an older daemon must not write records a newer one reads differently.
//! - **Records** are the `.meta` JSON in `images.record`, beside the columns queries use.
//!   Every change bumps `store_generation` in its own transaction (a trigger), so a
//!   listing keyed by the generation read before its query is never older than the key.
//! - **Build locks** are session advisory locks, each on a connection of its own that the
//!   [`BuildLock`] holds: when the holder (its process, its machine) goes away, so does
//!   the connection and the lock, exactly like a flock.
//! - **Unavailable database.** Every call returns [`StoreError::Unavailable`] with one
//!   line (the API answers 503); a pooled connection that died is dropped and the call
//!   retried once on a new one, so the store recovers by itself when the server is back.
//! - **Prepared statements.** Each pooled connection keeps the statements it prepared
//!   (`Conn`), so a hot query is one round trip instead of two; a new connection starts
//!   with none, and one that went stale (the table changed) is prepared again.
//!
//! The URL may carry a password: it is never logged or put in an error; messages name the
//! server as `host:port/database`.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use postgres::error::SqlState;
use postgres::types::ToSql;
use postgres::{Client, NoTls, Row, Statement};

use super::{is_plain_id, Bodies, BuildLock, ImageStore, Query, StoreError};
use crate::image::ImageRecord;

mod embedded {
    refinery::embed_migrations!("migrations");
}

/// Idle connections kept for reuse; more are opened when needed and closed after use.
const MAX_IDLE: usize = 16;

/// How long opening a connection may take before the store counts as unavailable.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The advisory lock key under which migrations run (any fixed number, ours alone).
const MIGRATION_LOCK: i64 = 0x1f_a6e5_f4c7;

/// The PostgreSQL store.
pub struct PgStore {
    bodies: Bodies,
    pool: Arc<Pool>,
    /// Log lines a call could not write (the server was away), written before the next
    /// line so a build log loses nothing to an outage. Bounded: see [`MAX_PENDING_LOG`].
    pending_log: Mutex<Vec<(String, String)>>,
}

/// Log lines held while the server is away; older ones are dropped beyond this.
const MAX_PENDING_LOG: usize = 10_000;

/// Distinct statements one connection keeps prepared; past this the cache starts over
/// (the store's statements are a few dozen: the fixed ones, and the WHERE clauses a
/// [`Query`] can make, twice).
const MAX_STATEMENTS: usize = 128;

/// A pooled connection and the statements prepared on it, by their SQL.
///
/// The `postgres` crate prepares a statement given as text on every call (a round trip
/// of its own before the query's); one prepared here once is executed in one. Prepared
/// statements live and die with their server session: a new connection (after the old
/// one died) starts with an empty cache.
pub(super) struct Conn {
    client: Client,
    statements: HashMap<String, Statement>,
}

impl Conn {
    fn new(client: Client) -> Conn {
        Conn { client, statements: HashMap::new() }
    }

    /// The statement for `sql`, prepared on this connection the first time it is asked for.
    pub(super) fn statement(&mut self, sql: &str) -> Result<Statement, postgres::Error> {
        if let Some(s) = self.statements.get(sql) {
            return Ok(s.clone());
        }
        let s = self.client.prepare(sql)?;
        if self.statements.len() >= MAX_STATEMENTS {
            self.statements.clear();
        }
        self.statements.insert(sql.to_string(), s.clone());
        Ok(s)
    }

    /// [`Client::execute`], through the cache.
    pub(super) fn execute(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<u64, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.execute(&s, params)
    }

    /// [`Client::query`], through the cache.
    pub(super) fn query(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Vec<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query(&s, params)
    }

    /// [`Client::query_one`], through the cache.
    pub(super) fn query_one(&mut self, sql: &str, params: &[&(dyn ToSql + Sync)]) -> Result<Row, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_one(&s, params)
    }

    /// [`Client::query_opt`], through the cache.
    pub(super) fn query_opt(
        &mut self,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Option<Row>, postgres::Error> {
        let s = self.statement(sql)?;
        self.client.query_opt(&s, params)
    }

    /// The connection itself (transactions: prepare their statements first, with
    /// [`Conn::statement`]).
    pub(super) fn client(&mut self) -> &mut Client {
        &mut self.client
    }

    fn is_closed(&self) -> bool {
        self.client.is_closed()
    }
}

/// A cached statement the server no longer has or can no longer run as prepared: gone
/// from the session (`DISCARD ALL`, a pooler between us and the server), or planned
/// against a table whose columns have changed since (a newer daemon migrated).
fn stale_statement(e: &postgres::Error) -> bool {
    match e.code() {
        Some(c) if *c == SqlState::INVALID_SQL_STATEMENT_NAME => true,
        Some(c) if *c == SqlState::FEATURE_NOT_SUPPORTED => {
            e.as_db_error().is_some_and(|db| db.message().contains("cached plan"))
        }
        _ => false,
    }
}

/// Connections to one server, opened on demand and kept while idle.
pub(super) struct Pool {
    config: postgres::Config,
    /// `host:port/database`, for messages (never the URL: it may hold a password).
    name: String,
    idle: Mutex<Vec<Conn>>,
}

impl Pool {
    pub(super) fn connect(&self) -> Result<Client, StoreError> {
        self.config.connect(NoTls).map_err(|e| self.unavailable(&e))
    }

    fn take(&self) -> Result<Conn, StoreError> {
        let pooled = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        match pooled {
            Some(c) if !c.is_closed() => Ok(c),
            _ => self.connect().map(Conn::new),
        }
    }

    fn give_back(&self, conn: Conn) {
        if conn.is_closed() {
            return;
        }
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
    }

    /// Runs `f` on a pooled connection. When it fails because the connection was dead (the
    /// server restarted since it was pooled), runs it once more on a new one; when it
    /// fails because a cached statement went stale, once more on the same connection
    /// with its cache emptied.
    pub(super) fn with<T>(&self, mut f: impl FnMut(&mut Conn) -> Result<T, postgres::Error>) -> Result<T, StoreError> {
        let mut conn = self.take()?;
        match f(&mut conn) {
            Ok(v) => {
                self.give_back(conn);
                Ok(v)
            }
            Err(e) if conn.is_closed() || e.is_closed() => {
                tracing::info!(server = %self.name, error = %e, "a pooled database connection was dead; retrying on a new one");
                self.idle.lock().unwrap_or_else(|p| p.into_inner()).clear();
                let mut fresh = Conn::new(self.connect()?);
                let v = f(&mut fresh).map_err(|e| self.unavailable(&e))?;
                self.give_back(fresh);
                Ok(v)
            }
            Err(e) if stale_statement(&e) => {
                tracing::info!(server = %self.name, error = %e, "a prepared statement went stale; preparing again");
                conn.statements.clear();
                let result = f(&mut conn);
                self.give_back(conn);
                result.map_err(|e| self.unavailable(&e))
            }
            Err(e) => {
                self.give_back(conn);
                Err(self.unavailable(&e))
            }
        }
    }

    /// One line naming the server and the cause; the full chain goes to the log.
    pub(super) fn unavailable(&self, e: &postgres::Error) -> StoreError {
        tracing::warn!(server = %self.name, error = ?e, "database call failed");
        let cause = match e.as_db_error() {
            Some(db) => db.message().to_string(),
            None => std::error::Error::source(e).map(|s| s.to_string()).unwrap_or_else(|| e.to_string()),
        };
        StoreError::Unavailable(format!("PostgreSQL at {}: {}", self.name, cause.replace('\n', " ")))
    }
}

/// `host:port/database` of a connection config.
fn server_name(config: &postgres::Config) -> String {
    let host = config
        .get_hosts()
        .first()
        .map(|h| match h {
            postgres::config::Host::Tcp(name) => name.clone(),
            postgres::config::Host::Unix(path) => path.display().to_string(),
        })
        .unwrap_or_else(|| "localhost".into());
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}/{}", config.get_dbname().unwrap_or("postgres"))
}

/// Parses a `postgres://` URL (or key=value string) without echoing it.
pub fn parse_url(url: &str) -> Result<postgres::Config, String> {
    if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
        return Err("image_manager_args.url must be a postgres:// URL".into());
    }
    postgres::Config::from_str(url).map_err(|e| format!("image_manager_args.url is not a valid PostgreSQL URL: {e}"))
}

impl PgStore {
    /// Connects, applies the schema migrations this build has and the database lacks, and
    /// opens the bodies directory.
    pub fn open(url: &str, bodies: &std::path::Path) -> Result<PgStore, StoreError> {
        PgStore::open_with(url, Bodies::open(bodies)?)
    }

    /// [`PgStore::open`] with bodies already opened (a directory, or object storage
    /// with its local cache).
    pub fn open_with(url: &str, bodies: Bodies) -> Result<PgStore, StoreError> {
        let mut config = parse_url(url).map_err(StoreError::Unusable)?;
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        config.keepalives_idle(Duration::from_secs(30));
        config.application_name("imagefactoryd");
        let pool = Arc::new(Pool { name: server_name(&config), config, idle: Mutex::new(Vec::new()) });
        let store = PgStore { bodies, pool, pending_log: Mutex::new(Vec::new()) };
        store.migrate()?;
        tracing::info!(server = %store.pool.name, bodies = %store.bodies.location(), "using the PostgreSQL image store");
        Ok(store)
    }

    /// Brings the schema up to this build's newest migration, refusing a newer database.
    fn migrate(&self) -> Result<(), StoreError> {
        let mut client = self.pool.connect()?;
        let known = embedded::migrations::runner().get_migrations().iter().map(|m| m.version()).max().unwrap_or(0);
        let name = self.pool.name.clone();
        let fail = |e: postgres::Error| self.pool.unavailable(&e);
        client.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK]).map_err(fail)?;
        let result = (|| {
            // (Two statements: one naming a missing table does not even parse.)
            let has_history: bool = client
                .query_one("SELECT to_regclass('refinery_schema_history') IS NOT NULL", &[])
                .and_then(|row| row.try_get(0))
                .map_err(fail)?;
            let applied: Option<i32> = if has_history {
                client
                    .query_one("SELECT max(version) FROM refinery_schema_history", &[])
                    .and_then(|row| row.try_get(0))
                    .map_err(fail)?
            } else {
                None
            };
            if let Some(v) = applied {
                if i64::from(v) > i64::from(known) {
                    return Err(StoreError::Unusable(format!(
                        "the database at {name} has schema version {v}, newer than this imagefactory knows ({known}): upgrade imagefactory"
                    )));
                }
            }
            let report = embedded::migrations::runner()
                .set_abort_missing(true)
                .run(&mut client)
                .map_err(|e| StoreError::Unusable(format!("cannot migrate the database at {name}: {e}")))?;
            for m in report.applied_migrations() {
                tracing::info!(server = %name, version = m.version(), migration = m.name(), "applied a schema migration");
            }
            Ok(())
        })();
        let _ = client.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        result
    }
}

/// A query's WHERE clause and its values.
fn conditions(query: &Query) -> (String, Vec<String>) {
    let mut clauses = Vec::new();
    let mut values = Vec::new();
    let mut add = |column: &str, value: Option<String>| {
        if let Some(v) = value {
            values.push(v);
            clauses.push(format!("{column} = ${}", values.len()));
        }
    };
    add("kind", query.kind.map(|k| k.class().to_string()));
    add("status", query.status.map(|s| s.as_str().to_string()));
    add("base_image_id", query.base_image_id.clone());
    add("target_image_id", query.target_image_id.clone());
    add("id", query.identifier.clone());
    let clause = if clauses.is_empty() { String::new() } else { format!(" WHERE {}", clauses.join(" AND ")) };
    (clause, values)
}

fn params(values: &[String]) -> Vec<&(dyn ToSql + Sync)> {
    values.iter().map(|v| v as &(dyn ToSql + Sync)).collect()
}

/// Parses a stored record; one that does not parse is logged and skipped, as a torn
/// `.meta` is by the file store.
fn parse_record(id: &str, json: &str) -> Option<ImageRecord> {
    match serde_json::from_str(json) {
        Ok(r) => Some(r),
        Err(e) => {
            tracing::error!(image = %id, error = %e, "a stored record does not parse; skipped");
            None
        }
    }
}

/// The statement that writes a record (insert or replace).
const UPSERT: &str = "INSERT INTO images (id, kind, status, created, base_image_id, target_image_id, record) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (id) DO UPDATE SET kind = EXCLUDED.kind, \
     status = EXCLUDED.status, created = EXCLUDED.created, base_image_id = EXCLUDED.base_image_id, \
     target_image_id = EXCLUDED.target_image_id, record = EXCLUDED.record";

impl ImageStore for PgStore {
    fn bodies(&self) -> &Bodies {
        &self.bodies
    }

    fn save(&self, record: &ImageRecord) -> Result<(), StoreError> {
        let json =
            serde_json::to_string(record).map_err(|e| StoreError::Unusable(format!("cannot encode a record: {e}")))?;
        let created = i64::try_from(record.created).unwrap_or(i64::MAX);
        self.pool.with(|c| {
            c.execute(
                UPSERT,
                &[
                    &record.identifier,
                    &record.kind.class(),
                    &record.status.as_str(),
                    &created,
                    &record.base_image_id,
                    &record.target_image_id,
                    &json,
                ],
            )
        })?;
        Ok(())
    }

    fn get(&self, id: &str) -> Result<Option<ImageRecord>, StoreError> {
        if !is_plain_id(id) {
            return Ok(None);
        }
        let row = self.pool.with(|c| c.query_opt("SELECT record FROM images WHERE id = $1", &[&id]))?;
        Ok(row.and_then(|r| r.try_get::<_, String>(0).ok()).and_then(|json| parse_record(id, &json)))
    }

    fn generation(&self) -> Result<u64, StoreError> {
        let value: i64 = self.pool.with(|c| c.query_one("SELECT value FROM store_generation", &[])?.try_get(0))?;
        Ok(u64::try_from(value).unwrap_or(0))
    }

    fn query(&self, query: &Query) -> Result<Vec<Arc<ImageRecord>>, StoreError> {
        let (clause, values) = conditions(query);
        let sql = format!("SELECT id, record FROM images{clause} ORDER BY created, id");
        let rows = self.pool.with(|c| c.query(&sql, &params(&values)))?;
        Ok(rows
            .iter()
            .filter_map(|r| {
                let id: String = r.try_get(0).ok()?;
                let json: String = r.try_get(1).ok()?;
                parse_record(&id, &json).map(Arc::new)
            })
            .collect())
    }

    fn query_ids(&self, query: &Query) -> Result<Vec<String>, StoreError> {
        let (clause, values) = conditions(query);
        let sql = format!("SELECT id FROM images{clause} ORDER BY created, id");
        let rows = self.pool.with(|c| c.query(&sql, &params(&values)))?;
        Ok(rows.iter().filter_map(|r| r.try_get(0).ok()).collect())
    }

    /// Files first, then the log and record in one transaction: once the record is gone,
    /// everything else of the image is too.
    fn remove(&self, id: &str) -> Result<(), StoreError> {
        if !is_plain_id(id) {
            return Err(StoreError::NotFound(id.to_string()));
        }
        self.bodies.remove(id)?;
        self.pool.with(|c| {
            let statements = [
                c.statement("DELETE FROM image_log WHERE image_id = $1")?,
                c.statement("DELETE FROM jobs WHERE image_id = $1")?,
                c.statement("DELETE FROM images WHERE id = $1")?,
            ];
            let mut tx = c.client().transaction()?;
            for s in &statements {
                tx.execute(s, &[&id])?;
            }
            tx.commit()
        })
    }

    /// Lines that cannot be written now are held and written, in order, before the next
    /// line that can: a build that waits out an outage keeps its whole log.
    fn append_log(&self, id: &str, line: &str) {
        let mut pending = self.pending_log.lock().unwrap_or_else(|p| p.into_inner());
        pending.push((id.to_string(), line.replace('\n', " ")));
        let res = self.pool.with(|c| {
            let insert = c.statement("INSERT INTO image_log (image_id, line) VALUES ($1, $2)")?;
            // One line (the usual case) needs no transaction: one round trip.
            if let [(id, text)] = pending.as_slice() {
                return c.client().execute(&insert, &[id, text]).map(drop);
            }
            let mut tx = c.client().transaction()?;
            for (id, text) in pending.iter() {
                tx.execute(&insert, &[id, text])?;
            }
            tx.commit()
        });
        match res {
            Ok(()) => pending.clear(),
            Err(e) => {
                if pending.len() > MAX_PENDING_LOG {
                    let excess = pending.len() - MAX_PENDING_LOG;
                    pending.drain(..excess);
                }
                tracing::warn!(image = %id, error = %e, held = pending.len(), "cannot append to the build log; holding the line");
            }
        }
    }

    fn build_log(&self, id: &str) -> Result<String, StoreError> {
        let rows =
            self.pool.with(|c| c.query("SELECT line FROM image_log WHERE image_id = $1 ORDER BY seq", &[&id]))?;
        let mut out = String::new();
        for row in rows {
            if let Ok(line) = row.try_get::<_, &str>(0) {
                out.push_str(line);
                out.push('\n');
            }
        }
        Ok(out)
    }

    /// A session advisory lock keyed by 64 bits of the id's MD5 (computed by the server,
    /// so every daemon agrees), on a new connection the lock keeps open.
    fn job_queue(&self) -> Option<super::JobQueue> {
        Some(super::JobQueue::new(self.pool.clone()))
    }

    fn try_lock(&self, id: &str) -> Result<Option<BuildLock>, StoreError> {
        let mut client = self.pool.connect()?;
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock(('x' || substr(md5($1), 1, 16))::bit(64)::bigint)", &[&id])
            .and_then(|r| r.try_get(0))
            .map_err(|e| self.pool.unavailable(&e))?;
        Ok(got.then(|| BuildLock::new(client)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_without_being_echoed() {
        let e = parse_url("mysql://root:hunter2@db/x").unwrap_err();
        assert!(e.contains("postgres://") && !e.contains("hunter2"), "{e}");
        let c = parse_url("postgres://builder:hunter2@db.example:6543/farm").unwrap();
        assert_eq!(server_name(&c), "db.example:6543/farm");
    }

    #[test]
    fn conditions_number_their_values() {
        let q = Query {
            kind: Some(crate::image::ImageKind::TargetImage),
            base_image_id: Some("b1".into()),
            ..Query::default()
        };
        let (clause, values) = conditions(&q);
        assert_eq!(clause, " WHERE kind = $1 AND base_image_id = $2");
        assert_eq!(values, vec!["TargetImage".to_string(), "b1".to_string()]);
        assert_eq!(conditions(&Query::default()).0, "");
    }
}
