//! The daemon's accept loop, for plain HTTP and HTTPS alike: a bound on open
//! connections, a time-out on reading each request head, graceful shutdown.
//!
//! - At most `max_connections` connections are served at once. One more is not queued:
//!   it gets `503 Service Unavailable` with a one-line plain-text body (the shape of every
//!   API error) and is closed. Refusing is bounded too: at most [`MAX_REFUSING`] refusals
//!   run at once, each for at most [`REFUSE_TIMEOUT`]; beyond that a connection is closed
//!   without an answer.
//! - A connection must deliver each request head (request line and headers) within
//!   `request_timeout` of the server starting to wait for it, or it is closed. That also
//!   closes keep-alive connections idle for that long, and a TLS handshake has the same
//!   time (at most [`HANDSHAKE_TIMEOUT`]). Responses are never timed: a long `raw_image`
//!   download streams for as long as it takes. (The request body has its own deadline,
//!   see `middleware::read_body_in_time`.)
//!
//! Only HTTP/1.1 is served, as the original did.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::connect_info::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::{GracefulShutdown, Watcher};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_rustls::TlsAcceptor;
use tower_service::Service;

/// The longest a TLS handshake may take (less when `request_timeout` is shorter).
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(30);

/// How many over-the-limit connections are answered 503 at once.
pub const MAX_REFUSING: usize = 64;

/// How long answering one over-the-limit connection may take (handshake, answer, and
/// reading what the client sent so that closing does not reset the connection before the
/// client has read the answer).
pub const REFUSE_TIMEOUT: Duration = Duration::from_secs(5);

/// The most bytes read from a refused connection before it is closed.
const REFUSE_DRAIN_BYTES: usize = 64 * 1024;

/// How long a stopping server waits for requests in flight before giving up on them.
/// Long enough for ordinary API calls, short enough not to hang a service restart.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// After a failed `accept` (typically too many open files) wait a little before the next
/// one instead of spinning on the same error.
const ACCEPT_ERROR_BACKOFF: Duration = Duration::from_millis(100);

/// The limits a server runs with (config keys `max_connections` and `request_timeout`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Connections served at once; one more gets 503.
    pub max_connections: usize,
    /// The time a client has to send a request head (and to finish a TLS handshake).
    pub request_timeout: Duration,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits { max_connections: 1024, request_timeout: Duration::from_secs(60) }
    }
}

/// Serves `app` on `listener` (over TLS when `tls` is given) until `shutdown` resolves.
///
/// Each connection gets its own task: the TLS handshake if any (a failure is logged at
/// debug level and only ends that connection), then HTTP/1.1 through hyper. Handlers can
/// extract `ConnectInfo<SocketAddr>` with the client's address, as with
/// `into_make_service_with_connect_info`.
///
/// When `shutdown` resolves, no new connection is accepted, the open ones finish the
/// request in hand, and the function returns once they have, or after a grace period.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    tls: Option<Arc<rustls::ServerConfig>>,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let acceptor = tls.map(TlsAcceptor::from);
    let open = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let refusing = Arc::new(Semaphore::new(MAX_REFUSING));
    let refusal: Arc<[u8]> = refusal_response(limits.max_connections).into();
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    let mut at_limit = false;

    loop {
        let (tcp, remote) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a connection failed");
                    tokio::time::sleep(ACCEPT_ERROR_BACKOFF).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        match open.clone().try_acquire_owned() {
            Ok(permit) => {
                at_limit = false;
                let conn = connection(tcp, remote, acceptor.clone(), app.clone(), graceful.watcher(), limits, permit);
                tokio::spawn(conn);
            }
            Err(_) => {
                if !at_limit {
                    tracing::warn!(
                        max_connections = limits.max_connections,
                        "connection limit reached: refusing with 503"
                    );
                    at_limit = true;
                }
                match refusing.clone().try_acquire_owned() {
                    Ok(permit) => {
                        tokio::spawn(refuse(tcp, remote, acceptor.clone(), refusal.clone(), limits, permit));
                    }
                    Err(_) => tracing::debug!(%remote, "closed a connection over the limit without an answer"),
                }
            }
        }
    }

    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; stopping anyway");
        }
    }
    Ok(())
}

/// The whole 503 answer a connection over the limit gets.
fn refusal_response(max_connections: usize) -> Vec<u8> {
    let body = format!(
        "Service unavailable: the server already has {max_connections} open connections (max_connections); try again later"
    );
    format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n\
         connection: close\r\nretry-after: 1\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn handshake_timeout(limits: Limits) -> Duration {
    limits.request_timeout.min(HANDSHAKE_TIMEOUT)
}

/// One client connection within the limit: handshake, then HTTP until the client or the
/// server closes it. The permit is its place under `max_connections`, given back at the end.
async fn connection(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    app: Router,
    watcher: Watcher,
    limits: Limits,
    _permit: OwnedSemaphorePermit,
) {
    let Some(acceptor) = acceptor else {
        return serve_http(TokioIo::new(tcp), remote, app, watcher, limits).await;
    };
    match tokio::time::timeout(handshake_timeout(limits), acceptor.accept(tcp)).await {
        Ok(Ok(tls)) => serve_http(TokioIo::new(tls), remote, app, watcher, limits).await,
        Ok(Err(e)) => tracing::debug!(%remote, error = %e, "TLS handshake failed"),
        Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
    }
}

/// HTTP/1.1 over one (plain or TLS) stream.
async fn serve_http<I>(io: TokioIo<I>, remote: SocketAddr, app: Router, watcher: Watcher, limits: Limits)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    // The router is what axum's own `serve` would call; the client address is put where
    // the `ConnectInfo` extractor looks for it.
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(remote));
        let mut router = app.clone();
        let response = router.call(request);
        async move {
            let response = response.await;
            Ok::<_, Infallible>(response.unwrap_or_else(|never| match never {}))
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        // The timer is what makes hyper enforce the header read time-out.
        .timer(TokioTimer::new())
        .header_read_timeout(limits.request_timeout)
        .serve_connection(io, service);
    if let Err(e) = watcher.watch(connection).await {
        tracing::debug!(%remote, error = %e, "connection ended with an error");
    }
}

/// Answers a connection over the limit with the 503 and closes it, within [`REFUSE_TIMEOUT`].
async fn refuse(
    tcp: TcpStream,
    remote: SocketAddr,
    acceptor: Option<TlsAcceptor>,
    response: Arc<[u8]>,
    limits: Limits,
    _permit: OwnedSemaphorePermit,
) {
    let work = async {
        match acceptor {
            None => answer_and_close(tcp, &response).await,
            Some(acceptor) => {
                if let Ok(Ok(tls)) = tokio::time::timeout(handshake_timeout(limits), acceptor.accept(tcp)).await {
                    answer_and_close(tls, &response).await;
                }
            }
        }
    };
    if tokio::time::timeout(REFUSE_TIMEOUT, work).await.is_err() {
        tracing::debug!(%remote, "a refused connection did not close in time");
    }
}

/// Writes `response`, ends the sending side, and reads what the client sent until it
/// closes: closing with unread data would reset the connection, and the client could lose
/// the answer.
async fn answer_and_close<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, response: &[u8]) {
    if stream.write_all(response).await.is_err() || stream.shutdown().await.is_err() {
        return;
    }
    let mut buf = [0u8; 4096];
    let mut read = 0;
    while read < REFUSE_DRAIN_BYTES {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => read += n,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_refusal_is_a_complete_503_with_a_one_line_body() {
        let text = String::from_utf8(refusal_response(7)).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\n"), "{head}");
        assert!(head.contains(&format!("content-length: {}", body.len())), "{head}");
        assert!(head.contains("connection: close"), "{head}");
        assert!(!body.contains('\n') && body.contains("7 open connections"), "{body}");
    }
}
