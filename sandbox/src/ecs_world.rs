//! The ECS world: what runs on the EC2 instances and inside ECS, played in-process against moto
//! (directly, not through the gate, so the gate's call log holds only the caller's calls).
//!
//! One background loop, every `tick`, per region:
//!
//! - **the ECS agent**: an EC2 instance "boots" `boot_delay` after it first appears; the agent then
//!   reads `ECS_CLUSTER` from the user data's `/etc/ecs/ecs.config` and registers the instance as a
//!   container instance of that cluster once it exists (without `ECS_CLUSTER` it would join
//!   `default`, as the real agent does; a wrong name never joins). A terminated instance's tasks stop
//!   and its container instance is deregistered (scale-in, instance refresh, ASG delete alike); a
//!   replacement instance boots and registers like any other.
//! - **the network** ([`network`], rule [`Rules::network`]): the agent registers, and a Defender
//!   connects, only from an instance that can reach the internet (a public IP and an internet
//!   gateway route, or a NAT route). moto's default VPC has no internet gateway; the world gives it
//!   one, as AWS's default VPC has.
//! - **the DAEMON scheduler** ([`scheduler`]): one task of the current revision per ACTIVE container
//!   instance, rolling updates, no tasks on DRAINING instances, tasks of deleted services stopped;
//!   with rule [`Rules::placement`], only where the agent is connected and the instance type's CPU,
//!   memory and architecture fit ([`instance_types`]); a task that fits nowhere is a service event
//!   ([`EcsWorld::service_events`]). Faults per cluster ([`faults`], [`control`]): images that
//!   cannot be pulled (`CannotPullContainerError`), disconnected agents.
//! - **secrets** ([`secrets`]): before a task whose containers name `secrets[].valueFrom` starts,
//!   the agent fetches them from Secrets Manager (moto's) with the task's execution role, as ECS
//!   does: a role that ECS tasks cannot assume or that may not `GetSecretValue` the secret, or a
//!   secret that does not exist (a wrong ARN, deleted), stops the task with
//!   `ResourceInitializationError: unable to pull secrets or registry auth: ...`; the values are
//!   what the task's containers see, fixed at start.
//! - **adopted instances** ([`EcsWorld::adopt`]): instances someone else launched and registered
//!   (the sandbox's seeded clusters, [`crate::seed`]) are played from registered on, never booted.
//! - **the Defenders**: a RUNNING task with `INSTALL_BUNDLE` (in its task definition's environment,
//!   or fetched from Secrets Manager at its start) is a Defender; it is announced to every
//!   [`DefenderRegistry`] (the Console simulator) with that bundle and withdrawn when it stops.

mod adopted;
pub mod control;
pub mod faults;
mod hints;
pub mod instance_types;
pub mod network;
pub mod scheduler;
pub mod secrets;
pub mod user_data;

use std::{
    collections::{BTreeSet, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, Result};
use aws_config::{BehaviorVersion, Region};
use aws_sdk_ec2::types::{Filter, InstanceAttributeName, InstanceStateName};
use aws_sdk_ecs::{config::Credentials, types::DesiredStatus};

pub use self::{
    adopted::AdoptionHold,
    faults::{ClusterFaults, ServiceEvent},
};
use self::{
    adopted::Adoptions,
    faults::WorldState,
    hints::Hints,
    instance_types::Resources,
    network::{DEFAULT_ROUTE, Network, NoRoute},
};
use crate::{
    defender::{DefenderRegistry, DefenderStart},
    moto::{ACCESS_KEY_ID, ACCOUNT_ID, SECRET_ACCESS_KEY},
};

/// The AWS rules the world plays beyond registering and scheduling. All on by default: a world
/// more lenient than AWS proves little. Tests of unrelated parts may switch one off.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rules {
    /// Agents register and Defenders connect only from instances that reach the internet.
    pub network: bool,
    /// DAEMON placement checks the agent's connection, CPU, memory and architecture.
    pub placement: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules { network: true, placement: true }
    }
}

impl Rules {
    /// Every rule off: the world of before issue 9 (any instance registers, any task fits).
    pub fn lenient() -> Rules {
        Rules { network: false, placement: false }
    }
}

/// How long an instance waits before trying again to pull an image that failed (the agent backs off).
const PULL_RETRY: Duration = Duration::from_secs(10);

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
    /// The AWS rules played (all on by default).
    pub rules: Rules,
}

impl Default for EcsWorldConfig {
    fn default() -> Self {
        EcsWorldConfig {
            moto_url: String::new(),
            regions: vec!["us-east-1".to_string()],
            boot_delay: Duration::from_secs(1),
            tick: Duration::from_millis(200),
            registries: Vec::new(),
            rules: Rules::default(),
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
            .field("rules", &self.rules)
            .finish()
    }
}

type Registries = Arc<Mutex<Vec<Arc<dyn DefenderRegistry>>>>;

/// The running world; its loop stops when this is dropped.
pub struct EcsWorld {
    task: tokio::task::JoinHandle<()>,
    registries: Registries,
    rounds: Arc<std::sync::atomic::AtomicU64>,
    state: WorldState,
    adoptions: Adoptions,
    hints: Hints,
    control_url: String,
    control_task: tokio::task::JoinHandle<()>,
}

impl EcsWorld {
    pub async fn start(cfg: EcsWorldConfig) -> Result<EcsWorld> {
        crate::install_crypto_provider();
        keep_tasks_running(&cfg.moto_url).await?;
        let registries: Registries = Arc::new(Mutex::new(cfg.registries.clone()));
        let state = WorldState::default();
        let adoptions = Adoptions::default();
        let hints = Hints::default();
        let (control_url, control_task) = control::serve(state.clone()).await?;
        let mut regions = Vec::new();
        for r in &cfg.regions {
            regions.push(
                RegionWorld::new(&cfg, r, registries.clone(), state.clone(), adoptions.clone(), hints.clone()).await,
            );
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
        Ok(EcsWorld { task, registries, rounds, state, adoptions, hints, control_url, control_task })
    }

    /// Switches faults on (or, with [`ClusterFaults::default`], off) for a cluster, in every region.
    pub fn set_faults(&self, cluster: &str, faults: ClusterFaults) {
        self.state.set_faults(cluster, faults);
    }

    /// The service events the world produced for a service (newest first): what ECS adds to
    /// `DescribeServices`' `events`, e.g. a task that cannot be placed.
    pub fn service_events(&self, region: &str, cluster: &str, service: &str) -> Vec<ServiceEvent> {
        self.state.events(region, cluster, service)
    }

    /// The control API (faults per cluster, service events) for other processes; see [`control`].
    pub fn control_url(&self) -> String {
        self.control_url.clone()
    }

    /// Adds a place Defenders connect to (for a Console started after the world).
    pub fn add_registry(&self, registry: Arc<dyn DefenderRegistry>) {
        self.registries.lock().unwrap().push(registry);
    }

    /// Keeps the agents off instances the world has not seen yet, until the hold drops: for
    /// whoever launches instances and registers them itself ([`EcsWorld::adopt`]).
    pub fn hold_new_instances(&self) -> AdoptionHold {
        self.adoptions.hold()
    }

    /// Tells the world that the agent of `instance_id` (in `region`) registered it as
    /// `container_instance` of `cluster` already: the world plays that agent from there on
    /// (places tasks on it, deregisters it when the instance terminates).
    pub fn adopt(&self, region: &str, instance_id: &str, cluster: &str, container_instance: &str) {
        self.adoptions.adopt(region, instance_id, cluster, container_instance);
        // Launched behind the gate's back: the world reads it as if the gate had seen it.
        use crate::gate::ChangeListener as _;
        let change = crate::gate::Change::Instances { region: region.to_string(), ids: vec![instance_id.to_string()] };
        self.hints.changed(change);
    }

    /// What the gate gives to tell this world of every change it passes to moto
    /// ([`crate::gate::Gate::set_change_listener`]). From then on the world reads a cluster when
    /// something happened to it (and sweeps the others slowly) rather than every cluster every
    /// round: what lets it play a fleet of a thousand clusters.
    pub fn change_listener(&self) -> Arc<dyn crate::gate::ChangeListener> {
        self.hints.listener()
    }

    /// Rounds completed so far (tests wait for a round to be sure the world saw a change).
    pub fn rounds(&self) -> u64 {
        self.rounds.load(std::sync::atomic::Ordering::Relaxed)
    }
}

impl Drop for EcsWorld {
    fn drop(&mut self) {
        self.task.abort();
        self.control_task.abort();
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

/// What the world needs from a task definition: the Defender's environment, what a task
/// reserves, where it can run, and its images.
#[derive(Clone, Debug, Default)]
struct TaskDefInfo {
    install_bundle: Option<String>,
    ws_address: Option<String>,
    cluster: Option<String>,
    /// `(name, valueFrom)` of every container's `secrets`.
    secrets: Vec<(String, String)>,
    execution_role_arn: Option<String>,
    reserves: Resources,
    /// `runtimePlatform.cpuArchitecture` in EC2's spelling; `None`: any.
    architecture: Option<String>,
    images: Vec<String>,
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
    subnet_id: String,
    /// moto's public IP (honest only for plain RunInstances; see [`RegionWorld::launch_public_ip`]).
    has_public_ip: bool,
    /// `aws:ec2launchtemplate:id` / `:version` tags (set by EC2 on instances launched from a template).
    launch_template: Option<(String, String)>,
    /// `aws:autoscaling:groupName` tag.
    auto_scaling_group: Option<String>,
}

struct RegionWorld {
    region: String,
    ec2: aws_sdk_ec2::Client,
    ecs: aws_sdk_ecs::Client,
    autoscaling: aws_sdk_autoscaling::Client,
    secretsmanager: aws_sdk_secretsmanager::Client,
    iam: aws_sdk_iam::Client,
    boot_delay: Duration,
    agents: HashMap<String, Agent>,
    ec2_info: HashMap<String, Ec2Info>,
    task_definitions: HashMap<String, TaskDefInfo>,
    announced: HashMap<String, Announced>,
    registries: Registries,
    rules: Rules,
    state: WorldState,
    adoptions: Adoptions,
    hints: Hints,
    /// What the last read of each active cluster found.
    clusters: HashMap<String, ClusterView>,
    /// Active clusters (as last listed) with DescribeClusters' counts, a cheap sign of change.
    active: HashMap<String, [i32; 4]>,
    /// Clusters to read in a coming round: something changed there.
    dirty: BTreeSet<String>,
    /// When the cluster list, the network and all instances were last read (the latter with how
    /// long it took: moto takes ~2 ms per instance).
    listed_at: Option<Instant>,
    network_at: Option<Instant>,
    /// When the sweep last read a cluster (with hints).
    swept_at: Option<Instant>,
    described_at: Option<(Instant, Duration)>,
    /// An EC2 or Auto Scaling change not yet followed by a read of every instance.
    ec2_changed: bool,
    /// The faults as last seen (a change makes the cluster dirty).
    faults_seen: std::collections::BTreeMap<String, ClusterFaults>,
    /// `family:revision` -> ARN (a revision never changes).
    task_definition_arns: HashMap<String, String>,
    /// Subnets and route tables, refreshed every round while the network rule is on.
    network: Network,
    /// The default VPC given an internet gateway (moto makes it without one).
    default_vpc_done: Option<String>,
    /// Whether each instance got a public IP at launch (decided once, as EC2 does).
    public_ip: HashMap<String, bool>,
    /// Instances whose public-IP decision was made before their group was known.
    unsettled_public_ip: std::collections::HashSet<String>,
    /// Instances whose last way out was lost (logged once per change).
    unreachable: HashMap<String, String>,
    /// (container instance, task definition) -> when its image last failed to pull (or its
    /// secrets to be fetched): the agent waits before trying again.
    pull_failed: HashMap<(String, String), Instant>,
    /// Task ARN -> the secrets fetched for it at its start (`name -> value`).
    task_secrets: HashMap<String, std::collections::BTreeMap<String, String>>,
    /// Task ARN -> when the world started it (moto keeps no start time), to tell tasks that
    /// predate a forced new deployment.
    task_started: HashMap<String, std::time::SystemTime>,
}

impl RegionWorld {
    async fn new(
        cfg: &EcsWorldConfig,
        region: &str,
        registries: Registries,
        state: WorldState,
        adoptions: Adoptions,
        hints: Hints,
    ) -> RegionWorld {
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
            autoscaling: aws_sdk_autoscaling::Client::new(&sdk),
            secretsmanager: aws_sdk_secretsmanager::Client::new(&sdk),
            iam: aws_sdk_iam::Client::new(&sdk),
            boot_delay: cfg.boot_delay,
            agents: HashMap::new(),
            ec2_info: HashMap::new(),
            task_definitions: HashMap::new(),
            announced: HashMap::new(),
            registries,
            rules: cfg.rules,
            state,
            adoptions,
            hints,
            clusters: HashMap::new(),
            active: HashMap::new(),
            dirty: BTreeSet::new(),
            listed_at: None,
            network_at: None,
            swept_at: None,
            described_at: None,
            ec2_changed: false,
            faults_seen: Default::default(),
            task_definition_arns: HashMap::new(),
            network: Network::default(),
            default_vpc_done: None,
            public_ip: HashMap::new(),
            unsettled_public_ip: Default::default(),
            unreachable: HashMap::new(),
            pull_failed: HashMap::new(),
            task_secrets: HashMap::new(),
            task_started: HashMap::new(),
        }
    }

    /// One round: the network, the agents, then the clusters to read (changed, busy, or due in
    /// the sweep), then the Defenders of every RUNNING task the world knows of.
    async fn round(&mut self) -> Result<()> {
        let hinted = self.hints.attached();
        let hints = self.hints.take(&self.region);
        self.dirty.extend(hints.clusters);
        self.ec2_changed |= hints.ec2;
        if self.rules.network && (!hinted || self.ec2_changed || due(self.network_at, SLOW_REFRESH)) {
            let before = self.network_at.map(|_| self.network.clone());
            self.network_round().await?;
            self.network_at = Some(Instant::now());
            // Reachability decides placement: every cluster looks again.
            if before.is_some_and(|b| b != self.network) {
                self.dirty.extend(self.active.keys().cloned());
            }
        }
        self.agents_round(hinted, hints.instances).await?;
        let unknown = self.dirty.iter().any(|c| !self.active.contains_key(c));
        if !hinted || unknown || due(self.listed_at, SLOW_REFRESH) {
            self.list_clusters().await?;
            self.listed_at = Some(Instant::now());
        }
        let faults = self.state.all_faults();
        if faults != self.faults_seen {
            let changed =
                faults.keys().chain(self.faults_seen.keys()).filter(|c| faults.get(*c) != self.faults_seen.get(*c));
            self.dirty.extend(changed.cloned());
            self.faults_seen = faults;
        }
        self.dirty.retain(|c| self.active.contains_key(c));
        self.clusters.retain(|c, _| self.active.contains_key(c));
        for cluster in self.clusters_to_read(hinted) {
            self.dirty.remove(&cluster);
            // One cluster's error (a task definition moto lost, ...) must not starve the others.
            match self.schedule_cluster(&cluster).await {
                Ok((running, busy)) => {
                    self.clusters.insert(cluster, ClusterView { running, busy, read_at: Instant::now() });
                }
                Err(e) => {
                    tracing::debug!(region = %self.region, %cluster, error = %format!("{e:#}"), "scheduler round failed");
                    if let Some(view) = self.clusters.get_mut(&cluster) {
                        view.read_at = Instant::now();
                    }
                }
            }
        }
        let mut running: HashMap<String, RunningTask> =
            self.clusters.values().flat_map(|v| v.running.iter().map(|(k, t)| (k.clone(), t.clone()))).collect();
        // What the world remembers of a task lasts as long as the task runs.
        self.task_secrets.retain(|arn, _| running.contains_key(arn));
        self.task_started.retain(|arn, _| running.contains_key(arn));
        // A Defender on an instance without a way out cannot reach the Console.
        running.retain(|_, t| self.reaches_internet(&t.instance_id));
        self.defenders_round(&running).await;
        Ok(())
    }

    /// The clusters to read this round: those that changed or were busy last time (at most
    /// [`MAX_READS_PER_ROUND`], the rest wait for the next round), then the sweep: the ones read
    /// longest ago. Without hints every cluster is due every round (up to [`SWEEP_UNHINTED`]);
    /// with hints the sweep only catches what changed behind the gate's back, slowly.
    fn clusters_to_read(&mut self, hinted: bool) -> Vec<String> {
        let mut chosen: Vec<String> = self
            .active
            .keys()
            .filter(|c| self.dirty.contains(*c) || self.clusters.get(*c).is_none_or(|v| v.busy))
            .take(MAX_READS_PER_ROUND)
            .cloned()
            .collect();
        let (age, budget) = if !hinted {
            (Duration::ZERO, SWEEP_UNHINTED)
        } else if due(self.swept_at, SWEEP_HINTED_EVERY) {
            (SWEEP_HINTED_AGE, 1)
        } else {
            (SWEEP_HINTED_AGE, 0)
        };
        let mut stale: Vec<(&String, Instant)> = self
            .clusters
            .iter()
            .filter(|(c, v)| !chosen.contains(*c) && v.read_at.elapsed() >= age)
            .map(|(c, v)| (c, v.read_at))
            .collect();
        stale.sort_by_key(|(_, at)| *at);
        let swept = stale.into_iter().take(budget).map(|(c, _)| c.clone()).collect::<Vec<_>>();
        if hinted && !swept.is_empty() {
            self.swept_at = Some(Instant::now());
        }
        chosen.extend(swept);
        chosen
    }

    /// Refreshes subnets and route tables, and gives the default VPC its internet gateway once.
    async fn network_round(&mut self) -> Result<()> {
        self.ensure_default_vpc_gateway().await?;
        let mut net = Network::default();
        let mut token = None;
        loop {
            let resp = self.ec2.describe_subnets().set_next_token(token).send().await?;
            for s in resp.subnets() {
                let id = s.subnet_id().unwrap_or_default().to_string();
                net.subnets.insert(
                    id.clone(),
                    network::Subnet {
                        id,
                        vpc_id: s.vpc_id().unwrap_or_default().to_string(),
                        map_public_ip_on_launch: s.map_public_ip_on_launch().unwrap_or(false),
                    },
                );
            }
            token = resp.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        let mut token = None;
        loop {
            let resp = self.ec2.describe_route_tables().set_next_token(token).send().await?;
            for t in resp.route_tables() {
                let default_routes = t.routes().iter().filter(|r| r.destination_cidr_block() == Some(DEFAULT_ROUTE));
                let (mut igw, mut nat) = (false, false);
                for r in default_routes {
                    igw |= r.gateway_id().is_some_and(|g| g.starts_with("igw-"));
                    nat |= r.nat_gateway_id().is_some_and(|g| !g.is_empty());
                }
                net.route_tables.push(network::RouteTable {
                    id: t.route_table_id().unwrap_or_default().to_string(),
                    vpc_id: t.vpc_id().unwrap_or_default().to_string(),
                    main: t.associations().iter().any(|a| a.main() == Some(true)),
                    subnet_ids: t.associations().iter().filter_map(|a| a.subnet_id()).map(str::to_string).collect(),
                    default_to_igw: igw,
                    default_to_nat: nat,
                });
            }
            token = resp.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        self.network = net;
        Ok(())
    }

    /// AWS's default VPC has an internet gateway and a `0.0.0.0/0` route to it in its main route
    /// table; moto's has neither. Added once per default VPC (a test may remove them afterwards).
    async fn ensure_default_vpc_gateway(&mut self) -> Result<()> {
        let vpcs = self.ec2.describe_vpcs().filters(Filter::builder().name("is-default").values("true").build()).send();
        let Some(vpc) = vpcs.await?.vpcs().first().and_then(|v| v.vpc_id()).map(str::to_string) else {
            return Ok(());
        };
        if self.default_vpc_done.as_deref() == Some(vpc.as_str()) {
            return Ok(());
        }
        let attached = self
            .ec2
            .describe_internet_gateways()
            .filters(Filter::builder().name("attachment.vpc-id").values(&vpc).build())
            .send()
            .await?;
        if attached.internet_gateways().is_empty() {
            let igw = self.ec2.create_internet_gateway().send().await?;
            let igw = igw.internet_gateway().and_then(|g| g.internet_gateway_id()).unwrap_or_default().to_string();
            self.ec2.attach_internet_gateway().internet_gateway_id(&igw).vpc_id(&vpc).send().await?;
            let tables = self
                .ec2
                .describe_route_tables()
                .filters(Filter::builder().name("vpc-id").values(&vpc).build())
                .filters(Filter::builder().name("association.main").values("true").build())
                .send()
                .await?;
            for t in tables.route_tables() {
                self.ec2
                    .create_route()
                    .route_table_id(t.route_table_id().unwrap_or_default())
                    .destination_cidr_block(DEFAULT_ROUTE)
                    .gateway_id(&igw)
                    .send()
                    .await?;
            }
            tracing::debug!(region = %self.region, %vpc, %igw, "default VPC given its internet gateway");
        }
        self.default_vpc_done = Some(vpc);
        Ok(())
    }

    /// Whether an instance reaches the internet now (always, with the network rule off).
    fn reaches_internet(&self, instance_id: &str) -> bool {
        !self.rules.network || self.internet_access(instance_id).is_ok()
    }

    fn internet_access(&self, instance_id: &str) -> Result<(), NoRoute> {
        let subnet = self.ec2_info.get(instance_id).map(|i| i.subnet_id.as_str()).unwrap_or_default();
        let public = self.public_ip.get(instance_id).copied().unwrap_or(false);
        self.network.internet_access(subnet, public)
    }

    /// Whether EC2 gave the instance a public IP at launch. moto honours `AssociatePublicIpAddress`
    /// only on RunInstances' own network interfaces, so for instances launched from a launch
    /// template or configuration the launch data is read here and overrides the subnet's
    /// `MapPublicIpOnLaunch` as AWS does.
    async fn launch_public_ip(&self, info: &Ec2Info) -> Result<bool> {
        let subnet = self.network.subnets.get(&info.subnet_id).cloned().unwrap_or_default();
        if let Some((id, version)) = &info.launch_template {
            let resp =
                self.ec2.describe_launch_template_versions().launch_template_id(id).versions(version).send().await?;
            let explicit = resp
                .launch_template_versions()
                .first()
                .and_then(|v| v.launch_template_data())
                .and_then(|d| d.network_interfaces().iter().find(|n| n.device_index().unwrap_or(0) == 0).cloned())
                .and_then(|n| n.associate_public_ip_address());
            return Ok(network::public_ip_at_launch(explicit, &subnet));
        }
        if let Some(group) = &info.auto_scaling_group {
            let explicit = self.group_public_ip(group).await?;
            return Ok(network::public_ip_at_launch(explicit, &subnet));
        }
        Ok(info.has_public_ip)
    }

    /// The `AssociatePublicIpAddress` a group launches with: its launch template version's
    /// (instances the gate launches carry no `aws:ec2launchtemplate:*` tags) or its launch
    /// configuration's.
    async fn group_public_ip(&self, group: &str) -> Result<Option<bool>> {
        let resp = self.autoscaling.describe_auto_scaling_groups().auto_scaling_group_names(group).send().await?;
        let Some(g) = resp.auto_scaling_groups().first() else { return Ok(None) };
        if let Some(t) = g.launch_template()
            && let Some(id) = t.launch_template_id()
        {
            let version = t.version().unwrap_or("$Default");
            let resp =
                self.ec2.describe_launch_template_versions().launch_template_id(id).versions(version).send().await?;
            return Ok(resp
                .launch_template_versions()
                .first()
                .and_then(|v| v.launch_template_data())
                .and_then(|d| d.network_interfaces().iter().find(|n| n.device_index().unwrap_or(0) == 0).cloned())
                .and_then(|n| n.associate_public_ip_address()));
        }
        let Some(name) = g.launch_configuration_name() else { return Ok(None) };
        let resp = self.autoscaling.describe_launch_configurations().launch_configuration_names(name).send().await?;
        // moto stores an unset AssociatePublicIpAddress of a launch configuration as false, so
        // only `true` can be told apart: false follows the subnet (see the README's rules).
        Ok(resp.launch_configurations().first().and_then(|l| l.associate_public_ip_address()).filter(|v| *v))
    }

    /// The ECS agent on every instance: boot, read the user data, register; deregister on termination.
    async fn agents_round(&mut self, hinted: bool, changed: BTreeSet<String>) -> Result<()> {
        self.read_instances(hinted, changed).await?;
        if self.rules.network {
            let fresh: Vec<(String, Ec2Info)> = self
                .ec2_info
                .iter()
                .filter(|(id, i)| {
                    (!self.public_ip.contains_key(*id) || self.unsettled_public_ip.contains(*id))
                        && !i.subnet_id.is_empty()
                })
                .map(|(id, i)| (id.clone(), i.clone()))
                .collect();
            for (id, info) in fresh {
                // Launch data deleted since (a torn-down template): the subnet's setting decides.
                let public = match self.launch_public_ip(&info).await {
                    Ok(p) => p,
                    Err(_) => self.network.subnets.get(&info.subnet_id).is_some_and(|s| s.map_public_ip_on_launch),
                };
                // The gate attaches an instance to its group just after launching it: seen in
                // between, it has no group yet, so its launch data is unknown. Decide again next
                // round rather than keep a guess (that flake left a group at 1 of 2 instances).
                let settled = info.auto_scaling_group.is_some() || info.launch_template.is_some();
                if settled {
                    self.unsettled_public_ip.remove(&id);
                } else {
                    self.unsettled_public_ip.insert(id.clone());
                }
                self.public_ip.insert(id, public);
            }
        }
        let now = Instant::now();
        let ids: Vec<String> = self.ec2_info.keys().cloned().collect();
        for id in ids {
            if let Some((cluster, container_instance)) = self.adoptions.take(&self.region, &id) {
                tracing::debug!(instance = %id, %cluster, "container instance adopted");
                self.dirty.insert(cluster.clone());
                self.agents.insert(id, Agent::Registered { cluster, container_instance });
                continue;
            }
            if !self.agents.contains_key(&id) && self.adoptions.held() {
                continue;
            }
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
                        self.dirty.insert(cluster.clone());
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
                Agent::Joining { cluster } if self.rules.network && !self.reachable_logged(&id) => {
                    Agent::Joining { cluster }
                }
                Agent::Joining { cluster } => match self.register(&cluster, &id, &info).await? {
                    Some(arn) => {
                        self.dirty.insert(cluster.clone());
                        Agent::Registered { cluster, container_instance: arn }
                    }
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
            self.dirty.insert(cluster.clone());
            self.agents.insert(id, Agent::Done);
        }
        Ok(())
    }

    /// Whether the instance reaches the internet; logs each change of the reason it does not.
    fn reachable_logged(&mut self, id: &str) -> bool {
        match self.internet_access(id) {
            Ok(()) => {
                self.unreachable.remove(id);
                true
            }
            Err(why) => {
                let why = why.to_string();
                if self.unreachable.get(id) != Some(&why) {
                    tracing::debug!(instance = %id, reason = %why, "the ECS agent cannot reach ECS");
                    self.unreachable.insert(id.to_string(), why);
                }
                false
            }
        }
    }

    /// Reads every instance when due (each round for a small world without hints; else no more
    /// than a fifth of the time, and with hints only after an Auto Scaling or unattributed EC2
    /// change or once a minute), else only the instances a hint named, those still pending and
    /// those not registered whose group is not known yet (the gate attaches it just after launch).
    async fn read_instances(&mut self, hinted: bool, changed: BTreeSet<String>) -> Result<()> {
        let every = match self.described_at {
            _ if !hinted && self.ec2_info.len() < SMALL_WORLD => Duration::ZERO,
            Some((_, took)) if hinted && !self.ec2_changed => FULL_DESCRIBE_HINTED.max(took * 5),
            Some((_, took)) => took * 5,
            None => Duration::ZERO,
        };
        if due(self.described_at.map(|(at, _)| at), every) {
            let started = Instant::now();
            self.ec2_info = self.describe_instances(None).await?;
            self.described_at = Some((started, started.elapsed()));
            self.ec2_changed = false;
            return Ok(());
        }
        let pending = self.ec2_info.iter().filter(|(_, i)| i.state == "pending").map(|(id, _)| id.clone());
        let unsettled = self
            .unsettled_public_ip
            .iter()
            .filter(|id| !matches!(self.agents.get(*id), Some(Agent::Registered { .. } | Agent::Done)))
            .cloned();
        let ids: Vec<String> =
            changed.into_iter().chain(pending).chain(unsettled).collect::<BTreeSet<_>>().into_iter().collect();
        if !ids.is_empty() {
            match self.describe_instances(Some(ids)).await {
                Ok(found) => self.ec2_info.extend(found),
                // An id moto does not know (yet): read them all next time.
                Err(_) => self.ec2_changed = true,
            }
        }
        Ok(())
    }

    async fn describe_instances(&self, ids: Option<Vec<String>>) -> Result<HashMap<String, Ec2Info>> {
        let mut out = HashMap::new();
        let mut token = None;
        loop {
            let resp = self.ec2.describe_instances().set_instance_ids(ids.clone()).set_next_token(token).send().await?;
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
                            subnet_id: i.subnet_id().unwrap_or_default().to_string(),
                            has_public_ip: i.public_ip_address().is_some_and(|p| !p.is_empty()),
                            launch_template: tag(i, "aws:ec2launchtemplate:id")
                                .zip(tag(i, "aws:ec2launchtemplate:version")),
                            auto_scaling_group: tag(i, "aws:autoscaling:groupName"),
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

    /// Lists the ACTIVE clusters with their counts (100 per DescribeClusters); a cluster whose
    /// counts moved is read again.
    async fn list_clusters(&mut self) -> Result<()> {
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
        let mut active = HashMap::new();
        for chunk in arns.chunks(100) {
            let resp = self.ecs.describe_clusters().set_clusters(Some(chunk.to_vec())).send().await?;
            for c in resp.clusters().iter().filter(|c| c.status() == Some("ACTIVE")) {
                let Some(name) = c.cluster_name() else { continue };
                let counts = [
                    c.registered_container_instances_count(),
                    c.running_tasks_count(),
                    c.pending_tasks_count(),
                    c.active_services_count(),
                ];
                if self.active.get(name).is_some_and(|before| *before != counts) {
                    self.dirty.insert(name.to_string());
                }
                active.insert(name.to_string(), counts);
            }
        }
        self.active = active;
        Ok(())
    }

    /// One scheduler round in a cluster; returns its RUNNING tasks afterwards, by ARN, and whether
    /// it did anything (or waits to retry): then it is read again next round.
    async fn schedule_cluster(&mut self, cluster: &str) -> Result<(HashMap<String, RunningTask>, bool)> {
        let ecs = self.ecs.clone();
        // Services.
        let service_arns = ecs.list_services().cluster(cluster).send().await?.service_arns().to_vec();
        let mut daemons = Vec::new();
        let mut active_services = BTreeSet::new();
        let mut deployed_at: HashMap<String, std::time::SystemTime> = HashMap::new();
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
                    let info = self.task_def_info(&task_definition).await;
                    // moto moves its one deployment's createdAt on forceNewDeployment.
                    if let Some(at) = s.deployments().first().and_then(|d| d.created_at()) {
                        let at = std::time::UNIX_EPOCH
                            + Duration::from_millis(u64::try_from(at.to_millis().unwrap_or(0)).unwrap_or(0));
                        deployed_at.insert(name.clone(), at);
                    }
                    daemons.push(scheduler::DaemonService {
                        name,
                        task_definition,
                        requires: info.reserves,
                        architecture: info.architecture,
                    });
                }
            }
        }
        // Container instances.
        let faults = self.state.faults(cluster);
        let ecs = self.ecs.clone();
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
                let ec2_id = ci.ec2_instance_id().unwrap_or_default().to_string();
                let instance_type = self.ec2_info.get(&ec2_id).map(|i| i.instance_type.clone()).unwrap_or_default();
                let placement = self.rules.placement;
                instances.push(scheduler::Instance {
                    arn: arn.clone(),
                    active: ci.status() == Some("ACTIVE"),
                    connected: !placement || (!faults.agent_disconnected && self.reaches_internet(&ec2_id)),
                    registered: if placement { instance_types::registered_resources(&instance_type) } else { None },
                    architecture: instance_types::architecture(&instance_type).to_string(),
                });
                ec2_of.insert(arn, ec2_id);
            }
        }
        // Tasks.
        // moto matches ListTasks' cluster by substring (`saas` also lists `saassi`'s tasks); AWS
        // lists the named cluster's only, so the world keeps the tasks whose ARN names it exactly.
        let task_arns: Vec<String> = ecs
            .list_tasks()
            .cluster(cluster)
            .desired_status(DesiredStatus::Running)
            .send()
            .await?
            .task_arns()
            .iter()
            .filter(|arn| task_in_cluster(arn, cluster))
            .cloned()
            .collect();
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
        for (t, _) in tasks.iter_mut() {
            t.reserves = self.task_def_info(&t.task_definition.clone()).await.reserves;
            let service = t.group.strip_prefix("service:").unwrap_or_default();
            t.outdated = match (deployed_at.get(service), self.task_started.get(&t.arn)) {
                (Some(deployed), Some(started)) => started < deployed,
                _ => false,
            };
        }
        let plain: Vec<scheduler::Task> = tasks.iter().map(|(t, _)| t.clone()).collect();
        let actions = scheduler::plan(&daemons, &active_services, &instances, &plain);
        let ecs = self.ecs.clone();
        // A stop (a rolling update goes on), or a start to retry, keeps the cluster in the next
        // round's reads; tasks started here are in what this read returns already.
        let mut busy = actions.iter().any(|a| matches!(a, scheduler::Action::Stop { .. }));
        for action in actions {
            match action {
                scheduler::Action::Stop { task, reason } => {
                    ecs.stop_task().cluster(cluster).task(&task).reason(reason).send().await?;
                    tasks.retain(|(t, _)| t.arn != task);
                }
                scheduler::Action::Start { service, task_definition, container_instance } => {
                    let key = (container_instance.clone(), task_definition.clone());
                    if self.pull_failed.get(&key).is_some_and(|at| at.elapsed() < PULL_RETRY) {
                        busy = true;
                        continue;
                    }
                    let resp = ecs
                        .start_task()
                        .cluster(cluster)
                        .task_definition(&task_definition)
                        .container_instances(&container_instance)
                        .group(format!("service:{service}"))
                        .started_by("ecs-svc/sandbox")
                        .send()
                        .await?;
                    if faults.cannot_pull_image {
                        // The agent fails to pull the image: the task stops with the agent's reason.
                        let image =
                            self.task_def_info(&task_definition).await.images.first().cloned().unwrap_or_default();
                        for t in resp.tasks() {
                            let arn = t.task_arn().unwrap_or_default();
                            self.ecs
                                .stop_task()
                                .cluster(cluster)
                                .task(arn)
                                .reason(faults::cannot_pull(&image))
                                .send()
                                .await?;
                        }
                        self.pull_failed.insert(key, Instant::now());
                        busy = true;
                        continue;
                    }
                    // The agent fetches the task's secrets with its execution role before the
                    // containers start; a failure stops the task with the agent's reason.
                    let info = self.task_def_info(&task_definition).await;
                    match self.fetch_secrets(&info).await {
                        Ok(values) => {
                            for t in resp.tasks() {
                                let arn = t.task_arn().unwrap_or_default().to_string();
                                self.task_secrets.insert(arn.clone(), values.clone());
                                self.task_started.insert(arn, std::time::SystemTime::now());
                                tasks.push(task_of(t));
                            }
                        }
                        Err(reason) => {
                            tracing::debug!(%task_definition, %reason, "a task's secrets cannot be fetched");
                            for t in resp.tasks() {
                                let arn = t.task_arn().unwrap_or_default();
                                self.ecs.stop_task().cluster(cluster).task(arn).reason(&reason).send().await?;
                            }
                            self.pull_failed.insert(key, Instant::now());
                            busy = true;
                        }
                    }
                }
                scheduler::Action::Unplaceable { service, message } => {
                    self.state.add_event((self.region.clone(), cluster.to_string(), service), message);
                }
            }
        }
        let running = tasks
            .into_iter()
            .filter(|(_, running)| *running)
            .map(|(t, _)| {
                let instance_id = ec2_of.get(&t.container_instance).cloned().unwrap_or_default();
                (t.arn, RunningTask { cluster: cluster.to_string(), task_definition: t.task_definition, instance_id })
            })
            .collect();
        Ok((running, busy))
    }

    /// `fam:2` (moto stores what the caller passed) -> the full ARN.
    async fn task_definition_arn(&mut self, td: &str) -> Result<String> {
        if td.starts_with("arn:") {
            return Ok(td.to_string());
        }
        if let Some(arn) = self.task_definition_arns.get(td) {
            return Ok(arn.clone());
        }
        let resp = self.ecs.describe_task_definition().task_definition(td).send().await?;
        let arn = resp.task_definition().and_then(|t| t.task_definition_arn()).unwrap_or(td).to_string();
        // `family` alone means its latest revision, which moves; `family:2` never does.
        if td.rsplit_once(':').is_some_and(|(_, revision)| revision.parse::<u32>().is_ok()) {
            self.task_definition_arns.insert(td.to_string(), arn.clone());
        }
        Ok(arn)
    }

    async fn task_def_info(&mut self, task_definition: &str) -> TaskDefInfo {
        if let Some(env) = self.task_definitions.get(task_definition) {
            return env.clone();
        }
        let Ok(resp) = self.ecs.describe_task_definition().task_definition(task_definition).send().await else {
            return TaskDefInfo::default();
        };
        let mut env = TaskDefInfo::default();
        let td = resp.task_definition();
        let containers = td.map(|t| t.container_definitions()).unwrap_or_default();
        // ECS reserves the task-level size when set, else the sum of the containers'.
        let parse = |v: Option<&str>| v.and_then(|x| x.trim().parse::<i64>().ok());
        env.reserves = Resources {
            cpu: parse(td.and_then(|t| t.cpu())).unwrap_or_else(|| containers.iter().map(|c| i64::from(c.cpu())).sum()),
            memory: parse(td.and_then(|t| t.memory())).unwrap_or_else(|| {
                containers.iter().map(|c| i64::from(c.memory().or(c.memory_reservation()).unwrap_or(0))).sum()
            }),
        };
        env.architecture = td
            .and_then(|t| t.runtime_platform())
            .and_then(|p| p.cpu_architecture())
            .map(|a| a.as_str().to_ascii_lowercase());
        env.images = containers.iter().filter_map(|c| c.image()).map(str::to_string).collect();
        env.execution_role_arn = td.and_then(|t| t.execution_role_arn()).map(str::to_string);
        env.secrets = containers
            .iter()
            .flat_map(|c| c.secrets())
            .map(|s| (s.name().to_string(), s.value_from().to_string()))
            .collect();
        for c in containers {
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

    /// The values of a task definition's `secrets`, fetched as the agent does at a task's start:
    /// with the execution role, from Secrets Manager. `Err` is the task's stopped reason.
    async fn fetch_secrets(&self, info: &TaskDefInfo) -> Result<std::collections::BTreeMap<String, String>, String> {
        let mut values = std::collections::BTreeMap::new();
        let Some((_, first)) = info.secrets.first() else { return Ok(values) };
        let Some(role_arn) = info.execution_role_arn.as_deref() else {
            return Err(secrets::no_execution_role(first));
        };
        let Some((trust, policies)) = self.execution_role(role_arn).await else {
            return Err(secrets::cannot_assume(role_arn));
        };
        if !secrets::trusts(&trust, secrets::ECS_TASKS) {
            return Err(secrets::cannot_assume(role_arn));
        }
        let account = role_arn.split(':').nth(4).unwrap_or(ACCOUNT_ID);
        for (name, value_from) in &info.secrets {
            let id = secrets::secret_id(value_from);
            if !secrets::allows(&policies, secrets::GET_SECRET_VALUE, id) {
                return Err(secrets::access_denied(account, role_arn, value_from));
            }
            match self.secretsmanager.get_secret_value().secret_id(id).send().await {
                Ok(out) => {
                    values.insert(name.clone(), out.secret_string().unwrap_or_default().to_string());
                }
                Err(e) => {
                    use aws_sdk_secretsmanager::error::ProvideErrorMetadata;
                    let code = e.code().unwrap_or("ResourceNotFoundException").to_string();
                    let message = e.message().unwrap_or("Secrets Manager can't find the specified secret.").to_string();
                    return Err(secrets::fetch_failed(value_from, &code, &message));
                }
            }
        }
        Ok(values)
    }

    /// An execution role's trust policy and identity policies (inline and attached), from IAM;
    /// `None` when the role does not exist.
    async fn execution_role(&self, role_arn: &str) -> Option<(serde_json::Value, Vec<serde_json::Value>)> {
        let name = role_arn.rsplit('/').next().unwrap_or(role_arn);
        let role = self.iam.get_role().role_name(name).send().await.ok()?;
        let role = role.role()?;
        if role.arn() != role_arn {
            return None;
        }
        let trust = policy_json(role.assume_role_policy_document().unwrap_or_default());
        let mut policies = Vec::new();
        if let Ok(list) = self.iam.list_role_policies().role_name(name).send().await {
            for p in list.policy_names() {
                if let Ok(doc) = self.iam.get_role_policy().role_name(name).policy_name(p).send().await {
                    policies.push(policy_json(doc.policy_document()));
                }
            }
        }
        if let Ok(list) = self.iam.list_attached_role_policies().role_name(name).send().await {
            for p in list.attached_policies().iter().filter_map(|p| p.policy_arn()) {
                let Ok(policy) = self.iam.get_policy().policy_arn(p).send().await else { continue };
                let Some(version) = policy.policy().and_then(|p| p.default_version_id()) else { continue };
                if let Ok(v) = self.iam.get_policy_version().policy_arn(p).version_id(version).send().await
                    && let Some(doc) = v.policy_version().and_then(|v| v.document())
                {
                    policies.push(policy_json(doc));
                }
            }
        }
        Some((trust, policies))
    }

    /// What a task's containers see as `INSTALL_BUNDLE`: fetched from Secrets Manager at its start,
    /// else its task definition's environment.
    async fn install_bundle_of(&mut self, task_arn: &str, info: &TaskDefInfo) -> Option<String> {
        let Some((name, _)) = info.secrets.iter().find(|(n, _)| n == "INSTALL_BUNDLE") else {
            return info.install_bundle.clone();
        };
        if !self.task_secrets.contains_key(task_arn) {
            // Started before this world saw it (a restart): fetched now, as at its start.
            let values = self.fetch_secrets(info).await.ok()?;
            self.task_secrets.insert(task_arn.to_string(), values);
        }
        self.task_secrets.get(task_arn).and_then(|v| v.get(name)).cloned().filter(|b| !b.is_empty())
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
            let env = self.task_def_info(&task.task_definition).await;
            // Not a Defender (the task definition's environment is cached, so this stays cheap).
            let Some(bundle) = self.install_bundle_of(arn, &env).await else { continue };
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

/// An IAM policy document as JSON (IAM answers them URL-encoded).
fn policy_json(doc: &str) -> serde_json::Value {
    serde_json::from_str(doc).unwrap_or_else(|_| {
        let decoded: String = url::form_urlencoded::parse(format!("x={}", doc.replace('+', "%2B")).as_bytes())
            .next()
            .map(|(_, v)| v.into_owned())
            .unwrap_or_default();
        serde_json::from_str(&decoded).unwrap_or(serde_json::Value::Null)
    })
}

/// Whether a task ARN (`arn:aws:ecs:<region>:<account>:task/<cluster>/<id>`) is in `cluster`;
/// old-format ARNs without the cluster are kept.
fn task_in_cluster(arn: &str, cluster: &str) -> bool {
    let resource = arn.rsplit(':').next().unwrap_or_default();
    let parts: Vec<&str> = resource.split('/').collect();
    parts.len() != 3 || parts[1] == cluster
}

/// The value of an instance's tag.
fn tag(i: &aws_sdk_ec2::types::Instance, key: &str) -> Option<String> {
    i.tags().iter().find(|t| t.key() == Some(key)).and_then(|t| t.value()).map(str::to_string)
}

/// What the last read of one cluster found.
struct ClusterView {
    running: HashMap<String, RunningTask>,
    /// It had tasks to start or stop (or to retry): read again next round.
    busy: bool,
    read_at: Instant,
}

/// How often, with hints, the world still lists clusters and reads the network unasked.
const SLOW_REFRESH: Duration = Duration::from_secs(5);
/// Fewer instances than this are all read every round without hints (moto answers in ~20 ms).
const SMALL_WORLD: usize = 100;
/// With hints, every instance is read at least this often (moto takes ~2 ms per instance).
const FULL_DESCRIBE_HINTED: Duration = Duration::from_secs(60);
/// Changed or busy clusters read per round; the rest wait for the next (rounds stay short, and
/// Defenders connect as their clusters are read, not all at the end).
const MAX_READS_PER_ROUND: usize = 50;
/// Clusters the sweep reads per round without hints (a small world: all of them, every round).
const SWEEP_UNHINTED: usize = 25;
/// With hints, the sweep reads one cluster a second, among those not read for this long: 1000
/// idle clusters cost ~5 moto calls a second (the counts catch most changes sooner).
const SWEEP_HINTED_EVERY: Duration = Duration::from_secs(1);
const SWEEP_HINTED_AGE: Duration = Duration::from_secs(30);

/// Whether something last done at `at` is due again.
fn due(at: Option<Instant>, every: Duration) -> bool {
    at.is_none_or(|at| at.elapsed() >= every)
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
            reserves: Resources::default(),
            outdated: false,
        },
        t.last_status() == Some("RUNNING"),
    )
}

impl EcsWorld {
    /// What the gate shows as `DescribeServices` events (the world's state, shared).
    pub fn service_event_source(&self) -> std::sync::Arc<dyn crate::gate::ServiceEvents> {
        std::sync::Arc::new(self.state.clone())
    }
}

/// The gate shows the world's service events in `DescribeServices`, newest first.
impl crate::gate::ServiceEvents for WorldState {
    fn events(&self, region: &str, cluster: &str, service: &str) -> Vec<(String, f64)> {
        let mut list: Vec<(String, f64)> = WorldState::events(self, region, cluster, service)
            .into_iter()
            .map(|e| (e.message, e.created_at.timestamp_millis() as f64 / 1000.0))
            .collect();
        list.sort_by(|a, b| b.1.total_cmp(&a.1));
        list
    }
}
