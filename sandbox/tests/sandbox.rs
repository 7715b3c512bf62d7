//! The sandbox as its users see it: the AWS SDK for Rust against its moto, the control plane's
//! lifecycle, every region it is asked for, and `sandbox up` (several Consoles, a tenant prefix,
//! TLS, access keys, regions) for a person.

use std::{process::Command, time::Duration};

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use sandbox::{
    control_plane::ControlPlane,
    moto::Moto,
    world::{Sandbox, SandboxOptions, sdk_config, sdk_config_in},
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aws_sdk_creates_an_ecs_cluster_and_an_auto_scaling_group_in_moto() {
    sandbox::install_crypto_provider();
    let dir = tempfile::tempdir().unwrap();
    let moto = Moto::start(dir.path()).await.unwrap();
    let config = sdk_config(moto.url()).await;
    let ecs = aws_sdk_ecs::Client::new(&config);
    let ec2 = aws_sdk_ec2::Client::new(&config);
    let asg = aws_sdk_autoscaling::Client::new(&config);

    ecs.create_cluster().cluster_name("pc-ecs-cluster").send().await.unwrap();
    let clusters = ecs.describe_clusters().clusters("pc-ecs-cluster").send().await.unwrap();
    assert_eq!(clusters.clusters()[0].status(), Some("ACTIVE"));

    ec2.create_launch_template()
        .launch_template_name("pc-worker-node")
        .launch_template_data(
            RequestLaunchTemplateData::builder().image_id("ami-12c6146b").instance_type("t2.medium".into()).build(),
        )
        .send()
        .await
        .unwrap();
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("pc-worker-autoscaling")
        .launch_template(
            LaunchTemplateSpecification::builder().launch_template_name("pc-worker-node").version("$Default").build(),
        )
        .min_size(1)
        .max_size(2)
        .desired_capacity(2)
        .availability_zones("us-east-1a")
        .send()
        .await
        .unwrap();
    let groups =
        asg.describe_auto_scaling_groups().auto_scaling_group_names("pc-worker-autoscaling").send().await.unwrap();
    let g = &groups.auto_scaling_groups()[0];
    assert_eq!((g.min_size(), g.max_size(), g.desired_capacity()), (Some(1), Some(2), Some(2)));
    assert_eq!(g.instances().len(), 2, "moto launches the instances at once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn control_plane_processes_stop_when_the_handle_drops() {
    sandbox::install_crypto_provider();
    let cp = ControlPlane::start().await.unwrap();
    let client = cp.client().await.unwrap();
    let v = client.apiserver_version().await.unwrap();
    assert_eq!((v.major.as_str(), v.minor.as_str()), ("1", "35"), "the pinned current release");
    let url = cp.url().to_string();
    drop(cp);
    let http =
        reqwest::Client::builder().danger_accept_invalid_certs(true).timeout(Duration::from_secs(2)).build().unwrap();
    assert!(http.get(format!("{url}/readyz")).send().await.is_err(), "apiserver still answers after drop");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_sandboxes_run_side_by_side() {
    let (a, b) = tokio::join!(Sandbox::start(SandboxOptions::default()), Sandbox::start(SandboxOptions::default()));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.control_plane().url(), b.control_plane().url());
    assert_ne!(a.aws_endpoint(), b.aws_endpoint());
    let ecs_a = aws_sdk_ecs::Client::new(&a.aws_config().await);
    let ecs_b = aws_sdk_ecs::Client::new(&b.aws_config().await);
    ecs_a.create_cluster().cluster_name("only-in-a").send().await.unwrap();
    let in_b = ecs_b.list_clusters().send().await.unwrap();
    assert!(in_b.cluster_arns().iter().all(|arn| !arn.ends_with("/only-in-a")), "state leaked between sandboxes");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_ecs_world_plays_every_region_it_is_given() {
    let sandbox = Sandbox::start(SandboxOptions {
        kubernetes: false,
        console: None,
        regions: vec!["us-east-1".into(), "eu-west-1".into()],
        boot_delay: Duration::from_millis(200),
        ..Default::default()
    })
    .await
    .unwrap();
    assert_eq!(sandbox.env().unwrap()["SANDBOX_REGIONS"], "us-east-1,eu-west-1");
    let config = sdk_config_in(&sandbox.aws_endpoint(), "eu-west-1").await;
    let (ecs, ec2, asg) = (
        aws_sdk_ecs::Client::new(&config),
        aws_sdk_ec2::Client::new(&config),
        aws_sdk_autoscaling::Client::new(&config),
    );
    ecs.create_cluster().cluster_name("dublin").send().await.unwrap();
    let user_data = base64::Engine::encode(
        &base64::engine::general_purpose::STANDARD,
        "#!/bin/bash\necho ECS_CLUSTER=dublin >> /etc/ecs/ecs.config\n",
    );
    // The region's own ECS-optimized AMI, as the operator would resolve it.
    let ssm = aws_sdk_ssm::Client::new(&config);
    let ami = ssm
        .get_parameter()
        .name("/aws/service/ecs/optimized-ami/amazon-linux-2023/recommended/image_id")
        .send()
        .await
        .unwrap();
    let ami = ami.parameter().unwrap().value().unwrap().to_string();
    ec2.create_launch_template()
        .launch_template_name("dublin-workers")
        .launch_template_data(
            RequestLaunchTemplateData::builder()
                .image_id(ami)
                .instance_type("t3.medium".into())
                .user_data(user_data)
                .build(),
        )
        .send()
        .await
        .unwrap();
    asg.create_auto_scaling_group()
        .auto_scaling_group_name("dublin-workers")
        .launch_template(
            LaunchTemplateSpecification::builder().launch_template_name("dublin-workers").version("$Latest").build(),
        )
        .min_size(1)
        .max_size(1)
        .desired_capacity(1)
        .availability_zones("eu-west-1a")
        .send()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let arns = ecs.list_container_instances().cluster("dublin").send().await.unwrap();
        if arns.container_instance_arns().len() == 1 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the eu-west-1 instance never registered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[test]
fn sandbox_up_prints_and_writes_its_environment_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    let stdout = dir.path().join("stdout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["up", "--region", "us-east-1,eu-west-1", "--consoles", "2", "--console-prefix", "/tenant-1"])
        .args(["--console-tls", "--console-access-key", "--console-variant", "hostname-only", "--env-file"])
        .arg(&env_file)
        .stdout(std::fs::File::create(&stdout).unwrap())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    while !env_file.exists() {
        assert!(std::time::Instant::now() < deadline, "sandbox up wrote no env file in 90s");
        assert!(child.try_wait().unwrap().is_none(), "sandbox up exited early");
        std::thread::sleep(Duration::from_millis(200));
    }
    let env = std::fs::read_to_string(&env_file).unwrap();
    for key in [
        "KUBECONFIG=",
        "AWS_ENDPOINT_URL=",
        "AWS_REGION=us-east-1",
        "AWS_ACCESS_KEY_ID=",
        "AWS_SECRET_ACCESS_KEY=",
        "SANDBOX_GATE_URL=",
        "PRISMA_CONSOLE_URL=https://127.0.0.1:",
        "PRISMA_CONSOLE_USERNAME=",
        "PRISMA_CONSOLE_PASSWORD=",
        "PRISMA_CONSOLE_CA_FILE=",
        "PRISMA_CONSOLE_ACCESS_KEY_ID=",
        "PRISMA_CONSOLE_SECRET_KEY=",
        "PRISMA_CONSOLE_CONTROL_URL=http://127.0.0.1:",
        "PRISMA_CONSOLE_2_URL=https://127.0.0.1:",
        "PRISMA_CONSOLE_2_ACCESS_KEY_ID=",
        "PRISMA_CONSOLE_2_CA_FILE=",
        "SANDBOX_REGIONS=us-east-1,eu-west-1",
        "SANDBOX_ECS_WORLD_URL=http://127.0.0.1:",
    ] {
        assert!(env.lines().any(|l| l.starts_with(key)), "{key} missing from:\n{env}");
    }
    let kubeconfig = env.lines().find_map(|l| l.strip_prefix("KUBECONFIG=")).unwrap().to_string();
    assert!(std::path::Path::new(&kubeconfig).exists());
    // What it printed is what it wrote.
    std::thread::sleep(Duration::from_millis(200));
    assert!(std::fs::read_to_string(&stdout).unwrap().contains(&env));

    // The world it describes works: kubectl-equivalent and AWS calls.
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        sandbox::install_crypto_provider();
        let kc = kube::config::Kubeconfig::read_from(&kubeconfig).unwrap();
        let client =
            kube::Client::try_from(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await.unwrap())
                .unwrap();
        client.apiserver_version().await.unwrap();
        let endpoint = env.lines().find_map(|l| l.strip_prefix("AWS_ENDPOINT_URL=")).unwrap();
        aws_sdk_ecs::Client::new(&sdk_config(endpoint).await).list_clusters().send().await.unwrap();
        aws_sdk_ecs::Client::new(&sdk_config_in(endpoint, "eu-west-1").await)
            .create_cluster()
            .cluster_name("in-dublin")
            .send()
            .await
            .unwrap();
        // The second Console: its own tenant path, TLS with its CA, its access key logs in.
        let val = |k: &str| {
            env.lines().find_map(|l| l.strip_prefix(&format!("{k}="))).unwrap().trim_matches('\'').to_string()
        };
        let url = val("PRISMA_CONSOLE_2_URL");
        assert!(url.ends_with("/tenant-1"), "{url}");
        let ca = reqwest::Certificate::from_pem(&std::fs::read(val("PRISMA_CONSOLE_2_CA_FILE")).unwrap()).unwrap();
        let http = reqwest::Client::builder().no_proxy().add_root_certificate(ca).build().unwrap();
        let resp = http
            .post(format!("{url}/api/v1/authenticate"))
            .json(&serde_json::json!({
                "username": val("PRISMA_CONSOLE_2_ACCESS_KEY_ID"),
                "password": val("PRISMA_CONSOLE_2_SECRET_KEY"),
            }))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), reqwest::StatusCode::OK);
        assert_ne!(val("PRISMA_CONSOLE_ACCESS_KEY_ID"), val("PRISMA_CONSOLE_2_ACCESS_KEY_ID"));
    });
    // `sandbox show` reads the same variables and covers every region and Console.
    let mut show = Command::new(env!("CARGO_BIN_EXE_sandbox"));
    show.arg("show");
    for line in env.lines() {
        if let Some((k, v)) = line.split_once('=') {
            show.env(k, v.trim_matches('\''));
        }
    }
    let out = show.output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("AWS (eu-west-1)") && text.contains("ECS cluster in-dublin"), "{text}");
    assert_eq!(text.matches("Prisma Cloud Console simulator").count(), 2, "{text}");

    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let status = wait_exit(&mut child, Duration::from_secs(30)).expect("sandbox up did not stop on SIGTERM");
    assert!(status.success(), "{status}");
    assert!(!env_file.exists(), "the env file outlived the sandbox");
    assert!(!std::path::Path::new(&kubeconfig).exists(), "the sandbox's temp dir outlived it");
}

fn wait_exit(child: &mut std::process::Child, timeout: Duration) -> Option<std::process::ExitStatus> {
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if let Some(s) = child.try_wait().unwrap() {
            return Some(s);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = child.kill();
    None
}
