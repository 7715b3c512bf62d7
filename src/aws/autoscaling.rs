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
    pub instances: Vec<AsgInstance>,
    /// The subnets (VPCZoneIdentifier), sorted.
    pub subnet_ids: Vec<String>,
    pub launch_template_id: Option<String>,
    pub launch_template_name: Option<String>,
    /// As the group names it: a number, `$Default` or `$Latest`.
    pub launch_template_version: Option<String>,
    pub launch_configuration_name: Option<String>,
    /// Set while a deletion is in progress.
    pub status: Option<String>,
    pub tags: Tags,
}

/// An instance of the group and what it was launched from.
#[derive(Clone, Debug, PartialEq)]
pub struct AsgInstance {
    pub id: String,
    pub lifecycle_state: String,
    pub launch_template_name: Option<String>,
    pub launch_template_version: Option<String>,
    pub launch_configuration_name: Option<String>,
}

/// What the group launches.
#[derive(Clone, Debug, PartialEq)]
pub enum LaunchSource {
    /// A launch template by name at an explicit version (`None`: the version created earlier in
    /// the same plan), so that instances tell which launch data they run.
    Template {
        name: String,
        version: Option<i64>,
    },
    Configuration {
        name: String,
    },
}

/// Changes to a group; `None` leaves a field as it is.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AutoScalingGroupUpdate {
    pub name: String,
    /// (min, max, desired)
    pub sizes: Option<(i32, i32, i32)>,
    pub subnet_ids: Option<Vec<String>>,
    pub launch: Option<LaunchSource>,
}

/// An instance refresh, newest first in [`AwsClients::describe_instance_refreshes`].
#[derive(Clone, Debug, PartialEq)]
pub struct InstanceRefresh {
    pub id: String,
    /// Pending, InProgress, Successful, Failed, Cancelling, Cancelled, RollbackInProgress, ...
    pub status: String,
    pub status_reason: Option<String>,
    pub percentage_complete: Option<i32>,
    pub instances_to_update: Option<i32>,
}

impl InstanceRefresh {
    pub fn in_progress(&self) -> bool {
        matches!(self.status.as_str(), "Pending" | "InProgress" | "Cancelling" | "RollbackInProgress" | "Baking")
    }
}

/// A scaling activity, newest first.
#[derive(Clone, Debug, PartialEq)]
pub struct ScalingActivity {
    /// Successful, Failed, InProgress, ...
    pub status_code: String,
    pub status_message: Option<String>,
    pub description: Option<String>,
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

fn template_spec(name: &str, version: Option<i64>) -> LaunchTemplateSpecification {
    LaunchTemplateSpecification::builder()
        .launch_template_name(name)
        .version(version.map(|v| v.to_string()).unwrap_or_else(|| "$Default".into()))
        .build()
}

pub(super) fn group_of(g: &aws_sdk_autoscaling::types::AutoScalingGroup) -> AutoScalingGroup {
    AutoScalingGroup {
        name: g.auto_scaling_group_name().unwrap_or_default().to_string(),
        arn: g.auto_scaling_group_arn().unwrap_or_default().to_string(),
        min_size: g.min_size().unwrap_or_default(),
        max_size: g.max_size().unwrap_or_default(),
        desired_capacity: g.desired_capacity().unwrap_or_default(),
        instances: g
            .instances()
            .iter()
            .map(|i| AsgInstance {
                id: i.instance_id().unwrap_or_default().to_string(),
                lifecycle_state: i.lifecycle_state().map(|s| s.as_str().to_string()).unwrap_or_default(),
                launch_template_name: i.launch_template().and_then(|t| t.launch_template_name()).map(str::to_string),
                launch_template_version: i.launch_template().and_then(|t| t.version()).map(str::to_string),
                launch_configuration_name: i.launch_configuration_name().map(str::to_string),
            })
            .collect(),
        subnet_ids: {
            let mut ids: Vec<String> = g
                .vpc_zone_identifier()
                .unwrap_or_default()
                .split(',')
                .map(|s| s.trim().to_string())
                .filter(|s| !s.is_empty())
                .collect();
            ids.sort();
            ids
        },
        launch_template_id: g.launch_template().and_then(|t| t.launch_template_id()).map(str::to_string),
        launch_template_name: g.launch_template().and_then(|t| t.launch_template_name()).map(str::to_string),
        launch_template_version: g.launch_template().and_then(|t| t.version()).map(str::to_string),
        launch_configuration_name: g.launch_configuration_name().map(str::to_string),
        status: g.status().map(str::to_string),
        tags: g.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect(),
    }
}

impl AwsClients {
    pub async fn describe_auto_scaling_group(&self, name: &str) -> Result<Option<AutoScalingGroup>, AwsError> {
        let out = self.finish(
            "autoscaling:DescribeAutoScalingGroups",
            self.autoscaling.describe_auto_scaling_groups().auto_scaling_group_names(name).send().await,
        )?;
        Ok(out.auto_scaling_groups().iter().find(|g| g.auto_scaling_group_name() == Some(name)).map(group_of))
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
            LaunchSource::Template { name, version } => req.launch_template(template_spec(name, *version)),
            LaunchSource::Configuration { name } => req.launch_configuration_name(name),
        };
        match self.finish("autoscaling:CreateAutoScalingGroup", req.send().await) {
            Ok(_) => Ok(()),
            // A repeat after an interrupted reconcile; the plan checked the name is ours or free.
            Err(e) if e.code_is("AlreadyExists") => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// One UpdateAutoScalingGroup carrying every changed field.
    pub async fn update_auto_scaling_group(&self, u: &AutoScalingGroupUpdate) -> Result<(), AwsError> {
        let mut req = self.autoscaling.update_auto_scaling_group().auto_scaling_group_name(&u.name);
        if let Some((min, max, desired)) = u.sizes {
            req = req.min_size(min).max_size(max).desired_capacity(desired);
        }
        if let Some(subnets) = &u.subnet_ids {
            req = req.vpc_zone_identifier(subnets.join(","));
        }
        req = match &u.launch {
            Some(LaunchSource::Template { name, version }) => req.launch_template(template_spec(name, *version)),
            Some(LaunchSource::Configuration { name }) => req.launch_configuration_name(name),
            None => req,
        };
        self.finish("autoscaling:UpdateAutoScalingGroup", req.send().await)?;
        Ok(())
    }

    /// Starts an instance refresh that replaces the instances not on the group's launch data.
    pub async fn start_instance_refresh(&self, name: &str, min_healthy_percentage: i32) -> Result<String, AwsError> {
        use aws_sdk_autoscaling::types::RefreshPreferences;
        let out = self.finish(
            "autoscaling:StartInstanceRefresh",
            self.autoscaling
                .start_instance_refresh()
                .auto_scaling_group_name(name)
                .preferences(
                    RefreshPreferences::builder()
                        .min_healthy_percentage(min_healthy_percentage)
                        // Instances already on the current launch data stay.
                        .skip_matching(true)
                        .build(),
                )
                .send()
                .await,
        )?;
        Ok(out.instance_refresh_id().unwrap_or_default().to_string())
    }

    /// The group's instance refreshes, newest first (the first page is enough: we need the newest).
    pub async fn describe_instance_refreshes(&self, name: &str) -> Result<Vec<InstanceRefresh>, AwsError> {
        let out = self.finish(
            "autoscaling:DescribeInstanceRefreshes",
            self.autoscaling.describe_instance_refreshes().auto_scaling_group_name(name).send().await,
        )?;
        Ok(out
            .instance_refreshes()
            .iter()
            .map(|r| InstanceRefresh {
                id: r.instance_refresh_id().unwrap_or_default().to_string(),
                status: r.status().map(|s| s.as_str().to_string()).unwrap_or_default(),
                status_reason: r.status_reason().map(str::to_string),
                percentage_complete: r.percentage_complete(),
                instances_to_update: r.instances_to_update(),
            })
            .collect())
    }

    /// The group's newest scaling activities, newest first.
    pub async fn describe_scaling_activities(&self, name: &str) -> Result<Vec<ScalingActivity>, AwsError> {
        let out = self.finish(
            "autoscaling:DescribeScalingActivities",
            self.autoscaling.describe_scaling_activities().auto_scaling_group_name(name).max_records(10).send().await,
        )?;
        Ok(out
            .activities()
            .iter()
            .map(|a| ScalingActivity {
                status_code: a.status_code().map(|s| s.as_str().to_string()).unwrap_or_default(),
                status_message: a.status_message().map(str::to_string),
                description: a.description().map(str::to_string),
            })
            .collect())
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
                .set_associate_public_ip_address(lc.associate_public_ip_address)
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
