//! A client of the Prisma Cloud Compute Console API: authentication with a cached token renewed
//! before expiry and on 401, 429 honoured (`Retry-After`), and the three calls the operator makes:
//! the Console's version, the generated ECS task definition, and the connected Defenders.
//!
//! Clients are shared per (URL, credentials, TLS settings, project) through [`ConsolePool`], so a
//! Console gets one token however many resources use it, and one backoff: after a transient
//! failure (5xx, network, 429) [`ConsoleClient::guarded`] leaves the Console alone for a while,
//! doubling up to a limit, whatever the number of resources asking. No secret (password, token, install
//! bundle) is ever logged or put into an error message.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use reqwest::{Method, StatusCode};
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::{
    budget::{Bucket, DEFAULT_CONSOLE_RATE_LIMIT, RateLimit},
    crd::reasons,
    metrics::Metrics,
};

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

/// How long a Console is left alone after consecutive transient failures: `first`, doubling up
/// to `max`, each scaled into [50%, 100%] (jitter), and never less than a `Retry-After`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Backoff {
    pub first: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self { first: Duration::from_secs(5), max: Duration::from_secs(300) }
    }
}

impl Backoff {
    /// The wait after `failures` consecutive failures; `random` in [0, 1].
    pub fn delay(&self, failures: u32, random: f64) -> Duration {
        let exp = self.first.saturating_mul(1u32 << failures.saturating_sub(1).min(16)).min(self.max);
        exp.mul_f64(0.5 + 0.5 * random.clamp(0.0, 1.0))
    }
}

/// Why the Console was not answering (now, or when last asked and still backing off).
#[derive(Clone, Debug, PartialEq)]
pub struct ConsoleOutage {
    /// `ConsoleUnavailable` (5xx, network) or `ConsoleRateLimited` (429).
    pub reason: &'static str,
    pub message: String,
    /// When the Console is asked again.
    pub retry_in: Duration,
}

/// The backoff state of one client.
struct Outage {
    failures: u32,
    until: Instant,
    reason: &'static str,
    message: String,
}

/// Clients shared across resources.
#[derive(Clone)]
pub struct ConsolePool {
    clients: Arc<Mutex<HashMap<String, Arc<ConsoleClient>>>>,
    metrics: Arc<Metrics>,
    backoff: Backoff,
    rate_limit: Option<RateLimit>,
    /// One rate budget per Console URL, shared by its clients (other credentials, projects).
    budgets: Arc<Mutex<HashMap<String, Arc<Bucket>>>>,
}

impl ConsolePool {
    /// A pool whose Consoles get the default rate budget.
    pub fn new(metrics: Arc<Metrics>, backoff: Backoff) -> Self {
        Self {
            clients: Default::default(),
            metrics,
            backoff,
            rate_limit: Some(DEFAULT_CONSOLE_RATE_LIMIT),
            budgets: Default::default(),
        }
    }

    /// Each Console's rate budget (`--console-rate-limit`); `None`: unlimited.
    pub fn with_rate_limit(mut self, limit: Option<RateLimit>) -> Self {
        self.rate_limit = limit;
        self
    }

    pub fn client(&self, target: &ConsoleTarget) -> Result<Arc<ConsoleClient>, ConsoleError> {
        let key = target.key();
        let mut clients = self.clients.lock().unwrap();
        if let Some(c) = clients.get(&key) {
            return Ok(c.clone());
        }
        let mut c = ConsoleClient::new(target.clone(), self.metrics.clone())?;
        c.backoff = self.backoff;
        c.budget = self.rate_limit.map(|limit| {
            let url = target.url.trim_end_matches('/').to_string();
            self.budgets.lock().unwrap().entry(url).or_insert_with(|| Arc::new(Bucket::new(limit))).clone()
        });
        let c = Arc::new(c);
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
    backoff: Backoff,
    outage: Mutex<Option<Outage>>,
    /// The Console's rate budget, waited on before every request (src/budget.rs).
    budget: Option<Arc<Bucket>>,
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
        Ok(Self {
            http,
            target,
            token: Default::default(),
            metrics,
            backoff: Backoff::default(),
            outage: Default::default(),
            budget: None,
        })
    }

    /// Waits for the Console's rate budget; every request (retries, logins and renewals
    /// included) passes here just before it is sent.
    async fn spend_budget(&self) {
        if let Some(bucket) = &self.budget
            && let Some(waited) = bucket.acquire().await
        {
            tracing::debug!(waited_ms = waited.as_millis() as u64, "waited for the Console's rate budget");
            self.metrics.console_rate_limit_wait(waited);
        }
    }

    /// Runs `call` unless the Console is backing off after a transient failure. `Ok(Err(outage))`:
    /// not answered, now or during the backoff (transient); `Err`: answered with a refusal
    /// (credentials, permissions, a bad request) that retrying cannot fix.
    pub async fn guarded<T>(
        &self,
        call: impl Future<Output = Result<T, ConsoleError>>,
    ) -> Result<Result<T, ConsoleOutage>, ConsoleError> {
        if let Some(outage) = self.backing_off(Instant::now()) {
            return Ok(Err(outage));
        }
        match call.await {
            Ok(v) => {
                *self.outage.lock().unwrap() = None;
                Ok(Ok(v))
            }
            Err(e) if e.is_transient() => Ok(Err(self.failed(&e, Instant::now(), rand::random::<f64>()))),
            Err(e) => {
                *self.outage.lock().unwrap() = None;
                Err(e)
            }
        }
    }

    /// `Some` while the Console is left alone. Once the wait is over one caller is let through;
    /// the others keep waiting (one more step) until it has an answer, so a returning Console
    /// meets one request, not one per resource.
    fn backing_off(&self, now: Instant) -> Option<ConsoleOutage> {
        let mut slot = self.outage.lock().unwrap();
        let o = slot.as_mut()?;
        if now < o.until {
            return Some(ConsoleOutage { reason: o.reason, message: o.message.clone(), retry_in: o.until - now });
        }
        o.until = now + self.backoff.delay(o.failures, 1.0);
        None
    }

    /// Records a transient failure and returns the outage with the wait before the next try.
    fn failed(&self, e: &ConsoleError, now: Instant, random: f64) -> ConsoleOutage {
        let mut slot = self.outage.lock().unwrap();
        let failures = slot.as_ref().map_or(0, |o| o.failures).saturating_add(1);
        let wait = self.backoff.delay(failures, random).max(e.retry_after().unwrap_or_default());
        let reason = match e {
            ConsoleError::RateLimited { .. } => reasons::CONSOLE_RATE_LIMITED,
            _ => reasons::CONSOLE_UNAVAILABLE,
        };
        let message = format!("{e}; retrying with backoff");
        *slot = Some(Outage { failures, until: now + wait, reason, message: message.clone() });
        ConsoleOutage { reason, message, retry_in: wait }
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
            self.spend_budget().await;
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
            self.spend_budget().await;
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
        self.spend_budget().await;
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

#[cfg(test)]
mod tests {
    use super::*;

    fn client() -> ConsoleClient {
        crate::install_crypto_provider();
        let target = ConsoleTarget {
            url: "http://127.0.0.1:1".into(),
            username: "u".into(),
            password: "p".into(),
            ca_pem: None,
            insecure_skip_tls_verify: false,
            project: None,
        };
        let mut c = ConsoleClient::new(target, Arc::new(Metrics::default())).unwrap();
        c.backoff = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(8) };
        c
    }

    fn server_error() -> ConsoleError {
        ConsoleError::Server { operation: "version", status: 503, message: "down".into() }
    }

    #[test]
    fn one_rate_budget_per_console_url_whatever_the_credentials() {
        crate::install_crypto_provider();
        let target = |url: &str, user: &str| ConsoleTarget {
            url: url.into(),
            username: user.into(),
            password: "p".into(),
            ca_pem: None,
            insecure_skip_tls_verify: false,
            project: None,
        };
        let pool = ConsolePool::new(Arc::new(Metrics::default()), Backoff::default());
        let a = pool.client(&target("http://console:8083", "a")).unwrap();
        let b = pool.client(&target("http://console:8083/", "b")).unwrap();
        let other = pool.client(&target("http://other:8083", "a")).unwrap();
        let (a, b, other) = (a.budget.clone().unwrap(), b.budget.clone().unwrap(), other.budget.clone().unwrap());
        assert!(Arc::ptr_eq(&a, &b), "two users of one Console share its budget");
        assert!(!Arc::ptr_eq(&a, &other));
        assert_eq!(a.limit(), DEFAULT_CONSOLE_RATE_LIMIT);
        let unlimited = ConsolePool::new(Arc::new(Metrics::default()), Backoff::default()).with_rate_limit(None);
        assert!(unlimited.client(&target("http://console:8083", "a")).unwrap().budget.is_none());
    }

    #[test]
    fn backoff_doubles_to_its_limit_with_jitter() {
        let b = Backoff { first: Duration::from_secs(1), max: Duration::from_secs(8) };
        assert_eq!(b.delay(1, 1.0), Duration::from_secs(1));
        assert_eq!(b.delay(3, 1.0), Duration::from_secs(4));
        assert_eq!(b.delay(30, 1.0), Duration::from_secs(8));
        assert_eq!(b.delay(3, 0.0), Duration::from_secs(2), "jitter keeps at least half");
    }

    #[test]
    fn after_a_transient_failure_the_console_is_left_alone_then_probed_once() {
        let c = client();
        let t0 = Instant::now();
        assert_eq!(c.backing_off(t0), None, "nothing failed yet");
        let out = c.failed(&server_error(), t0, 1.0);
        assert_eq!(out.reason, "ConsoleUnavailable");
        assert_eq!(out.retry_in, Duration::from_secs(1));
        assert!(out.message.contains("(503)"), "{}", out.message);
        assert!(c.backing_off(t0 + Duration::from_millis(500)).is_some(), "still waiting");
        // The wait is over: one caller probes, the next one keeps waiting for its answer.
        assert_eq!(c.backing_off(t0 + Duration::from_secs(1)), None);
        assert!(c.backing_off(t0 + Duration::from_secs(1)).is_some());
        // The probe fails too: the wait doubles.
        let out = c.failed(&server_error(), t0 + Duration::from_secs(1), 1.0);
        assert_eq!(out.retry_in, Duration::from_secs(2));
    }

    #[test]
    fn a_rate_limit_waits_at_least_what_the_console_asks() {
        let c = client();
        let e = ConsoleError::RateLimited { operation: "defenders", retry_after: Some(Duration::from_secs(6)) };
        let out = c.failed(&e, Instant::now(), 1.0);
        assert_eq!((out.reason, out.retry_in), ("ConsoleRateLimited", Duration::from_secs(6)));
    }

    #[tokio::test]
    async fn an_answer_ends_the_backoff_and_a_refusal_is_not_an_outage() {
        let c = client();
        c.failed(&server_error(), Instant::now() - Duration::from_secs(60), 1.0);
        let answered: Result<Result<u8, ConsoleOutage>, ConsoleError> = c.guarded(async { Ok(7) }).await;
        assert_eq!(answered.unwrap(), Ok(7));
        assert_eq!(c.backing_off(Instant::now()), None);
        let refused =
            c.guarded(async { Err::<u8, _>(ConsoleError::Unauthorized { status: 401, message: "no".into() }) }).await;
        assert!(matches!(refused, Err(ConsoleError::Unauthorized { .. })));
        let down = c.guarded(async { Err::<u8, _>(server_error()) }).await.unwrap();
        assert!(down.is_err());
        let skipped: Result<Result<u8, ConsoleOutage>, ConsoleError> =
            c.guarded(async { panic!("the Console is not asked while it backs off") }).await;
        assert!(matches!(skipped, Ok(Err(_))));
    }
}
