//! Paging: with a page size set, the gate pages every list and describe call the operator makes, as
//! AWS pages them (moto answers everything at once and never returns a token).

mod common;

use std::time::Duration;

use common::*;

#[tokio::test]
async fn ecs_lists_come_in_pages_with_tokens() {
    let env = start_with(|c| c.page_size = Some(2)).await;
    for name in ["a", "b", "c", "d", "e"] {
        create_cluster(&env.ecs, name).await;
        register_task_definition(&env.ecs, "fam", &[]).await;
    }
    let first = env.ecs.list_clusters().send().await.unwrap();
    assert_eq!(first.cluster_arns().len(), 2);
    assert!(first.next_token().is_some());
    let bare = env.moto_ecs.list_clusters().send().await.unwrap();
    assert_eq!((bare.cluster_arns().len(), bare.next_token()), (5, None), "moto's single page");

    let all: Vec<String> =
        env.ecs.list_clusters().into_paginator().items().send().collect::<Result<Vec<_>, _>>().await.unwrap();
    assert_eq!(all.len(), 5);
    let tds = env
        .ecs
        .list_task_definitions()
        .family_prefix("fam")
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await;
    assert_eq!(tds.unwrap().len(), 5);
    // The caller's own smaller limit wins.
    let one = env.ecs.list_clusters().max_results(1).send().await.unwrap();
    assert_eq!(one.cluster_arns().len(), 1);

    // Switched off at run time (the control API does the same), AWS's page of 100 holds all.
    env.gate.set_page_size(None);
    let all = env.ecs.list_clusters().send().await.unwrap();
    assert_eq!((all.cluster_arns().len(), all.next_token()), (5, None));
}

#[tokio::test]
async fn the_control_api_sets_the_page_size() {
    let env = start().await;
    for name in ["a", "b", "c"] {
        create_cluster(&env.ecs, name).await;
    }
    let http = reqwest::Client::new();
    let url = format!("{}/paging", env.gate.control_url());
    http.post(&url).json(&serde_json::json!({"pageSize": 1})).send().await.unwrap().error_for_status().unwrap();
    let got: serde_json::Value = http.get(&url).send().await.unwrap().json().await.unwrap();
    assert_eq!(got["pageSize"], 1);
    assert_eq!(env.ecs.list_clusters().send().await.unwrap().cluster_arns().len(), 1);
    http.delete(&url).send().await.unwrap();
    assert_eq!(env.ecs.list_clusters().send().await.unwrap().cluster_arns().len(), 3);
}

#[tokio::test]
async fn auto_scaling_describes_come_in_pages() {
    let env = start_with(|c| {
        c.page_size = Some(1);
        c.fleet_tick = Duration::from_millis(50);
    })
    .await;
    env.asg
        .create_launch_configuration()
        .launch_configuration_name("lc")
        .image_id(AMI)
        .instance_type("t2.medium")
        .send()
        .await
        .unwrap();
    for name in ["g1", "g2", "g3"] {
        env.asg
            .create_auto_scaling_group()
            .auto_scaling_group_name(name)
            .launch_configuration_name("lc")
            .availability_zones("us-east-1a")
            .min_size(0)
            .max_size(2)
            .desired_capacity(2)
            .send()
            .await
            .unwrap();
    }
    let first = env.asg.describe_auto_scaling_groups().send().await.unwrap();
    assert_eq!(first.auto_scaling_groups().len(), 1);
    let groups = env
        .asg
        .describe_auto_scaling_groups()
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    let names: Vec<&str> = groups.iter().filter_map(|g| g.auto_scaling_group_name()).collect();
    assert_eq!(names, ["g1", "g2", "g3"]);
    let acts = env.asg.describe_scaling_activities().auto_scaling_group_name("g1").into_paginator().items().send();
    assert_eq!(acts.collect::<Result<Vec<_>, _>>().await.unwrap().len(), 2, "one launch activity per instance");
    let refreshes = env.asg.describe_instance_refreshes().auto_scaling_group_name("g1").send().await.unwrap();
    assert!(refreshes.instance_refreshes().is_empty());
}

#[tokio::test]
async fn ec2_describes_page_when_asked_for_pages() {
    let env = start_with(|c| c.page_size = Some(2)).await;
    // The default VPC has six default subnets.
    let first = env.ec2.describe_subnets().max_results(5).send().await.unwrap();
    assert_eq!(first.subnets().len(), 2, "the gate's smaller page");
    assert!(first.next_token().is_some());
    let all = env
        .ec2
        .describe_subnets()
        .max_results(5)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(all.len(), 6);
    // Without MaxResults AWS answers everything, and so does the gate.
    let unpaged = env.ec2.describe_subnets().send().await.unwrap();
    assert_eq!((unpaged.subnets().len(), unpaged.next_token()), (6, None));

    for name in ["lt-one", "lt-two", "lt-three"] {
        env.ec2
            .create_launch_template()
            .launch_template_name(name)
            .launch_template_data(aws_sdk_ec2::types::RequestLaunchTemplateData::builder().image_id(AMI).build())
            .send()
            .await
            .unwrap();
    }
    let lts = env
        .ec2
        .describe_launch_templates()
        .max_results(5)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await;
    assert_eq!(lts.unwrap().len(), 3);
    let sgs = env
        .ec2
        .describe_security_groups()
        .max_results(5)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await;
    assert!(!sgs.unwrap().is_empty());
    let first = env.ec2.describe_vpcs().max_results(5).send().await.unwrap();
    assert_eq!(first.vpcs().len(), 1);
}
