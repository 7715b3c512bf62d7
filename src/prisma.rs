//! A client of the Prisma Cloud Compute Console API: authentication with a cached token renewed
//! before expiry and on 401, 429 honoured (`Retry-After`), and the three calls the operator makes:
//! the Console's version, the generated ECS task definition, and the connected Defenders.
//!
//! Clients are shared per (URL, credentials, TLS settings, project) through [`ConsolePool`], so a
//! Console gets one token however many resources use it. No secret (password, token, install
//! bundle) is ever logged or put into an error message.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::metrics::Metrics;

/// Renew the token when it is older than this (SaaS tokens embed a 10-minute platform token;
/// the Console's docs recommend renewing every 5 minutes).
const TOKEN_RENEW_AFTER: Duration = Duration::from_secs(5 * 60);
/// Longest `Retry-After` waited for inside one call; longer ones are left to the requeue.
const MAX_INLINE_RETRY_AFTER: Duration = Duration::from_secs(3);
/// Page size for `GET /defenders` (the SaaS maximum).
const PAGE: usize = 50;

#[derive(Debug, Clone, thiserror::Error)]
pub enum ConsoleError {
    #[error("the Console rejected the credentials ({status}): {message}")]
    Unauthorized { status: u16, message: String },
    #[error("the Console user lacks a permission for {operation} (403): {message}")]
    Forbidden { operation: &'static str, message: String },
    #[error("the Console refused {operation} ({status}): {message}")]
    Rejected { operation: &'static str, status: u16, message: String },
    #[error("the Console is rate limiting {operation} (429)")]
    RateLimited { operation: &'static str, retry_after: Option<Duration> },
    #[error("the Console failed {operation} ({status}): {message}")]
    Server { operation: &'static str, status: u16, message: String },
    #[error("cannot reach the Console for {operation}: {message}")]
    Transport { operation: &'static str, message: String },
    #[error("the Console's answer to {operation} is not what the API documents: {message}")]
    InvalidResponse { operation: &'static str, message: String },
    #[error("invalid Console settings: {0}")]
    Config(String),
}

impl ConsoleError {
    /// Worth retrying later without any change by the user.
    pub fn is_transient(&self) -> bool {
        matches!(self, Self::RateLimited { .. } | Self::Server { .. } | Self::Transport { .. })
    }

    pub fn retry_after(&self) -> Option<Duration> {
        match self {
            Self::RateLimited { retry_after, .. } => *retry_after,
            _ => None,
        }
    }
}

/// How to reach a Console.
#[derive(Clone)]
pub struct ConsoleTarget {
    /// Base URL including any SaaS path prefix, no trailing slash.
    pub url: String,
    pub username: String,
    pub password: String,
    pub ca_pem: Option<String>,
    pub insecure_skip_tls_verify: bool,
    pub project: Option<String>,
}

impl std::fmt::Debug for ConsoleTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConsoleTarget").field("url", &self.url).field("project", &self.project).finish_non_exhaustive()
    }
}

impl ConsoleTarget {
    fn key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            &self.url,
            &self.username,
            &self.password,
            self.ca_pem.as_deref().unwrap_or(""),
            self.project.as_deref().unwrap_or(""),
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        h.update([self.insecure_skip_tls_verify as u8]);
        hex::encode(h.finalize())
    }
}

/// A Defender as the Console lists it (the fields the operator uses).
#[derive(Clone, Debug, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Defender {
    #[serde(default)]
    pub hostname: String,
    #[serde(default)]
    pub connected: bool,
    #[serde(default)]
    pub cluster: String,
    #[serde(default)]
    pub version: String,
    #[serde(default)]
    pub cloud_metadata: CloudMetadata,
}

#[derive(Clone, Debug, Default, Deserialize, PartialEq)]
pub struct CloudMetadata {
    #[serde(default, rename = "resourceID")]
    pub resource_id: String,
}

/// Clients shared across resources.
#[derive(Clone)]
pub struct ConsolePool {
    clients: Arc<Mutex<HashMap<String, Arc<ConsoleClient>>>>,
    metrics: Arc<Metrics>,
}

impl ConsolePool {
    pub fn new(metrics: Arc<Metrics>) -> Self {
        Self { clients: Default::default(), metrics }
    }

    pub fn client(&self, target: &ConsoleTarget) -> Result<Arc<ConsoleClient>, ConsoleError> {
        let key = target.key();
        let mut clients = self.clients.lock().unwrap();
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let c = Arc::new(ConsoleClient::new(target.clone(), self.metrics.clone())?);
        clients.insert(key, c.clone());
        Ok(c)
    }
}

struct Token {
    value: String,
    obtained: Instant,
}

pub struct ConsoleClient {
    http: reqwest::Client,
    target: ConsoleTarget,
    token: tokio::sync::Mutex<Option<Token>>,
    metrics: Arc<Metrics>,
}

impl ConsoleClient {
    pub fn new(target: ConsoleTarget, metrics: Arc<Metrics>) -> Result<Self, ConsoleError> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("ecs-defender-operator/", env!("CARGO_PKG_VERSION")));
        if let Some(pem) = &target.ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem.as_bytes())
                .map_err(|e| ConsoleError::Config(format!("the CA bundle is not valid PEM: {e}")))?;
            if certs.is_empty() {
                return Err(ConsoleError::Config("the CA bundle holds no certificate".into()));
            }
            for c in certs {
                builder = builder.add_root_certificate(c);
            }
        }
        if target.insecure_skip_tls_verify {
            builder = builder.danger_accept_invalid_certs(true);
        }
        let http = builder.build().map_err(|e| ConsoleError::Config(format!("building the HTTP client: {e}")))?;
        Ok(Self { http, target, token: Default::default(), metrics })
    }

    /// `GET /api/v1/version`: the Console's version, a JSON string.
    pub async fn version(&self) -> Result<String, ConsoleError> {
        let resp = self.call("version", Method::GET, "/api/v1/version", &[], None).await?;
        let v: String = parse(resp, "version").await?;
        Ok(v)
    }

    /// `POST /api/v1/defenders/ecs-task.json`: the Defender's task definition, as opaque JSON.
    pub async fn generate_ecs_task(&self, options: &serde_json::Value) -> Result<serde_json::Value, ConsoleError> {
        let resp =
            self.call("ecs-task.json", Method::POST, "/api/v1/defenders/ecs-task.json", &[], Some(options)).await?;
        let v: serde_json::Value = parse(resp, "ecs-task.json").await?;
        if !v.get("containerDefinitions").is_some_and(|c| c.is_array()) {
            return Err(ConsoleError::InvalidResponse {
                operation: "ecs-task.json",
                message: "no containerDefinitions array in the generated task definition".into(),
            });
        }
        Ok(v)
    }

    /// `GET /api/v1/defenders?cluster=...`, all pages.
    pub async fn defenders(
        &self,
        cluster: Option<&str>,
        connected: Option<bool>,
    ) -> Result<Vec<Defender>, ConsoleError> {
        let mut all = Vec::new();
        let mut offset = 0usize;
        loop {
            let mut query = vec![("limit".to_string(), PAGE.to_string()), ("offset".to_string(), offset.to_string())];
            if let Some(c) = cluster {
                query.push(("cluster".into(), c.into()));
            }
            if let Some(c) = connected {
                query.push(("connected".into(), c.to_string()));
            }
            let resp = self.call("defenders", Method::GET, "/api/v1/defenders", &query, None).await?;
            let total =
                resp.headers().get("total-count").and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<usize>().ok());
            let page: Option<Vec<Defender>> = parse(resp, "defenders").await?; // the Console answers null for none
            let page = page.unwrap_or_default();
            let n = page.len();
            all.extend(page);
            offset += n;
            let done = match total {
                Some(t) => offset >= t || n == 0,
                None => n < PAGE,
            };
            if done {
                return Ok(all);
            }
        }
    }

    /// One API call with the token, re-authenticating once on 401 and retrying briefly on 429.
    async fn call(
        &self,
        operation: &'static str,
        method: Method,
        path: &str,
        query: &[(String, String)],
        body: Option<&serde_json::Value>,
    ) -> Result<reqwest::Response, ConsoleError> {
        let mut reauthenticated = false;
        let mut rate_limited = 0;
        loop {
            let token = self.token(false).await?;
            let mut req = self.http.request(method.clone(), self.url(path)).bearer_auth(&token).query(query);
            if let Some(p) = &self.target.project {
                req = req.query(&[("project", p)]);
            }
            if let Some(b) = body {
                req = req.json(b);
            }
            let resp = match req.send().await {
                Ok(r) => r,
                Err(e) => {
                    self.metrics.console_call(operation, "transport_error");
                    return Err(ConsoleError::Transport { operation, message: transport_message(&e) });
                }
            };
            let status = resp.status();
            if status == StatusCode::UNAUTHORIZED && !reauthenticated {
                // Expired or revoked: authenticate afresh and try once more.
                self.metrics.console_call(operation, "unauthorized");
                reauthenticated = true;
                self.token(true).await?;
                continue;
            }
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.metrics.console_call(operation, "rate_limited");
                let retry_after = retry_after(&resp);
                if rate_limited < 2 && retry_after.unwrap_or(Duration::from_millis(500)) <= MAX_INLINE_RETRY_AFTER {
                    rate_limited += 1;
                    let backoff = Duration::from_millis(250 * (1 << rate_limited)) + jitter();
                    tokio::time::sleep(retry_after.unwrap_or(backoff)).await;
                    continue;
                }
                return Err(ConsoleError::RateLimited { operation, retry_after });
            }
            if status.is_success() {
                self.metrics.console_call(operation, "success");
                return Ok(resp);
            }
            self.metrics.console_call(operation, if status.is_server_error() { "server_error" } else { "error" });
            let message = error_message(resp).await;
            return Err(match status.as_u16() {
                401 => ConsoleError::Unauthorized { status: 401, message },
                403 => ConsoleError::Forbidden { operation, message },
                s if s >= 500 => ConsoleError::Server { operation, status: s, message },
                s => ConsoleError::Rejected { operation, status: s, message },
            });
        }
    }

    /// The cached token, or a new one when there is none, it is old, or `refresh` is set.
    async fn token(&self, refresh: bool) -> Result<String, ConsoleError> {
        let mut slot = self.token.lock().await;
        if let Some(t) = slot.as_ref()
            && !refresh
        {
            if t.obtained.elapsed() < TOKEN_RENEW_AFTER {
                return Ok(t.value.clone());
            }
            // Old but maybe not expired: renew it; if that fails, log in again.
            if let Ok(v) = self.renew(&t.value).await {
                *slot = Some(Token { value: v.clone(), obtained: Instant::now() });
                return Ok(v);
            }
        }
        let v = self.authenticate().await?;
        *slot = Some(Token { value: v.clone(), obtained: Instant::now() });
        Ok(v)
    }

    async fn authenticate(&self) -> Result<String, ConsoleError> {
        let operation = "authenticate";
        let body = serde_json::json!({"username": self.target.username, "password": self.target.password});
        let mut attempts = 0;
        loop {
            let resp = self.http.post(self.url("/api/v1/authenticate")).json(&body).send().await.map_err(|e| {
                self.metrics.console_call(operation, "transport_error");
                ConsoleError::Transport { operation, message: transport_message(&e) }
            })?;
            let status = resp.status();
            if status == StatusCode::TOO_MANY_REQUESTS {
                self.metrics.console_call(operation, "rate_limited");
                let ra = retry_after(&resp);
                if attempts < 2 && ra.unwrap_or_default() <= MAX_INLINE_RETRY_AFTER {
                    attempts += 1;
                    tokio::time::sleep(ra.unwrap_or(Duration::from_millis(500)) + jitter()).await;
                    continue;
                }
                return Err(ConsoleError::RateLimited { operation, retry_after: ra });
            }
            if status.is_success() {
                self.metrics.console_call(operation, "success");
                #[derive(Deserialize)]
                struct Auth {
                    token: String,
                }
                let auth: Auth = parse(resp, operation).await?;
                return Ok(auth.token);
            }
            self.metrics.console_call(operation, if status.is_server_error() { "server_error" } else { "error" });
            let message = error_message(resp).await;
            return Err(match status.as_u16() {
                400 | 401 | 403 => ConsoleError::Unauthorized { status: status.as_u16(), message },
                s if s >= 500 => ConsoleError::Server { operation, status: s, message },
                s => ConsoleError::Rejected { operation, status: s, message },
            });
        }
    }

    async fn renew(&self, token: &str) -> Result<String, ConsoleError> {
        let operation = "authenticate/renew";
        let resp = self
            .http
            .get(self.url("/api/v1/authenticate/renew"))
            .bearer_auth(token)
            .send()
            .await
            .map_err(|e| ConsoleError::Transport { operation, message: transport_message(&e) })?;
        if !resp.status().is_success() {
            self.metrics.console_call(operation, "error");
            return Err(ConsoleError::Unauthorized {
                status: resp.status().as_u16(),
                message: "renewal refused".into(),
            });
        }
        self.metrics.console_call(operation, "success");
        #[derive(Deserialize)]
        struct Auth {
            token: String,
        }
        let auth: Auth = parse(resp, operation).await?;
        Ok(auth.token)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.target.url.trim_end_matches('/'), path)
    }
}

async fn parse<T: serde::de::DeserializeOwned>(
    resp: reqwest::Response,
    operation: &'static str,
) -> Result<T, ConsoleError> {
    let bytes =
        resp.bytes().await.map_err(|e| ConsoleError::Transport { operation, message: transport_message(&e) })?;
    // serde's message names the position, never the content (the body may hold an install bundle).
    serde_json::from_slice(&bytes)
        .map_err(|e| ConsoleError::InvalidResponse { operation, message: format!("not the expected JSON ({e})") })
}

/// The Console's `{"err": "..."}`, shortened; never the request.
async fn error_message(resp: reqwest::Response) -> String {
    let text = resp.text().await.unwrap_or_default();
    let msg = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v.get("err").and_then(|e| e.as_str()).map(str::to_string))
        .unwrap_or(text);
    msg.chars().take(300).collect()
}

fn retry_after(resp: &reqwest::Response) -> Option<Duration> {
    resp.headers().get("retry-after")?.to_str().ok()?.trim().parse::<u64>().ok().map(Duration::from_secs)
}

fn transport_message(e: &reqwest::Error) -> String {
    let mut msg = if e.is_timeout() { "timed out".to_string() } else { e.to_string() };
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        source = s.source();
    }
    msg
}

fn jitter() -> Duration {
    Duration::from_millis(rand::random::<u64>() % 200)
}
