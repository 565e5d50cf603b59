//! The Borgmaster's HTTP listener (`--http ADDR`): `/metrics` (Prometheus text format),
//! `/healthz`, and the status page at `/`.

use crate::master::Master;
use axum::extract::State;
use axum::http::header;
use axum::response::{Html, IntoResponse};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use std::sync::Arc;

#[derive(Clone)]
struct Ctx {
    master: Arc<Master>,
    metrics: PrometheusHandle,
    insecure: bool,
}

/// The router; serve it with `axum::serve`.
pub fn router(master: Arc<Master>, metrics: PrometheusHandle, insecure: bool) -> Router {
    Router::new()
        .route("/", get(status))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Ctx { master, metrics, insecure })
}

async fn status(State(c): State<Ctx>) -> Html<String> {
    Html(crate::status::render(&c.master, c.insecure))
}

async fn render_metrics(State(c): State<Ctx>) -> impl IntoResponse {
    crate::metrics::refresh(&c.master);
    c.metrics.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], c.metrics.render())
}
