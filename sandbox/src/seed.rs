//! (IO) Clusters that exist before the operator is installed, as a person would have made them by
//! hand: the benchmark's resources that adopt an existing cluster find one here.
//!
//! Each seeded cluster `{prefix}-{i}` has one ACTIVE container instance: a running EC2 instance of
//! the ECS-optimized Amazon Linux 2023 AMI (x86_64, `t3.medium`: 2 vCPU and 4 GiB, room for a
//! Defender) in a default subnet of the default VPC (a public IP and the internet gateway the ECS
//! world gives that VPC: the strict network rule lets its agent and Defender out), registered
//! with the identity document the agent sends. The ECS world adopts these instances as
//! registered, so a DAEMON service created in the cluster later runs its task there and a
//! Defender connects, as on instances the world registered itself.
//!
//! Everything goes straight to moto, not through the gate: the gate's call log holds only what
//! its callers do afterwards. Clusters are created and instances registered concurrently, and
//! instances launched 100 per `RunInstances`, so 1000 clusters take seconds.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use aws_sdk_ec2::types::{Filter, InstanceType, ResourceType, Tag, TagSpecification};
use futures::{StreamExt as _, TryStreamExt as _};

use crate::{
    ecs_world::EcsWorld,
    moto::ACCOUNT_ID,
    world::{Sandbox, sdk_config_in},
};

/// The ECS-optimized AMI a person picks today (AL2 is past its end of support).
pub const ECS_OPTIMIZED_AMI_PARAMETER: &str = "/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id";
/// Room for a Defender task (512 MiB by default) and more.
pub const SEEDED_INSTANCE_TYPE: &str = "t3.medium";
/// Tag on every seeded instance (value: the prefix), so a person can tell them apart in `sandbox show`.
pub const SEEDED_TAG: &str = "sandbox:seeded";

/// Calls to moto in flight at once while seeding (moto serves one request at a time per thread;
/// more only queue).
const CONCURRENCY: usize = 16;
/// Instances per `RunInstances` (EC2 launches up to its account limit in one call).
const LAUNCH_BATCH: usize = 100;

impl Sandbox {
    /// Creates `count` ECS clusters `{prefix}-{i}` (i = 0..count) in the default region, each with
    /// one registered, ACTIVE container instance on a running EC2 instance (see the module doc),
    /// straight in moto: nothing goes through the gate. Returns the cluster names, in order.
    pub async fn seed_adopted_clusters(&self, prefix: &str, count: usize) -> Result<Vec<String>> {
        let moto = self.moto.as_ref().context("the sandbox was started without AWS")?;
        seed_adopted_clusters(moto.url(), &self.regions()[0], self.ecs_world(), prefix, count).await
    }
}

/// [`Sandbox::seed_adopted_clusters`] for a world started by hand: `moto_url` is moto's own URL
/// (not the gate's), `world` the ECS world playing `region`.
pub async fn seed_adopted_clusters(
    moto_url: &str,
    region: &str,
    world: &EcsWorld,
    prefix: &str,
    count: usize,
) -> Result<Vec<String>> {
    let started = Instant::now();
    let config = sdk_config_in(moto_url, region).await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let ssm = aws_sdk_ssm::Client::new(&config);
    let names: Vec<String> = (0..count).map(|i| format!("{prefix}-{i}")).collect();

    let ami = ssm.get_parameter().name(ECS_OPTIMIZED_AMI_PARAMETER).send().await.context("GetParameter (ECS AMI)")?;
    let ami = ami.parameter().and_then(|p| p.value()).context("no ECS-optimized AMI in SSM")?.to_string();
    let subnet = default_public_subnet(&ec2).await?;
    tracing::debug!(elapsed = ?started.elapsed(), "seeding: AMI and subnet found");

    futures::stream::iter(names.iter().cloned())
        .map(|name| {
            let ecs = ecs.clone();
            async move {
                ecs.create_cluster().cluster_name(&name).send().await.with_context(|| format!("CreateCluster {name}"))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect::<Vec<_>>()
        .await?;

    tracing::debug!(elapsed = ?started.elapsed(), "seeding: clusters created");
    // No agent may boot on the new instances before the world hears they are registered.
    let _hold = world.hold_new_instances();
    let mut instances = Vec::with_capacity(count);
    for batch in names.chunks(LAUNCH_BATCH) {
        let n = i32::try_from(batch.len())?;
        let resp = ec2
            .run_instances()
            .image_id(&ami)
            .instance_type(InstanceType::from(SEEDED_INSTANCE_TYPE))
            .subnet_id(&subnet)
            .min_count(n)
            .max_count(n)
            .tag_specifications(
                TagSpecification::builder()
                    .resource_type(ResourceType::Instance)
                    .tags(Tag::builder().key(SEEDED_TAG).value(prefix).build())
                    .build(),
            )
            .send()
            .await
            .context("RunInstances")?;
        instances.extend(resp.instances().iter().cloned());
    }
    if instances.len() != count {
        bail!("RunInstances launched {} instances, not {count}", instances.len());
    }

    tracing::debug!(elapsed = ?started.elapsed(), "seeding: instances launched");
    let registered: Vec<(String, String, String)> = futures::stream::iter(names.iter().cloned().zip(instances))
        .map(|(cluster, instance)| {
            let ecs = ecs.clone();
            let region = region.to_string();
            async move {
                let id = instance.instance_id().unwrap_or_default().to_string();
                // What the agent sends: the instance identity document.
                let document = serde_json::json!({
                    "instanceId": id,
                    "region": region,
                    "accountId": ACCOUNT_ID,
                    "instanceType": SEEDED_INSTANCE_TYPE,
                    "availabilityZone": instance.placement().and_then(|p| p.availability_zone()).unwrap_or_default(),
                    "privateIp": instance.private_ip_address().unwrap_or_default(),
                    "imageId": instance.image_id().unwrap_or_default(),
                });
                let resp = ecs
                    .register_container_instance()
                    .cluster(&cluster)
                    .instance_identity_document(document.to_string())
                    .send()
                    .await
                    .with_context(|| format!("RegisterContainerInstance {cluster}"))?;
                let arn = resp
                    .container_instance()
                    .and_then(|c| c.container_instance_arn())
                    .context("RegisterContainerInstance answered no ARN")?
                    .to_string();
                anyhow::Ok((cluster, id, arn))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_collect()
        .await?;
    for (cluster, id, arn) in &registered {
        world.adopt(region, id, cluster, arn);
    }
    tracing::info!(count, %prefix, elapsed = ?started.elapsed(), "seeded clusters that the operator adopts");
    Ok(names)
}

/// A default subnet of the default VPC (public: `MapPublicIpOnLaunch`), the first by zone.
async fn default_public_subnet(ec2: &aws_sdk_ec2::Client) -> Result<String> {
    let resp = ec2
        .describe_subnets()
        .filters(Filter::builder().name("default-for-az").values("true").build())
        .send()
        .await
        .context("DescribeSubnets")?;
    let mut subnets: Vec<_> =
        resp.subnets().iter().filter(|s| s.map_public_ip_on_launch() == Some(true)).cloned().collect();
    subnets.sort_by(|a, b| a.availability_zone().cmp(&b.availability_zone()));
    subnets
        .first()
        .and_then(|s| s.subnet_id())
        .map(str::to_string)
        .context("the default VPC has no public default subnet")
}
