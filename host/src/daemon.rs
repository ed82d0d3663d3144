//! The `imagefactoryd` daemon: the REST API over the engine.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use clap::Parser;

use crate::api::{self, tls, ApiState};

#[derive(Parser, Debug)]
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
}

/// Threads of the blocking pool (store reads and listings queue for one when all are busy).
const MAX_BLOCKING_THREADS: usize = 16;

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
    crate::setup::init_logging(if (config.debug || args.debug) && !args.nodebug { "debug" } else { "info" });
    if !args.foreground {
        tracing::info!("running in the foreground: imagefactoryd does not fork; run it under a service manager");
    }
    config.no_ssl |= args.no_ssl;
    config.no_oauth |= args.no_oauth;
    if let Some(p) = args.port {
        config.port = p;
    }
    if let Some(a) = args.address {
        config.address = a;
    }
    if let Some(pem) = args.ssl_pem {
        config.ssl_pem = Some(pem);
    }
    let engine = crate::setup::engine(&config, &args.plugins)?;
    let recovered = engine.recover();
    if recovered > 0 {
        tracing::warn!(count = recovered, "marked builds interrupted by the last stop as FAILED");
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
    let app = api::router(state);
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
        let scheme = if tls_config.is_some() { "https" } else { "http" };
        // Tests and scripts read this line to learn the port when --port 0 is given.
        tracing::info!("listening on {scheme}://{local}/imagefactory");
        println!("imagefactoryd listening on {scheme}://{local}/imagefactory");
        api::server::serve(listener, app, tls_config, limits, shutdown_signal()).await?;
        tracing::info!("stopped");
        Ok(())
    })
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
