//! The ECS world: what runs on the EC2 instances and inside ECS, played in-process against moto
//! (directly, not through the gate, so the gate's call log holds only the caller's calls).
//!
//! One background loop, every `tick`, per region:
//!
//! - **the ECS agent**: an EC2 instance "boots" `boot_delay` after it first appears; the agent then
//!   reads `ECS_CLUSTER` from the user data's `/etc/ecs/ecs.config` and registers the instance as a
//!   container instance of that cluster once it exists (without `ECS_CLUSTER` it would join
//!   `default`, as the real agent does; a wrong name never joins). A terminated instance's tasks stop
//!   and its container instance is deregistered.
//! - **the DAEMON scheduler** ([`scheduler`]): one task of the current revision per ACTIVE container
//!   instance, rolling updates, no tasks on DRAINING instances, tasks of deleted services stopped.
//! - **the Defenders**: a RUNNING task whose task definition has `INSTALL_BUNDLE` is a Defender; it is
//!   announced to every [`DefenderRegistry`] (the Console simulator) and withdrawn when it stops.

pub mod scheduler;
pub mod user_data;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::types::{InstanceAttributeName, InstanceStateName};
use aws_sdk_ecs::{config::Credentials, types::DesiredStatus};

use crate::{
    defender::{DefenderRegistry, DefenderStart},
    moto::{ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY},
};

/// How to start the ECS world.
#[derive(Clone)]
pub struct EcsWorldConfig {
    /// moto's base URL (not the gate's).
    pub moto_url: String,
    /// Regions to play; default `["us-east-1"]`.
    pub regions: Vec<String>,
    /// Time from an instance's first appearance to its agent registering.
    pub boot_delay: Duration,
    /// Loop period.
    pub tick: Duration,
    /// Where Defenders connect (Console simulators).
    pub registries: Vec<Arc<dyn DefenderRegistry>>,
}

impl Default for EcsWorldConfig {
    fn default() -> Self {
        EcsWorldConfig {
            moto_url: String::new(),
            regions: vec!["us-east-1".to_string()],
            boot_delay: Duration::from_secs(1),
            tick: Duration::from_millis(200),
            registries: Vec::new(),
        }
    }
}

impl EcsWorldConfig {
    pub fn new(moto_url: &str) -> EcsWorldConfig {
        EcsWorldConfig { moto_url: moto_url.to_string(), ..EcsWorldConfig::default() }
    }
}

impl std::fmt::Debug for EcsWorldConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EcsWorldConfig")
            .field("moto_url", &self.moto_url)
            .field("regions", &self.regions)
            .field("boot_delay", &self.boot_delay)
            .field("tick", &self.tick)
            .field("registries", &self.registries.len())
            .finish()
    }
}

type Registries = Arc<Mutex<Vec<Arc<dyn DefenderRegistry>>>>;

/// The running world; its loop stops when this is dropped.
pub struct EcsWorld {
    task: tokio::task::JoinHandle<()>,
    registries: Registries,
    rounds: Arc<std::sync::atomic::AtomicU64>,
}

impl EcsWorld {
    pub async fn start(cfg: EcsWorldConfig) -> Result<EcsWorld> {
        crate::install_crypto_provider();
        keep_tasks_running(&cfg.moto_url).await?;
        let registries: Registries = Arc::new(Mutex::new(cfg.registries.clone()));
        let mut regions = Vec::new();
        for r in &cfg.regions {
            regions.push(RegionWorld::new(&cfg, r, registries.clone()).await);
        }
        let rounds = Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = rounds.clone();
        let tick = cfg.tick;
        let task = tokio::spawn(async move {
            let mut interval = tokio::time::interval(tick);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                interval.tick().await;
                for world in regions.iter_mut() {
                    if let Err(e) = world.round().await {
                        tracing::debug!(region = %world.region, error = %format!("{e:#}"), "ECS world round failed");
                    }
                }
                counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            }
        });
        Ok(EcsWorld { task, registries, rounds })
    }

    /// Adds a place Defenders connect to (for a Console started after the world).
    pub fn add_registry(&self, registry: Arc<dyn DefenderRegistry>) {
        self.registries.lock().unwrap().push(registry);
    }

    /// Rounds completed so far (tests wait for a round to be sure the world saw a change).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for EcsWorld {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// moto advances a task's state on every DescribeTasks; the agent keeps them RUNNING instead.
async fn keep_tasks_running(moto_url: &str) -> Result<()> {
    let body =
        serde_json::json!({"model_name": "ecs::task", "transition": {"progression": "manual", "times": 1_000_000}});
    reqwest::Client::builder()
        .no_proxy()
        .build()?
        .post(format!("{}/moto-api/state-manager/set-transition", moto_url.trim_end_matches('/')))
        .json(&body)
        .send()
        .await
        .context("configuring moto's task lifecycle")?
        .error_for_status()?;
    Ok(())
}

/// The ECS agent's view of one EC2 instance.
#[derive(Clone, Debug, PartialEq)]
enum Agent {
    /// Seen; the agent starts at `since + boot_delay`.
    Booting {
        since: Instant,
    },
    /// Started; registers once the cluster exists.
    Joining {
        cluster: String,
    },
    Registered {
        cluster: String,
        container_instance: String,
    },
    /// Terminated, deregistered, or configured for no cluster: nothing more happens.
    Done,
}

/// A Defender task announced to the registries.
#[derive(Clone, Debug)]
struct Announced {
    instance_id: String,
}

/// What a task definition says about Defenders.
#[derive(Clone, Debug, Default)]
struct DefenderEnv {
    install_bundle: Option<String>,
    ws_address: Option<String>,
    cluster: Option<String>,
}

#[derive(Clone, Debug, Default)]
struct Ec2Info {
    state: String,
    private_dns: String,
    instance_type: String,
    private_ip: String,
    availability_zone: String,
    image_id: String,
    owner: String,
}

struct RegionWorld {
    region: String,
    ec2: aws_sdk_ec2::Client,
    ecs: aws_sdk_ecs::Client,
    boot_delay: Duration,
    agents: HashMap<String, Agent>,
    ec2_info: HashMap<String, Ec2Info>,
    task_definitions: HashMap<String, DefenderEnv>,
    announced: HashMap<String, Announced>,
    registries: Registries,
}

impl RegionWorld {
    async fn new(cfg: &EcsWorldConfig, region: &str, registries: Registries) -> RegionWorld {
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .region(Region::new(region.to_string()))
            .endpoint_url(&cfg.moto_url)
            .credentials_provider(Credentials::new(ACCESS_KEY_ID, SECRET_ACCESS_KEY, None, None, "sandbox"))
            .load()
            .await;
        RegionWorld {
            region: region.to_string(),
            ec2: aws_sdk_ec2::Client::new(&sdk),
            ecs: aws_sdk_ecs::Client::new(&sdk),
            boot_delay: cfg.boot_delay,
            agents: HashMap::new(),
            ec2_info: HashMap::new(),
            task_definitions: HashMap::new(),
            announced: HashMap::new(),
            registries,
        }
    }

    async fn round(&mut self) -> Result<()> {
        self.agents_round().await?;
        let clusters = self.active_clusters().await?;
        let mut running: HashMap<String, RunningTask> = HashMap::new();
        for cluster in &clusters {
            running.extend(self.schedule_cluster(cluster).await?);
        }
        self.defenders_round(&running).await;
        Ok(())
    }

    /// The ECS agent on every instance: boot, read the user data, register; deregister on termination.
    async fn agents_round(&mut self) -> Result<()> {
        self.ec2_info = self.describe_instances().await?;
        let now = Instant::now();
        let ids: Vec<String> = self.ec2_info.keys().cloned().collect();
        for id in ids {
            let info = self.ec2_info[&id].clone();
            let alive = info.state == "running" || info.state == "pending";
            let agent = self
                .agents
                .entry(id.clone())
                .or_insert(if alive { Agent::Booting { since: now } } else { Agent::Done })
                .clone();
            let next = match agent {
                _ if !alive => {
                    if let Agent::Registered { cluster, container_instance } = &agent {
                        self.deregister(cluster, container_instance).await;
                    }
                    Agent::Done
                }
                Agent::Booting { since } if now.duration_since(since) >= self.boot_delay && info.state == "running" => {
                    let script = self.user_data(&id).await?;
                    // The real agent joins `default` when ECS_CLUSTER is not set.
                    let cluster = user_data::ecs_cluster(&script).unwrap_or_else(|| "default".to_string());
                    tracing::debug!(instance = %id, %cluster, "ECS agent started");
                    Agent::Joining { cluster }
                }
                Agent::Joining { cluster } => match self.register(&cluster, &id, &info).await? {
                    Some(arn) => Agent::Registered { cluster, container_instance: arn },
                    None => Agent::Joining { cluster },
                },
                other => other,
            };
            self.agents.insert(id, next);
        }
        // Instances moto no longer lists are gone too.
        let gone: Vec<(String, String, String)> = self
            .agents
            .iter()
            .filter(|(id, _)| !self.ec2_info.contains_key(*id))
            .filter_map(|(id, a)| match a {
                Agent::Registered { cluster, container_instance } => {
                    Some((id.clone(), cluster.clone(), container_instance.clone()))
                }
                _ => None,
            })
            .collect();
        for (id, cluster, ci) in gone {
            self.deregister(&cluster, &ci).await;
            self.agents.insert(id, Agent::Done);
        }
        Ok(())
    }

    async fn describe_instances(&self) -> Result<HashMap<String, Ec2Info>> {
        let mut out = HashMap::new();
        let mut token = None;
        loop {
            let resp = self.ec2.describe_instances().set_next_token(token).send().await?;
            for r in resp.reservations() {
                for i in r.instances() {
                    let Some(id) = i.instance_id() else { continue };
                    out.insert(
                        id.to_string(),
                        Ec2Info {
                            state: i
                                .state()
                                .and_then(|s| s.name())
                                .map(InstanceStateName::as_str)
                                .unwrap_or("")
                                .to_string(),
                            private_dns: i.private_dns_name().unwrap_or_default().to_string(),
                            instance_type: i.instance_type().map(|t| t.as_str().to_string()).unwrap_or_default(),
                            private_ip: i.private_ip_address().unwrap_or_default().to_string(),
                            availability_zone: i
                                .placement()
                                .and_then(|p| p.availability_zone())
                                .unwrap_or_default()
                                .to_string(),
                            image_id: i.image_id().unwrap_or_default().to_string(),
                            owner: r.owner_id().unwrap_or(ACCOUNT_ID).to_string(),
                        },
                    );
                }
            }
            token = resp.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            if token.is_none() {
                return Ok(out);
            }
        }
    }

    async fn user_data(&self, instance_id: &str) -> Result<String> {
        let resp = self
            .ec2
            .describe_instance_attribute()
            .instance_id(instance_id)
            .attribute(InstanceAttributeName::UserData)
            .send()
            .await?;
        Ok(resp.user_data().and_then(|u| u.value()).map(user_data::decode).unwrap_or_default())
    }

    /// Registers the instance if its cluster exists (ACTIVE); `None` means try again later.
    async fn register(&self, cluster: &str, instance_id: &str, info: &Ec2Info) -> Result<Option<String>> {
        let resp = self.ecs.describe_clusters().clusters(cluster).send().await?;
        if !resp.clusters().iter().any(|c| c.status() == Some("ACTIVE")) {
            return Ok(None);
        }
        let document = serde_json::json!({
            "instanceId": instance_id,
            "region": self.region,
            "accountId": info.owner,
            "instanceType": info.instance_type,
            "availabilityZone": info.availability_zone,
            "privateIp": info.private_ip,
            "imageId": info.image_id,
        });
        let resp = self
            .ecs
            .register_container_instance()
            .cluster(cluster)
            .instance_identity_document(document.to_string())
            .send()
            .await?;
        let arn = resp.container_instance().and_then(|c| c.container_instance_arn()).map(str::to_string);
        tracing::debug!(instance = %instance_id, %cluster, "container instance registered");
        Ok(arn)
    }

    /// Stops the instance's tasks and deregisters it (best effort: it may be gone already).
    async fn deregister(&self, cluster: &str, container_instance: &str) {
        if let Ok(resp) = self
            .ecs
            .list_tasks()
            .cluster(cluster)
            .container_instance(container_instance)
            .desired_status(DesiredStatus::Running)
            .send()
            .await
        {
            for t in resp.task_arns() {
                let _ = self.ecs.stop_task().cluster(cluster).task(t).reason("Instance terminated").send().await;
            }
        }
        let _ = self
            .ecs
            .deregister_container_instance()
            .cluster(cluster)
            .container_instance(container_instance)
            .force(true)
            .send()
            .await;
    }

    async fn active_clusters(&self) -> Result<Vec<String>> {
        let mut arns = Vec::new();
        let mut token = None;
        loop {
            let resp = self.ecs.list_clusters().set_next_token(token).send().await?;
            arns.extend(resp.cluster_arns().iter().cloned());
            token = resp.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut out = Vec::new();
        for chunk in arns.chunks(100) {
            let resp = self.ecs.describe_clusters().set_clusters(Some(chunk.to_vec())).send().await?;
            out.extend(
                resp.clusters()
                    .iter()
                    .filter(|c| c.status() == Some("ACTIVE"))
                    .filter_map(|c| c.cluster_name())
                    .map(str::to_string),
            );
        }
        Ok(out)
    }

    /// One scheduler round in a cluster; returns its RUNNING tasks afterwards, by ARN.
    async fn schedule_cluster(&mut self, cluster: &str) -> Result<HashMap<String, RunningTask>> {
        let ecs = &self.ecs;
        // Services.
        let service_arns = ecs.list_services().cluster(cluster).send().await?.service_arns().to_vec();
        let mut daemons = Vec::new();
        let mut active_services = BTreeSet::new();
        for chunk in service_arns.chunks(10) {
            let resp = ecs.describe_services().cluster(cluster).set_services(Some(chunk.to_vec())).send().await?;
            for s in resp.services() {
                if s.status() != Some("ACTIVE") {
                    continue;
                }
                let name = s.service_name().unwrap_or_default().to_string();
                active_services.insert(name.clone());
                if s.scheduling_strategy().map(|x| x.as_str()) == Some("DAEMON")
                    && let Some(td) = s.task_definition()
                {
                    let task_definition = self.task_definition_arn(td).await?;
                    daemons.push(scheduler::DaemonService { name, task_definition });
                }
            }
        }
        // Container instances.
        let ecs = &self.ecs;
        let ci_arns = ecs.list_container_instances().cluster(cluster).send().await?.container_instance_arns().to_vec();
        let mut instances = Vec::new();
        let mut ec2_of: HashMap<String, String> = HashMap::new();
        for chunk in ci_arns.chunks(100) {
            let resp = ecs
                .describe_container_instances()
                .cluster(cluster)
                .set_container_instances(Some(chunk.to_vec()))
                .send()
                .await?;
            for ci in resp.container_instances() {
                let arn = ci.container_instance_arn().unwrap_or_default().to_string();
                ec2_of.insert(arn.clone(), ci.ec2_instance_id().unwrap_or_default().to_string());
                instances.push(scheduler::Instance { arn, active: ci.status() == Some("ACTIVE") });
            }
        }
        // Tasks.
        let task_arns =
            ecs.list_tasks().cluster(cluster).desired_status(DesiredStatus::Running).send().await?.task_arns().to_vec();
        let mut tasks: Vec<(scheduler::Task, bool)> = Vec::new();
        for chunk in task_arns.chunks(100) {
            let resp = ecs.describe_tasks().cluster(cluster).set_tasks(Some(chunk.to_vec())).send().await?;
            for t in resp.tasks() {
                if t.last_status() == Some("STOPPED") {
                    continue;
                }
                tasks.push(task_of(t));
            }
        }
        let plain: Vec<scheduler::Task> = tasks.iter().map(|(t, _)| t.clone()).collect();
        let actions = scheduler::plan(&daemons, &active_services, &instances, &plain);
        for action in actions {
            match action {
                scheduler::Action::Stop { task, reason } => {
                    ecs.stop_task().cluster(cluster).task(&task).reason(reason).send().await?;
                    tasks.retain(|(t, _)| t.arn != task);
                }
                scheduler::Action::Start { service, task_definition, container_instance } => {
                    let resp = ecs
                        .start_task()
                        .cluster(cluster)
                        .task_definition(&task_definition)
                        .container_instances(&container_instance)
                        .group(format!("service:{service}"))
                        .started_by("ecs-svc/sandbox")
                        .send()
                        .await?;
                    for t in resp.tasks() {
                        tasks.push(task_of(t));
                    }
                }
            }
        }
        Ok(tasks
            .into_iter()
            .filter(|(_, running)| *running)
            .map(|(t, _)| {
                let instance_id = ec2_of.get(&t.container_instance).cloned().unwrap_or_default();
                (t.arn, RunningTask { cluster: cluster.to_string(), task_definition: t.task_definition, instance_id })
            })
            .collect())
    }

    /// `fam:2` (moto stores what the caller passed) -> the full ARN.
    async fn task_definition_arn(&self, td: &str) -> Result<String> {
        if td.starts_with("arn:") {
            return Ok(td.to_string());
        }
        let resp = self.ecs.describe_task_definition().task_definition(td).send().await?;
        Ok(resp.task_definition().and_then(|t| t.task_definition_arn()).unwrap_or(td).to_string())
    }

    async fn defender_env(&mut self, task_definition: &str) -> DefenderEnv {
        if let Some(env) = self.task_definitions.get(task_definition) {
            return env.clone();
        }
        let Ok(resp) = self.ecs.describe_task_definition().task_definition(task_definition).send().await else {
            return DefenderEnv::default();
        };
        let mut env = DefenderEnv::default();
        for c in resp.task_definition().map(|t| t.container_definitions()).unwrap_or_default() {
            for kv in c.environment() {
                let value = kv.value().map(str::to_string).filter(|v| !v.is_empty());
                match kv.name() {
                    Some("INSTALL_BUNDLE") => env.install_bundle = env.install_bundle.take().or(value),
                    Some("WS_ADDRESS") => env.ws_address = env.ws_address.take().or(value),
                    Some("DEFENDER_CLUSTER") => env.cluster = env.cluster.take().or(value),
                    _ => {}
                }
            }
        }
        self.task_definitions.insert(task_definition.to_string(), env.clone());
        env
    }

    /// Announces Defender tasks that started and withdraws those that stopped (stops first, so a
    /// replaced Defender on one instance ends connected).
    async fn defenders_round(&mut self, running: &HashMap<String, RunningTask>) {
        let stopped: Vec<String> = self.announced.keys().filter(|arn| !running.contains_key(*arn)).cloned().collect();
        for arn in stopped {
            let Some(a) = self.announced.remove(&arn) else { continue };
            if !self.announced.values().any(|other| other.instance_id == a.instance_id) {
                for r in self.registries.lock().unwrap().iter() {
                    r.defender_stopped(&a.instance_id);
                }
            }
        }
        for (arn, task) in running {
            if self.announced.contains_key(arn) || task.instance_id.is_empty() {
                continue;
            }
            let env = self.defender_env(&task.task_definition).await;
            // Not a Defender (the task definition's environment is cached, so this stays cheap).
            let Some(bundle) = env.install_bundle else { continue };
            let info = self.ec2_info.get(&task.instance_id).cloned().unwrap_or_default();
            let start = DefenderStart {
                install_bundle: bundle,
                ws_address: env.ws_address,
                cluster: env.cluster.unwrap_or_else(|| task.cluster.clone()),
                instance_id: task.instance_id.clone(),
                hostname: info.private_dns,
                account_id: if info.owner.is_empty() { ACCOUNT_ID.to_string() } else { info.owner },
                region: self.region.clone(),
                instance_type: info.instance_type,
            };
            let registries: Vec<Arc<dyn DefenderRegistry>> = self.registries.lock().unwrap().clone();
            for r in &registries {
                let connected = r.defender_started(&start);
                tracing::debug!(instance = %start.instance_id, connected, "Defender started");
            }
            self.announced.insert(arn.clone(), Announced { instance_id: task.instance_id.clone() });
        }
    }
}

/// A RUNNING task after a scheduler round.
#[derive(Clone, Debug)]
struct RunningTask {
    cluster: String,
    task_definition: String,
    instance_id: String,
}

/// The scheduler's view of an ECS task, and whether it is RUNNING.
fn task_of(t: &aws_sdk_ecs::types::Task) -> (scheduler::Task, bool) {
    (
        scheduler::Task {
            arn: t.task_arn().unwrap_or_default().to_string(),
            group: t.group().unwrap_or_default().to_string(),
            task_definition: t.task_definition_arn().unwrap_or_default().to_string(),
            container_instance: t.container_instance_arn().unwrap_or_default().to_string(),
        },
        t.last_status() == Some("RUNNING"),
    )
}
