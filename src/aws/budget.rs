//! The AWS side of the rate budgets ([`crate::budget`]): an SDK HTTP client that wraps the SDK's
//! default one and, before it sends a request, waits on the bucket of the request's service.
//!
//! It sits below the SDK's retry loop, so every attempt passes (a throttled call retried three
//! times spends three tokens), and it is the HTTP client of the whole `SdkConfig` of a target, so
//! the credential providers' STS calls pass too. The service is read from the SigV4 credential
//! scope (`Credential=AKID/DATE/REGION/SERVICE/aws4_request`), else from an AWS host name (unsigned
//! calls such as `AssumeRoleWithWebIdentity`); a request that names neither is not limited.
//!
//! A wait counts against the SDK's attempt timeout (20 s, src/aws/clients.rs): when the queue of a
//! service is longer than that, attempts time out and the reconcile backs off, which is what an
//! over-spent budget should cause.

use std::{collections::HashMap, sync::Arc};

use aws_smithy_http_client::{Builder, ConnectorBuilder, proxy::ProxyConfig, tls};
use aws_smithy_runtime_api::{
    box_error::BoxError,
    client::{
        connector_metadata::ConnectorMetadata,
        http::{
            HttpClient, HttpConnector, HttpConnectorFuture, HttpConnectorSettings, SharedHttpClient,
            SharedHttpConnector,
        },
        orchestrator::HttpRequest,
        runtime_components::{RuntimeComponents, RuntimeComponentsBuilder},
    },
};
use aws_smithy_types::config_bag::ConfigBag;

use crate::{
    budget::{AWS_SERVICES, AwsRateLimits, Bucket},
    metrics::Metrics,
};

/// The buckets of one AWS target, one per limited service.
pub struct AwsBudget {
    buckets: HashMap<&'static str, Bucket>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for AwsBudget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map().entries(self.buckets.iter().map(|(s, b)| (s, b.limit().to_string()))).finish()
    }
}

impl AwsBudget {
    pub fn new(limits: &AwsRateLimits, metrics: Arc<Metrics>) -> Self {
        Self { buckets: limits.iter().map(|(s, l)| (s, Bucket::new(l))).collect(), metrics }
    }

    /// Waits for a token of `service` (no wait for a service without a limit).
    pub async fn acquire(&self, service: &str) {
        if let Some((name, bucket)) = self.buckets.get_key_value(service)
            && let Some(waited) = bucket.acquire().await
        {
            tracing::debug!(service = name, waited_ms = waited.as_millis() as u64, "waited for the AWS rate budget");
            self.metrics.aws_rate_limit_wait(name, waited);
        }
    }
}

/// The SDK's default HTTPS client (as `aws-smithy-runtime` builds it for the current behavior
/// version: rustls with aws-lc, proxy settings from the environment) behind `budget`.
pub fn http_client(budget: Arc<AwsBudget>) -> SharedHttpClient {
    let inner = Builder::new().build_with_connector_fn(|settings, components| {
        let mut conn =
            ConnectorBuilder::default().tls_provider(tls::Provider::Rustls(tls::rustls_provider::CryptoMode::AwsLc));
        conn.set_connector_settings(settings.cloned());
        if let Some(components) = components {
            conn.set_sleep_impl(components.sleep_impl());
        }
        conn.set_proxy_config(Some(ProxyConfig::from_env()));
        conn.build()
    });
    SharedHttpClient::new(BudgetedHttpClient { inner, budget })
}

#[derive(Debug)]
struct BudgetedHttpClient {
    inner: SharedHttpClient,
    budget: Arc<AwsBudget>,
}

impl HttpClient for BudgetedHttpClient {
    fn http_connector(&self, settings: &HttpConnectorSettings, components: &RuntimeComponents) -> SharedHttpConnector {
        SharedHttpConnector::new(BudgetedConnector {
            inner: self.inner.http_connector(settings, components),
            budget: self.budget.clone(),
        })
    }

    fn validate_base_client_config(
        &self,
        components: &RuntimeComponentsBuilder,
        cfg: &ConfigBag,
    ) -> Result<(), BoxError> {
        self.inner.validate_base_client_config(components, cfg)
    }

    fn validate_final_config(&self, components: &RuntimeComponents, cfg: &ConfigBag) -> Result<(), BoxError> {
        self.inner.validate_final_config(components, cfg)
    }

    fn connector_metadata(&self) -> Option<ConnectorMetadata> {
        self.inner.connector_metadata()
    }
}

#[derive(Debug)]
struct BudgetedConnector {
    inner: SharedHttpConnector,
    budget: Arc<AwsBudget>,
}

impl HttpConnector for BudgetedConnector {
    fn call(&self, request: HttpRequest) -> HttpConnectorFuture {
        let service = service_of(&request);
        let inner = self.inner.clone();
        let budget = self.budget.clone();
        HttpConnectorFuture::new(async move {
            if let Some(service) = service {
                budget.acquire(service).await;
            }
            inner.call(request).await
        })
    }
}

/// The signing name of the service `request` is for, if it is one the operator budgets.
fn service_of(request: &HttpRequest) -> Option<&'static str> {
    let from_scope = request.headers().get("authorization").and_then(scope_service);
    let name = from_scope.or_else(|| {
        // Unsigned: `sts.us-east-1.amazonaws.com`, `ecs.eu-west-1.amazonaws.com.cn`, ...
        let uri: http::Uri = request.uri().parse().ok()?;
        let host = uri.host()?;
        host.contains(".amazonaws.com").then(|| host.split('.').next()).flatten().map(str::to_string)
    })?;
    AWS_SERVICES.iter().find(|s| **s == name).copied()
}

/// `SERVICE` of a SigV4 `Authorization` header (`... Credential=AKID/DATE/REGION/SERVICE/aws4_request, ...`).
fn scope_service(authorization: &str) -> Option<String> {
    let scope = authorization.split("Credential=").nth(1)?.split([',', ' ']).next()?;
    let parts: Vec<&str> = scope.split('/').collect();
    (parts.len() == 5 && parts[4] == "aws4_request").then(|| parts[3].to_string())
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, Instant};

    use aws_smithy_types::body::SdkBody;

    use super::*;
    use crate::budget::RateLimit;

    fn request(uri: &str, authorization: Option<&str>) -> HttpRequest {
        let mut b = http::Request::builder().uri(uri);
        if let Some(a) = authorization {
            b = b.header("authorization", a);
        }
        HttpRequest::try_from(b.body(SdkBody::empty()).unwrap()).unwrap()
    }

    const SIGNED_ECS: &str = "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261201/us-east-1/ecs/aws4_request, \
                              SignedHeaders=content-type;host;x-amz-date, Signature=abc";

    #[test]
    fn the_service_comes_from_the_signature_scope_else_the_host() {
        assert_eq!(service_of(&request("http://127.0.0.1:4566/", Some(SIGNED_ECS))), Some("ecs"));
        let asg = SIGNED_ECS.replace("/ecs/", "/autoscaling/");
        assert_eq!(
            service_of(&request("https://autoscaling.us-east-1.amazonaws.com/", Some(&asg))),
            Some("autoscaling")
        );
        // IRSA's AssumeRoleWithWebIdentity is not signed.
        assert_eq!(service_of(&request("https://sts.us-east-1.amazonaws.com/", None)), Some("sts"));
        assert_eq!(service_of(&request("http://127.0.0.1:4566/", None)), None, "unknown: not limited");
        let other = SIGNED_ECS.replace("/ecs/", "/lambda/");
        assert_eq!(service_of(&request("http://127.0.0.1:4566/", Some(&other))), None);
        assert_eq!(scope_service("Bearer xyz"), None);
    }

    /// A connector that answers at once and records when each request reached it.
    #[derive(Clone, Debug, Default)]
    struct Recorder(Arc<std::sync::Mutex<Vec<Instant>>>);

    impl HttpConnector for Recorder {
        fn call(&self, _request: HttpRequest) -> HttpConnectorFuture {
            self.0.lock().unwrap().push(Instant::now());
            HttpConnectorFuture::ready(Ok(aws_smithy_runtime_api::http::Response::new(
                200u16.try_into().unwrap(),
                SdkBody::empty(),
            )))
        }
    }

    #[tokio::test]
    async fn requests_reach_the_wire_within_their_service_budget_and_waits_are_counted() {
        let metrics = Arc::new(Metrics::default());
        let mut limits = AwsRateLimits::unlimited();
        limits.set("ecs", Some(RateLimit::new(10.0, 2))).unwrap();
        let budget = Arc::new(AwsBudget::new(&limits, metrics.clone()));
        let wire = Recorder::default();
        let conn = BudgetedConnector { inner: SharedHttpConnector::new(wire.clone()), budget };
        let start = Instant::now();
        for _ in 0..6 {
            conn.call(request("http://127.0.0.1/", Some(SIGNED_ECS))).await.unwrap();
        }
        // 2 at once, then 4 at 10/s.
        assert!(start.elapsed() >= Duration::from_millis(380), "{:?}", start.elapsed());
        // Another service has no limit here: it does not wait behind ECS.
        let iam = SIGNED_ECS.replace("/ecs/", "/iam/");
        let before = Instant::now();
        for _ in 0..20 {
            conn.call(request("http://127.0.0.1/", Some(&iam))).await.unwrap();
        }
        assert!(before.elapsed() < Duration::from_millis(100));
        assert_eq!(wire.0.lock().unwrap().len(), 26, "every request reached the wire");
        let text = metrics.render();
        assert!(text.contains("aws_rate_limit_waits_total{service=\"ecs\"} 4"), "{text}");
        assert!(!text.contains("service=\"iam\""), "{text}");
    }
}
