//! Routes and handlers. Every error is Flink's `{"errors": [...]}` with Flink's status code,
//! and names the job or trigger id it is about.

use std::sync::Arc;

use crate::JobStatus;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::Deserialize;
use serde_json::{Value, json};

use super::dispatcher::{Dispatcher, JobEntry, OperationKind};
use super::json;
use crate::job::SavepointFormat;

type Shared = State<Arc<Dispatcher>>;

/// An error response: status and message.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "errors": [self.1] }))).into_response()
    }
}

type ApiResult<T> = Result<T, ApiError>;

fn ok(v: Value) -> ApiResult<Response> {
    Ok(axum::Json(v).into_response())
}

fn accepted(v: Value) -> ApiResult<Response> {
    Ok((StatusCode::ACCEPTED, axum::Json(v)).into_response())
}

pub fn router(dispatcher: Arc<Dispatcher>) -> Router {
    let api = Router::new()
        .route("/overview", get(overview))
        .route("/config", get(config))
        .route("/jobs", get(jobs))
        .route("/jobs/overview", get(jobs_overview))
        .route("/jobs/{id}", get(job).patch(job_patch))
        .route("/jobs/{id}/status", get(job_status))
        .route(
            "/jobs/{id}/checkpoints",
            get(checkpoints).post(trigger_checkpoint),
        )
        .route("/jobs/{id}/checkpoints/config", get(checkpoint_config))
        .route("/jobs/{id}/checkpoints/{trigger}", get(checkpoint_status))
        .route("/jobs/{id}/savepoints", axum::routing::post(savepoint))
        .route("/jobs/{id}/savepoints/{trigger}", get(savepoint_status))
        .route("/jobs/{id}/stop", axum::routing::post(stop))
        .route("/jobs/{id}/exceptions", get(exceptions))
        .route("/jobs/{id}/execution-result", get(execution_result))
        .route("/taskmanagers", get(taskmanagers))
        .route("/metrics", get(crate::prometheus::handler))
        .route("/jars/upload", axum::routing::post(upload))
        .route("/jars/{jar}/run", axum::routing::post(run_jar));
    Router::new()
        .nest("/v1", api.clone())
        .merge(api)
        .fallback(dashboard_or_not_found)
        .with_state(dispatcher)
}

/// Paths outside the API are the web dashboard's files (`/` is its page); anything else is
/// Flink's 404.
async fn dashboard_or_not_found(method: Method, uri: Uri) -> Response {
    if (method == Method::GET || method == Method::HEAD)
        && let Some(asset) = sluice_web::asset(uri.path())
    {
        let headers = [
            (header::CONTENT_TYPE, asset.content_type),
            (header::CACHE_CONTROL, "no-cache"),
        ];
        return (headers, asset.body).into_response();
    }
    ApiError(StatusCode::NOT_FOUND, format!("Not found: {}", uri.path())).into_response()
}

fn find(d: &Dispatcher, id: &str) -> ApiResult<Arc<JobEntry>> {
    d.job(id)
        .ok_or_else(|| ApiError(StatusCode::NOT_FOUND, format!("Job {id} not found")))
}

/// Parses a request body; an empty body means "all fields absent", as Flink's client sends
/// `{}` or nothing for requests without options.
fn body<T: for<'a> Deserialize<'a> + Default>(bytes: &Bytes) -> ApiResult<T> {
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("Request did not match expected format: {e}"),
        )
    })
}

/// Largest bundle `POST /jars/upload` accepts.
const MAX_BUNDLE: usize = 1 << 30;

fn cluster_of(d: &Dispatcher) -> ApiResult<(Arc<crate::cluster::Cluster>, sluice_core::Config)> {
    d.cluster().ok_or_else(|| {
        ApiError(
            StatusCode::BAD_REQUEST,
            "this process runs one embedded job; submit bundles to a master (sluice-am)".into(),
        )
    })
}

/// Streams the request body into the master's upload directory: a bundle never sits in
/// memory whole.
async fn upload(State(d): Shared, body: axum::body::Body) -> ApiResult<Response> {
    use axum::body::HttpBody;
    let (cluster, _) = cluster_of(&d)?;
    let internal =
        |e: sluice_core::SluiceError| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    let mut w = cluster.begin_upload().map_err(internal)?;
    let mut body = std::pin::pin!(body);
    while let Some(frame) = std::future::poll_fn(|cx| body.as_mut().poll_frame(cx)).await {
        let frame = frame
            .map_err(|e| ApiError(StatusCode::BAD_REQUEST, format!("reading the upload: {e}")))?;
        if let Some(data) = frame.data_ref() {
            if w.len() + data.len() as u64 > MAX_BUNDLE as u64 {
                return Err(ApiError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("the bundle is larger than {MAX_BUNDLE} bytes"),
                ));
            }
            w.write(data).map_err(internal)?;
        }
    }
    if w.is_empty() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            "the upload has no bundle in its body".into(),
        ));
    }
    let id = cluster.finish_upload(w).map_err(internal)?;
    ok(json!({ "filename": id, "status": "success" }))
}

async fn run_jar(State(d): Shared, Path(jar): Path<String>, bytes: Bytes) -> ApiResult<Response> {
    let (cluster, config) = cluster_of(&d)?;
    let req: crate::cluster::RunRequest = body(&bytes)?;
    let plan_for_rest = req.plan.clone();
    let client = cluster
        .run(&jar, &config, req)
        .map_err(|e| ApiError(StatusCode::BAD_REQUEST, e.to_string()))?;
    let handle = client.handle();
    let job_id = handle.job_id().to_string();
    if let Some(plan) = plan_for_rest {
        let name = plan.name.clone();
        d.add_job(handle, &name, plan, &config);
    }
    // The driver thread owns the job; the dispatcher holds its handle.
    drop(client);
    ok(json!({ "jobid": job_id }))
}

async fn taskmanagers(State(d): Shared) -> ApiResult<Response> {
    let list: Vec<Value> = match d.cluster() {
        Some((cluster, _)) => cluster
            .workers()
            .into_iter()
            .map(|w| {
                json!({
                    "id": w.id,
                    "path": w.host,
                    "slotsNumber": w.slots,
                    "freeSlots": w.free_slots,
                })
            })
            .collect(),
        None => {
            vec![json!({ "id": "embedded", "path": "embedded", "slotsNumber": 1, "freeSlots": 0 })]
        }
    };
    ok(json!({ "taskmanagers": list }))
}

async fn exceptions(State(d): Shared, Path(id): Path<String>) -> ApiResult<Response> {
    let job = find(&d, &id)?;
    let view = job.handle.view();
    let entries: Vec<Value> = view
        .exceptions
        .iter()
        .rev()
        .map(|(ts, msg)| json!({ "exceptionName": "SluiceError", "stacktrace": msg, "timestamp": ts }))
        .collect();
    let root = view
        .failure
        .clone()
        .or_else(|| view.exceptions.last().map(|e| e.1.clone()));
    ok(json!({
        "root-exception": root,
        "timestamp": view.exceptions.last().map(|e| e.0),
        "all-exceptions": [],
        "truncated": false,
        "exceptionHistory": { "entries": entries, "truncated": false },
    }))
}

async fn overview(State(d): Shared) -> ApiResult<Response> {
    let (mut running, mut finished, mut cancelled, mut failed) = (0, 0, 0, 0);
    for j in d.jobs() {
        match j.handle.view().status {
            JobStatus::Finished => finished += 1,
            JobStatus::Canceled => cancelled += 1,
            JobStatus::Failed => failed += 1,
            _ => running += 1,
        }
    }
    let (taskmanagers, slots) = match d.cluster() {
        Some((cluster, _)) => cluster.capacity(),
        None => (1, 1),
    };
    ok(json!({
        "taskmanagers": taskmanagers,
        "slots-total": slots,
        "slots-available": if running > 0 { 0 } else { slots },
        "jobs-running": running,
        "jobs-finished": finished,
        "jobs-cancelled": cancelled,
        "jobs-failed": failed,
        "flink-version": env!("CARGO_PKG_VERSION"),
        "flink-commit": "",
    }))
}

async fn config() -> ApiResult<Response> {
    ok(json!({
        "refresh-interval": 3000,
        "timezone-name": "Coordinated Universal Time",
        "timezone-offset": 0,
        "flink-version": env!("CARGO_PKG_VERSION"),
        "flink-revision": "",
        "features": {
            "web-submit": false,
            "web-cancel": true,
            "web-rescale": false,
            "web-history": false,
        },
    }))
}

async fn jobs(State(d): Shared) -> ApiResult<Response> {
    let jobs: Vec<Value> = d
        .jobs()
        .iter()
        .map(|j| json!({"id": j.id, "status": json::status_name(j.handle.view().status)}))
        .collect();
    ok(json!({ "jobs": jobs }))
}

async fn jobs_overview(State(d): Shared) -> ApiResult<Response> {
    // Newest first, as Flink lists them.
    let jobs: Vec<Value> = d
        .jobs()
        .iter()
        .rev()
        .map(|j| json::job_overview(j))
        .collect();
    ok(json!({ "jobs": jobs }))
}

async fn job(State(d): Shared, Path(id): Path<String>) -> ApiResult<Response> {
    let job = find(&d, &id)?;
    ok(json::job_details(&job))
}

/// `GET /jobs/:id/execution-result`: `IN_PROGRESS` until the job ended, then its outcome in
/// Flink's shape (`application-status` SUCCEEDED, CANCELED or FAILED with the failure cause).
async fn execution_result(State(d): Shared, Path(id): Path<String>) -> ApiResult<Response> {
    let job = find(&d, &id)?;
    let view = job.handle.view();
    if !view.status.is_globally_terminal() {
        return ok(json!({ "status": { "id": "IN_PROGRESS" } }));
    }
    let application_status = match view.status {
        JobStatus::Finished => "SUCCEEDED",
        JobStatus::Canceled => "CANCELED",
        _ => "FAILED",
    };
    let mut result = json!({
        "id": job.id,
        "application-status": application_status,
        "accumulator-results": {},
        "net-runtime": view.end_time_ms.unwrap_or(view.start_time_ms) - view.start_time_ms,
    });
    if let Some(failure) = &view.failure {
        result["failure-cause"] = json!({
            "class": "SluiceError",
            "stack-trace": failure,
            "serialized-throwable": "",
        });
    }
    ok(json!({ "status": { "id": "COMPLETED" }, "job-execution-result": result }))
}

async fn job_status(State(d): Shared, Path(id): Path<String>) -> ApiResult<Response> {
    let job = find(&d, &id)?;
    ok(json!({"status": json::status_name(job.handle.view().status)}))
}

#[derive(Deserialize)]
struct PatchQuery {
    mode: Option<String>,
}

/// `PATCH /jobs/:id?mode=cancel`: 202 with an empty JSON body, also for a job that already
/// ended (cancelling it changes nothing), like Flink.
async fn job_patch(
    State(d): Shared,
    Path(id): Path<String>,
    Query(q): Query<PatchQuery>,
) -> ApiResult<Response> {
    let job = find(&d, &id)?;
    match q.mode.as_deref().unwrap_or("cancel") {
        "cancel" => {
            let status = job.handle.view().status;
            // Flink answers 409 for a job that ended otherwise; cancelling twice is fine.
            if status.is_globally_terminal() && status != JobStatus::Canceled {
                return Err(ApiError(
                    StatusCode::CONFLICT,
                    format!(
                        "Job cancellation failed because job {id} has already reached another terminal state ({}).",
                        json::status_name(status)
                    ),
                ));
            }
            job.handle.cancel();
            accepted(json!({}))
        }
        other => Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!("mode '{other}' is not supported; use mode=cancel or POST /jobs/{id}/stop"),
        )),
    }
}

async fn checkpoints(State(d): Shared, Path(id): Path<String>) -> ApiResult<Response> {
    let job = find(&d, &id)?;
    ok(json::checkpoints(&job))
}

async fn checkpoint_config(State(d): Shared, Path(id): Path<String>) -> ApiResult<Response> {
    let job = find(&d, &id)?;
    match json::checkpoint_config(&job) {
        Some(v) => ok(v),
        None => Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("Checkpointing is not enabled for job {id}"),
        )),
    }
}

#[derive(Deserialize, Default)]
struct SavepointRequest {
    #[serde(rename = "target-directory")]
    target: Option<String>,
    #[serde(rename = "cancel-job", default)]
    cancel_job: bool,
    /// Flink's `formatType`: `CANONICAL` (the default) or `NATIVE`.
    #[serde(rename = "formatType", default)]
    format: Option<SavepointFormat>,
}

#[derive(Deserialize, Default)]
struct StopRequest {
    #[serde(rename = "targetDirectory")]
    target: Option<String>,
    #[serde(default)]
    drain: bool,
    #[serde(rename = "formatType", default)]
    format: Option<SavepointFormat>,
}

/// Flink rejects savepoint requests without a target when no default is configured, at
/// trigger time; so does this, naming the config key.
fn target_or_default(job: &JobEntry, target: Option<String>) -> ApiResult<Option<String>> {
    if target.is_none() && job.settings.savepoint_dir.is_none() {
        return Err(ApiError(
            StatusCode::BAD_REQUEST,
            format!(
                "No savepoint directory given for job {} and state.savepoints.dir is not configured",
                job.id
            ),
        ));
    }
    Ok(target)
}

async fn savepoint(State(d): Shared, Path(id): Path<String>, raw: Bytes) -> ApiResult<Response> {
    let job = find(&d, &id)?;
    let req: SavepointRequest = body(&raw)?;
    let target = target_or_default(&job, req.target)?;
    let trigger = d.trigger(
        &job,
        OperationKind::Savepoint {
            target,
            cancel_job: req.cancel_job,
            format: req.format.unwrap_or_default(),
        },
    );
    accepted(json!({ "request-id": trigger }))
}

async fn stop(State(d): Shared, Path(id): Path<String>, raw: Bytes) -> ApiResult<Response> {
    let job = find(&d, &id)?;
    let req: StopRequest = body(&raw)?;
    let target = target_or_default(&job, req.target)?;
    let trigger = d.trigger(
        &job,
        OperationKind::Stop {
            target,
            drain: req.drain,
            format: req.format.unwrap_or_default(),
        },
    );
    accepted(json!({ "request-id": trigger }))
}

async fn trigger_checkpoint(State(d): Shared, Path(id): Path<String>) -> ApiResult<Response> {
    let job = find(&d, &id)?;
    let trigger = d.trigger(&job, OperationKind::Checkpoint);
    accepted(json!({ "request-id": trigger }))
}

fn operation(d: &Dispatcher, id: &str, trigger: &str) -> ApiResult<super::Operation> {
    find(d, id)?;
    d.operation(id, trigger).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("There is no operation with trigger id {trigger} for job {id}"),
        )
    })
}

async fn savepoint_status(
    State(d): Shared,
    Path((id, trigger)): Path<(String, String)>,
) -> ApiResult<Response> {
    ok(json::savepoint_status(&operation(&d, &id, &trigger)?))
}

async fn checkpoint_status(
    State(d): Shared,
    Path((id, trigger)): Path<(String, String)>,
) -> ApiResult<Response> {
    ok(json::checkpoint_status(&operation(&d, &id, &trigger)?))
}
