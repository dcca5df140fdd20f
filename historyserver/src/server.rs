//! The HistoryServer's HTTP API: the archived REST documents under their Flink paths (with
//! and without `/v1`), read-only; the dashboard's static files for every other path.

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use crate::cache::{Cache, safe_segment};
use crate::config::HistoryConfig;

pub struct AppState {
    pub cache: Arc<Cache>,
    pub config: HistoryConfig,
}

pub fn router(state: Arc<AppState>) -> Router {
    Router::new().fallback(serve).with_state(state)
}

fn json_response(status: StatusCode, body: String) -> Response {
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

fn not_found(path: &str) -> Response {
    let body = json!({ "errors": [format!("Not found: {path}")] }).to_string();
    json_response(StatusCode::NOT_FOUND, body)
}

async fn serve(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    method: Method,
    uri: Uri,
) -> Response {
    // The path as sent (not percent-decoded): encoded dots or slashes never match a safe
    // segment, so they end up as 404 like every other path outside the archive.
    let raw = uri.path();
    if method != Method::GET && method != Method::HEAD {
        let body = json!({ "errors": ["The HistoryServer is read-only: only GET is allowed."] });
        return json_response(StatusCode::METHOD_NOT_ALLOWED, body.to_string());
    }
    let path = raw
        .strip_prefix("/v1")
        .filter(|p| p.starts_with('/'))
        .unwrap_or(raw);
    if let Some(r) = api(&state, path).await {
        return r;
    }
    if path != raw || is_api(path) {
        return not_found(raw);
    }
    match sluice_web::asset(path) {
        Some(a) => ([(header::CONTENT_TYPE, a.content_type)], a.body).into_response(),
        None => not_found(raw),
    }
}

/// Paths that belong to the REST API, so a miss is a JSON 404, never a dashboard page.
fn is_api(path: &str) -> bool {
    ["/jobs", "/overview", "/config", "/taskmanagers", "/jars"]
        .iter()
        .any(|p| path == *p || path.starts_with(&format!("{p}/")))
}

async fn api(state: &AppState, path: &str) -> Option<Response> {
    let cache = &state.cache;
    match path {
        "/jobs/overview" => return Some(json_response(StatusCode::OK, cache.overview_json())),
        "/config" => return Some(json_response(StatusCode::OK, config_json(&state.config))),
        "/overview" => return Some(json_response(StatusCode::OK, overview_json(cache))),
        "/jobs" => {
            let jobs: Vec<_> = cache
                .states()
                .into_iter()
                .map(|(id, status)| json!({"id": id, "status": status}))
                .collect();
            return Some(json_response(
                StatusCode::OK,
                json!({ "jobs": jobs }).to_string(),
            ));
        }
        _ => {}
    }
    let rest = path.strip_prefix("/jobs/")?;
    let (job_id, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    if !safe_segment(job_id) || !cache.contains(job_id) {
        return None;
    }
    if let Some(url) = log_url(&state.config, job_id, tail) {
        return Some(json_response(
            StatusCode::OK,
            json!({ "url": url }).to_string(),
        ));
    }
    let file = cache.document(job_id, tail)?;
    // Belt and braces: whatever the segment check let through must resolve inside the cache.
    let root = tokio::fs::canonicalize(cache.root()).await.ok()?;
    let real = tokio::fs::canonicalize(&file).await.ok()?;
    if !real.starts_with(&root) {
        return None;
    }
    let body = tokio::fs::read_to_string(&real).await.ok()?;
    Some(json_response(StatusCode::OK, body))
}

/// `/jobs/<id>/jobmanager/log-url` and `/jobs/<id>/taskmanagers/<tm-id>/log-url` (Flink's
/// paths): the configured URL pattern with `<jobid>` (and `<tmid>`) filled in.
fn log_url(config: &HistoryConfig, job_id: &str, tail: &str) -> Option<String> {
    if tail == "/jobmanager/log-url" {
        return config
            .jobmanager_log_url
            .as_ref()
            .map(|p| p.replace("<jobid>", job_id));
    }
    let tm = tail
        .strip_prefix("/taskmanagers/")?
        .strip_suffix("/log-url")?;
    if !safe_segment(tm) {
        return None;
    }
    config
        .taskmanager_log_url
        .as_ref()
        .map(|p| p.replace("<jobid>", job_id).replace("<tmid>", tm))
}

fn config_json(config: &HistoryConfig) -> String {
    json!({
        "refresh-interval": config.refresh_interval.as_millis() as u64,
        "timezone-name": "Coordinated Universal Time",
        "timezone-offset": 0,
        "flink-version": env!("CARGO_PKG_VERSION"),
        "flink-revision": "",
        "features": {
            "web-submit": false,
            "web-cancel": false,
            "web-rescale": false,
            "web-history": true,
        },
    })
    .to_string()
}

fn overview_json(cache: &Cache) -> String {
    let (mut finished, mut cancelled, mut failed) = (0, 0, 0);
    for (_, state) in cache.states() {
        match state.as_str() {
            "FINISHED" => finished += 1,
            "CANCELED" => cancelled += 1,
            "FAILED" => failed += 1,
            _ => {}
        }
    }
    json!({
        "taskmanagers": 0,
        "slots-total": 0,
        "slots-available": 0,
        "jobs-running": 0,
        "jobs-finished": finished,
        "jobs-cancelled": cancelled,
        "jobs-failed": failed,
        "flink-version": env!("CARGO_PKG_VERSION"),
        "flink-commit": "",
    })
    .to_string()
}
