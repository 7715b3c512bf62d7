//! (pure) The spec, checked and completed: defaults filled in, names derived, the semantic rules
//! the schema cannot express (or that servers without CEL do not enforce) checked before any AWS
//! call. Every problem is reported at once, in words the user can act on.

use crate::{
    aws::{Tags, secretsmanager::SecretDeletion, tags},
    crd::{DeletionPolicy, EcsDefenderDeployment, RolloutStrategy, SecretStorage, WorkerKind},
};
use sha2::{Digest, Sha256};

/// The longest user data EC2 accepts (16 KiB before base64).
const MAX_USER_DATA: usize = 16 * 1024;

/// What the resource asks for, complete and valid.
#[derive(Clone, Debug, PartialEq)]
pub struct Desired {
    pub uid: String,
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub region: String,
    pub cluster_name: String,
    pub adopt_cluster: bool,
    pub workers: Option<DesiredWorkers>,
    pub task_family: String,
    pub service_name: String,
    /// The body for the Console's `ecs-task.json` generator.
    pub generator_options: serde_json::Value,
    /// sha256 of what shapes the Console's output apart from its version (the generator options,
    /// the family): tagged on the registered revision, so "is it current?" is read from AWS.
    pub generator_inputs_hash: String,
    /// The Secret with the Defenders' proxy credentials (`username`, `password`), when the proxy
    /// needs them: added to `generator_options` once read (see [`Desired::with_proxy_credentials`]).
    pub proxy_credentials_secret: Option<String>,
    /// The spec's progress deadline, when it sets one (else the operator's default).
    pub progress_deadline_seconds: Option<i64>,
    pub console: ConsoleSettings,
    /// Where the install bundle is kept.
    pub secrets: DesiredSecrets,
    /// How a secret of ours is deleted (teardown, or after a switch to `Inline`).
    pub secret_deletion: SecretDeletion,
    pub deletion_policy: DeletionPolicy,
    pub suspend: bool,
    /// Ownership tags put on everything created.
    pub tags: Tags,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ConsoleSettings {
    pub url: String,
    pub credentials_secret: String,
    pub ca_bundle_secret: Option<String>,
    pub insecure_skip_tls_verify: bool,
    pub project: Option<String>,
}

/// Where the install bundle is kept.
#[derive(Clone, Debug, PartialEq)]
pub enum DesiredSecrets {
    /// In the task definition, as the Console generates it.
    Inline,
    /// In a Secrets Manager secret of ours, read by ECS with the execution role.
    SecretsManager(DesiredSecret),
}

impl DesiredSecrets {
    pub fn secrets_manager(&self) -> Option<&DesiredSecret> {
        match self {
            DesiredSecrets::SecretsManager(s) => Some(s),
            DesiredSecrets::Inline => None,
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredSecret {
    /// The secret's name ([`secret_name`]).
    pub name: String,
    pub execution_role: ExecutionRole,
}

/// The task execution role that lets ECS read the secret.
#[derive(Clone, Debug, PartialEq)]
pub enum ExecutionRole {
    /// The user's role, by ARN.
    Given(String),
    /// Ours: created (and deleted) by the operator, under [`EXECUTION_ROLE_PATH`].
    Create { name: String },
}

/// Every secret the operator creates is named under this prefix (the IAM policy scopes to it).
pub const SECRET_PREFIX: &str = "ecs-defender/";
/// Every execution role the operator creates has this path (the IAM policy scopes to it).
pub const EXECUTION_ROLE_PATH: &str = "/ecs-defender/";
/// The one inline policy of an execution role we create.
pub const EXECUTION_ROLE_POLICY: &str = "read-install-bundle";
/// Secrets Manager's shortest recovery window, used unless the spec says otherwise.
pub const DEFAULT_RECOVERY_WINDOW_DAYS: i64 = 7;

/// The install bundle's secret: `ecs-defender/<cluster>-<owner hash>/install-bundle` (regional,
/// like the cluster; the owner hash keeps a re-created resource clear of a secret still in its
/// recovery window).
pub fn secret_name(cluster: &str, owner_hash: &str) -> String {
    format!("{SECRET_PREFIX}{cluster}-{owner_hash}/install-bundle")
}

/// The execution role we create: `<cluster>-<owner hash>-defender-exec`, cut to IAM's 64
/// characters (roles are account-wide; the owner hash keeps regions and resources apart).
pub fn execution_role_name(cluster: &str, owner_hash: &str) -> String {
    let suffix = format!("-{owner_hash}-defender-exec");
    let room = 64usize.saturating_sub(suffix.len());
    let stem: String = cluster.chars().take(room).collect();
    format!("{stem}{suffix}")
}

#[derive(Clone, Debug, PartialEq)]
pub enum ImageSource {
    SsmParameter(String),
    Id(String),
}

#[derive(Clone, Debug, PartialEq)]
pub struct DesiredWorkers {
    pub kind: WorkerKind,
    /// The launch template's name, or the stem of the launch configuration's.
    pub name: String,
    /// A short hash of the owner's UID: launch configurations cannot be tagged, so their names
    /// carry it (`<name>-<owner_hash>-<content hash>`).
    pub owner_hash: String,
    pub image: ImageSource,
    pub instance_type: String,
    pub instance_profile: String,
    pub security_groups: Vec<String>,
    pub key_name: Option<String>,
    pub associate_public_ip_address: Option<bool>,
    /// The complete user data script (plain text).
    pub user_data: String,
    pub rollout: RolloutStrategy,
    pub min_healthy_percentage: i32,
    pub asg_name: String,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_capacity: i32,
    pub subnet_ids: Vec<String>,
}

impl Desired {
    /// The Console's generator options with the proxy's user and password, which the Console
    /// writes into the Defender's configuration. The inputs hash covers the password only through
    /// a hash salted with the resource's UID, so a password change makes a new revision and the
    /// tag reveals nothing usable.
    pub fn with_proxy_credentials(mut self, user: &str, password: &str) -> Desired {
        if let Some(proxy) = self.generator_options.get_mut("proxy").and_then(|p| p.as_object_mut()) {
            proxy.insert("user".into(), user.into());
            proxy.insert("password".into(), password.into());
        }
        let salted = short_hash(&[&self.uid, password], 64);
        self.generator_inputs_hash = short_hash(&[&self.generator_inputs_hash, user, &salted], 64);
        self
    }
}

/// The spec's problems, each a sentence.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("invalid spec: {}", .0.join("; "))]
pub struct InvalidSpec(pub Vec<String>);

/// The user data that joins an instance to `cluster` (the guide's line, exactly), then the user's lines.
pub fn build_user_data(cluster: &str, extra: &str) -> String {
    let mut s = format!("#!/bin/bash\necho ECS_CLUSTER={cluster} >> /etc/ecs/ecs.config\n");
    if !extra.trim().is_empty() {
        s.push_str(extra.trim_end());
        s.push('\n');
    }
    s
}

/// Default names derive from the cluster name, so two resources in one account and region never
/// collide (DESIGN.md section 2); the guide's names remain available by setting them.
pub fn default_worker_name(cluster: &str) -> String {
    format!("{cluster}-workers")
}
pub fn default_defender_name(cluster: &str) -> String {
    format!("{cluster}-defender")
}

/// sha256 hex of `parts`, each terminated, truncated to `len`.
pub fn short_hash(parts: &[&str], len: usize) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0]);
    }
    let mut s = hex::encode(h.finalize());
    s.truncate(len);
    s
}

/// A deterministic idempotency token for a create call, derived from the owner and the inputs.
pub fn client_token(uid: &str, parts: &[&str], max_len: usize) -> String {
    let mut h = Sha256::new();
    h.update(uid.as_bytes());
    for p in parts {
        h.update([0]);
        h.update(p.as_bytes());
    }
    let mut t = hex::encode(h.finalize());
    t.truncate(max_len);
    t
}

pub fn validate(edd: &EcsDefenderDeployment) -> Result<Desired, InvalidSpec> {
    let spec = &edd.spec;
    let mut problems = Vec::new();
    let meta = &edd.metadata;
    let name = meta.name.clone().unwrap_or_default();
    let namespace = meta.namespace.clone().unwrap_or_default();
    let uid = meta.uid.clone().unwrap_or_default();

    if !is_region(&spec.region) {
        problems.push(format!("region {:?} is not an AWS region name such as us-east-1", spec.region));
    }
    let cluster_name = spec.cluster.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| name.clone());
    if !(1..=255).contains(&cluster_name.len())
        || !cluster_name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        problems.push(format!(
            "cluster name {cluster_name:?} is not a valid ECS cluster name (letters, digits, '-' and '_', at most 255)"
        ));
    }
    // The schema refuses a change of the cluster name; this holds where the server has no CEL,
    // and for resources whose cluster was created under another name.
    if let Some(recorded) = edd.status.as_ref().and_then(|s| s.cluster_name.as_deref())
        && recorded != cluster_name
        && edd.status.as_ref().and_then(|s| s.cluster_arn.as_ref()).is_some()
    {
        problems.push(format!(
            "the cluster name is immutable: this resource manages cluster {recorded:?}, the spec now names {cluster_name:?}; \
             restore it, or create a new resource for another cluster"
        ));
    }

    let workers = spec.workers.as_ref().map(|w| {
        let asg = &w.auto_scaling_group;
        if asg.min_size > asg.max_size {
            problems.push(format!(
                "workers.autoScalingGroup.minSize ({}) is greater than maxSize ({})",
                asg.min_size, asg.max_size
            ));
        }
        if asg.desired_capacity < asg.min_size || asg.desired_capacity > asg.max_size {
            problems.push(format!(
                "workers.autoScalingGroup.desiredCapacity ({}) is outside [minSize, maxSize] = [{}, {}]",
                asg.desired_capacity, asg.min_size, asg.max_size
            ));
        }
        let image = match (&w.image.ssm_parameter, &w.image.id) {
            (Some(p), None) if p.starts_with('/') => ImageSource::SsmParameter(p.clone()),
            (Some(p), None) => {
                problems.push(format!("workers.image.ssmParameter {p:?} must be a parameter path starting with '/'"));
                ImageSource::SsmParameter(p.clone())
            }
            (None, Some(id)) if id.starts_with("ami-") => ImageSource::Id(id.clone()),
            (None, Some(id)) => {
                problems.push(format!("workers.image.id {id:?} is not an AMI id (ami-...)"));
                ImageSource::Id(id.clone())
            }
            _ => {
                problems.push("workers.image needs exactly one of ssmParameter and id".to_string());
                ImageSource::SsmParameter(String::new())
            }
        };
        for sg in &w.security_groups {
            if sg.trim().is_empty() {
                problems.push("workers.securityGroups has an empty entry".to_string());
            }
        }
        for s in &asg.subnet_ids {
            if !s.starts_with("subnet-") {
                problems
                    .push(format!("workers.autoScalingGroup.subnetIds entry {s:?} is not a subnet id (subnet-...)"));
            }
        }
        if w.auto_scaling_group.subnet_ids.iter().collect::<std::collections::BTreeSet<_>>().len()
            != w.auto_scaling_group.subnet_ids.len()
        {
            problems.push("workers.autoScalingGroup.subnetIds lists a subnet twice".to_string());
        }
        // A second ECS_CLUSTER line would join the instances to another cluster: the resource
        // would wait forever for them.
        if w.extra_user_data.contains("ECS_CLUSTER") {
            problems.push(
                "workers.extraUserData must not set ECS_CLUSTER: the operator writes it (cluster.name chooses the cluster)"
                    .to_string(),
            );
        }
        let user_data = build_user_data(&cluster_name, &w.extra_user_data);
        if user_data.len() > MAX_USER_DATA {
            problems.push(format!("the user data is {} bytes; EC2 accepts at most {MAX_USER_DATA}", user_data.len()));
        }
        DesiredWorkers {
            kind: w.kind,
            name: w.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| default_worker_name(&cluster_name)),
            owner_hash: short_hash(&[&uid], 8),
            image,
            instance_type: w.instance_type.clone(),
            instance_profile: w.instance_profile.clone(),
            security_groups: w.security_groups.clone(),
            key_name: w.key_name.clone().filter(|k| !k.is_empty()),
            associate_public_ip_address: w.associate_public_ip_address,
            user_data,
            rollout: w.rollout.strategy,
            min_healthy_percentage: w.rollout.min_healthy_percentage.clamp(0, 100),
            asg_name: asg.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| default_worker_name(&cluster_name)),
            min_size: asg.min_size,
            max_size: asg.max_size,
            desired_capacity: asg.desired_capacity,
            subnet_ids: asg.subnet_ids.clone(),
        }
    });

    let console = &spec.defender.console;
    let parsed_url = url::Url::parse(&console.url);
    let console_host = match &parsed_url {
        Ok(u) if (u.scheme() == "https" || u.scheme() == "http") && u.host_str().is_some() => {
            u.host_str().unwrap_or_default().to_string()
        }
        _ => {
            problems.push(format!("defender.console.url {:?} is not an http(s) URL", console.url));
            String::new()
        }
    };
    if parsed_url.is_ok() {
        problems.extend(crate::access::url_problems("defender.console.url", &console.url));
    }
    if console.ca_bundle_secret_ref.is_some() && console.insecure_skip_tls_verify {
        problems.push("defender.console: set caBundleSecretRef or insecureSkipTlsVerify, not both".to_string());
    }
    if console.credentials_secret_ref.name.is_empty() {
        problems.push("defender.console.credentialsSecretRef.name is empty".to_string());
    }
    let console_address = spec.defender.console_address.clone().filter(|a| !a.is_empty()).unwrap_or(console_host);
    if console_address.contains("://") || console_address.contains('/') {
        problems.push(format!("defender.consoleAddress {console_address:?} must be a host name or IP (a SAN of the Console), without scheme or path"));
    }

    if let Some(p) = &spec.defender.options.proxy {
        // These end up in the Defender's configuration lines: a line break would add settings.
        for (field, v) in [("httpProxy", &p.http_proxy), ("noProxy", &p.no_proxy)] {
            if v.chars().any(char::is_control) {
                problems.push(format!("defender.options.proxy.{field} must be one line without control characters"));
            }
        }
        // The Defenders take it as `http(s)://host:port`: a path, query or user info has no
        // place to go (the proxy's credentials come from a Secret).
        match url::Url::parse(&p.http_proxy) {
            _ if p.http_proxy.is_empty() => {}
            Ok(u)
                if matches!(u.scheme(), "http" | "https")
                    && u.host_str().is_some()
                    && matches!(u.path(), "" | "/")
                    && u.query().is_none()
                    && u.fragment().is_none()
                    && u.username().is_empty()
                    && u.password().is_none() => {}
            _ => problems.push(format!(
                "defender.options.proxy.httpProxy {:?} is not a proxy URL: use http://host:port, without path or user info",
                p.http_proxy
            )),
        }
    }
    if let Some(aws) = &spec.aws
        && let Some(ep) = &aws.endpoint_url
    {
        match url::Url::parse(ep) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => {
                problems.extend(crate::access::url_problems("aws.endpointUrl", ep))
            }
            _ => problems.push(format!("aws.endpointUrl {ep:?} is not an http(s) URL such as https://host:port")),
        }
    }
    let owner_hash = short_hash(&[&uid], 8);
    let secrets = build_secrets(edd, &cluster_name, &owner_hash, &mut problems);

    if !problems.is_empty() {
        return Err(InvalidSpec(problems));
    }

    let task_family = spec
        .defender
        .task_name
        .clone()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| default_defender_name(&cluster_name));
    let service_name =
        spec.service.name.clone().filter(|n| !n.is_empty()).unwrap_or_else(|| default_defender_name(&cluster_name));
    let generator_options = build_generator_options(edd, &console_address, &task_family);
    // serde_json's map is ordered by key, so this serialization is canonical. Where the bundle
    // goes shapes the registered revision too; `Inline` hashes as before it existed.
    let options_json = serde_json::to_string(&generator_options).expect("JSON value serializes");
    let generator_inputs_hash = match &secrets {
        DesiredSecrets::Inline => short_hash(&[&options_json], 64),
        DesiredSecrets::SecretsManager(s) => {
            let role = match &s.execution_role {
                ExecutionRole::Given(arn) => format!("role={arn}"),
                ExecutionRole::Create { name } => format!("create={name}"),
            };
            short_hash(&[&options_json, "secrets-manager", &s.name, &role], 64)
        }
    };
    let mut tags = Tags::new();
    tags.insert(tags::OWNER.into(), uid.clone());
    tags.insert(tags::RESOURCE.into(), format!("{namespace}/{name}"));
    Ok(Desired {
        generation: meta.generation.unwrap_or_default(),
        region: spec.region.clone(),
        cluster_name,
        adopt_cluster: spec.cluster.adopt,
        workers,
        task_family,
        service_name,
        generator_options,
        generator_inputs_hash,
        proxy_credentials_secret: spec
            .defender
            .options
            .proxy
            .as_ref()
            .and_then(|p| p.credentials_secret_ref.as_ref())
            .map(|r| r.name.clone()),
        progress_deadline_seconds: spec.progress_deadline_seconds.map(i64::from),
        console: ConsoleSettings {
            url: console.url.trim_end_matches('/').to_string(),
            credentials_secret: console.credentials_secret_ref.name.clone(),
            ca_bundle_secret: console.ca_bundle_secret_ref.as_ref().map(|s| s.name.clone()),
            insecure_skip_tls_verify: console.insecure_skip_tls_verify,
            project: console.project.clone().filter(|p| !p.is_empty()),
        },
        secrets,
        secret_deletion: secret_deletion(&spec.defender.secrets),
        deletion_policy: spec.deletion_policy,
        suspend: spec.suspend,
        tags,
        uid,
        namespace,
        name,
    })
}

/// How the spec asks a secret of ours to be deleted (read as it is, valid or not: teardown uses it).
pub fn secret_deletion(spec: &crate::crd::DefenderSecretsSpec) -> SecretDeletion {
    if spec.force_delete_without_recovery {
        SecretDeletion::Force
    } else {
        SecretDeletion::RecoveryWindow(
            spec.recovery_window_in_days.map(i64::from).unwrap_or(DEFAULT_RECOVERY_WINDOW_DAYS).clamp(7, 30),
        )
    }
}

/// Where the install bundle goes, with every contradiction in `defender.secrets` reported.
fn build_secrets(
    edd: &EcsDefenderDeployment,
    cluster: &str,
    owner_hash: &str,
    problems: &mut Vec<String>,
) -> DesiredSecrets {
    let s = &edd.spec.defender.secrets;
    let role_arn = s.execution_role_arn.clone().filter(|a| !a.is_empty());
    if let Some(arn) = &role_arn
        && !is_role_arn(arn)
    {
        problems.push(format!(
            "defender.secrets.executionRoleArn {arn:?} is not an IAM role ARN (arn:aws:iam::<account>:role/<name>)"
        ));
    }
    if let Some(days) = s.recovery_window_in_days
        && !(7..=30).contains(&days)
    {
        problems.push(format!("defender.secrets.recoveryWindowInDays ({days}) must be between 7 and 30"));
    }
    if s.recovery_window_in_days.is_some() && s.force_delete_without_recovery {
        problems.push("defender.secrets: set recoveryWindowInDays or forceDeleteWithoutRecovery, not both".to_string());
    }
    match s.storage {
        SecretStorage::Inline => {
            if role_arn.is_some() || s.create_execution_role {
                problems.push(
                    "defender.secrets: executionRoleArn and createExecutionRole apply to storage SecretsManager only; \
                     with storage Inline the task definition needs no execution role"
                        .to_string(),
                );
            }
            DesiredSecrets::Inline
        }
        SecretStorage::SecretsManager => {
            let execution_role = match (role_arn, s.create_execution_role) {
                (Some(arn), false) => ExecutionRole::Given(arn),
                (None, true) => ExecutionRole::Create { name: execution_role_name(cluster, owner_hash) },
                (Some(arn), true) => {
                    problems
                        .push("defender.secrets: set executionRoleArn or createExecutionRole, not both".to_string());
                    ExecutionRole::Given(arn)
                }
                (None, false) => {
                    problems.push(
                        "defender.secrets: storage SecretsManager (the default) needs a task execution role that can read \
                         the install bundle's secret: set defender.secrets.createExecutionRole: true to let the operator \
                         create one, or defender.secrets.executionRoleArn to a role you manage; or set \
                         defender.secrets.storage: Inline to keep the bundle in the task definition"
                            .to_string(),
                    );
                    ExecutionRole::Create { name: execution_role_name(cluster, owner_hash) }
                }
            };
            DesiredSecrets::SecretsManager(DesiredSecret { name: secret_name(cluster, owner_hash), execution_role })
        }
    }
}

fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    parts.len() == 6
        && parts[0] == "arn"
        && parts[1].starts_with("aws")
        && parts[2] == "iam"
        && parts[4].len() == 12
        && parts[4].chars().all(|c| c.is_ascii_digit())
        && parts[5].strip_prefix("role/").is_some_and(|n| !n.is_empty())
}

/// The `EcsTaskDefinitionOptions` body, as the Console's UI sends it, with the spec's options.
fn build_generator_options(edd: &EcsDefenderDeployment, console_address: &str, task_family: &str) -> serde_json::Value {
    let d = &edd.spec.defender;
    let mut body = serde_json::json!({
        "consoleAddr": console_address,
        "taskName": task_family,
        "orchestration": "ecs",
        "namespace": "twistlock",
    });
    let o = body.as_object_mut().expect("object");
    if let Some(c) = d.cluster_name.as_ref().filter(|c| !c.is_empty()) {
        o.insert("cluster".into(), c.clone().into());
    }
    let opts = &d.options;
    if let Some(v) = opts.privileged {
        o.insert("privileged".into(), v.into());
    }
    if let Some(v) = opts.container_runtime {
        o.insert("containerRuntime".into(), serde_json::to_value(v).expect("enum serializes"));
    }
    if let Some(v) = &opts.docker_socket_path {
        o.insert("dockerSocketPath".into(), v.clone().into());
    }
    if let Some(v) = opts.selinux {
        o.insert("selinux".into(), v.into());
    }
    if let Some(v) = &opts.image {
        o.insert("image".into(), v.clone().into());
    }
    if let Some(v) = opts.cpu_limit {
        o.insert("cpuLimit".into(), v.into());
    }
    if let Some(v) = opts.memory_limit {
        o.insert("memoryLimit".into(), v.into());
    }
    if let Some(v) = opts.host_custom_compliance_enabled {
        o.insert("hostCustomComplianceEnabled".into(), v.into());
    }
    if let Some(p) = &opts.proxy {
        o.insert(
            "proxy".into(),
            serde_json::json!({"httpProxy": p.http_proxy, "noProxy": p.no_proxy, "ca": p.ca.clone().unwrap_or_default()}),
        );
    }
    body
}

fn is_region(r: &str) -> bool {
    // e.g. us-east-1, ap-southeast-2, us-gov-west-1, eu-central-2
    let parts: Vec<&str> = r.split('-').collect();
    parts.len() >= 3
        && parts[0].len() == 2
        && parts[..parts.len() - 1].iter().all(|p| !p.is_empty() && p.chars().all(|c| c.is_ascii_lowercase()))
        && parts[parts.len() - 1].chars().all(|c| c.is_ascii_digit())
        && !parts[parts.len() - 1].is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fixtures;

    #[test]
    fn defaults_follow_the_guide() {
        let d = validate(&fixtures::sample("demo")).unwrap();
        assert_eq!(d.cluster_name, "demo", "cluster named after the resource");
        let w = d.workers.unwrap();
        assert_eq!((w.instance_type.as_str(), w.instance_profile.as_str()), ("t2.medium", "ecsInstanceRole"));
        assert_eq!((w.min_size, w.max_size, w.desired_capacity), (1, 2, 2));
        assert_eq!(w.name, "demo-workers", "default names derive from the cluster name");
        assert_eq!(w.asg_name, "demo-workers");
        assert_eq!(w.associate_public_ip_address, None, "unset: the subnet decides");
        assert_eq!(w.image, ImageSource::SsmParameter(crate::crd::DEFAULT_AMI_PARAMETER.into()));
        assert_eq!((d.task_family.as_str(), d.service_name.as_str()), ("demo-defender", "demo-defender"));
        assert_eq!(d.generator_options["taskName"], "demo-defender");
        assert!(w.user_data.contains("echo ECS_CLUSTER=demo >> /etc/ecs/ecs.config\n"));
        assert_eq!(d.generator_options["consoleAddr"], "127.0.0.1");
        assert_eq!(d.tags[tags::OWNER], "uid-demo");
    }

    #[test]
    fn every_problem_is_reported() {
        let mut edd = fixtures::sample("demo");
        edd.spec.region = "mars".into();
        let asg = &mut edd.spec.workers.as_mut().unwrap().auto_scaling_group;
        asg.min_size = 3;
        asg.max_size = 2;
        edd.spec.defender.console.url = "console without scheme".into();
        let err = validate(&edd).unwrap_err();
        assert_eq!(err.0.len(), 4, "{err}");
        assert!(err.to_string().contains("minSize (3) is greater than maxSize (2)"));
        assert!(err.to_string().contains("region \"mars\""));
    }

    #[test]
    fn the_guides_names_can_be_set() {
        let mut edd = fixtures::sample("demo");
        let w = edd.spec.workers.as_mut().unwrap();
        w.name = Some("pc-worker-node".into());
        w.auto_scaling_group.name = Some("pc-worker-autoscaling".into());
        edd.spec.defender.task_name = Some("pc-defender".into());
        edd.spec.service.name = Some("pc-defender".into());
        let d = validate(&edd).unwrap();
        let w = d.workers.unwrap();
        assert_eq!((w.name.as_str(), w.asg_name.as_str()), ("pc-worker-node", "pc-worker-autoscaling"));
        assert_eq!((d.task_family.as_str(), d.service_name.as_str()), ("pc-defender", "pc-defender"));
    }

    #[test]
    fn the_cluster_name_cannot_change_once_created() {
        let mut edd = fixtures::sample("demo");
        edd.status = Some(crate::crd::EcsDefenderDeploymentStatus {
            cluster_name: Some("demo".into()),
            cluster_arn: Some("arn:aws:ecs:us-east-1:123456789012:cluster/demo".into()),
            ..Default::default()
        });
        assert!(validate(&edd).is_ok());
        edd.spec.cluster.name = Some("other".into());
        let err = validate(&edd).unwrap_err();
        assert!(err.to_string().contains("the cluster name is immutable"), "{err}");
        // Naming the same cluster explicitly is no change.
        edd.spec.cluster.name = Some("demo".into());
        assert!(validate(&edd).is_ok());
    }

    #[test]
    fn generator_inputs_hash_follows_the_options() {
        let a = validate(&fixtures::sample("demo")).unwrap();
        let mut edd = fixtures::sample("demo");
        edd.spec.defender.options.privileged = Some(false);
        let b = validate(&edd).unwrap();
        assert_ne!(a.generator_inputs_hash, b.generator_inputs_hash);
        assert_eq!(a.generator_inputs_hash, validate(&fixtures::sample("demo")).unwrap().generator_inputs_hash);
    }

    #[test]
    fn proxy_credentials_reach_the_generator_and_a_new_password_a_new_revision() {
        let mut edd = fixtures::sample("demo");
        edd.spec.defender.options.proxy = Some(crate::crd::ProxyOptions {
            http_proxy: "http://proxy:3128".into(),
            credentials_secret_ref: Some(crate::crd::SecretRef { name: "proxy".into() }),
            ..Default::default()
        });
        let d = validate(&edd).unwrap();
        assert_eq!(d.proxy_credentials_secret.as_deref(), Some("proxy"));
        let a = d.clone().with_proxy_credentials("u", "p1");
        assert_eq!(a.generator_options["proxy"]["user"], "u");
        assert_eq!(a.generator_options["proxy"]["password"], "p1");
        let b = d.clone().with_proxy_credentials("u", "p2");
        assert_ne!(a.generator_inputs_hash, b.generator_inputs_hash);
        assert_eq!(a.generator_inputs_hash, d.with_proxy_credentials("u", "p1").generator_inputs_hash);
        assert!(!a.generator_inputs_hash.contains("p1"));
    }

    #[test]
    fn inputs_that_would_misconfigure_workers_or_defenders_are_refused() {
        let mut edd = fixtures::sample("demo");
        edd.spec.workers.as_mut().unwrap().extra_user_data = "echo ECS_CLUSTER=other >> /etc/ecs/ecs.config".into();
        edd.spec.defender.options.proxy = Some(crate::crd::ProxyOptions {
            http_proxy: "http://proxy:3128\nINSTALL_BUNDLE=x".into(),
            no_proxy: "a,b\rc".into(),
            ..Default::default()
        });
        let problems = validate(&edd).unwrap_err().0;
        let has = |what: &str| problems.iter().any(|p| p.contains(what));
        assert!(has("ECS_CLUSTER") && has("proxy.httpProxy must be one line") && has("proxy.noProxy"), "{problems:#?}");
    }

    #[test]
    fn proxy_and_endpoint_urls_must_be_plain_http_urls() {
        for (proxy, ok) in [
            ("http://proxy:3128", true),
            ("https://proxy.example.com:3128/", true),
            ("http://proxy:3128/some/path", false),
            ("http://user:pw@proxy:3128", false),
            ("proxy:3128", false),
            ("socks5://proxy:1080", false),
        ] {
            let mut edd = fixtures::sample("demo");
            edd.spec.defender.options.proxy =
                Some(crate::crd::ProxyOptions { http_proxy: proxy.into(), ..Default::default() });
            let result = validate(&edd);
            assert_eq!(result.is_ok(), ok, "{proxy}: {result:?}");
            if let Err(e) = result {
                assert!(e.to_string().contains("defender.options.proxy.httpProxy"), "{e}");
            }
        }
        for (endpoint, ok) in [("http://127.0.0.1:4566", true), ("localhost:4566", false), ("ftp://host", false)] {
            let mut edd = fixtures::sample("demo");
            edd.spec.aws = Some(crate::crd::AwsSpec { endpoint_url: Some(endpoint.into()), ..Default::default() });
            let result = validate(&edd);
            assert_eq!(result.is_ok(), ok, "{endpoint}: {result:?}");
        }
    }

    #[test]
    fn the_bundle_goes_to_secrets_manager_by_default_and_needs_a_role() {
        let d = validate(&fixtures::sample("demo")).unwrap();
        let s = d.secrets.secrets_manager().expect("SecretsManager is the default");
        assert_eq!(s.name, format!("ecs-defender/demo-{}/install-bundle", short_hash(&["uid-demo"], 8)));
        assert_eq!(
            s.execution_role,
            ExecutionRole::Create { name: format!("demo-{}-defender-exec", short_hash(&["uid-demo"], 8)) }
        );
        assert_eq!(d.secret_deletion, SecretDeletion::RecoveryWindow(7));

        let mut edd = fixtures::sample("demo");
        edd.spec.defender.secrets = Default::default();
        let err = validate(&edd).unwrap_err();
        assert_eq!(err.0.len(), 1, "{err}");
        assert!(err.0[0].contains("createExecutionRole: true") && err.0[0].contains("storage: Inline"), "{err}");
    }

    #[test]
    fn contradictions_in_secrets_are_reported() {
        let mut edd = fixtures::sample("demo");
        let s = &mut edd.spec.defender.secrets;
        s.execution_role_arn = Some("arn:aws:iam::123456789012:role/mine".into());
        s.recovery_window_in_days = Some(3);
        s.force_delete_without_recovery = true;
        let err = validate(&edd).unwrap_err().to_string();
        assert!(err.contains("set executionRoleArn or createExecutionRole, not both"), "{err}");
        assert!(err.contains("recoveryWindowInDays (3) must be between 7 and 30"), "{err}");
        assert!(err.contains("set recoveryWindowInDays or forceDeleteWithoutRecovery, not both"), "{err}");

        let mut edd = fixtures::sample("demo");
        edd.spec.defender.secrets.storage = crate::crd::SecretStorage::Inline;
        let err = validate(&edd).unwrap_err().to_string();
        assert!(err.contains("apply to storage SecretsManager only"), "{err}");
        edd.spec.defender.secrets.create_execution_role = false;
        assert_eq!(validate(&edd).unwrap().secrets, DesiredSecrets::Inline);

        let mut edd = fixtures::sample("demo");
        edd.spec.defender.secrets.create_execution_role = false;
        edd.spec.defender.secrets.execution_role_arn = Some("mine".into());
        let err = validate(&edd).unwrap_err().to_string();
        assert!(err.contains("is not an IAM role ARN"), "{err}");
        edd.spec.defender.secrets.execution_role_arn = Some("arn:aws:iam::123456789012:role/path/mine".into());
        edd.spec.defender.secrets.force_delete_without_recovery = true;
        let d = validate(&edd).unwrap();
        assert_eq!(
            d.secrets.secrets_manager().unwrap().execution_role,
            ExecutionRole::Given("arn:aws:iam::123456789012:role/path/mine".into())
        );
        assert_eq!(d.secret_deletion, SecretDeletion::Force);
    }

    #[test]
    fn execution_role_names_fit_iam() {
        let long = "c".repeat(255);
        let name = execution_role_name(&long, "1a2b3c4d");
        assert_eq!(name.len(), 64);
        assert!(name.ends_with("-1a2b3c4d-defender-exec"));
    }

    #[test]
    fn extra_user_data_follows_the_cluster_line() {
        let ud = build_user_data("c1", "echo hi\n");
        assert_eq!(ud, "#!/bin/bash\necho ECS_CLUSTER=c1 >> /etc/ecs/ecs.config\necho hi\n");
    }

    #[test]
    fn regions() {
        for ok in ["us-east-1", "us-gov-west-1", "ap-southeast-2"] {
            assert!(is_region(ok), "{ok}");
        }
        for bad in ["", "us-east", "US-EAST-1", "useast1", "us--1"] {
            assert!(!is_region(bad), "{bad}");
        }
    }
}
