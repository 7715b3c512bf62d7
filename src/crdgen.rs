//! Prints the CustomResourceDefinition as YAML: `cargo run --bin crdgen > crds/ecsdefenderdeployments.ecsdefender.io.yaml`.

use ecs_defender_operator::crd::EcsDefenderDeployment;
use kube::CustomResourceExt;

fn main() -> anyhow::Result<()> {
    print!("{}", serde_yaml::to_string(&EcsDefenderDeployment::crd())?);
    Ok(())
}
