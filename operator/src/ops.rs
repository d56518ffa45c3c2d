//! The ops HTTP endpoints: `/metrics` (Prometheus text), `/healthz`
//! (process and controllers alive), `/readyz` (caches synced).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::{debug, info};

/// What the endpoints report on.
#[derive(Debug, Default)]
pub struct OpsState {
    pub registry: Registry,
    /// Set once the informer caches have synced.
    pub ready: AtomicBool,
    /// Cleared if a controller loop ends unexpectedly.
    pub healthy: AtomicBool,
}

/// Serve until the task is dropped.
///
/// # Errors
/// Binding the address failed.
pub async fn serve(addr: SocketAddr, state: Arc<OpsState>) -> std::io::Result<()> {
    let listener = TcpListener::bind(addr).await?;
    info!(%addr, "ops endpoints listening");
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                debug!(error = %e, "accept failed");
                continue;
            }
        };
        let state = state.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&req, &state)) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(5))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                debug!(%peer, error = %e, "ops connection ended with an error");
            }
        });
    }
}

fn route(req: &Request<Incoming>, state: &OpsState) -> Response<Full<Bytes>> {
    if req.method() != Method::GET {
        return text(
            StatusCode::METHOD_NOT_ALLOWED,
            "only GET is served\n".into(),
        );
    }
    match req.uri().path() {
        "/metrics" => {
            let mut body = String::new();
            match prometheus_client::encoding::text::encode(&mut body, &state.registry) {
                Ok(()) => {
                    let mut r = text(StatusCode::OK, body);
                    if let Ok(v) =
                        "application/openmetrics-text; version=1.0.0; charset=utf-8".parse()
                    {
                        r.headers_mut().insert(hyper::header::CONTENT_TYPE, v);
                    }
                    r
                }
                Err(_) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "metrics encoding failed\n".into(),
                ),
            }
        }
        "/healthz" => flag(
            state.healthy.load(Ordering::Relaxed),
            "ok\n",
            "a controller loop stopped\n",
        ),
        "/readyz" => flag(
            state.ready.load(Ordering::Relaxed),
            "ok\n",
            "caches not synced yet\n",
        ),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found: try /metrics, /healthz or /readyz\n".into(),
        ),
    }
}

fn flag(ok: bool, yes: &str, no: &str) -> Response<Full<Bytes>> {
    if ok {
        text(StatusCode::OK, yes.into())
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, no.into())
    }
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r
}
