//! Auto Scaling calls: groups and (legacy) launch configurations.

use aws_sdk_autoscaling::types::{LaunchTemplateSpecification, Tag};

use super::{AwsClients, AwsError, InstanceSpec, Tags};

#[derive(Clone, Debug, PartialEq)]
pub struct AutoScalingGroup {
    pub name: String,
    pub arn: String,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_capacity: i32,
    /// (instance id, lifecycle state)
    pub instances: Vec<(String, String)>,
    pub launch_template_id: Option<String>,
    pub launch_configuration_name: Option<String>,
    /// Set while a deletion is in progress.
    pub status: Option<String>,
    pub tags: Tags,
}

/// What the group launches.
#[derive(Clone, Debug, PartialEq)]
pub enum LaunchSource {
    /// A launch template by name, at its default version.
    Template {
        name: String,
    },
    Configuration {
        name: String,
    },
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewAutoScalingGroup {
    pub name: String,
    pub min_size: i32,
    pub max_size: i32,
    pub desired_capacity: i32,
    pub launch: LaunchSource,
    pub subnet_ids: Vec<String>,
    pub tags: Tags,
}

#[derive(Clone, Debug, PartialEq)]
pub struct LaunchConfiguration {
    pub name: String,
    pub image_id: String,
    pub instance_type: String,
}

/// Launch configurations carry no tags and take no idempotency token.
pub type NewLaunchConfiguration = InstanceSpec;

impl AwsClients {
    pub async fn describe_auto_scaling_group(&self, name: &str) -> Result<Option<AutoScalingGroup>, AwsError> {
        let out = self.finish(
            "autoscaling:DescribeAutoScalingGroups",
            self.autoscaling.describe_auto_scaling_groups().auto_scaling_group_names(name).send().await,
        )?;
        Ok(out.auto_scaling_groups().iter().find(|g| g.auto_scaling_group_name() == Some(name)).map(|g| {
            AutoScalingGroup {
                name: name.to_string(),
                arn: g.auto_scaling_group_arn().unwrap_or_default().to_string(),
                min_size: g.min_size().unwrap_or_default(),
                max_size: g.max_size().unwrap_or_default(),
                desired_capacity: g.desired_capacity().unwrap_or_default(),
                instances: g
                    .instances()
                    .iter()
                    .map(|i| {
                        (
                            i.instance_id().unwrap_or_default().to_string(),
                            i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                        )
                    })
                    .collect(),
                launch_template_id: g.launch_template().and_then(|t| t.launch_template_id()).map(str::to_string),
                launch_configuration_name: g.launch_configuration_name().map(str::to_string),
                status: g.status().map(str::to_string),
                tags: g.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect(),
            }
        }))
    }

    pub async fn create_auto_scaling_group(&self, asg: &NewAutoScalingGroup) -> Result<(), AwsError> {
        let mut req = self
            .autoscaling
            .create_auto_scaling_group()
            .auto_scaling_group_name(&asg.name)
            .min_size(asg.min_size)
            .max_size(asg.max_size)
            .desired_capacity(asg.desired_capacity)
            .vpc_zone_identifier(asg.subnet_ids.join(","))
            .set_tags(Some(
                asg.tags
                    .iter()
                    .map(|(k, v)| {
                        Tag::builder()
                            .key(k)
                            .value(v)
                            .resource_id(&asg.name)
                            .resource_type("auto-scaling-group")
                            .propagate_at_launch(true)
                            .build()
                    })
                    .collect(),
            ));
        req = match &asg.launch {
            LaunchSource::Template { name } => req.launch_template(
                LaunchTemplateSpecification::builder().launch_template_name(name).version("$Default").build(),
            ),
            LaunchSource::Configuration { name } => req.launch_configuration_name(name),
        };
        self.finish("autoscaling:CreateAutoScalingGroup", req.send().await)?;
        Ok(())
    }

    pub async fn update_auto_scaling_group_size(
        &self,
        name: &str,
        min: i32,
        max: i32,
        desired: i32,
    ) -> Result<(), AwsError> {
        self.finish(
            "autoscaling:UpdateAutoScalingGroup",
            self.autoscaling
                .update_auto_scaling_group()
                .auto_scaling_group_name(name)
                .min_size(min)
                .max_size(max)
                .desired_capacity(desired)
                .send()
                .await,
        )?;
        Ok(())
    }

    /// Force-deletes the group (its instances are terminated); "already gone" or "already being
    /// deleted" count as success.
    pub async fn delete_auto_scaling_group(&self, name: &str) -> Result<(), AwsError> {
        match self.finish(
            "autoscaling:DeleteAutoScalingGroup",
            self.autoscaling.delete_auto_scaling_group().auto_scaling_group_name(name).force_delete(true).send().await,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.code_is("ValidationError") && e.message.contains("not found") => Ok(()),
            Err(e) if e.code_is("ScalingActivityInProgress") && e.message.contains("delete") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn describe_launch_configuration(&self, name: &str) -> Result<Option<LaunchConfiguration>, AwsError> {
        let out = self.finish(
            "autoscaling:DescribeLaunchConfigurations",
            self.autoscaling.describe_launch_configurations().launch_configuration_names(name).send().await,
        )?;
        Ok(out.launch_configurations().iter().find(|c| c.launch_configuration_name() == Some(name)).map(|c| {
            LaunchConfiguration {
                name: name.to_string(),
                image_id: c.image_id().unwrap_or_default().to_string(),
                instance_type: c.instance_type().unwrap_or_default().to_string(),
            }
        }))
    }

    pub async fn create_launch_configuration(&self, lc: &NewLaunchConfiguration) -> Result<(), AwsError> {
        use base64::Engine;
        let result = self.finish(
            "autoscaling:CreateLaunchConfiguration",
            self.autoscaling
                .create_launch_configuration()
                .launch_configuration_name(&lc.name)
                .image_id(&lc.image_id)
                .instance_type(&lc.instance_type)
                .iam_instance_profile(&lc.instance_profile)
                .set_security_groups(Some(lc.security_group_ids.clone()))
                .set_key_name(lc.key_name.clone())
                .associate_public_ip_address(lc.associate_public_ip_address)
                .user_data(base64::engine::general_purpose::STANDARD.encode(&lc.user_data))
                .send()
                .await,
        );
        match result {
            Ok(_) => Ok(()),
            // A repeat after an interrupted reconcile: launch configurations are immutable, and the
            // name is ours (checked by the plan), so the existing one is the one we made.
            Err(e) if e.code_is("AlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    pub async fn delete_launch_configuration(&self, name: &str) -> Result<(), AwsError> {
        match self.finish(
            "autoscaling:DeleteLaunchConfiguration",
            self.autoscaling.delete_launch_configuration().launch_configuration_name(name).send().await,
        ) {
            Ok(_) => Ok(()),
            Err(e) if e.code_is("ValidationError") && e.message.to_lowercase().contains("not found") => Ok(()),
            Err(e) => Err(e),
        }
    }
}
