//! The gate's way to moto: forwarding a request as it came, and side queries the rules need (made
//! with the caller's credentials and account, so moto answers from the same account and region).

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::Full;
use serde_json::Value;

use super::{protocol, xml};

/// Headers that belong to one hop and are not forwarded.
const HOP_HEADERS: &[&str] =
    &["host", "content-length", "connection", "transfer-encoding", "keep-alive", "upgrade", "proxy-connection", "te"];

/// moto's answer.
#[derive(Clone, Debug)]
pub struct Raw {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Raw {
    pub fn json(&self) -> Option<Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The same answer with a rewritten JSON body.
    pub fn with_json(mut self, v: &Value) -> Raw {
        self.body = Bytes::from(v.to_string());
        self
    }

    pub fn into_response(self) -> Response<Full<Bytes>> {
        let mut resp = Response::new(Full::new(self.body));
        *resp.status_mut() = http::StatusCode::from_u16(self.status).unwrap_or(http::StatusCode::BAD_GATEWAY);
        for (k, v) in self.headers.iter() {
            if !HOP_HEADERS.contains(&k.as_str()) {
                resp.headers_mut().append(k.clone(), v.clone());
            }
        }
        resp
    }
}

#[derive(Clone)]
pub struct Upstream {
    http: reqwest::Client,
    base: String,
}

impl Upstream {
    pub fn new(base: &str) -> Result<Upstream> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build()?;
        Ok(Upstream { http, base: base.trim_end_matches('/').to_string() })
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    /// Sends a request to moto as it came (minus hop-by-hop headers).
    pub async fn send(&self, method: &Method, path_and_query: &str, headers: &HeaderMap, body: Bytes) -> Result<Raw> {
        let mut req = self.http.request(method.clone(), format!("{}{}", self.base, path_and_query));
        for (k, v) in headers.iter() {
            if !HOP_HEADERS.contains(&k.as_str()) {
                req = req.header(k, v);
            }
        }
        let resp = req.body(body).send().await.context("forwarding to moto")?;
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp.bytes().await.context("reading moto's answer")?;
        Ok(Raw { status, headers, body })
    }

    /// A handle for side queries on behalf of a request with these headers.
    pub fn side(&self, incoming: &HeaderMap) -> Side<'_> {
        let mut headers = HeaderMap::new();
        for name in [http::header::AUTHORIZATION.as_str(), "x-moto-account-id", "x-amz-date"] {
            if let Some(v) = incoming.get(name) {
                headers.insert(http::HeaderName::from_static(name), v.clone());
            }
        }
        Side { up: self, headers }
    }
}

/// An error answer of a side query.
#[derive(Debug, thiserror::Error)]
#[error("moto answered {status} {code:?}")]
pub struct SideError {
    pub status: u16,
    pub code: Option<String>,
}

pub struct Side<'a> {
    up: &'a Upstream,
    headers: HeaderMap,
}

impl Side<'_> {
    /// An ECS JSON call.
    pub async fn ecs(&self, operation: &str, body: Value) -> Result<Value> {
        let mut headers = self.headers.clone();
        headers
            .insert("x-amz-target", HeaderValue::from_str(&format!("AmazonEC2ContainerServiceV20141113.{operation}"))?);
        headers.insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
        let raw = self.up.send(&Method::POST, "/", &headers, Bytes::from(body.to_string())).await?;
        if raw.status != 200 {
            let code = protocol::error_code(raw.status, &raw.headers, &raw.body);
            return Err(SideError { status: raw.status, code }.into());
        }
        raw.json().context("moto's ECS answer is not JSON")
    }

    /// A query-protocol call (Auto Scaling); returns the parsed XML answer.
    pub async fn query(&self, action: &str, version: &str, params: &[(&str, String)]) -> Result<xml::Node> {
        let mut form: Vec<(&str, &str)> = vec![("Action", action), ("Version", version)];
        form.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
        let body = serde_urlencoded::to_string(&form)?;
        let mut headers = self.headers.clone();
        headers.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"));
        let raw = self.up.send(&Method::POST, "/", &headers, Bytes::from(body)).await?;
        if raw.status != 200 {
            let code = protocol::error_code(raw.status, &raw.headers, &raw.body);
            return Err(SideError { status: raw.status, code }.into());
        }
        let text = std::str::from_utf8(&raw.body)?;
        let node = xml::parse(text)?;
        if node.name.ends_with("ErrorResponse") {
            bail!("moto answered an error: {text}");
        }
        Ok(node)
    }
}
