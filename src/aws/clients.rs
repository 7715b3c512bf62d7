//! SDK clients, built once per (region, endpoint, credentials, role) and shared by every resource
//! that uses the same target, with one rate budget per target and service (src/aws/budget.rs).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use aws_config::{BehaviorVersion, Region, retry::RetryConfig, sts::AssumeRoleProvider, timeout::TimeoutConfig};
use aws_credential_types::Credentials;
use sha2::{Digest, Sha256};

use super::budget::AwsBudget;
use crate::budget::AwsRateLimits;

/// Static credentials read from a Secret.
#[derive(Clone)]
pub struct StaticCredentials {
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print key material.
        f.debug_struct("StaticCredentials").field("access_key_id", &"<redacted>").finish()
    }
}

/// Where and as whom to call AWS.
#[derive(Clone, Debug, Default)]
pub struct AwsTarget {
    pub region: String,
    pub endpoint_url: Option<String>,
    pub credentials: Option<StaticCredentials>,
    pub role_arn: Option<String>,
    pub external_id: Option<String>,
}

impl AwsTarget {
    /// A key that identifies the clients to share; credentials enter only as a hash.
    pub(crate) fn key(&self) -> String {
        let mut h = Sha256::new();
        if let Some(c) = &self.credentials {
            h.update(c.access_key_id.as_bytes());
            h.update([0]);
            h.update(c.secret_access_key.as_bytes());
            h.update([0]);
            h.update(c.session_token.as_deref().unwrap_or("").as_bytes());
        }
        format!(
            "{}|{}|{}|{}|{}",
            self.region,
            self.endpoint_url.as_deref().unwrap_or(""),
            hex::encode(h.finalize()),
            self.role_arn.as_deref().unwrap_or(""),
            self.external_id.as_deref().unwrap_or("")
        )
    }
}

/// The SDK clients for one target.
#[derive(Clone, Debug)]
pub struct AwsClients {
    pub ecs: aws_sdk_ecs::Client,
    pub autoscaling: aws_sdk_autoscaling::Client,
    pub ec2: aws_sdk_ec2::Client,
    pub ssm: aws_sdk_ssm::Client,
    /// Read only: whether the workers' instance profile exists, before anything is created.
    pub secretsmanager: aws_sdk_secretsmanager::Client,
    pub iam: aws_sdk_iam::Client,
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Batched reads shared by every resource of this target.
    pub fleet: Arc<super::fleet::FleetCache>,
}

/// Clients shared across resources.
#[derive(Clone)]
pub struct AwsPool {
    clients: Arc<Mutex<HashMap<String, AwsClients>>>,
    /// An endpoint for every target that sets none (the operator's `--aws-endpoint-url`).
    default_endpoint: Option<String>,
    metrics: Arc<crate::metrics::Metrics>,
    /// Each target's rate budget per service (`--aws-rate-limits`).
    rate_limits: AwsRateLimits,
}

impl AwsPool {
    /// A pool whose targets get the default rate budgets.
    pub fn new(default_endpoint: Option<String>, metrics: Arc<crate::metrics::Metrics>) -> Self {
        Self { clients: Default::default(), default_endpoint, metrics, rate_limits: AwsRateLimits::default() }
    }

    /// The rate budget of each target built from now on.
    pub fn with_rate_limits(mut self, limits: AwsRateLimits) -> Self {
        self.rate_limits = limits;
        self
    }

    pub async fn clients(&self, target: &AwsTarget) -> AwsClients {
        let key = target.key();
        if let Some(c) = self.clients.lock().unwrap().get(&key) {
            return c.clone();
        }
        let clients = self.build(target).await;
        self.clients.lock().unwrap().entry(key).or_insert(clients).clone()
    }

    async fn build(&self, target: &AwsTarget) -> AwsClients {
        // One budget per target: every client below, and the STS calls of its credentials, share it.
        let budget = Arc::new(AwsBudget::new(&self.rate_limits, self.metrics.clone()));
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(target.region.clone()))
            .http_client(super::budget::http_client(budget))
            // The stalled-stream guard takes a request waiting for its rate budget (no bytes
            // moving for 5 s) for a dead connection; the attempt timeout above bounds both.
            .stalled_stream_protection(aws_config::stalled_stream_protection::StalledStreamProtectionConfig::disabled())
            // The SDK retries throttling and 5xx a few times itself; beyond that the reconcile
            // requeues with backoff, so keep in-call retries short.
            .retry_config(RetryConfig::standard().with_max_attempts(3))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    // An attempt includes its wait for the rate budget (src/aws/budget.rs).
                    .operation_attempt_timeout(Duration::from_secs(60))
                    .operation_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(url) = target.endpoint_url.as_ref().or(self.default_endpoint.as_ref()) {
            loader = loader.endpoint_url(url);
        }
        if let Some(c) = &target.credentials {
            loader = loader.credentials_provider(Credentials::new(
                c.access_key_id.clone(),
                c.secret_access_key.clone(),
                c.session_token.clone(),
                None,
                "ecs-defender-operator-secret",
            ));
        }
        let mut config = loader.load().await;
        if let Some(role) = &target.role_arn {
            let mut provider =
                AssumeRoleProvider::builder(role).session_name("ecs-defender-operator").configure(&config);
            if let Some(ext) = &target.external_id {
                provider = provider.external_id(ext);
            }
            let provider = provider.build().await;
            config = config
                .into_builder()
                .credentials_provider(aws_credential_types::provider::SharedCredentialsProvider::new(provider))
                .build();
        }
        AwsClients {
            ecs: aws_sdk_ecs::Client::new(&config),
            autoscaling: aws_sdk_autoscaling::Client::new(&config),
            ec2: aws_sdk_ec2::Client::new(&config),
            ssm: aws_sdk_ssm::Client::new(&config),
            secretsmanager: aws_sdk_secretsmanager::Client::new(&config),
            iam: aws_sdk_iam::Client::new(&config),
            metrics: self.metrics.clone(),
            fleet: Default::default(),
        }
    }
}

impl AwsClients {
    /// Records one AWS call's outcome in the metrics and turns an SDK error into [`super::AwsError`].
    pub(crate) fn finish<T, E>(
        &self,
        operation: &'static str,
        result: Result<T, aws_sdk_ecs::error::SdkError<E, aws_smithy_runtime_api::client::orchestrator::HttpResponse>>,
    ) -> Result<T, super::AwsError>
    where
        E: aws_smithy_types::error::metadata::ProvideErrorMetadata + std::error::Error + 'static,
    {
        match result {
            Ok(v) => {
                self.metrics.aws_call(operation, "success");
                Ok(v)
            }
            Err(e) => {
                let err = super::AwsError::from_sdk(operation, e);
                self.metrics.aws_call(operation, if err.transient { "transient_error" } else { "error" });
                Err(err)
            }
        }
    }
}
