//! A catalogue of bad input. Every case ends one of two ways: the API server refuses it with a
//! message that names the problem, or the operator reports `Stalled` with a fixed reason and a
//! message that says what to change, having made no AWS change at all (the gate's call log holds
//! no mutating call while the stalled cases sit). For many stalled cases the fix is applied too,
//! and the resource must then reach Ready.
//!
//! One sandbox serves every case: each case is its own resource (its name is the case's name, so
//! its cluster and default names are its own), created in one concurrent batch.

mod common;

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

use common::{Harness, eventually};
use ecs_defender_operator::{
    crd::EcsDefenderDeployment,
    validate::{execution_role_name, secret_name, short_hash},
};
use futures::future::join_all;
use kube::{
    Api,
    api::{ApiResource, DynamicObject, Patch, PatchParams, PostParams},
};
use serde_json::{Value, json};

/// Cases whose taken name derives from the resource's UID.
const BY_UID: [&str; 2] = ["secret-taken", "role-taken"];
const STALL_TIMEOUT: Duration = Duration::from_secs(60);
const READY_TIMEOUT: Duration = Duration::from_secs(150);

/// How a case must end.
#[derive(Clone, Debug)]
enum Expect {
    /// The API server refuses the create (or, for immutable fields, the update) with a message
    /// holding every one of these.
    Rejected(Vec<String>),
    /// Accepted, then `Stalled=True` with this reason and a message holding every one of these.
    Stalled { reason: &'static str, says: Vec<String> },
}

/// What the user changes to fix a stalled case.
#[derive(Clone, Debug)]
enum Fix {
    /// A JSON merge patch on the resource.
    Patch(Value),
    /// A Secret written (created or replaced).
    Secret(String, Vec<(String, String)>),
}

#[derive(Clone, Debug)]
struct Case {
    name: String,
    /// JSON-pointer edits of the sample resource: a value set, or (`None`) a field removed.
    edits: Vec<(String, Option<Value>)>,
    /// For immutable fields: the create is valid, this merge patch must be refused.
    update: Option<Value>,
    expect: Expect,
    fix: Option<Fix>,
}

fn case(name: &str) -> Case {
    Case { name: name.to_string(), edits: vec![], update: None, expect: Expect::Rejected(vec![]), fix: None }
}

impl Case {
    fn set(mut self, path: &str, v: Value) -> Self {
        self.edits.push((path.to_string(), Some(v)));
        self
    }
    fn unset(mut self, path: &str) -> Self {
        self.edits.push((path.to_string(), None));
        self
    }
    /// A valid create, then this update.
    fn update(mut self, patch: Value) -> Self {
        self.update = Some(patch);
        self
    }
    fn rejected(mut self, says: &[&str]) -> Self {
        self.expect = Expect::Rejected(says.iter().map(|s| s.to_string()).collect());
        self
    }
    fn stalled(mut self, reason: &'static str, says: &[&str]) -> Self {
        self.expect = Expect::Stalled { reason, says: says.iter().map(|s| s.to_string()).collect() };
        self
    }
    fn fixed_by(mut self, patch: Value) -> Self {
        self.fix = Some(Fix::Patch(patch));
        self
    }
    fn fixed_by_secret(mut self, name: &str, data: &[(&str, &str)]) -> Self {
        self.fix = Some(Fix::Secret(name.into(), data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()));
        self
    }
}

/// Sets (`Some`) or removes (`None`) the field at a JSON pointer, creating objects on the way.
fn edit(v: &mut Value, path: &str, x: Option<Value>) {
    let mut parts: Vec<&str> = path.trim_start_matches('/').split('/').collect();
    let last = parts.pop().expect("a path");
    let mut cur = v;
    for p in parts {
        if !cur.get(p).is_some_and(Value::is_object) {
            cur[p] = json!({});
        }
        cur = cur.get_mut(p).expect("just made");
    }
    match x {
        Some(x) => cur[last] = x,
        None => {
            cur.as_object_mut().expect("an object").remove(last);
        }
    }
}

/// The sample resource for `c`, with its edits, as JSON (so a wrong type can be sent too). One
/// instance each keeps the resources that go on to Ready light.
fn resource(h: &Harness, c: &Case) -> Value {
    let mut v = serde_json::to_value(h.sample(&c.name)).unwrap();
    v.as_object_mut().unwrap().remove("status");
    v["spec"]["workers"]["autoScalingGroup"]["maxSize"] = json!(1);
    v["spec"]["workers"]["autoScalingGroup"]["desiredCapacity"] = json!(1);
    for (path, x) in &c.edits {
        edit(&mut v, path, x.clone());
    }
    v
}

fn has_all(text: &str, says: &[String]) -> bool {
    says.iter().all(|s| text.contains(s.as_str()))
}

/// The stalled condition's (reason, message) once `Stalled=True` with `reason`; else the last
/// stalled condition seen before the timeout, if any.
async fn stalled(api: &Api<EcsDefenderDeployment>, name: &str, reason: &str) -> Option<(String, String)> {
    let last = std::sync::Mutex::new(None);
    let found = eventually(STALL_TIMEOUT, || async {
        let st = api.get(name).await.ok()?.status?;
        let c = st.conditions.iter().find(|c| c.type_ == "Stalled" && c.status == "True")?;
        let seen = (c.reason.clone(), c.message.clone());
        *last.lock().unwrap() = Some(seen.clone());
        (c.reason == reason).then_some(seen)
    })
    .await;
    found.or_else(|| last.into_inner().unwrap())
}

async fn ready(api: &Api<EcsDefenderDeployment>, name: &str) -> bool {
    eventually(READY_TIMEOUT, || async {
        let st = api.get(name).await.ok()?.status?;
        st.conditions.iter().any(|c| c.type_ == "Ready" && c.status == "True").then_some(())
    })
    .await
    .is_some()
}

/// Every case. `console` is the simulator's URL (Secrets name the Console they are for).
fn catalogue(console: &str, user: &str, password: &str) -> Vec<Case> {
    let good_console = vec![("username", user), ("password", password), ("url", console)];
    let mut cases = vec![
        // --- Types, ranges, patterns, enums and rules the schema enforces ---
        case("no-region").unset("/spec/region").rejected(&["spec.region: Required value"]),
        case("region-mars").set("/spec/region", json!("Mars")).rejected(&["spec.region: Invalid value: \"Mars\""]),
        case("min-type")
            .set("/spec/workers/autoScalingGroup/minSize", json!("one"))
            .rejected(&["spec.workers.autoScalingGroup.minSize", "must be of type integer"]),
        case("min-negative")
            .set("/spec/workers/autoScalingGroup/minSize", json!(-1))
            .rejected(&["spec.workers.autoScalingGroup.minSize", "greater than or equal to 0"]),
        case("max-huge")
            .set("/spec/workers/autoScalingGroup/maxSize", json!(1001))
            .rejected(&["spec.workers.autoScalingGroup.maxSize", "less than or equal to 1000"]),
        case("min-over-desired")
            .set("/spec/workers/autoScalingGroup/minSize", json!(3))
            .set("/spec/workers/autoScalingGroup/maxSize", json!(3))
            .rejected(&["autoScalingGroup needs minSize <= desiredCapacity <= maxSize"]),
        case("desired-over-max")
            .set("/spec/workers/autoScalingGroup/desiredCapacity", json!(5))
            .rejected(&["autoScalingGroup needs minSize <= desiredCapacity <= maxSize"]),
        case("suspend-type").set("/spec/suspend", json!("yes")).rejected(&["spec.suspend", "must be of type boolean"]),
        case("subnets-type")
            .set("/spec/workers/autoScalingGroup/subnetIds", json!("subnet-0123"))
            .rejected(&["spec.workers.autoScalingGroup.subnetIds", "must be of type array"]),
        case("cluster-spaces")
            .set("/spec/cluster/name", json!("my cluster"))
            .rejected(&["spec.cluster.name", "should match"]),
        case("cluster-too-long")
            .set("/spec/cluster/name", json!("c".repeat(256)))
            .rejected(&["spec.cluster.name", "Too long"]),
        case("kind-spot")
            .set("/spec/workers/kind", json!("Spot"))
            .rejected(&["spec.workers.kind", "Unsupported value: \"Spot\""]),
        case("image-both")
            .set("/spec/workers/image/id", json!("ami-0123456789abcdef0"))
            .rejected(&["image needs exactly one of ssmParameter and id"]),
        case("image-neither")
            .set("/spec/workers/image", json!({}))
            .rejected(&["image needs exactly one of ssmParameter and id"]),
        case("ami-malformed")
            .set("/spec/workers/image", json!({"id": "ami-XYZ"}))
            .rejected(&["spec.workers.image.id", "should match"]),
        case("workers-name-short")
            .set("/spec/workers/name", json!("ab"))
            .rejected(&["spec.workers.name", "should match"]),
        case("asg-name-space")
            .set("/spec/workers/autoScalingGroup/name", json!("my group"))
            .rejected(&["spec.workers.autoScalingGroup.name", "should match"]),
        case("healthy-101")
            .set("/spec/workers/rollout/minHealthyPercentage", json!(101))
            .rejected(&["spec.workers.rollout.minHealthyPercentage", "less than or equal to 100"]),
        case("strategy-unknown")
            .set("/spec/workers/rollout/strategy", json!("Rolling"))
            .rejected(&["spec.workers.rollout.strategy", "Unsupported value: \"Rolling\""]),
        case("deletion-keep")
            .set("/spec/deletionPolicy", json!("Keep"))
            .rejected(&["spec.deletionPolicy", "Unsupported value: \"Keep\""]),
        case("deadline-short")
            .set("/spec/progressDeadlineSeconds", json!(5))
            .rejected(&["spec.progressDeadlineSeconds", "greater than or equal to 30"]),
        case("task-name-space")
            .set("/spec/defender/taskName", json!("pc defender"))
            .rejected(&["spec.defender.taskName", "should match"]),
        case("service-slash")
            .set("/spec/service/name", json!("svc/one"))
            .rejected(&["spec.service.name", "should match"]),
        case("runtime-podman")
            .set("/spec/defender/options/containerRuntime", json!("podman"))
            .rejected(&["spec.defender.options.containerRuntime", "Unsupported value: \"podman\""]),
        case("cpu-negative")
            .set("/spec/defender/options/cpuLimit", json!(-1))
            .rejected(&["spec.defender.options.cpuLimit", "greater than or equal to 1"]),
        case("cpu-zero")
            .set("/spec/defender/options/cpuLimit", json!(0))
            .rejected(&["spec.defender.options.cpuLimit", "greater than or equal to 1"]),
        case("memory-zero")
            .set("/spec/defender/options/memoryLimit", json!(0))
            .rejected(&["spec.defender.options.memoryLimit", "greater than or equal to 1"]),
        // --- URLs and ARNs ---
        case("url-ftp")
            .set("/spec/defender/console/url", json!("ftp://console:21"))
            .rejected(&["spec.defender.console.url", "should match"]),
        case("url-space")
            .set("/spec/defender/console/url", json!("https://console example.com"))
            .rejected(&["spec.defender.console.url", "should match"]),
        case("url-missing")
            .unset("/spec/defender/console/url")
            .rejected(&["spec.defender.console.url: Required value"]),
        case("endpoint-no-scheme")
            .set("/spec/aws/endpointUrl", json!("localhost:4566"))
            .rejected(&["spec.aws.endpointUrl", "should match"]),
        case("proxy-newline")
            .set("/spec/defender/options/proxy", json!({"httpProxy": "http://proxy:3128\nINSTALL_BUNDLE=x"}))
            .rejected(&["spec.defender.options.proxy.httpProxy", "should match"]),
        case("proxy-path")
            .set("/spec/defender/options/proxy", json!({"httpProxy": "http://proxy:3128/some/path"}))
            .rejected(&["spec.defender.options.proxy.httpProxy", "should match"]),
        case("role-arn-account")
            .set("/spec/aws/assumeRole", json!({"roleArn": "arn:aws:iam::123:role/defenders"}))
            .rejected(&["spec.aws.assumeRole.roleArn", "should match"]),
        case("role-arn-user")
            .set("/spec/aws/assumeRole", json!({"roleArn": "arn:aws:iam::123456789012:user/defenders"}))
            .rejected(&["spec.aws.assumeRole.roleArn", "should match"]),
        case("exec-role-malformed")
            .set("/spec/defender/secrets", json!({"executionRoleArn": "my-role"}))
            .rejected(&["spec.defender.secrets.executionRoleArn", "should match"]),
        // --- Contradictions (CEL) ---
        case("exec-role-and-create")
            .set("/spec/defender/secrets/executionRoleArn", json!("arn:aws:iam::123456789012:role/mine"))
            .rejected(&["set executionRoleArn or createExecutionRole, not both"]),
        case("inline-with-role")
            .set("/spec/defender/secrets/storage", json!("Inline"))
            .rejected(&["executionRoleArn and createExecutionRole apply to storage SecretsManager only"]),
        case("recovery-short")
            .set("/spec/defender/secrets/recoveryWindowInDays", json!(3))
            .rejected(&["spec.defender.secrets.recoveryWindowInDays", "greater than or equal to 7"]),
        case("recovery-and-force")
            .set("/spec/defender/secrets/recoveryWindowInDays", json!(7))
            .set("/spec/defender/secrets/forceDeleteWithoutRecovery", json!(true))
            .rejected(&["set recoveryWindowInDays or forceDeleteWithoutRecovery, not both"]),
        case("ca-and-insecure")
            .set("/spec/defender/console/caBundleSecretRef", json!({"name": "console-ca"}))
            .set("/spec/defender/console/insecureSkipTlsVerify", json!(true))
            .rejected(&["set caBundleSecretRef or insecureSkipTlsVerify, not both"]),
        case("creds-empty-name")
            .set("/spec/defender/console/credentialsSecretRef/name", json!(""))
            .rejected(&["spec.defender.console.credentialsSecretRef.name", "at least 1 chars long"]),
        // --- Immutable fields: added, removed, changed ---
        // (Their valid creates wait for a Console Secret that never comes: no AWS call.)
        case("name-added")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("never-created"))
            .update(json!({"spec": {"cluster": {"name": "other"}}}))
            .rejected(&["spec.cluster.name is immutable"]),
        case("name-removed")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("never-created"))
            .set("/spec/cluster/name", json!("name-removed"))
            .update(json!({"spec": {"cluster": {"name": null}}}))
            .rejected(&["spec.cluster.name is immutable"]),
        case("name-changed")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("never-created"))
            .set("/spec/cluster/name", json!("name-changed"))
            .update(json!({"spec": {"cluster": {"name": "renamed"}}}))
            .rejected(&["spec.cluster.name is immutable"]),
        case("region-changed")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("never-created"))
            .update(json!({"spec": {"region": "eu-west-1"}}))
            .rejected(&["region is immutable"]),
        // --- Accepted by the schema, refused by validation (InvalidSpec) ---
        case("console-address-url")
            .set("/spec/defender/consoleAddress", json!("https://console.example.com/path"))
            .stalled("InvalidSpec", &["defender.consoleAddress", "without scheme or path"]),
        case("subnet-malformed")
            .set("/spec/workers/autoScalingGroup/subnetIds", json!(["sn-123"]))
            .stalled("InvalidSpec", &["\"sn-123\" is not a subnet id"]),
        case("subnet-twice")
            .set("/spec/workers/autoScalingGroup/subnetIds", json!(["subnet-0a", "subnet-0a"]))
            .stalled("InvalidSpec", &["lists a subnet twice"]),
        case("sg-empty")
            .set("/spec/workers/securityGroups", json!([""]))
            .stalled("InvalidSpec", &["securityGroups has an empty entry"]),
        case("ssm-relative")
            .set(
                "/spec/workers/image/ssmParameter",
                json!("aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id"),
            )
            .stalled("InvalidSpec", &["workers.image.ssmParameter", "starting with '/'"]),
        case("ecs-cluster-line")
            .set("/spec/workers/extraUserData", json!("echo hi\necho ECS_CLUSTER=other >> /etc/ecs/ecs.config"))
            .stalled("InvalidSpec", &["workers.extraUserData must not set ECS_CLUSTER"])
            .fixed_by(json!({"spec": {"workers": {"extraUserData": "echo hi"}}})),
        case("user-data-huge")
            .set("/spec/workers/extraUserData", json!(format!("# {}", "x".repeat(17_000))))
            .stalled("InvalidSpec", &["EC2 accepts at most 16384"]),
        case("url-userinfo")
            .set("/spec/defender/console/url", json!("https://admin:hunter2@console.example.com"))
            .stalled("InvalidSpec", &["defender.console.url must not contain user info"]),
        case("url-metadata")
            .set("/spec/defender/console/url", json!("http://169.254.169.254/latest/meta-data"))
            .stalled("InvalidSpec", &["instance metadata address (169.254.169.254)"]),
        case("endpoint-metadata")
            .set("/spec/aws/endpointUrl", json!("http://[fd00:ec2::254]/"))
            .stalled("InvalidSpec", &["aws.endpointUrl points at a link-local or instance metadata address"]),
        case("no-proxy-newline")
            .set(
                "/spec/defender/options/proxy",
                json!({"httpProxy": "http://proxy:3128", "noProxy": "a\nINSTALL_BUNDLE=x"}),
            )
            .stalled("InvalidSpec", &["defender.options.proxy.noProxy must be one line"]),
        case("no-execution-role")
            .set("/spec/defender/secrets", json!({}))
            .stalled("InvalidSpec", &["createExecutionRole: true", "executionRoleArn", "storage: Inline"]),
        // --- The installer's rules ---
        case("endpoint-not-allowed")
            .set("/spec/aws/endpointUrl", json!("https://vpce-0123.ecs.us-east-1.vpce.amazonaws.com"))
            .stalled("EndpointNotAllowed", &["aws.endpointUrl", "--allow-custom-aws-endpoints"]),
        // --- Secrets: missing, missing or misnamed keys ---
        case("console-secret-missing")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("console-secret-missing"))
            .stalled("SecretNotFound", &["Secret default/console-secret-missing not found"])
            .fixed_by_secret("console-secret-missing", &good_console),
        case("console-no-password")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("console-no-password"))
            .stalled("SecretInvalid", &["Secret default/console-no-password has no key \"password\""]),
        case("console-key-misnamed")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("console-key-misnamed"))
            .stalled("SecretInvalid", &["Secret default/console-key-misnamed has no key \"username\""]),
        case("console-unbound")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("console-unbound"))
            .stalled("ConsoleNotAllowed", &["console-unbound", "add the key url"]),
        case("console-other-url")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("console-other-url"))
            .stalled("ConsoleNotAllowed", &["console-other-url", "https://other.example.com", "no request was sent"]),
        case("console-wrong-password")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("console-wrong-password"))
            .stalled("ConsoleUnauthorized", &["the Console rejected the credentials"])
            .fixed_by_secret("console-wrong-password", &good_console),
        case("aws-secret-missing")
            .set("/spec/aws/credentialsSecretRef/name", json!("aws-secret-missing"))
            .stalled("SecretNotFound", &["Secret default/aws-secret-missing not found"]),
        case("aws-keys-lowercase")
            .set("/spec/aws/credentialsSecretRef/name", json!("aws-keys-lowercase"))
            .stalled("SecretInvalid", &["Secret default/aws-keys-lowercase has no key \"AWS_ACCESS_KEY_ID\""])
            .fixed_by_secret(
                "aws-keys-lowercase",
                &[
                    ("AWS_ACCESS_KEY_ID", sandbox::moto::ACCESS_KEY_ID),
                    ("AWS_SECRET_ACCESS_KEY", sandbox::moto::SECRET_ACCESS_KEY),
                ],
            ),
        case("aws-no-secret-key")
            .set("/spec/aws/credentialsSecretRef/name", json!("aws-no-secret-key"))
            .stalled("SecretInvalid", &["has no key \"AWS_SECRET_ACCESS_KEY\""]),
        case("aws-unknown-key")
            .set("/spec/aws/credentialsSecretRef/name", json!("aws-unknown-key"))
            .stalled("AwsAccessDenied", &["UnrecognizedClientException"]),
        case("ca-secret-no-key")
            .set("/spec/defender/console/caBundleSecretRef", json!({"name": "ca-secret-no-key"}))
            .stalled("SecretInvalid", &["Secret default/ca-secret-no-key has no key \"ca.crt\""]),
        case("proxy-creds-missing")
            .set(
                "/spec/defender/options/proxy",
                json!({"httpProxy": "http://proxy:3128", "credentialsSecretRef": {"name": "proxy-creds-missing"}}),
            )
            .stalled("SecretNotFound", &["Secret default/proxy-creds-missing not found"]),
        // --- What only the Console or AWS can tell, checked before the first change ---
        case("project-unknown")
            .set("/spec/defender/console/project", json!("NoSuchProject"))
            .stalled("ConsoleError", &["project NoSuchProject does not exist"]),
        case("console-address-not-san")
            .set("/spec/defender/consoleAddress", json!("console.example.com"))
            .stalled("ConsoleError", &["console.example.com is not one of the console SANs"])
            .fixed_by(json!({"spec": {"defender": {"consoleAddress": null}}})),
        case("instance-type-missing")
            .set("/spec/workers/instanceType", json!("t9.enormous"))
            .stalled("InstanceTypeNotFound", &["t9.enormous"])
            .fixed_by(json!({"spec": {"workers": {"instanceType": "t2.medium"}}})),
        case("ami-missing")
            .set("/spec/workers/image", json!({"id": "ami-0000000000000dead"}))
            .stalled("ImageNotFound", &["AMI ami-0000000000000dead does not exist in us-east-1"]),
        case("ssm-missing")
            .set("/spec/workers/image/ssmParameter", json!("/no/such/parameter"))
            .stalled("ImageNotFound", &["SSM parameter /no/such/parameter does not exist"]),
        case("sg-missing")
            .set("/spec/workers/securityGroups", json!(["no-such-group"]))
            .stalled("SecurityGroupNotFound", &["security groups not found: no-such-group"]),
        case("subnet-missing")
            .set("/spec/workers/autoScalingGroup/subnetIds", json!(["subnet-0000000000000dead"]))
            .stalled("SubnetNotFound", &["subnets not found: subnet-0000000000000dead"]),
        case("profile-missing")
            .set("/spec/workers/instanceProfile", json!("missing-profile"))
            .stalled("InstanceProfileNotFound", &["IAM instance profile missing-profile does not exist"]),
        case("key-missing")
            .set("/spec/workers/keyName", json!("missing-key"))
            .stalled("KeyPairNotFound", &["EC2 key pair missing-key does not exist"]),
        case("adopt-missing")
            .set("/spec/cluster/adopt", json!(true))
            .stalled("ClusterNotFound", &["cluster adopt-missing does not exist", "cluster.adopt is set"]),
        // --- Names held by something this resource did not create (made in AWS beforehand) ---
        case("cluster-taken")
            .stalled("ClusterNotOwned", &["cluster cluster-taken already exists", "set cluster.adopt: true"])
            .fixed_by(json!({"spec": {"cluster": {"adopt": true}}})),
        case("lt-taken").stalled("NameTaken", &["launch template lt-taken-workers (workers.name)"]),
        case("asg-taken")
            .stalled("NameTaken", &["Auto Scaling group asg-taken-workers (workers.autoScalingGroup.name)"]),
        case("family-taken")
            .stalled("NameTaken", &["task definition family family-taken-defender (defender.taskName)"])
            .fixed_by(json!({"spec": {"defender": {"taskName": "family-taken-mine"}}})),
        case("adopt-asg-taken")
            .set("/spec/cluster/adopt", json!(true))
            .stalled("NameTaken", &["Auto Scaling group adopt-asg-taken-workers (workers.autoScalingGroup.name)"]),
        case("adopt-service-taken")
            .set("/spec/cluster/adopt", json!(true))
            .stalled(
                "NameTaken",
                &["service adopt-service-taken-defender in cluster adopt-service-taken (service.name)"],
            )
            .fixed_by(json!({"spec": {"service": {"name": "adopt-service-mine"}}})),
    ];
    // Named after the resource's UID: taken once the resource exists (`take_names_by_uid`).
    cases.push(
        case("secret-taken")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("late-console"))
            .stalled("NameTaken", &["Secrets Manager secret ecs-defender/secret-taken-", "storage: Inline"]),
    );
    cases.push(
        case("role-taken")
            .set("/spec/defender/console/credentialsSecretRef/name", json!("late-console"))
            .stalled("NameTaken", &["IAM role role-taken-", "defender.secrets.executionRoleArn"])
            .fixed_by(json!({"spec": {"defender": {"secrets": {"storage": "Inline", "createExecutionRole": false}}}})),
    );
    cases
}

/// Secrets the cases name, each wrong in its own way.
async fn put_case_secrets(h: &Harness) {
    let c = h.sandbox.console();
    let (user, pass, url) = (c.username().to_string(), c.password().to_string(), c.url());
    let secrets: [(&str, Vec<(&str, &str)>); 8] = [
        ("console-no-password", vec![("username", &user), ("url", &url)]),
        ("console-key-misnamed", vec![("user", &user), ("password", &pass), ("url", &url)]),
        ("console-unbound", vec![("username", &user), ("password", &pass)]),
        ("console-other-url", vec![("username", &user), ("password", &pass), ("url", "https://other.example.com")]),
        ("console-wrong-password", vec![("username", &user), ("password", "not-the-password"), ("url", &url)]),
        (
            "aws-keys-lowercase",
            vec![
                ("aws_access_key_id", sandbox::moto::ACCESS_KEY_ID),
                ("aws_secret_access_key", sandbox::moto::SECRET_ACCESS_KEY),
            ],
        ),
        ("aws-no-secret-key", vec![("AWS_ACCESS_KEY_ID", sandbox::moto::ACCESS_KEY_ID)]),
        ("aws-unknown-key", vec![("AWS_ACCESS_KEY_ID", "AKIAUNKNOWN000000000"), ("AWS_SECRET_ACCESS_KEY", "nope")]),
    ];
    for (name, data) in secrets {
        h.put_secret(name, &data).await.unwrap();
    }
    h.put_secret("ca-secret-no-key", &[("ca.pem", "-----BEGIN CERTIFICATE-----")]).await.unwrap();
}

/// Names someone else holds in AWS, made untagged through the test's own AWS clients.
async fn take_names(h: &Harness) {
    let aws = h.aws().await;
    for cluster in ["cluster-taken", "adopt-asg-taken", "adopt-service-taken"] {
        aws.ecs.create_cluster().cluster_name(cluster).send().await.unwrap();
    }
    for lt in ["lt-taken-workers", "foreign-template"] {
        aws.ec2
            .create_launch_template()
            .launch_template_name(lt)
            .launch_template_data(
                aws_sdk_ec2::types::RequestLaunchTemplateData::builder().instance_type("t2.micro".into()).build(),
            )
            .send()
            .await
            .unwrap();
    }
    for asg in ["asg-taken-workers", "adopt-asg-taken-workers"] {
        aws.autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(asg)
            .launch_template(
                aws_sdk_autoscaling::types::LaunchTemplateSpecification::builder()
                    .launch_template_name("foreign-template")
                    .build(),
            )
            .min_size(0)
            .max_size(0)
            .desired_capacity(0)
            .availability_zones("us-east-1a")
            .send()
            .await
            .unwrap();
    }
    // A launch configuration under the bare name a resource's configurations start with.
    let ssm = aws_sdk_ssm::Client::new(&h.sandbox.aws_config().await);
    let ami = ssm
        .get_parameter()
        .name(ecs_defender_operator::crd::DEFAULT_AMI_PARAMETER)
        .send()
        .await
        .unwrap()
        .parameter
        .and_then(|p| p.value)
        .unwrap();
    aws.autoscaling
        .create_launch_configuration()
        .launch_configuration_name("lc-bare-workers")
        .image_id(ami)
        .instance_type("t2.micro")
        .send()
        .await
        .unwrap();
    let container = aws_sdk_ecs::types::ContainerDefinition::builder().name("app").image("busybox").memory(64).build();
    for family in ["family-taken-defender", "foreign-app"] {
        aws.ecs
            .register_task_definition()
            .family(family)
            .container_definitions(container.clone())
            .send()
            .await
            .unwrap();
    }
    aws.ecs
        .create_service()
        .cluster("adopt-service-taken")
        .service_name("adopt-service-taken-defender")
        .task_definition("foreign-app")
        .desired_count(0)
        .send()
        .await
        .unwrap();
}

/// The secret and role names derive from the resource's UID: the cases are created first (stalled
/// on a Console Secret that does not exist yet, before any AWS call), then the names are taken.
async fn take_names_by_uid(h: &Harness, uids: &BTreeMap<String, String>) {
    let aws = h.aws().await;
    let hash = |name: &str| short_hash(&[&uids[name]], 8);
    aws.secretsmanager
        .create_secret()
        .name(secret_name("secret-taken", &hash("secret-taken")))
        .description("someone else's")
        .send()
        .await
        .unwrap();
    const TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"ecs-tasks.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;
    aws.iam
        .create_role()
        .role_name(execution_role_name("role-taken", &hash("role-taken")))
        .assume_role_policy_document(TRUST)
        .send()
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_refused_or_stalls_before_any_aws_change() {
    let started = Instant::now();
    // A fix takes effect through the watches (spec change, Secret change); no need to look often
    // at what is stalled.
    let h = Harness::start_full(Default::default(), |c| {
        c.stalled_requeue = Duration::from_secs(30);
        // Ten resources converge at once beside the stalled ones: look a little less often.
        c.converging_requeue = Duration::from_secs(1);
    })
    .await
    .unwrap();
    let sandbox_up = started.elapsed();
    let dynamic: Api<DynamicObject> =
        Api::namespaced_with(h.client.clone(), "default", &ApiResource::erase::<EcsDefenderDeployment>(&()));
    let console = h.sandbox.console().clone();
    let cases = catalogue(&console.url(), console.username(), console.password());
    {
        let mut names: Vec<&str> = cases.iter().map(|c| c.name.as_str()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), cases.len(), "case names must be unique");
    }
    put_case_secrets(&h).await;
    take_names(&h).await;
    let create = |c: &Case| {
        let v = resource(&h, c);
        let dynamic = dynamic.clone();
        async move {
            let obj: DynamicObject = serde_json::from_value(v).unwrap();
            dynamic.create(&PostParams::default(), &obj).await
        }
    };

    // The UID-named cases first: they wait for their Console Secret without calling AWS.
    let by_uid: Vec<&Case> = cases.iter().filter(|c| BY_UID.contains(&c.name.as_str())).collect();
    let mut uids = BTreeMap::new();
    for c in &by_uid {
        let created = create(c).await.unwrap();
        uids.insert(c.name.clone(), created.metadata.uid.unwrap());
    }
    for c in &by_uid {
        let (reason, _) =
            stalled(&h.api, &c.name, "SecretNotFound").await.expect("stalled on the missing Console Secret");
        assert_eq!(reason, "SecretNotFound", "{}", c.name);
    }
    take_names_by_uid(&h, &uids).await;

    // From here on, nothing may change AWS until the fixes.
    h.sandbox.gate().clear_calls();
    let (user, pass, url) = (console.username().to_string(), console.password().to_string(), console.url());
    h.put_secret("late-console", &[("username", &user), ("password", &pass), ("url", &url)]).await.unwrap();

    let mut failures: Vec<String> = vec![];
    let (mut rejected, mut stalled_ok) = (0, 0);
    let creates = join_all(cases.iter().filter(|c| !uids.contains_key(&c.name)).map(|c| {
        let create = &create;
        let dynamic = dynamic.clone();
        async move {
            let result = create(c).await;
            let Some(patch) = &c.update else { return (c, result.map(|_| ())) };
            if let Err(e) = result {
                panic!("{}: the valid create before the update was refused: {e}", c.name);
            }
            let updated = dynamic.patch(&c.name, &PatchParams::default(), &Patch::Merge(patch)).await;
            (c, updated.map(|_| ()))
        }
    }))
    .await;
    for (c, result) in creates {
        match (&c.expect, result) {
            (Expect::Rejected(says), Err(kube::Error::Api(s))) if has_all(&s.message, says) => rejected += 1,
            (Expect::Rejected(says), Err(e)) => {
                failures.push(format!("{}: refused, but not saying {says:?}: {e}", c.name))
            }
            (Expect::Rejected(_), Ok(())) => failures.push(format!("{}: accepted by the API server", c.name)),
            (Expect::Stalled { .. }, Err(e)) => failures.push(format!("{}: refused by the API server: {e}", c.name)),
            (Expect::Stalled { .. }, Ok(())) => {}
        }
    }
    let to_stall: Vec<&Case> = cases.iter().filter(|c| matches!(c.expect, Expect::Stalled { .. })).collect();
    let outcomes = join_all(to_stall.iter().map(|c| async {
        let Expect::Stalled { reason, .. } = &c.expect else { unreachable!() };
        (*c, stalled(&h.api, &c.name, reason).await)
    }))
    .await;
    for (c, outcome) in outcomes {
        let Expect::Stalled { reason, says } = &c.expect else { unreachable!() };
        match outcome {
            // A message that repeats the reason says nothing more for it.
            Some((r, m)) if r == *reason && has_all(&m, says) && !m.is_empty() && !m.starts_with(&r) => stalled_ok += 1,
            Some((r, m)) => failures.push(format!("{}: Stalled {r}: {m:?}; expected {reason} saying {says:?}", c.name)),
            None => {
                let st = h.api.get(&c.name).await.ok().and_then(|e| e.status);
                let ready = st.as_ref().and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready")).cloned();
                failures.push(format!("{}: not Stalled after {STALL_TIMEOUT:?}; Ready: {ready:?}", c.name));
            }
        }
    }
    // The reconcile each stalled status triggers (a change of the object) runs too.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let mutations: Vec<String> = h
        .sandbox
        .gate()
        .calls()
        .iter()
        .filter(|c| c.mutating)
        .map(|c| format!("{} {:?} -> {}", c.key(), c.params, c.status))
        .collect();
    if !mutations.is_empty() {
        failures.push(format!("AWS was changed by bad input: {mutations:#?}"));
    }
    assert!(failures.is_empty(), "{} of {} cases failed:\n{}", failures.len(), cases.len(), failures.join("\n"));
    let cases_done = started.elapsed();

    // The fixes: each resource goes on to Ready.
    let fixed: Vec<&Case> = cases.iter().filter(|c| c.fix.is_some()).collect();
    for c in &fixed {
        match c.fix.as_ref().unwrap() {
            Fix::Patch(p) => {
                dynamic.patch(&c.name, &PatchParams::default(), &Patch::Merge(p)).await.unwrap();
            }
            Fix::Secret(name, data) => {
                let data: Vec<(&str, &str)> = data.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
                h.put_secret(name, &data).await.unwrap();
            }
        }
    }
    // Launch configurations cannot be tagged, so theirs are named `<name>-<owner>-<content>`: one
    // made by hand under the bare name is no collision, and is neither used nor deleted.
    let lc = case("lc-bare").set("/spec/workers/kind", json!("LaunchConfiguration"));
    create(&lc).await.unwrap();
    let lc_ready = ready(&h.api, "lc-bare");
    let recovered = join_all(fixed.iter().map(|c| async { (*c, ready(&h.api, &c.name).await) }));
    let (lc_ready, recovered) = tokio::join!(lc_ready, recovered);
    let mut recovered_ok = 0;
    for (c, ok) in recovered {
        if ok {
            recovered_ok += 1;
        } else {
            let st = h.api.get(&c.name).await.ok().and_then(|e| e.status);
            failures.push(format!("{}: not Ready {READY_TIMEOUT:?} after the fix; status: {st:#?}", c.name));
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));

    assert!(lc_ready, "lc-bare: not Ready beside a launch configuration named lc-bare-workers");
    let aws = h.aws().await;
    let groups = aws
        .autoscaling
        .describe_auto_scaling_groups()
        .auto_scaling_group_names("lc-bare-workers")
        .send()
        .await
        .unwrap();
    let used = groups.auto_scaling_groups()[0].launch_configuration_name().unwrap_or_default().to_string();
    assert!(used.starts_with("lc-bare-workers-") && used.len() > "lc-bare-workers-".len(), "{used}");
    let bare = aws
        .autoscaling
        .describe_launch_configurations()
        .launch_configuration_names("lc-bare-workers")
        .send()
        .await
        .unwrap();
    assert_eq!(bare.launch_configurations().len(), 1, "the hand-made configuration is left alone");

    println!(
        "bad input: {} cases: {rejected} rejected by the API server, {stalled_ok} Stalled with no AWS change \
         ({recovered_ok} of them fixed and Ready) in {:.0} s (sandbox {:.0} s, cases {:.0} s, fixes {:.0} s)",
        cases.len(),
        started.elapsed().as_secs_f64(),
        sandbox_up.as_secs_f64(),
        (cases_done - sandbox_up).as_secs_f64(),
        (started.elapsed() - cases_done).as_secs_f64(),
    );
    assert_eq!(rejected + stalled_ok, cases.len());
}
