//! A small client for the REST API that makes the calls Flink's CLI makes: the `/v1` prefix,
//! and a JSON body (`{}` when there is nothing to say) on every request.

use anyhow::{Result, anyhow, bail};
use reqwest::Method;
use serde_json::{Value, json};

pub struct RestClient {
    address: String,
    http: reqwest::blocking::Client,
}

impl RestClient {
    /// `address` is `host:port`.
    pub fn new(address: &str) -> Result<RestClient> {
        let http = reqwest::blocking::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| anyhow!("cannot create an HTTP client: {e}"))?;
        Ok(RestClient {
            address: address.to_string(),
            http,
        })
    }

    pub fn get(&self, path: &str) -> Result<Value> {
        self.call(Method::GET, path, json!({}))
    }

    pub fn post(&self, path: &str, body: Value) -> Result<Value> {
        self.call(Method::POST, path, body)
    }

    /// POSTs raw bytes (a bundle upload).
    pub fn post_bytes(&self, path: &str, bytes: Vec<u8>) -> Result<Value> {
        let url = format!("http://{}/v1{path}", self.address);
        let response = self
            .http
            .post(&url)
            .header("Content-Type", "application/octet-stream")
            .body(bytes)
            .send()
            .map_err(|e| {
                anyhow!(
                    "cannot reach the REST API at {}: {}",
                    self.address,
                    root_cause(&e)
                )
            })?;
        let status = response.status();
        let text = response
            .text()
            .map_err(|e| anyhow!("POST {url}: reading the response: {e}"))?;
        let value: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if !status.is_success() {
            bail!(
                "POST /v1{path} answered {status}: {} (REST API at {})",
                value["errors"][0].as_str().unwrap_or(&text),
                self.address
            );
        }
        Ok(value)
    }

    pub fn patch(&self, path: &str) -> Result<Value> {
        self.call(Method::PATCH, path, json!({}))
    }

    /// One call; a non-2xx answer becomes an error carrying the server's `errors` message
    /// (which names the job or trigger id) and the address asked.
    fn call(&self, method: Method, path: &str, body: Value) -> Result<Value> {
        let url = format!("http://{}/v1{path}", self.address);
        let response = self
            .http
            .request(method.clone(), &url)
            .json(&body)
            .send()
            .map_err(|e| {
                let why = if e.is_connect() {
                    "nothing listens there (is the job running? pass -m HOST:PORT)".to_string()
                } else {
                    root_cause(&e)
                };
                anyhow!("cannot reach the REST API at {}: {why}", self.address)
            })?;
        let status = response.status();
        let text = response
            .text()
            .map_err(|e| anyhow!("{method} {url}: reading the response: {e}"))?;
        let value: Value = if text.trim().is_empty() {
            Value::Null
        } else {
            serde_json::from_str(&text).map_err(|e| {
                anyhow!(
                    "{method} {url} answered {status} with a body that is not JSON ({e}): {text}"
                )
            })?
        };
        if !status.is_success() {
            let message = value["errors"]
                .as_array()
                .map(|errs| {
                    errs.iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join("; ")
                })
                .filter(|m| !m.is_empty())
                .unwrap_or_else(|| format!("{method} /v1{path} answered {status}"));
            bail!("{message} (REST API at {})", self.address);
        }
        Ok(value)
    }
}

fn root_cause(e: &dyn std::error::Error) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
