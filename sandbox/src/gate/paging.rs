//! Paging as AWS does it, and small pages on demand so callers' paging code runs in tests.
//!
//! moto answers most list calls in one page and never returns a token; the gate fetches everything
//! from moto and pages the answer itself with an opaque token of its own. The page is the smaller
//! of the caller's `maxResults`/`MaxRecords`/`MaxResults` (or AWS's default page) and the gate's
//! page size ([`super::GateConfig::page_size`], `POST /paging` on the control API), if set.
//!
//! EC2 describes page only when the caller sends `MaxResults`, as on AWS (without it AWS answers
//! everything); ECS list calls and the Auto Scaling describes always page, as on AWS.

use anyhow::Result;
use base64::Engine;
use bytes::Bytes;
use serde_json::{Value, json};

use super::{Ctx, Reply, Shared, ec2, xml::Node};

/// The list field of each ECS list call, and AWS's default page size.
pub(crate) fn ecs_list(operation: &str) -> Option<(&'static str, usize)> {
    Some(match operation {
        "ListClusters" => ("clusterArns", 100),
        "ListServices" => ("serviceArns", 10),
        "ListTasks" => ("taskArns", 100),
        "ListContainerInstances" => ("containerInstanceArns", 100),
        "ListTaskDefinitions" => ("taskDefinitionArns", 100),
        "ListTaskDefinitionFamilies" => ("families", 100),
        _ => return None,
    })
}

/// The item set of each EC2 describe call the operator makes.
pub(crate) fn ec2_list(operation: &str) -> Option<&'static str> {
    Some(match operation {
        "DescribeSubnets" => "subnetSet",
        "DescribeSecurityGroups" => "securityGroupInfo",
        "DescribeImages" => "imagesSet",
        "DescribeInstances" => "reservationSet",
        "DescribeVpcs" => "vpcSet",
        "DescribeLaunchTemplates" => "launchTemplates",
        "DescribeLaunchTemplateVersions" => "launchTemplateVersionSet",
        _ => return None,
    })
}

pub(crate) fn encode_token(offset: usize) -> String {
    base64::engine::general_purpose::STANDARD.encode(format!("gate-page:{offset}"))
}

pub(crate) fn decode_token(token: Option<&str>) -> usize {
    token
        .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok())
        .and_then(|b| String::from_utf8(b).ok())
        .and_then(|s| s.strip_prefix("gate-page:").and_then(|n| n.parse().ok()))
        .unwrap_or(0)
}

/// The page size for a call: the caller's limit (or AWS's default), lowered to the gate's if set.
pub(crate) fn page_size(sh: &Shared, asked: Option<usize>, default: usize) -> usize {
    let size = asked.filter(|n| *n > 0).unwrap_or(default);
    match sh.page_size() {
        Some(p) => size.min(p).max(1),
        None => size.max(1),
    }
}

/// `(page, next offset)` of `len` items.
pub(crate) fn window(len: usize, offset: usize, size: usize) -> (std::ops::Range<usize>, Option<usize>) {
    let start = offset.min(len);
    let end = (start + size).min(len);
    (start..end, (end < len).then_some(end))
}

/// An ECS list call: everything from moto (for ListTasks only the named cluster's tasks: moto
/// matches the cluster by substring), then one page.
pub(crate) async fn ecs_list_call(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let (field, default) = ecs_list(&ctx.id.operation).expect("an ECS list call");
    let Some(mut req) = ctx.id.json.clone().filter(Value::is_object) else {
        return Ok(sh.forward(ctx, None).await?.into_response());
    };
    let asked = req.get("maxResults").and_then(Value::as_u64).map(|n| n as usize);
    let offset = decode_token(req.get("nextToken").and_then(Value::as_str));
    req.as_object_mut().map(|o| {
        o.remove("maxResults");
        o.remove("nextToken")
    });
    let raw = sh.forward(ctx, Some(Bytes::from(req.to_string()))).await?;
    if raw.status != 200 {
        return Ok(raw.into_response());
    }
    let Some(mut body) = raw.json() else { return Ok(raw.into_response()) };
    let mut items: Vec<Value> = body.get(field).and_then(Value::as_array).cloned().unwrap_or_default();
    if ctx.id.operation == "ListTasks" {
        let cluster = super::ecs::cluster_name(req.get("cluster").and_then(Value::as_str));
        items.retain(|arn| arn.as_str().is_none_or(|a| task_in_cluster(a, &cluster)));
    }
    let (range, next) = window(items.len(), offset, page_size(sh, asked, default));
    body[field] = Value::Array(items[range].to_vec());
    match next {
        Some(n) => body["nextToken"] = json!(encode_token(n)),
        None => {
            body.as_object_mut().map(|o| o.remove("nextToken"));
        }
    }
    Ok(raw.with_json(&body).into_response())
}

/// Whether a task ARN (`arn:aws:ecs:r:a:task/<cluster>/<id>`) belongs to the cluster. Old-style
/// ARNs without the cluster are kept.
pub(crate) fn task_in_cluster(arn: &str, cluster: &str) -> bool {
    let Some(path) = arn.split_once(":task/").map(|(_, p)| p) else { return true };
    match path.split_once('/') {
        Some((c, _)) => c == cluster,
        None => true,
    }
}

/// An EC2 describe call: everything from moto, then one page if the caller asked for pages.
pub(crate) async fn ec2_describe(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let set = ec2_list(&ctx.id.operation).expect("an EC2 describe call");
    let mut form: Vec<(&str, &str)> = ctx
        .id
        .form
        .iter()
        .filter(|(k, _)| k != "MaxResults" && k != "NextToken")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    // moto cuts launch-template answers at 15 unless told otherwise.
    if ctx.id.operation.starts_with("DescribeLaunchTemplate") {
        form.push(("MaxResults", "200"));
    }
    let raw = sh.forward(ctx, Some(Bytes::from(serde_urlencoded::to_string(&form)?))).await?;
    if raw.status != 200 {
        return Ok(raw.into_response());
    }
    let Ok(doc) = super::xml::parse(&String::from_utf8_lossy(&raw.body)) else { return Ok(raw.into_response()) };
    Ok(page_ec2(sh, ctx, doc, set))
}

/// Pages an EC2 answer's item set (when the caller sent `MaxResults`) and answers it.
pub(crate) fn page_ec2(sh: &Shared, ctx: &Ctx, mut doc: Node, set: &str) -> Reply {
    if let Some(asked) = ctx.id.param("MaxResults").and_then(|v| v.parse::<usize>().ok()) {
        let offset = decode_token(ctx.id.param("NextToken"));
        let size = page_size(sh, Some(asked), asked);
        doc.remove("nextToken");
        if let Some(items) = doc.child_mut(set) {
            let (range, next) = window(items.children.len(), offset, size);
            items.children = items.children[range].to_vec();
            if let Some(n) = next {
                doc.children.push(Node::leaf("nextToken", encode_token(n)));
            }
        }
    }
    ec2::xml_reply(&doc)
}

/// Pages a query-protocol (Auto Scaling) answer: `members` are the items of the list at
/// `result/list`, `asked` the caller's `MaxRecords`.
pub(crate) fn page_query(sh: &Shared, ctx: &Ctx, members: Vec<Node>, default: usize) -> (Vec<Node>, Option<String>) {
    let asked = ctx.id.param("MaxRecords").and_then(|v| v.parse().ok());
    let offset = decode_token(ctx.id.param("NextToken"));
    let (range, next) = window(members.len(), offset, page_size(sh, asked, default));
    (members[range].to_vec(), next.map(encode_token))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_round_trip_and_windows_end() {
        assert_eq!(decode_token(Some(&encode_token(7))), 7);
        assert_eq!(decode_token(Some("garbage")), 0);
        assert_eq!(decode_token(None), 0);
        assert_eq!(window(5, 0, 2), (0..2, Some(2)));
        assert_eq!(window(5, 4, 2), (4..5, None));
        assert_eq!(window(5, 9, 2), (5..5, None));
        assert_eq!(window(0, 0, 2), (0..0, None));
    }

    #[test]
    fn tasks_belong_to_their_exact_cluster() {
        let arn = "arn:aws:ecs:us-east-1:123456789012:task/saassi/0123";
        assert!(task_in_cluster(arn, "saassi"));
        assert!(!task_in_cluster(arn, "saas"));
        assert!(task_in_cluster("arn:aws:ecs:us-east-1:123456789012:task/0123", "saas"));
    }
}
