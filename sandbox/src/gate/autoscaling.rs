//! Auto Scaling rules moto does not enforce: duplicate group names, deleting a group that still has
//! instances, group size validation, deleting a launch configuration in use.

use anyhow::Result;

use super::{Ctx, Reply, Shared, protocol, upstream::Side, xml::Node};

const VERSION: &str = "2011-01-01";

pub(crate) async fn handle(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let refusal = match ctx.id.operation.as_str() {
        "CreateAutoScalingGroup"
        | "UpdateAutoScalingGroup"
        | "SetDesiredCapacity"
        | "DeleteAutoScalingGroup"
        | "DeleteLaunchConfiguration" => {
            let _guard = sh.rules_lock.lock().await;
            let refusal = check(sh, ctx).await;
            if refusal.is_none() {
                return Ok(sh.forward(ctx, None).await?.into_response());
            }
            refusal
        }
        _ => None,
    };
    match refusal {
        Some((code, message)) => Ok(protocol::error_response("autoscaling", 400, code, &message)),
        None => Ok(sh.forward(ctx, None).await?.into_response()),
    }
}

/// A group as the rules need it.
#[derive(Debug, PartialEq)]
struct Group {
    name: String,
    min: i64,
    max: i64,
    instances: usize,
    launch_configuration: Option<String>,
}

/// The refusal AWS would answer, if any. Side-query failures let the call through (moto answers).
async fn check(sh: &Shared, ctx: &Ctx) -> Option<(&'static str, String)> {
    let id = &ctx.id;
    let side = sh.side(ctx);
    let int = |k: &str| id.param(k).and_then(|v| v.parse::<i64>().ok());
    let name = id.param("AutoScalingGroupName").unwrap_or_default().to_string();
    match id.operation.as_str() {
        "CreateAutoScalingGroup" => {
            if let (Some(min), Some(max)) = (int("MinSize"), int("MaxSize"))
                && let Some(msg) = validate_sizes(min, max, int("DesiredCapacity"))
            {
                return Some(("ValidationError", msg));
            }
            match describe(&side, Some(&name)).await {
                Ok(groups) if !groups.is_empty() => Some((
                    "AlreadyExists",
                    format!(
                        "AutoScalingGroup by this name already exists - A group with the name {name} already exists"
                    ),
                )),
                _ => None,
            }
        }
        "UpdateAutoScalingGroup" => {
            let group = describe(&side, Some(&name)).await.ok()?.into_iter().next()?;
            let min = int("MinSize").unwrap_or(group.min);
            let max = int("MaxSize").unwrap_or(group.max);
            // Without a desired capacity AWS moves the current one into the new bounds, which is valid.
            let desired = int("DesiredCapacity");
            validate_sizes(min, max, desired).map(|m| ("ValidationError", m))
        }
        "SetDesiredCapacity" => {
            let group = describe(&side, Some(&name)).await.ok()?.into_iter().next()?;
            let desired = int("DesiredCapacity")?;
            if desired > group.max {
                Some((
                    "ValidationError",
                    format!(
                        "New SetDesiredCapacity value {desired} is above max value {} for the AutoScalingGroup.",
                        group.max
                    ),
                ))
            } else if desired < group.min {
                Some((
                    "ValidationError",
                    format!(
                        "New SetDesiredCapacity value {desired} is below min value {} for the AutoScalingGroup.",
                        group.min
                    ),
                ))
            } else {
                None
            }
        }
        "DeleteAutoScalingGroup" => {
            if id.param("ForceDelete").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
                return None;
            }
            let group = describe(&side, Some(&name)).await.ok()?.into_iter().next()?;
            (group.instances > 0).then(|| {
                (
                    "ResourceInUse",
                    "You cannot delete an AutoScalingGroup while there are instances or pending Spot instance request(s) still in the group."
                        .to_string(),
                )
            })
        }
        "DeleteLaunchConfiguration" => {
            let lc = id.param("LaunchConfigurationName")?;
            let groups = describe(&side, None).await.ok()?;
            let user = groups.iter().find(|g| g.launch_configuration.as_deref() == Some(lc))?;
            Some((
                "ResourceInUse",
                format!(
                    "Cannot delete launch configuration {lc} because it is attached to AutoScalingGroup {}.",
                    user.name
                ),
            ))
        }
        _ => None,
    }
}

/// AWS's size rules: `min <= max`, and a given desired capacity within `[min, max]`.
fn validate_sizes(min: i64, max: i64, desired: Option<i64>) -> Option<String> {
    if min > max {
        return Some(format!("Max bound, {max}, must be greater than or equal to min bound, {min}"));
    }
    match desired {
        Some(d) if d < min || d > max => {
            Some(format!("Desired capacity:{d} must be between the specified min size:{min} and max size:{max}"))
        }
        _ => None,
    }
}

/// DescribeAutoScalingGroups on moto: one group by name, or all (paged).
async fn describe(side: &Side<'_>, name: Option<&str>) -> Result<Vec<Group>> {
    let mut out = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut params: Vec<(&str, String)> = Vec::new();
        if let Some(n) = name {
            params.push(("AutoScalingGroupNames.member.1", n.to_string()));
        }
        if let Some(t) = &token {
            params.push(("NextToken", t.clone()));
        }
        let doc = side.query("DescribeAutoScalingGroups", VERSION, &params).await?;
        let result = doc.child("DescribeAutoScalingGroupsResult");
        if let Some(groups) = doc.path(&["DescribeAutoScalingGroupsResult", "AutoScalingGroups"]) {
            out.extend(groups.children_named("member").map(parse_group));
        }
        token = result.and_then(|r| r.text_of("NextToken")).filter(|t| !t.is_empty()).map(str::to_string);
        if token.is_none() {
            return Ok(out);
        }
    }
}

fn parse_group(m: &Node) -> Group {
    let int = |k: &str| m.text_of(k).and_then(|v| v.parse().ok()).unwrap_or(0);
    Group {
        name: m.text_of("AutoScalingGroupName").unwrap_or_default().to_string(),
        min: int("MinSize"),
        max: int("MaxSize"),
        instances: m.child("Instances").map(|i| i.children_named("member").count()).unwrap_or(0),
        launch_configuration: m.text_of("LaunchConfigurationName").filter(|s| !s.is_empty()).map(str::to_string),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn size_rules() {
        assert_eq!(validate_sizes(1, 2, Some(2)), None);
        assert_eq!(validate_sizes(1, 2, None), None);
        assert_eq!(validate_sizes(3, 2, None).unwrap(), "Max bound, 2, must be greater than or equal to min bound, 3");
        assert_eq!(
            validate_sizes(1, 2, Some(5)).unwrap(),
            "Desired capacity:5 must be between the specified min size:1 and max size:2"
        );
        assert!(validate_sizes(1, 2, Some(0)).is_some());
    }

    #[test]
    fn parses_moto_groups() {
        let doc = super::super::xml::parse(
            r#"<DescribeAutoScalingGroupsResponse><DescribeAutoScalingGroupsResult><AutoScalingGroups><member>
            <AutoScalingGroupName>g</AutoScalingGroupName><MinSize>1</MinSize><MaxSize>2</MaxSize><DesiredCapacity>2</DesiredCapacity>
            <LaunchConfigurationName>lc</LaunchConfigurationName>
            <Instances><member><InstanceId>i-1</InstanceId></member><member><InstanceId>i-2</InstanceId></member></Instances>
            </member></AutoScalingGroups></DescribeAutoScalingGroupsResult></DescribeAutoScalingGroupsResponse>"#,
        )
        .unwrap();
        let m = doc.path(&["DescribeAutoScalingGroupsResult", "AutoScalingGroups", "member"]).unwrap();
        assert_eq!(
            parse_group(m),
            Group { name: "g".into(), min: 1, max: 2, instances: 2, launch_configuration: Some("lc".into()) }
        );
    }
}
