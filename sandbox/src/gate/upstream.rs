//! The gate's way to moto: forwarding a request as it came, and side queries the rules need (made
//! with the caller's credentials and account, so moto answers from the same account and region).

use anyhow::{Context, Result, bail};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Method, Response};
use http_body_util::Full;
use serde_json::Value;

use super::{
    changes::{self, Listener},
    protocol, xml,
};

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
    /// Told of every change moto accepts ([`changes`]).
    pub(crate) listener: Listener,
}

impl Upstream {
    pub fn new(base: &str) -> Result<Upstream> {
        let http = reqwest::Client::builder()
            .no_proxy()
            .timeout(std::time::Duration::from_secs(60))
            .pool_max_idle_per_host(32)
            .build()?;
        Ok(Upstream { http, base: base.trim_end_matches('/').to_string(), listener: Listener::default() })
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
        let resp = req.body(body.clone()).send().await.context("forwarding to moto")?;
        let status = resp.status().as_u16();
        let resp_headers = resp.headers().clone();
        let answer = resp.bytes().await.context("reading moto's answer")?;
        if let Some(listener) = self.listener.get()
            && let Ok(uri) = path_and_query.parse::<http::Uri>()
        {
            let id = protocol::identify(headers, &uri, &body);
            if let Some(change) = changes::change_of(&id, status, &answer) {
                listener.changed(change);
            }
        }
        Ok(Raw { status, headers: resp_headers, body: answer })
    }

    /// A handle for side queries on behalf of a request with these headers (same account and region).
    pub fn side(&self, incoming: &HeaderMap) -> Side<'_> {
        let account = incoming.get("x-moto-account-id").and_then(|v| v.to_str().ok()).map(str::to_string);
        let region = protocol::credential_scope(incoming)
            .map(|(r, _)| r)
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "us-east-1".to_string());
        Side { up: self, account, region }
    }

    /// A handle for side queries the gate makes on its own (background work), as `account` in `region`.
    pub fn side_as(&self, account: &str, region: &str) -> Side<'_> {
        Side { up: self, account: Some(account.to_string()), region: region.to_string() }
    }
}

/// An error answer of a side query.
#[derive(Debug, thiserror::Error)]
#[error("moto answered {status} {code:?}: {message}")]
pub struct SideError {
    pub status: u16,
    pub code: Option<String>,
    pub message: String,
}

/// Side queries to moto. moto routes a query-protocol call by the service in the credential scope
/// (it does not check signatures), so each call carries a scope for its own service.
pub struct Side<'a> {
    up: &'a Upstream,
    account: Option<String>,
    region: String,
}

impl Side<'_> {
    pub fn region(&self) -> &str {
        &self.region
    }

    fn headers(&self, service: &str) -> Result<HeaderMap> {
        let mut headers = HeaderMap::new();
        let auth = format!(
            "AWS4-HMAC-SHA256 Credential={}/20240101/{}/{service}/aws4_request, SignedHeaders=host, Signature=0",
            crate::moto::ACCESS_KEY_ID,
            self.region
        );
        headers.insert(http::header::AUTHORIZATION, HeaderValue::from_str(&auth)?);
        if let Some(a) = &self.account {
            headers.insert("x-moto-account-id", HeaderValue::from_str(a)?);
        }
        Ok(headers)
    }

    /// An ECS JSON call.
    pub async fn ecs(&self, operation: &str, body: Value) -> Result<Value> {
        self.json("ecs", &format!("AmazonEC2ContainerServiceV20141113.{operation}"), body).await
    }

    /// A JSON-protocol call (`target` is the whole `X-Amz-Target`).
    pub async fn json(&self, service: &str, target: &str, body: Value) -> Result<Value> {
        let mut headers = self.headers(service)?;
        headers.insert("x-amz-target", HeaderValue::from_str(target)?);
        headers.insert("content-type", HeaderValue::from_static("application/x-amz-json-1.1"));
        let raw = self.up.send(&Method::POST, "/", &headers, Bytes::from(body.to_string())).await?;
        if raw.status != 200 {
            let code = protocol::error_code(raw.status, &raw.headers, &raw.body);
            let message = String::from_utf8_lossy(&raw.body).chars().take(300).collect();
            return Err(SideError { status: raw.status, code, message }.into());
        }
        raw.json().context("moto's answer is not JSON")
    }

    /// An Auto Scaling (query-protocol) call; returns the parsed XML answer.
    pub async fn query(&self, action: &str, version: &str, params: &[(&str, String)]) -> Result<xml::Node> {
        self.call("autoscaling", action, version, params).await
    }

    /// An EC2 call.
    pub async fn ec2(&self, action: &str, params: &[(&str, String)]) -> Result<xml::Node> {
        self.call("ec2", action, "2016-11-15", params).await
    }

    /// A query-protocol call of any service (`autoscaling`, `ec2`, `iam`, `sts`).
    pub async fn call(
        &self,
        service: &str,
        action: &str,
        version: &str,
        params: &[(&str, String)],
    ) -> Result<xml::Node> {
        let mut form: Vec<(&str, &str)> = vec![("Action", action), ("Version", version)];
        form.extend(params.iter().map(|(k, v)| (*k, v.as_str())));
        let body = serde_urlencoded::to_string(&form)?;
        let mut headers = self.headers(service)?;
        headers.insert("content-type", HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"));
        let raw = self.up.send(&Method::POST, "/", &headers, Bytes::from(body)).await?;
        if raw.status != 200 {
            let code = protocol::error_code(raw.status, &raw.headers, &raw.body);
            let message = String::from_utf8_lossy(&raw.body).chars().take(300).collect();
            return Err(SideError { status: raw.status, code, message }.into());
        }
        let text = std::str::from_utf8(&raw.body)?;
        let node = xml::parse(text)?;
        if node.name.ends_with("ErrorResponse") || (node.name == "Response" && node.child("Errors").is_some()) {
            bail!("moto answered an error: {text}");
        }
        Ok(node)
    }
}
