//! The Borgmaster's HTTP listener (`--http ADDR`): `/metrics` (Prometheus text format),
//! `/healthz`, and the status pages: `/` (`?all=1` for finished jobs too), `/job/NAME`,
//! `/machine/ID` (404 with a page for unknown ones).

use crate::master::Master;
use axum::extract::{Path, Query, State};
use axum::http::{header, StatusCode};
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
        .route("/job/{name}", get(job_page))
        .route("/machine/{id}", get(machine_page))
        .route("/metrics", get(render_metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .with_state(Ctx { master, metrics, insecure })
}

/// `/?all=1`.
#[derive(serde::Deserialize)]
struct SummaryQuery {
    #[serde(default)]
    all: Option<String>,
}

async fn status(State(c): State<Ctx>, Query(q): Query<SummaryQuery>) -> Html<String> {
    let all = q.all.is_some_and(|v| v != "0" && v != "false");
    let usage = c.master.cell_usage().await;
    Html(crate::status::render(&c.master, usage, c.insecure, all))
}

fn not_found(what: &str) -> (StatusCode, Html<String>) {
    let body = format!(
        "<!doctype html><html><body><h1>Not found</h1><p>{}</p><p><a href='/'>the cell</a></p></body></html>\n",
        crate::status::esc(what)
    );
    (StatusCode::NOT_FOUND, Html(body))
}

async fn job_page(State(c): State<Ctx>, Path(name): Path<String>) -> (StatusCode, Html<String>) {
    match crate::status::render_job(&c.master, &name, c.insecure) {
        Some(page) => (StatusCode::OK, Html(page)),
        None => not_found(&format!("no job named {name:?}")),
    }
}

async fn machine_page(State(c): State<Ctx>, Path(id): Path<String>) -> (StatusCode, Html<String>) {
    match crate::status::render_machine(&c.master, &id, c.insecure) {
        Some(page) => (StatusCode::OK, Html(page)),
        None => not_found(&format!("no machine {id:?} is registered")),
    }
}

async fn render_metrics(State(c): State<Ctx>) -> impl IntoResponse {
    let raft = c.master.raft_status();
    let usage = c.master.cell_usage().await;
    let gauges = {
        let state = c.master.state();
        let oldest = c.master.soft().oldest_poll_age_ms(&state, crate::master::now_ms());
        crate::metrics::read_gauges(&state, usage, oldest)
    };
    crate::metrics::set_gauges(gauges, &raft);
    c.metrics.run_upkeep();
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], c.metrics.render())
}
