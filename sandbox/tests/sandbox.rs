//! The sandbox as its users see it: the AWS SDK for Rust against its moto, the control plane's
//! lifecycle, and `sandbox up` for a person.

use std::{process::Command, time::Duration};

use aws_sdk_autoscaling::types::LaunchTemplateSpecification;
use aws_sdk_ec2::types::RequestLaunchTemplateData;
use sandbox::{
    control_plane::ControlPlane,
    moto::Moto,
    world::{Sandbox, SandboxOptions, sdk_config},
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

#[test]
fn sandbox_up_prints_and_writes_its_environment_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let env_file = dir.path().join("env");
    let stdout = dir.path().join("stdout");
    let mut child = Command::new(env!("CARGO_BIN_EXE_sandbox"))
        .args(["up", "--env-file"])
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
        "PRISMA_CONSOLE_URL=",
        "PRISMA_CONSOLE_USERNAME=",
        "PRISMA_CONSOLE_PASSWORD=",
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
    });

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
