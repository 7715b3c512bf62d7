//! `sandbox show`: a person's view of the sandbox's AWS (every region in SANDBOX_REGIONS) and
//! Consoles (PRISMA_CONSOLE_*, PRISMA_CONSOLE_2_*, ...), from the variables `sandbox up` printed.

use anyhow::{Context, Result};

fn var(k: &str) -> Result<String> {
    std::env::var(k).with_context(|| format!("{k} is not set; source the env file `sandbox up` wrote"))
}

pub async fn show() -> Result<()> {
    sandbox::install_crypto_provider();
    let endpoint = var("AWS_ENDPOINT_URL")?;
    let regions = std::env::var("SANDBOX_REGIONS")
        .or_else(|_| std::env::var("AWS_REGION"))
        .unwrap_or_else(|_| sandbox::world::REGION.to_string());
    for region in regions.split(',').map(str::trim).filter(|r| !r.is_empty()) {
        show_region(&endpoint, region).await?;
    }
    show_gate().await?;
    let mut n = 1;
    loop {
        let prefix = if n == 1 { "PRISMA_CONSOLE".to_string() } else { format!("PRISMA_CONSOLE_{n}") };
        if std::env::var(format!("{prefix}_URL")).is_err() {
            if n == 1 {
                var("PRISMA_CONSOLE_URL")?;
            }
            return Ok(());
        }
        show_console(&prefix).await?;
        n += 1;
    }
}

async fn show_region(endpoint: &str, region: &str) -> Result<()> {
    let config = sandbox::world::sdk_config_in(endpoint, region).await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let asg = aws_sdk_autoscaling::Client::new(&config);
    let ec2 = aws_sdk_ec2::Client::new(&config);

    println!("AWS ({})", config.region().map(|r| r.to_string()).unwrap_or_default());
    let arns = ecs.list_clusters().send().await?.cluster_arns().to_vec();
    let clusters = if arns.is_empty() {
        vec![]
    } else {
        ecs.describe_clusters().set_clusters(Some(arns)).send().await?.clusters().to_vec()
    };
    for c in clusters.iter().filter(|c| c.status() == Some("ACTIVE")) {
        let name = c.cluster_name().unwrap_or_default();
        println!(
            "  ECS cluster {name}: {} container instances, {} services, {} running tasks",
            c.registered_container_instances_count(),
            c.active_services_count(),
            c.running_tasks_count()
        );
        let services = ecs.list_services().cluster(name).send().await?.service_arns().to_vec();
        if !services.is_empty() {
            for s in ecs.describe_services().cluster(name).set_services(Some(services)).send().await?.services() {
                println!(
                    "    service {} ({:?}, {}): desired {}, running {}, task definition {}",
                    s.service_name().unwrap_or_default(),
                    s.scheduling_strategy().map(|x| x.as_str()).unwrap_or_default(),
                    s.status().unwrap_or_default(),
                    s.desired_count(),
                    s.running_count(),
                    s.task_definition().unwrap_or_default().rsplit('/').next().unwrap_or_default()
                );
            }
        }
    }
    for t in ec2.describe_launch_templates().send().await?.launch_templates() {
        println!(
            "  launch template {} ({}), default version {}",
            t.launch_template_name().unwrap_or_default(),
            t.launch_template_id().unwrap_or_default(),
            t.default_version_number().unwrap_or_default()
        );
    }
    for l in asg.describe_launch_configurations().send().await?.launch_configurations() {
        println!(
            "  launch configuration {} ({})",
            l.launch_configuration_name().unwrap_or_default(),
            l.image_id().unwrap_or_default()
        );
    }
    for g in asg.describe_auto_scaling_groups().send().await?.auto_scaling_groups() {
        let ids: Vec<&str> = g.instances().iter().filter_map(|i| i.instance_id()).collect();
        println!(
            "  Auto Scaling group {}: min {} / desired {} / max {}, instances {}",
            g.auto_scaling_group_name().unwrap_or_default(),
            g.min_size().unwrap_or_default(),
            g.desired_capacity().unwrap_or_default(),
            g.max_size().unwrap_or_default(),
            ids.join(", ")
        );
    }
    for arn in ecs.list_task_definitions().send().await?.task_definition_arns() {
        println!("  task definition {}", arn.rsplit('/').next().unwrap_or_default());
    }
    Ok(())
}

async fn show_gate() -> Result<()> {
    if let Ok(gate) = std::env::var("SANDBOX_GATE_URL") {
        let calls: Vec<serde_json::Value> =
            reqwest::get(format!("{gate}/calls")).await?.error_for_status()?.json().await?;
        let mutating: Vec<&str> = calls
            .iter()
            .filter(|c| c["mutating"].as_bool() == Some(true) && c["status"].as_u64() == Some(200))
            .filter_map(|c| c["operation"].as_str())
            .collect();
        println!(
            "  AWS calls through the gate so far: {} ({} changes: {})",
            calls.len(),
            mutating.len(),
            mutating.join(", ")
        );
    }

    Ok(())
}

async fn show_console(prefix: &str) -> Result<()> {
    let var = |k: &str| var(&format!("{prefix}_{k}"));
    let url = var("URL")?;
    println!("Prisma Cloud Console simulator ({url})");
    let mut http = reqwest::Client::builder();
    if let Ok(ca) = var("CA_FILE") {
        http = http.add_root_certificate(reqwest::Certificate::from_pem(&std::fs::read(ca)?)?);
    }
    let defenders: Vec<serde_json::Value> = http
        .build()?
        .get(format!("{url}/api/v1/defenders?limit=50"))
        .basic_auth(var("USERNAME")?, Some(var("PASSWORD")?))
        .send()
        .await?
        .error_for_status()?
        .json::<Option<Vec<serde_json::Value>>>()
        .await?
        .unwrap_or_default();
    if defenders.is_empty() {
        println!("  no Defenders");
    }
    for d in defenders {
        println!(
            "  Defender {} on {} in cluster {}: {}",
            d["hostname"].as_str().unwrap_or_default(),
            d["cloudMetadata"]["resourceID"].as_str().unwrap_or_default(),
            d["cluster"].as_str().unwrap_or_default(),
            if d["connected"].as_bool() == Some(true) { "connected" } else { "disconnected" }
        );
    }
    Ok(())
}
