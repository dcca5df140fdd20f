//! A client of the ResourceManager's REST API (`/ws/v1/cluster/...`): new application,
//! submission, application reports, kill, and the scheduler's queues. On a non-secure cluster
//! the caller names itself with `user.name`, as Hadoop's pseudo authentication expects.

use std::time::Duration;

use reqwest::Method;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::error::{Error, Result};
use crate::hadoop_conf::HadoopConf;

/// The application type of Sluice applications.
pub const APPLICATION_TYPE: &str = "Sluice";

/// States in which an application has ended.
pub const TERMINAL_STATES: [&str; 3] = ["FINISHED", "FAILED", "KILLED"];

/// An application report (`GET /ws/v1/cluster/apps/{id}`), the fields this client uses.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
pub struct AppReport {
    pub id: String,
    pub user: String,
    pub name: String,
    pub queue: String,
    pub state: String,
    pub final_status: String,
    pub progress: f64,
    pub tracking_url: String,
    pub diagnostics: String,
    pub application_type: String,
    pub started_time: i64,
    pub finished_time: i64,
    #[serde(rename = "amRPCAddress")]
    pub am_rpc_address: String,
    pub am_container_logs: String,
    #[serde(rename = "allocatedMB")]
    pub allocated_mb: i64,
    pub allocated_v_cores: i64,
}

impl AppReport {
    pub fn is_terminal(&self) -> bool {
        TERMINAL_STATES.contains(&self.state.as_str())
    }

    /// The master's REST address, `host:port`, once the AM has registered with a port.
    pub fn am_address(&self) -> Option<&str> {
        let (host, port) = self.am_rpc_address.rsplit_once(':')?;
        let port: u16 = port.parse().ok()?;
        (!host.is_empty() && host != "N/A" && port > 0).then_some(self.am_rpc_address.as_str())
    }
}

/// `POST /ws/v1/cluster/apps/new-application`: an id and the largest container allowed.
#[derive(Debug, Clone)]
pub struct NewApplication {
    pub id: String,
    pub max_memory_mb: u64,
    pub max_vcores: u64,
}

/// The REST client; with an HA pair it asks each ResourceManager in turn until one answers.
#[derive(Debug, Clone)]
pub struct RmClient {
    addresses: Vec<String>,
    user: String,
    conf_file: String,
    http: reqwest::Client,
}

impl RmClient {
    /// A client of the ResourceManager(s) of `conf`, calling as `user`.
    pub fn new(conf: &HadoopConf, user: &str) -> Result<RmClient> {
        Self::with_addresses(
            conf.rm_webapp_addresses()?,
            user,
            conf.yarn_site().display().to_string(),
        )
    }

    /// A client of the web apps at `addresses` (`host:port`); `conf_file` is named in errors.
    pub fn with_addresses(addresses: Vec<String>, user: &str, conf_file: String) -> Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| Error::Config(format!("cannot create an HTTP client: {e}")))?;
        Ok(RmClient {
            addresses,
            user: user.to_string(),
            conf_file,
            http,
        })
    }

    /// The web app address(es) asked, for messages.
    pub fn address(&self) -> String {
        self.addresses.join(", ")
    }

    /// The application's page in the ResourceManager's web UI (until its master registers a
    /// tracking URL of its own).
    pub fn app_page(&self, id: &str) -> String {
        let address = self.addresses.first().map(String::as_str).unwrap_or("");
        format!("http://{address}/cluster/app/{id}")
    }

    /// `GET /ws/v1/cluster/info`: proves the ResourceManager answers.
    pub async fn cluster_info(&self) -> Result<Value> {
        Ok(self.call(Method::GET, "/ws/v1/cluster/info", None).await?.1)
    }

    /// The leaf queues of the scheduler (`GET /ws/v1/cluster/scheduler`): their short names
    /// and full paths (`default`, `root.default`); the FIFO scheduler has only `default`.
    pub async fn leaf_queues(&self) -> Result<Vec<String>> {
        let (_, v) = self
            .call(Method::GET, "/ws/v1/cluster/scheduler", None)
            .await?;
        let info = &v["scheduler"]["schedulerInfo"];
        let mut out = Vec::new();
        if info["type"] == "fifoScheduler" {
            out.push("default".to_string());
        } else if info["rootQueue"].is_object() {
            collect_queues(&info["rootQueue"], "childQueues", &mut out);
        } else {
            collect_queues(info, "queues", &mut out);
        }
        let mut seen = std::collections::HashSet::new();
        out.retain(|q| seen.insert(q.clone()));
        Ok(out)
    }

    pub async fn new_application(&self) -> Result<NewApplication> {
        let path = "/ws/v1/cluster/apps/new-application";
        let (_, v) = self.call(Method::POST, path, None).await?;
        let id = v["application-id"].as_str().ok_or_else(|| Error::Rm {
            address: self.address(),
            method: "POST".into(),
            path: path.into(),
            status: 200,
            message: format!("no application-id in {v}"),
        })?;
        let max = &v["maximum-resource-capability"];
        Ok(NewApplication {
            id: id.to_string(),
            max_memory_mb: max["memory"].as_u64().unwrap_or(u64::MAX),
            max_vcores: max["vCores"].as_u64().unwrap_or(u64::MAX),
        })
    }

    /// `POST /ws/v1/cluster/apps` with a submission context (see [`crate::spec`]).
    pub async fn submit(&self, submission: &Value) -> Result<()> {
        self.call(Method::POST, "/ws/v1/cluster/apps", Some(submission))
            .await
            .map(|_| ())
    }

    pub async fn app(&self, id: &str) -> Result<AppReport> {
        let path = format!("/ws/v1/cluster/apps/{id}");
        match self.call(Method::GET, &path, None).await {
            Ok((_, v)) => serde_json::from_value(v["app"].clone()).map_err(|e| Error::Rm {
                address: self.address(),
                method: "GET".into(),
                path,
                status: 200,
                message: format!("unexpected application report ({e}): {v}"),
            }),
            Err(Error::Rm { status: 404, .. }) => Err(Error::NoSuchApplication(id.to_string())),
            Err(Error::Rm { status: 400, .. }) => Err(Error::Usage(format!(
                "'{id}' is not an application id (application_<cluster timestamp>_<number>)"
            ))),
            Err(e) => Err(e),
        }
    }

    /// The applications of type [`APPLICATION_TYPE`], in all states or only active ones
    /// (submitted, accepted, running), newest first.
    pub async fn apps(&self, all: bool) -> Result<Vec<AppReport>> {
        let mut path = format!("/ws/v1/cluster/apps?applicationTypes={APPLICATION_TYPE}");
        if !all {
            path.push_str("&states=NEW,NEW_SAVING,SUBMITTED,ACCEPTED,RUNNING");
        }
        let (_, v) = self.call(Method::GET, &path, None).await?;
        let mut apps: Vec<AppReport> = match &v["apps"]["app"] {
            Value::Array(a) => a
                .iter()
                .filter_map(|a| serde_json::from_value(a.clone()).ok())
                .collect(),
            o @ Value::Object(_) => serde_json::from_value(o.clone()).into_iter().collect(),
            _ => Vec::new(),
        };
        apps.sort_by_key(|a| std::cmp::Reverse(a.started_time));
        Ok(apps)
    }

    /// Asks the ResourceManager to kill the application and waits (up to `timeout`) until its
    /// report says it ended; returns that report.
    pub async fn kill(&self, id: &str, timeout: Duration) -> Result<AppReport> {
        let report = self.app(id).await?;
        if report.is_terminal() {
            return Ok(report);
        }
        let path = format!("/ws/v1/cluster/apps/{id}/state");
        self.call(Method::PUT, &path, Some(&json!({"state": "KILLED"})))
            .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let report = self.app(id).await?;
            if report.is_terminal() || tokio::time::Instant::now() >= deadline {
                return Ok(report);
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// One call, on each ResourceManager in turn while they cannot be reached. A non-2xx
    /// answer becomes [`Error::Rm`] with the server's message.
    async fn call(&self, method: Method, path: &str, body: Option<&Value>) -> Result<(u16, Value)> {
        let sep = if path.contains('?') { '&' } else { '?' };
        let mut unreachable = Vec::new();
        for address in &self.addresses {
            let url = format!("http://{address}{path}{sep}user.name={}", self.user);
            let mut request = self
                .http
                .request(method.clone(), &url)
                .header("Accept", "application/json");
            if let Some(b) = body {
                request = request.json(b);
            }
            let response = match request.send().await {
                Ok(r) => r,
                Err(e) if e.is_connect() || e.is_timeout() => {
                    unreachable.push(format!("{address}: {}", root_cause(&e)));
                    continue;
                }
                Err(e) => {
                    return Err(Error::RmUnreachable {
                        address: address.clone(),
                        conf: self.conf_file.clone(),
                        why: root_cause(&e),
                    });
                }
            };
            let status = response.status().as_u16();
            let text = response.text().await.unwrap_or_default();
            let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
            if !(200..300).contains(&status) {
                let message = value["RemoteException"]["message"]
                    .as_str()
                    .map(str::to_string)
                    .unwrap_or_else(|| text.chars().take(300).collect());
                return Err(Error::Rm {
                    address: address.clone(),
                    method: method.to_string(),
                    path: path.to_string(),
                    status,
                    message,
                });
            }
            return Ok((status, value));
        }
        Err(Error::RmUnreachable {
            address: self.address(),
            conf: self.conf_file.clone(),
            why: unreachable.join("; "),
        })
    }
}

/// Leaf queues below `q` (children under `children`.`queue`, an array or a single object).
fn collect_queues(q: &Value, children: &str, out: &mut Vec<String>) {
    let kids: Vec<&Value> = match &q[children]["queue"] {
        Value::Array(a) => a.iter().collect(),
        o @ Value::Object(_) => vec![o],
        _ => Vec::new(),
    };
    if kids.is_empty() {
        for key in ["queueName", "queuePath"] {
            if let Some(n) = q[key].as_str() {
                out.push(n.to_string());
                // The fair scheduler names queues by path; users write them without `root.`.
                if let Some(short) = n.strip_prefix("root.") {
                    out.push(short.to_string());
                }
            }
        }
    }
    for k in kids {
        collect_queues(k, children, out);
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_leaf_queues_of_capacity_and_fair_schedulers() {
        let capacity = json!({"queueName": "root", "queues": {"queue": [
            {"queueName": "default", "queuePath": "root.default"},
            {"queueName": "eng", "queuePath": "root.eng", "queues": {"queue":
                {"queueName": "etl", "queuePath": "root.eng.etl"}}},
        ]}});
        let mut out = Vec::new();
        collect_queues(&capacity, "queues", &mut out);
        assert!(out.contains(&"default".to_string()), "{out:?}");
        assert!(out.contains(&"root.eng.etl".to_string()), "{out:?}");
        assert!(!out.contains(&"eng".to_string()), "a parent queue: {out:?}");

        let fair = json!({"queueName": "root", "childQueues": {"queue": [
            {"queueName": "root.default"}]}});
        let mut out = Vec::new();
        collect_queues(&fair, "childQueues", &mut out);
        assert_eq!(out, ["root.default", "default"]);
    }

    #[test]
    fn the_am_address_needs_a_registered_port() {
        let mut r = AppReport::default();
        for (addr, ok) in [
            ("N/A", false),
            ("h:-1", false),
            ("h:0", false),
            ("h:8", true),
        ] {
            r.am_rpc_address = addr.into();
            assert_eq!(r.am_address().is_some(), ok, "{addr}");
        }
    }
}
