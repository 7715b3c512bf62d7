//! Shared setup of the gate and ECS world tests: moto in a temporary directory, the gate in front of
//! it, AWS SDK clients, and polling with deadlines.
#![allow(dead_code)]

use std::{future::Future, time::Duration};

use aws_config::{BehaviorVersion, SdkConfig, retry::RetryConfig};
use aws_sdk_ecs::config::Credentials;
use base64::Engine;
use sandbox::{
    gate::{Gate, GateConfig},
    moto::{ACCESS_KEY_ID, Moto, SECRET_ACCESS_KEY},
};
use tempfile::TempDir;

pub const AMI: &str = "ami-12c6146b";

pub struct Env {
    pub gate: Gate,
    pub moto: Moto,
    pub dir: TempDir,
    /// Clients through the gate (3 attempts, the SDK's default).
    pub ecs: aws_sdk_ecs::Client,
    pub asg: aws_sdk_autoscaling::Client,
    pub ec2: aws_sdk_ec2::Client,
    /// Clients straight to moto (to set up what the gate should not see, and to compare).
    pub moto_ecs: aws_sdk_ecs::Client,
    pub moto_ec2: aws_sdk_ec2::Client,
}

pub async fn start() -> Env {
    start_with(|_| {}).await
}

pub async fn start_with(configure: impl FnOnce(&mut GateConfig)) -> Env {
    sandbox::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path()).await.expect("moto starts");
    let mut cfg = GateConfig::new(moto.url());
    configure(&mut cfg);
    let gate = Gate::start(cfg).await.expect("gate starts");
    let through = sdk(&gate.url(), 3).await;
    let direct = sdk(moto.url(), 3).await;
    Env {
        ecs: aws_sdk_ecs::Client::new(&through),
        asg: aws_sdk_autoscaling::Client::new(&through),
        ec2: aws_sdk_ec2::Client::new(&through),
        moto_ecs: aws_sdk_ecs::Client::new(&direct),
        moto_ec2: aws_sdk_ec2::Client::new(&direct),
        gate,
        moto,
        dir,
    }
}

/// SDK config for an endpoint, with `attempts` attempts per call (1: errors surface at once).
pub async fn sdk(endpoint: &str, attempts: u32) -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest())
        .region("us-east-1")
        .endpoint_url(endpoint)
        .credentials_provider(Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "sandbox"))
        .retry_config(RetryConfig::standard().with_max_attempts(attempts))
        .load()
        .await
}

/// Polls `f` until it yields `Some`, failing the test after `timeout`.
pub async fn wait_for<T, F, Fut>(timeout: Duration, what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn user_data_for(cluster: &str) -> String {
    let script = format!(
        "#!/bin/bash\nset -e\necho ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\necho ECS_ENABLE_TASK_IAM_ROLE=true >> /etc/ecs/ecs.config\n"
    );
    base64::engine::general_purpose::STANDARD.encode(script)
}

pub async fn create_cluster(ecs: &aws_sdk_ecs::Client, name: &str) {
    ecs.create_cluster().cluster_name(name).send().await.expect("CreateCluster");
}

/// Registers a task definition `family` with the given environment; returns its ARN.
pub async fn register_task_definition(ecs: &aws_sdk_ecs::Client, family: &str, env: &[(&str, &str)]) -> String {
    use aws_sdk_ecs::types::{Compatibility, ContainerDefinition, KeyValuePair};
    let mut container =
        ContainerDefinition::builder().name(family).image("registry.example.com/defender:1").memory(256);
    for (k, v) in env {
        container = container.environment(KeyValuePair::builder().name(*k).value(*v).build());
    }
    ecs.register_task_definition()
        .family(family)
        .requires_compatibilities(Compatibility::Ec2)
        .container_definitions(container.build())
        .send()
        .await
        .expect("RegisterTaskDefinition")
        .task_definition()
        .and_then(|t| t.task_definition_arn())
        .unwrap()
        .to_string()
}

/// Launches an EC2 instance straight in moto and registers it as a container instance of `cluster`
/// (what the ECS agent would do); returns the container instance ARN.
pub async fn register_instance(env: &Env, cluster: &str) -> String {
    let run = env.moto_ec2.run_instances().image_id(AMI).min_count(1).max_count(1).send().await.expect("RunInstances");
    let id = run.instances()[0].instance_id().unwrap().to_string();
    let doc = serde_json::json!({"instanceId": id, "region": "us-east-1", "accountId": sandbox::moto::ACCOUNT_ID});
    env.moto_ecs
        .register_container_instance()
        .cluster(cluster)
        .instance_identity_document(doc.to_string())
        .send()
        .await
        .expect("RegisterContainerInstance")
        .container_instance()
        .and_then(|c| c.container_instance_arn())
        .unwrap()
        .to_string()
}

/// Starts a task of `service` straight in moto, as the DAEMON scheduler would; returns its ARN.
pub async fn start_service_task(env: &Env, cluster: &str, service: &str, td: &str, container_instance: &str) -> String {
    let resp = env
        .moto_ecs
        .start_task()
        .cluster(cluster)
        .task_definition(td)
        .container_instances(container_instance)
        .group(format!("service:{service}"))
        .send()
        .await
        .expect("StartTask");
    resp.tasks()[0].task_arn().unwrap().to_string()
}

pub async fn describe_service(ecs: &aws_sdk_ecs::Client, cluster: &str, name: &str) -> aws_sdk_ecs::types::Service {
    ecs.describe_services().cluster(cluster).services(name).send().await.expect("DescribeServices").services()[0]
        .clone()
}

/// A query-protocol call (IAM, STS, EC2, ...) signed with `key` by the AWS SigV4 signer, sent to
/// `endpoint`; returns the status and body. For services this crate has no SDK client for.
pub async fn signed_query(endpoint: &str, service: &str, form: &[(&str, &str)], key: (&str, &str)) -> (u16, String) {
    let body = serde_urlencoded::to_string(form).unwrap();
    signed_request(endpoint, service, &[("content-type", "application/x-www-form-urlencoded; charset=utf-8")], body)
        .with_key(key)
        .send()
        .await
}

/// A JSON-protocol call (Secrets Manager, ...) signed with the sandbox's key.
pub async fn signed_json(endpoint: &str, service: &str, target: &str, body: serde_json::Value) -> (u16, String) {
    signed_request(
        endpoint,
        service,
        &[("content-type", "application/x-amz-json-1.1"), ("x-amz-target", target)],
        body.to_string(),
    )
    .send()
    .await
}

pub struct SignedRequest {
    endpoint: String,
    service: String,
    headers: Vec<(String, String)>,
    body: String,
    key: (String, String),
    /// Replaces the body after signing (what a tampering proxy would do).
    tamper: Option<String>,
}

pub fn signed_request(endpoint: &str, service: &str, headers: &[(&str, &str)], body: String) -> SignedRequest {
    SignedRequest {
        endpoint: endpoint.to_string(),
        service: service.to_string(),
        headers: headers.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        body,
        key: (ACCESS_KEY_ID.to_string(), SECRET_ACCESS_KEY.to_string()),
        tamper: None,
    }
}

impl SignedRequest {
    pub fn with_key(mut self, key: (&str, &str)) -> Self {
        self.key = (key.0.to_string(), key.1.to_string());
        self
    }

    pub fn tampered(mut self, body: &str) -> Self {
        self.tamper = Some(body.to_string());
        self
    }

    pub async fn send(self) -> (u16, String) {
        use aws_sigv4::{
            http_request::{SignableBody, SignableRequest, SigningSettings, sign},
            sign::v4,
        };
        let identity = Credentials::new(&self.key.0, &self.key.1, None, None, "test").into();
        let params = v4::SigningParams::builder()
            .identity(&identity)
            .region("us-east-1")
            .name(&self.service)
            .time(std::time::SystemTime::now())
            .settings(SigningSettings::default())
            .build()
            .unwrap()
            .into();
        let url = format!("{}/", self.endpoint.trim_end_matches('/'));
        let host = url::Url::parse(&url).unwrap();
        let host = format!("{}:{}", host.host_str().unwrap(), host.port().unwrap());
        let mut headers = self.headers.clone();
        headers.push(("host".into(), host));
        let signable = SignableRequest::new(
            "POST",
            &url,
            headers.iter().map(|(k, v)| (k.as_str(), v.as_str())),
            SignableBody::Bytes(self.body.as_bytes()),
        )
        .unwrap();
        let (instructions, _) = sign(signable, &params).unwrap().into_parts();
        let mut req = http::Request::builder().method("POST").uri(&url);
        for (k, v) in &headers {
            req = req.header(k, v);
        }
        let mut req = req.body(()).unwrap();
        instructions.apply_to_request_http1x(&mut req);
        let client = reqwest::Client::builder().no_proxy().build().unwrap();
        let mut out = client.post(&url);
        for (k, v) in req.headers() {
            if k != "host" {
                out = out.header(k, v);
            }
        }
        let resp = out.body(self.tamper.unwrap_or(self.body)).send().await.unwrap();
        (resp.status().as_u16(), resp.text().await.unwrap())
    }
}
