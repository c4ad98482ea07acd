//! The HTTP server of `run --listen` (hyper, HTTP/1.1), in the daemon's tokio runtime:
//! `GET /` the page (embedded: no outside network), `/metrics`, `/api/v1/status`. At most
//! [`CONNECTIONS`] connections at a time; a client must send its request head within
//! [`HEAD_TIMEOUT`].

use std::{convert::Infallible, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::{Result, bail};
use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Request, Response, StatusCode, body::Incoming, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::Semaphore, task::JoinHandle};

use super::Live;

/// The page, one file with its CSS and JavaScript.
pub const PAGE: &str = include_str!("page.html");

/// Connections served at the same time, at most; more wait in the listen queue.
pub const CONNECTIONS: usize = 64;
/// How long a client may take to send its request head.
pub const HEAD_TIMEOUT: Duration = Duration::from_secs(10);

/// Binds `addr`; an address in use or not on this host is an error that says what to do.
pub async fn bind(addr: SocketAddr) -> Result<TcpListener> {
    match TcpListener::bind(addr).await {
        Ok(l) => Ok(l),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => bail!(
            "--listen {addr}: the address is in use (another `lb-ctl run --listen` or another \
             exporter listens there; `ss -ltnp 'sport = :{}'` shows which): stop it or give \
             --listen another port",
            addr.port()
        ),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => bail!(
            "--listen {addr}: no interface of this host (or of the --netns namespace) has this \
             address: give one it has, 127.0.0.1 or 0.0.0.0"
        ),
        Err(e) => bail!("--listen {addr}: cannot listen there: {e}"),
    }
}

/// Serves `listener` until the task is aborted.
pub fn serve(listener: TcpListener, live: Arc<Live>) -> JoinHandle<()> {
    tokio::spawn(async move {
        let slots = Arc::new(Semaphore::new(CONNECTIONS));
        loop {
            let Ok(permit) = slots.clone().acquire_owned().await else {
                return;
            };
            let (stream, peer) = match listener.accept().await {
                Ok(c) => c,
                Err(e) => {
                    tracing::debug!(error = %e, "--listen: accept failed");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let live = live.clone();
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let live = live.clone();
                    async move { Ok::<_, Infallible>(answer(&req, &live)) }
                });
                let served = hyper::server::conn::http1::Builder::new()
                    .timer(TokioTimer::new())
                    .header_read_timeout(HEAD_TIMEOUT)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                if let Err(e) = served {
                    tracing::debug!(peer = %peer, error = %e, "--listen: connection ended");
                }
                drop(permit);
            });
        }
    })
}

fn text(
    status: StatusCode,
    content_type: &'static str,
    body: impl Into<Bytes>,
) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body.into()));
    *r.status_mut() = status;
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static(content_type),
    );
    h.insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

/// The answer to one request.
pub fn answer(req: &Request<Incoming>, live: &Live) -> Response<Full<Bytes>> {
    route(req.method(), req.uri().path(), live)
}

fn route(method: &Method, path: &str, live: &Live) -> Response<Full<Bytes>> {
    const PLAIN: &str = "text/plain; charset=utf-8";
    if method != Method::GET && method != Method::HEAD {
        return text(StatusCode::METHOD_NOT_ALLOWED, PLAIN, "only GET\n");
    }
    let failed =
        |e: anyhow::Error| text(StatusCode::INTERNAL_SERVER_ERROR, PLAIN, format!("{e:#}\n"));
    match path {
        "/" | "/index.html" => text(StatusCode::OK, "text/html; charset=utf-8", PAGE),
        "/metrics" => match live.metrics_text() {
            Ok(t) => text(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                t,
            ),
            Err(e) => failed(e),
        },
        "/api/v1/status" => match live.status_json() {
            Ok(Some(t)) => text(StatusCode::OK, "application/json", t),
            Ok(None) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                PLAIN,
                "the daemon has not read the maps yet; try again in a second\n",
            ),
            Err(e) => failed(e),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            PLAIN,
            "not found: /, /metrics and /api/v1/status are served\n",
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_port_in_use_is_a_clear_error() {
        let first = bind("127.0.0.1:0".parse().unwrap_or_else(|_| unreachable!()))
            .await
            .unwrap_or_else(|e| panic!("{e:#}"));
        let addr = first.local_addr().unwrap_or_else(|e| panic!("{e}"));
        let e = bind(addr)
            .await
            .err()
            .map(|e| format!("{e:#}"))
            .unwrap_or_default();
        assert!(
            e.contains(&format!("--listen {addr}: the address is in use")),
            "{e}"
        );
        assert!(e.contains("give --listen another port"), "{e}");
    }

    #[test]
    fn routes() {
        let live = Live::default();
        let r = route(&Method::GET, "/", &live);
        assert_eq!(r.status(), StatusCode::OK);
        assert_eq!(
            route(&Method::GET, "/api/v1/status", &live).status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        assert_eq!(
            route(&Method::GET, "/metrics", &live).status(),
            StatusCode::OK
        );
        assert_eq!(
            route(&Method::GET, "/nope", &live).status(),
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            route(&Method::POST, "/", &live).status(),
            StatusCode::METHOD_NOT_ALLOWED
        );
    }
}
