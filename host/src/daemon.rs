//! The `imagefactoryd` daemon: the REST API over the engine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use crate::api::{self, tls, ApiState};
use crate::config::{Config, LogFormat};
use crate::setup::LogLevel;

#[derive(Parser, Debug, Clone)]
#[command(name = "imagefactoryd", version, about = "The imagefactory REST API daemon")]
pub struct DaemonArgs {
    /// Stay in the foreground (the only mode: run it under a service manager).
    #[arg(long)]
    foreground: bool,
    #[arg(long)]
    debug: bool,
    #[arg(long)]
    nodebug: bool,
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// An extra plugin directory (added to the config's `plugins`).
    #[arg(long, value_name = "DIR")]
    plugins: Vec<PathBuf>,
    #[arg(long)]
    port: Option<u16>,
    #[arg(long)]
    address: Option<String>,
    /// Serve plain HTTP.
    #[arg(long = "no_ssl", alias = "no-ssl")]
    no_ssl: bool,
    /// A PEM file with the certificate chain and the key; `*` (the default) makes a
    /// self-signed certificate at start.
    #[arg(long = "ssl_pem", alias = "ssl-pem", value_name = "FILE")]
    ssl_pem: Option<String>,
    /// Accept requests without OAuth signatures.
    #[arg(long = "no_oauth", alias = "no-oauth")]
    no_oauth: bool,
    /// `text` or `json` (one JSON object a line); overrides the config's `log_format`.
    #[arg(long = "log-format", alias = "log_format", value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
    /// Run as a worker of a farm: no HTTP API; take jobs from the PostgreSQL job queue
    /// that this process's plugins can run.
    #[arg(long)]
    worker: bool,
}

impl DaemonArgs {
    /// The config file in force: the one given, else the default one if it exists.
    fn config_path(&self) -> Option<PathBuf> {
        match &self.config {
            Some(p) => Some(p.clone()),
            None => Some(PathBuf::from(crate::setup::DEFAULT_CONFIG)).filter(|p| p.exists()),
        }
    }

    /// The command line wins over the file, at start and on every reload.
    fn apply_to(&self, config: &mut Config) {
        config.no_ssl |= self.no_ssl;
        config.no_oauth |= self.no_oauth;
        if let Some(p) = self.port {
            config.port = p;
        }
        if let Some(a) = &self.address {
            config.address = a.clone();
        }
        if let Some(pem) = &self.ssl_pem {
            config.ssl_pem = Some(pem.clone());
        }
        if let Some(f) = self.log_format {
            config.log_format = f;
        }
    }

    /// The log level `config` and the flags make.
    fn log_level(&self, config: &Config) -> &'static str {
        if (config.debug || self.debug) && !self.nodebug {
            "debug"
        } else {
            "info"
        }
    }
}

/// Threads of the blocking pool (store reads and listings queue for one when all are busy).
/// Each thread that allocates gets a malloc arena of its own, so more threads than the
/// work can use only fragment memory: against 16, `scripts/bench.sh api_load` measured 8
/// at a lower peak (55.8 vs 57.2-60.6 MB) and more GETs by id per second (35,404 vs
/// 26,066-27,311), on 2 cores. Enough for a PostgreSQL store's round trips too.
const MAX_BLOCKING_THREADS: usize = 8;

/// Runs the daemon until SIGTERM or SIGINT; returns the exit code.
pub fn main() -> i32 {
    let args = DaemonArgs::parse();
    match run(args) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("imagefactoryd: {e:#}");
            1
        }
    }
}

fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let mut config = crate::setup::load_config(args.config.as_deref())?;
    args.apply_to(&mut config);
    let log_level = crate::setup::init_logging_as(args.log_level(&config), config.log_format);
    if args.worker {
        return run_worker(&config, &args);
    }
    if !args.foreground {
        tracing::info!("running in the foreground: imagefactoryd does not fork; run it under a service manager");
    }
    let engine = crate::setup::engine(&config, &args.plugins)?;
    let recovered = engine.recover()?;
    if recovered > 0 {
        tracing::warn!(count = recovered, "marked builds interrupted by the last stop as FAILED");
    }
    if engine.has_job_queue() {
        engine.start_shared_events()?;
        engine.start_queue_upkeep()?;
        if !config.api_only {
            let name = worker_name(&config);
            let plugins = engine.work_jobs(&name)?;
            tracing::info!(worker = %name, plugins = ?plugins, "working jobs of the queue beside the API");
        }
    }
    let tls_config = if config.no_ssl {
        None
    } else {
        let source = match config.ssl_pem.as_deref() {
            None | Some("*") | Some("") => tls::TlsSource::SelfSigned,
            Some(path) => tls::TlsSource::PemFile(PathBuf::from(path)),
        };
        Some(tls::server_config(&source).context("cannot set up TLS")?)
    };
    let addr: SocketAddr = format!("{}:{}", config.address, config.port)
        .parse()
        .with_context(|| format!("invalid address {}:{}", config.address, config.port))?;
    let limits = config.server_limits();
    let state = ApiState::new(engine, Arc::new(config), tls_config.is_some());
    let app = api::router(state.clone());
    // Bounded threads: one async worker per core (at most 4: the API's work is short)
    // and a bounded blocking pool (store reads, listings). Tokio's default of 512
    // blocking threads let a burst of clients grow the daemon by a thread stack each.
    let workers = std::thread::available_parallelism().map_or(2, |n| n.get()).clamp(1, 4);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .thread_keep_alive(std::time::Duration::from_secs(10))
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let local = listener.local_addr()?;
        // Installed before the line below, so a SIGHUP from anyone who read it is caught
        // (its default action would end the daemon).
        let hangups =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).context("cannot handle SIGHUP")?;
        tokio::spawn(reload_on_hangup(hangups, state, args, log_level));
        let scheme = if tls_config.is_some() { "https" } else { "http" };
        // Tests and scripts read this line to learn the port when --port 0 is given.
        tracing::info!("listening on {scheme}://{local}/imagefactory");
        println!("imagefactoryd listening on {scheme}://{local}/imagefactory");
        api::server::serve(listener, app, tls_config, limits, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
}

/// Reads the config file again on each SIGHUP and serves requests with what a running
/// daemon can take ([`Config::reload`]); a file that does not load is logged in one line
/// and the running config kept. Only key names are logged, never values (secrets).
async fn reload_on_hangup(mut hangups: tokio::signal::unix::Signal, state: ApiState, args: DaemonArgs, log: LogLevel) {
    while hangups.recv().await.is_some() {
        let Some(path) = args.config_path() else {
            tracing::info!("SIGHUP: no config file to reload (running on the defaults)");
            continue;
        };
        let mut new = match Config::load(&path) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!("SIGHUP: cannot reload the config, keeping the running one: {e}");
                continue;
            }
        };
        args.apply_to(&mut new);
        let reload = state.config().reload(new);
        log.set(args.log_level(&reload.config));
        state.replace_config(reload.config);
        tracing::info!(
            applied = ?reload.applied,
            needs_restart = ?reload.needs_restart,
            "SIGHUP: reloaded the config from {}",
            path.display()
        );
    }
}

/// This process's name in the job queue: the config's `worker_name`, else host-pid.
fn worker_name(config: &Config) -> String {
    config.worker_name.clone().unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
        let host = host.trim();
        format!("{}-{}", if host.is_empty() { "localhost" } else { host }, std::process::id())
    })
}

/// `imagefactoryd --worker`: takes jobs of the farm's queue until SIGTERM or SIGINT,
/// then gives its running jobs back to the queue. No HTTP API.
fn run_worker(config: &Config, args: &DaemonArgs) -> anyhow::Result<()> {
    if config.image_manager != "postgres" {
        anyhow::bail!("--worker needs \"image_manager\": \"postgres\" (the job queue is in the database)");
    }
    let engine = crate::setup::engine(config, &args.plugins)?;
    let name = worker_name(config);
    engine.start_queue_upkeep()?;
    let plugins = engine.work_jobs(&name)?;
    if plugins.is_empty() {
        tracing::warn!("no usable plugin was found: this worker will never take a job");
    }
    tracing::info!(worker = %name, plugins = ?plugins, "taking jobs");
    // Tests and scripts read this line to know the worker is ready.
    println!("imagefactoryd worker {name} taking jobs for plugins: {}", plugins.join(", "));
    let runtime =
        tokio::runtime::Builder::new_current_thread().enable_all().build().context("cannot start the async runtime")?;
    runtime.block_on(shutdown_signal());
    engine.stop_working();
    tracing::info!(worker = %name, "stopped; running jobs were given back to the queue");
    Ok(())
}

async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
