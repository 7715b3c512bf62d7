//! EC2 and SSM calls: launch templates, the default VPC's subnets, security groups, the AMI.

use aws_sdk_ec2::types::{
    Filter, LaunchTemplateIamInstanceProfileSpecificationRequest,
    LaunchTemplateInstanceNetworkInterfaceSpecificationRequest, RequestLaunchTemplateData, ResourceType, Tag,
    TagSpecification,
};

use super::{AwsClients, AwsError, InstanceSpec, Tags};

#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTemplate {
    pub id: String,
    pub name: String,
    pub default_version: i64,
    pub latest_version: i64,
    pub tags: Tags,
}

/// One version of a launch template. Its description carries the hash of the launch data we
/// made it from (versions are immutable), so whether it is current is read from AWS.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchTemplateVersion {
    pub number: i64,
    pub description: Option<String>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct NewLaunchTemplate {
    pub instance: InstanceSpec,
    /// The launch-data hash, stored as the version description.
    pub description: String,
    pub client_token: String,
    pub tags: Tags,
}

/// The launch data of a template version. Security groups go on the network interface when we
/// must set one (to send the public-IP choice), else at the top level.
fn launch_template_data(lt: &InstanceSpec, tags: &Tags) -> RequestLaunchTemplateData {
    use base64::Engine;
    let profile = if lt.instance_profile.starts_with("arn:") {
        LaunchTemplateIamInstanceProfileSpecificationRequest::builder().arn(&lt.instance_profile).build()
    } else {
        LaunchTemplateIamInstanceProfileSpecificationRequest::builder().name(&lt.instance_profile).build()
    };
    let mut data = RequestLaunchTemplateData::builder()
        .image_id(&lt.image_id)
        .instance_type(lt.instance_type.as_str().into())
        .iam_instance_profile(profile)
        .set_key_name(lt.key_name.clone())
        .user_data(base64::engine::general_purpose::STANDARD.encode(&lt.user_data))
        .tag_specifications(
            aws_sdk_ec2::types::LaunchTemplateTagSpecificationRequest::builder()
                .resource_type(ResourceType::Instance)
                .set_tags(Some(ec2_tags(tags)))
                .build(),
        );
    data = match lt.associate_public_ip_address {
        Some(public) => data.network_interfaces(
            LaunchTemplateInstanceNetworkInterfaceSpecificationRequest::builder()
                .device_index(0)
                .associate_public_ip_address(public)
                .set_groups(Some(lt.security_group_ids.clone()))
                .build(),
        ),
        None if lt.security_group_ids.is_empty() => data,
        None => data.set_security_group_ids(Some(lt.security_group_ids.clone())),
    };
    data.build()
}

fn ec2_tags(tags: &Tags) -> Vec<Tag> {
    tags.iter().map(|(k, v)| Tag::builder().key(k).value(v).build()).collect()
}

pub(super) fn launch_template_of(t: &aws_sdk_ec2::types::LaunchTemplate) -> LaunchTemplate {
    LaunchTemplate {
        id: t.launch_template_id().unwrap_or_default().to_string(),
        name: t.launch_template_name().unwrap_or_default().to_string(),
        default_version: t.default_version_number().unwrap_or(1),
        latest_version: t.latest_version_number().unwrap_or(1),
        tags: t.tags().iter().filter_map(|t| Some((t.key()?.to_string(), t.value()?.to_string()))).collect(),
    }
}

impl AwsClients {
    pub async fn describe_launch_template(&self, name: &str) -> Result<Option<LaunchTemplate>, AwsError> {
        let result = self.finish(
            "ec2:DescribeLaunchTemplates",
            self.ec2.describe_launch_templates().launch_template_names(name).send().await,
        );
        let out = match result {
            Ok(out) => out,
            Err(e) if e.code_is("InvalidLaunchTemplateName.NotFoundException") => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(out.launch_templates().iter().find(|t| t.launch_template_name() == Some(name)).map(launch_template_of))
    }

    pub async fn create_launch_template(&self, new: &NewLaunchTemplate) -> Result<LaunchTemplate, AwsError> {
        let lt = &new.instance;
        let out = self.finish(
            "ec2:CreateLaunchTemplate",
            self.ec2
                .create_launch_template()
                .launch_template_name(&lt.name)
                .version_description(&new.description)
                .launch_template_data(launch_template_data(lt, &new.tags))
                .client_token(&new.client_token)
                .tag_specifications(
                    TagSpecification::builder()
                        .resource_type(ResourceType::LaunchTemplate)
                        .set_tags(Some(ec2_tags(&new.tags)))
                        .build(),
                )
                .send()
                .await,
        )?;
        let t = out.launch_template();
        Ok(LaunchTemplate {
            id: t.and_then(|t| t.launch_template_id()).unwrap_or_default().to_string(),
            name: lt.name.clone(),
            default_version: 1,
            latest_version: 1,
            tags: new.tags.clone(),
        })
    }

    /// A new version of template `id` with `new`'s launch data; returns its number.
    pub async fn create_launch_template_version(&self, id: &str, new: &NewLaunchTemplate) -> Result<i64, AwsError> {
        let out = self.finish(
            "ec2:CreateLaunchTemplateVersion",
            self.ec2
                .create_launch_template_version()
                .launch_template_id(id)
                .version_description(&new.description)
                .launch_template_data(launch_template_data(&new.instance, &new.tags))
                .client_token(&new.client_token)
                .send()
                .await,
        )?;
        Ok(out.launch_template_version().and_then(|v| v.version_number()).unwrap_or_default())
    }

    /// Makes `version` the template's default.
    pub async fn set_default_launch_template_version(&self, id: &str, version: i64) -> Result<(), AwsError> {
        self.finish(
            "ec2:ModifyLaunchTemplate",
            self.ec2.modify_launch_template().launch_template_id(id).default_version(version.to_string()).send().await,
        )?;
        Ok(())
    }

    /// Versions of template `id`: `versions` such as `["$Default"]`, or all of them when empty.
    pub async fn describe_launch_template_versions(
        &self,
        id: &str,
        versions: &[&str],
    ) -> Result<Vec<LaunchTemplateVersion>, AwsError> {
        let mut result = Vec::new();
        let mut token = None;
        loop {
            let mut req = self.ec2.describe_launch_template_versions().launch_template_id(id).set_next_token(token);
            for v in versions {
                req = req.versions(*v);
            }
            let out = self.finish("ec2:DescribeLaunchTemplateVersions", req.send().await)?;
            result.extend(out.launch_template_versions().iter().map(|v| LaunchTemplateVersion {
                number: v.version_number().unwrap_or_default(),
                description: v.version_description().map(str::to_string),
            }));
            token = out.next_token().filter(|t| !t.is_empty()).map(str::to_string);
            if token.is_none() {
                break;
            }
        }
        Ok(result)
    }

    pub async fn delete_launch_template(&self, id: &str) -> Result<(), AwsError> {
        match self
            .finish("ec2:DeleteLaunchTemplate", self.ec2.delete_launch_template().launch_template_id(id).send().await)
        {
            Ok(_) => Ok(()),
            Err(e) if e.code.as_deref().is_some_and(|c| c.starts_with("InvalidLaunchTemplateId")) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The default VPC and its default subnets; `None` and empty when the account has no default VPC.
    pub async fn default_subnets(&self) -> Result<(Option<String>, Vec<String>), AwsError> {
        let vpcs = self.finish(
            "ec2:DescribeVpcs",
            self.ec2.describe_vpcs().filters(Filter::builder().name("is-default").values("true").build()).send().await,
        )?;
        let Some(vpc) = vpcs.vpcs().first().and_then(|v| v.vpc_id()) else { return Ok((None, vec![])) };
        let out = self.finish(
            "ec2:DescribeSubnets",
            self.ec2
                .describe_subnets()
                .filters(Filter::builder().name("vpc-id").values(vpc).build())
                .filters(Filter::builder().name("default-for-az").values("true").build())
                .send()
                .await,
        )?;
        let mut ids: Vec<String> = out.subnets().iter().filter_map(|s| s.subnet_id().map(str::to_string)).collect();
        ids.sort();
        Ok((Some(vpc.to_string()), ids))
    }

    /// The VPC of the given subnets, and those of them that do not exist.
    pub async fn describe_subnets(&self, ids: &[String]) -> Result<(Option<String>, Vec<String>), AwsError> {
        let out = self.finish(
            "ec2:DescribeSubnets",
            self.ec2
                .describe_subnets()
                .filters(Filter::builder().name("subnet-id").set_values(Some(ids.to_vec())).build())
                .send()
                .await,
        )?;
        let found: Vec<&str> = out.subnets().iter().filter_map(|s| s.subnet_id()).collect();
        let missing = ids.iter().filter(|id| !found.contains(&id.as_str())).cloned().collect();
        Ok((out.subnets().first().and_then(|s| s.vpc_id()).map(str::to_string), missing))
    }

    /// Resolves security groups given by name (looked up in `vpc`, where names are unique) or
    /// `sg-` id to ids. Returns the ids found and the names or ids that do not exist.
    pub async fn resolve_security_groups(
        &self,
        groups: &[String],
        vpc: Option<&str>,
    ) -> Result<(Vec<String>, Vec<String>), AwsError> {
        let mut found = Vec::new();
        let mut missing = Vec::new();
        for g in groups {
            let mut req = if g.starts_with("sg-") {
                self.ec2.describe_security_groups().filters(Filter::builder().name("group-id").values(g).build())
            } else {
                self.ec2.describe_security_groups().filters(Filter::builder().name("group-name").values(g).build())
            };
            if let Some(vpc) = vpc {
                req = req.filters(Filter::builder().name("vpc-id").values(vpc).build());
            }
            let out = self.finish("ec2:DescribeSecurityGroups", req.send().await)?;
            match out.security_groups().first().and_then(|s| s.group_id()) {
                Some(id) => found.push(id.to_string()),
                None => missing.push(g.clone()),
            }
        }
        Ok((found, missing))
    }

    /// The value of an SSM parameter (an AMI id); `None` when it does not exist.
    /// Instance id -> private DNS name (the host name a Defender reports).
    pub async fn describe_instance_hostnames(
        &self,
        ids: &[String],
    ) -> Result<std::collections::BTreeMap<String, String>, AwsError> {
        let mut names = std::collections::BTreeMap::new();
        for chunk in ids.chunks(100) {
            let mut token = None;
            loop {
                let out = self.finish(
                    "ec2:DescribeInstances",
                    self.ec2
                        .describe_instances()
                        .set_instance_ids(Some(chunk.to_vec()))
                        .set_next_token(token)
                        .send()
                        .await,
                )?;
                for i in out.reservations().iter().flat_map(|r| r.instances()) {
                    if let (Some(id), Some(dns)) = (i.instance_id(), i.private_dns_name()) {
                        names.insert(id.to_string(), dns.to_string());
                    }
                }
                token = out.next_token().filter(|t| !t.is_empty()).map(str::to_string);
                if token.is_none() {
                    break;
                }
            }
        }
        Ok(names)
    }

    /// Whether an AMI exists (and is visible to this account).
    /// Whether EC2 offers the instance type in this region.
    pub async fn instance_type_exists(&self, instance_type: &str) -> Result<bool, AwsError> {
        let t = aws_sdk_ec2::types::InstanceType::from(instance_type);
        let out = self.ec2.describe_instance_types().instance_types(t).send().await;
        match self.finish("ec2:DescribeInstanceTypes", out) {
            Ok(out) => Ok(!out.instance_types().is_empty()),
            Err(e) if e.code.as_deref().is_some_and(|c| c.starts_with("InvalidInstanceType")) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the EC2 key pair exists (instances launched with a missing one fail).
    pub async fn key_pair_exists(&self, name: &str) -> Result<bool, AwsError> {
        match self.finish("ec2:DescribeKeyPairs", self.ec2.describe_key_pairs().key_names(name).send().await) {
            Ok(out) => Ok(!out.key_pairs().is_empty()),
            Err(e) if e.code.as_deref().is_some_and(|c| c.starts_with("InvalidKeyPair")) => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Whether the IAM instance profile exists (a launch with a missing one fails as a scaling
    /// activity, after the group exists).
    pub async fn instance_profile_exists(&self, name: &str) -> Result<bool, AwsError> {
        let out = self.iam.get_instance_profile().instance_profile_name(name).send().await;
        match self.finish("iam:GetInstanceProfile", out) {
            Ok(_) => Ok(true),
            Err(e) if e.code.as_deref() == Some("NoSuchEntity") => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn image_exists(&self, image_id: &str) -> Result<bool, AwsError> {
        match self.finish("ec2:DescribeImages", self.ec2.describe_images().image_ids(image_id).send().await) {
            Ok(out) => Ok(!out.images().is_empty()),
            Err(e) if e.code.as_deref().is_some_and(|c| c.starts_with("InvalidAMIID")) => Ok(false),
            Err(e) => Err(e),
        }
    }
}
