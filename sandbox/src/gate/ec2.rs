//! EC2 as AWS runs it, where moto differs on the calls the operator makes:
//!
//! - launch template versions: moto stores the user data of CreateLaunchTemplateVersion unparsed and
//!   then fails (HTTP 500) every launch from that version; it does not implement
//!   DeleteLaunchTemplateVersions, and a new version inherits nothing from its `SourceVersion`. The
//!   gate keeps versions' user data and deleted versions itself and fills in what the source had.
//! - TerminateInstances of an Auto Scaling instance: moto relaunches at once from the group's
//!   template; the gate detaches the instance first and lets its own launcher replace it
//!   ([`super::autoscaling`]), as AWS's health checks would.
//! - paging of the describe calls ([`super::paging`]).

use std::collections::{BTreeSet, HashMap};

use anyhow::Result;
use bytes::Bytes;

use super::{Ctx, Reply, Shared, paging, protocol, upstream::Side, xml::Node};

pub(crate) const XMLNS: &str = "http://ec2.amazonaws.com/doc/2016-11-15/";

/// Where a launch template lives.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct TemplateKey {
    account: String,
    region: String,
    id: String,
}

/// What the gate keeps of one launch template.
#[derive(Clone, Debug, Default)]
pub(crate) struct TemplateState {
    /// Base64 user data of versions >= 2, by version number.
    user_data: HashMap<i64, String>,
    deleted: BTreeSet<i64>,
}

#[derive(Debug, Default)]
pub(crate) struct Templates {
    templates: HashMap<TemplateKey, TemplateState>,
}

/// One resolved launch template version.
#[derive(Clone, Debug)]
pub(crate) struct TemplateVersion {
    pub id: String,
    pub name: String,
    pub number: i64,
    pub default: bool,
    /// `launchTemplateData` as moto describes it, with the gate's user data.
    pub data: Node,
}

pub(crate) async fn handle(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    match ctx.id.operation.as_str() {
        "CreateLaunchTemplateVersion" => create_version(sh, ctx).await,
        "DescribeLaunchTemplateVersions" => describe_versions(sh, ctx).await,
        "DeleteLaunchTemplateVersions" => delete_versions(sh, ctx).await,
        "TerminateInstances" => terminate_instances(sh, ctx).await,
        op if paging::ec2_list(op).is_some() => paging::ec2_describe(sh, ctx).await,
        _ => Ok(sh.forward(ctx, None).await?.into_response()),
    }
}

fn key(account: &str, region: &str, id: &str) -> TemplateKey {
    TemplateKey { account: account.to_string(), region: region.to_string(), id: id.to_string() }
}

fn form_without(ctx: &Ctx, drop: &[&str]) -> Bytes {
    let form: Vec<(&str, &str)> = ctx
        .id
        .form
        .iter()
        .filter(|(k, _)| !drop.contains(&k.as_str()))
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    Bytes::from(serde_urlencoded::to_string(&form).unwrap_or_default())
}

/// Inherits what the request leaves out from `SourceVersion` (moto inherits nothing), forwards
/// without the user data (moto would store it unparsed and fail every launch from it), keeps the
/// user data, and answers with it as AWS does.
async fn create_version(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let mut form: Vec<(String, String)> = ctx.id.form.clone();
    if let Some(source) = ctx.id.param("SourceVersion") {
        let side = sh.side(ctx);
        let (id, name) = (ctx.id.param("LaunchTemplateId"), ctx.id.param("LaunchTemplateName"));
        if let Some(v) = resolve_version(sh, &side, &ctx.account, id, name, source).await {
            let given: BTreeSet<String> = form.iter().filter_map(|(k, _)| data_field(k)).collect();
            form.extend(
                request_params(&v.data).into_iter().filter(|(k, _)| data_field(k).is_some_and(|f| !given.contains(&f))),
            );
        }
        form.retain(|(k, _)| k != "SourceVersion");
    }
    let user_data = form.iter().find(|(k, _)| k == "LaunchTemplateData.UserData").map(|(_, v)| v.clone());
    form.retain(|(k, _)| k != "LaunchTemplateData.UserData");
    let body = serde_urlencoded::to_string(&form).unwrap_or_default();
    let raw = sh.forward(ctx, Some(Bytes::from(body))).await?;
    let Some(user_data) = user_data.filter(|_| raw.status == 200) else { return Ok(raw.into_response()) };
    let Ok(mut doc) = super::xml::parse(&String::from_utf8_lossy(&raw.body)) else { return Ok(raw.into_response()) };
    let Some(version) = doc.child_mut("launchTemplateVersion") else { return Ok(raw.into_response()) };
    let id = version.text_of("launchTemplateId").unwrap_or_default().to_string();
    let number: i64 = version.text_of("versionNumber").and_then(|v| v.parse().ok()).unwrap_or(0);
    if let Some(data) = version.child_mut("launchTemplateData") {
        data.set("userData", &user_data);
    }
    sh.templates
        .lock()
        .unwrap()
        .templates
        .entry(key(&ctx.account, &ctx.id.region, &id))
        .or_default()
        .user_data
        .insert(number, user_data);
    Ok(xml_reply(&doc))
}

/// `LaunchTemplateData.SecurityGroupId.2` -> `SecurityGroupId`: the field a parameter sets.
fn data_field(param: &str) -> Option<String> {
    param.strip_prefix("LaunchTemplateData.").map(|rest| rest.split('.').next().unwrap_or(rest).to_string())
}

/// A version's `launchTemplateData` (as DescribeLaunchTemplateVersions shows it) as the request
/// parameters that would create it: the fields the operator's launch data uses.
fn request_params(d: &Node) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = Vec::new();
    let mut put = |k: String, v: &str| out.push((format!("LaunchTemplateData.{k}"), v.to_string()));
    for (xml, param) in [
        ("imageId", "ImageId"),
        ("instanceType", "InstanceType"),
        ("keyName", "KeyName"),
        ("userData", "UserData"),
        ("ebsOptimized", "EbsOptimized"),
    ] {
        if let Some(v) = d.text_of(xml) {
            put(param.to_string(), v);
        }
    }
    if let Some(p) = d.child("iamInstanceProfile") {
        for (xml, param) in [("name", "Name"), ("arn", "Arn")] {
            if let Some(v) = p.text_of(xml) {
                put(format!("IamInstanceProfile.{param}"), v);
            }
        }
    }
    let leaves = |n: Option<&Node>| -> Vec<String> {
        n.map(|n| n.children.iter().map(|c| c.text.trim().to_string()).filter(|s| !s.is_empty()).collect())
            .unwrap_or_default()
    };
    for (i, g) in leaves(d.child("securityGroupIdSet")).iter().enumerate() {
        put(format!("SecurityGroupId.{}", i + 1), g);
    }
    for (i, g) in leaves(d.child("securityGroupSet")).iter().enumerate() {
        put(format!("SecurityGroup.{}", i + 1), g);
    }
    for (i, nic) in d.child("networkInterfaceSet").into_iter().flat_map(|s| s.children.iter()).enumerate() {
        let n = i + 1;
        for (xml, param) in [
            ("associatePublicIpAddress", "AssociatePublicIpAddress"),
            ("deviceIndex", "DeviceIndex"),
            ("subnetId", "SubnetId"),
            ("deleteOnTermination", "DeleteOnTermination"),
        ] {
            if let Some(v) = nic.text_of(xml) {
                put(format!("NetworkInterface.{n}.{param}"), v);
            }
        }
        for (j, g) in leaves(nic.child("groupSet")).iter().enumerate() {
            put(format!("NetworkInterface.{n}.SecurityGroupId.{}", j + 1), g);
        }
    }
    for (i, spec) in d.child("tagSpecificationSet").into_iter().flat_map(|s| s.children.iter()).enumerate() {
        let n = i + 1;
        if let Some(t) = spec.text_of("resourceType") {
            put(format!("TagSpecification.{n}.ResourceType"), t);
        }
        for (j, tag) in spec.child("tagSet").into_iter().flat_map(|s| s.children.iter()).enumerate() {
            put(format!("TagSpecification.{n}.Tag.{}.Key", j + 1), tag.text_of("key").unwrap_or_default());
            put(format!("TagSpecification.{n}.Tag.{}.Value", j + 1), tag.text_of("value").unwrap_or_default());
        }
    }
    if let Some(m) = d.child("metadataOptions") {
        for (xml, param) in [
            ("httpTokens", "HttpTokens"),
            ("httpPutResponseHopLimit", "HttpPutResponseHopLimit"),
            ("httpEndpoint", "HttpEndpoint"),
        ] {
            if let Some(v) = m.text_of(xml) {
                put(format!("MetadataOptions.{param}"), v);
            }
        }
    }
    out
}

/// Adds the kept user data, drops deleted versions, pages.
async fn describe_versions(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let raw = sh.forward(ctx, Some(form_without(ctx, &["MaxResults", "NextToken"]))).await?;
    if raw.status != 200 {
        return Ok(raw.into_response());
    }
    let Ok(mut doc) = super::xml::parse(&String::from_utf8_lossy(&raw.body)) else { return Ok(raw.into_response()) };
    if let Some(set) = doc.child_mut("launchTemplateVersionSet") {
        let templates = sh.templates.lock().unwrap();
        set.children.retain_mut(|item| {
            let id = item.text_of("launchTemplateId").unwrap_or_default().to_string();
            let number: i64 = item.text_of("versionNumber").and_then(|v| v.parse().ok()).unwrap_or(0);
            let Some(state) = templates.templates.get(&key(&ctx.account, &ctx.id.region, &id)) else { return true };
            if state.deleted.contains(&number) {
                return false;
            }
            if let (Some(ud), Some(data)) = (state.user_data.get(&number), item.child_mut("launchTemplateData")) {
                data.set("userData", ud);
            }
            true
        });
    }
    Ok(paging::page_ec2(sh, ctx, doc, "launchTemplateVersionSet"))
}

/// moto does not implement DeleteLaunchTemplateVersions; the gate hides deleted versions.
async fn delete_versions(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let side = sh.side(ctx);
    let by_id = ctx.id.param("LaunchTemplateId").map(str::to_string);
    let by_name = ctx.id.param("LaunchTemplateName").map(str::to_string);
    let numbers: Vec<String> =
        ctx.id.form.iter().filter(|(k, _)| k.starts_with("LaunchTemplateVersion.")).map(|(_, v)| v.clone()).collect();
    let versions = match all_versions(&side, by_id.as_deref(), by_name.as_deref()).await {
        Ok(v) => v,
        Err(_) => {
            let msg = match (&by_id, &by_name) {
                (Some(id), _) => format!("The specified launch template, with template ID {id}, does not exist."),
                (_, Some(name)) => format!("The specified launch template, with template name {name}, does not exist."),
                _ => "The request must contain the parameter LaunchTemplateName or LaunchTemplateId".to_string(),
            };
            let code = if by_id.is_some() {
                "InvalidLaunchTemplateId.NotFound"
            } else {
                "InvalidLaunchTemplateName.NotFoundException"
            };
            return Ok(protocol::error_response("ec2", 400, code, &msg));
        }
    };
    let (id, name) = versions.first().map(|v| (v.id.clone(), v.name.clone())).unwrap_or_default();
    let mut ok = Vec::new();
    let mut failed = Vec::new();
    {
        let mut templates = sh.templates.lock().unwrap();
        let state = templates.templates.entry(key(&ctx.account, &ctx.id.region, &id)).or_default();
        for n in numbers {
            let number: i64 = n.parse().unwrap_or(0);
            let version = versions.iter().find(|v| v.number == number && !state.deleted.contains(&number));
            let item = |extra: Vec<Node>| {
                let mut c = vec![
                    Node::leaf("launchTemplateId", &id),
                    Node::leaf("launchTemplateName", &name),
                    Node::leaf("versionNumber", number.to_string()),
                ];
                c.extend(extra);
                Node::parent("item", c)
            };
            let error = |code: &str, msg: &str| {
                vec![Node::parent("responseError", vec![Node::leaf("code", code), Node::leaf("message", msg)])]
            };
            match version {
                None => failed.push(item(error(
                    "launchTemplateVersionDoesNotExist",
                    "The specified launch template version does not exist.",
                ))),
                Some(v) if v.default => failed.push(item(error(
                    "launchTemplateVersionIsDefault",
                    "Cannot delete the default version of a launch template. To delete the default version, delete the launch template.",
                ))),
                Some(_) => {
                    state.deleted.insert(number);
                    ok.push(item(vec![]));
                }
            }
        }
    }
    let doc = Node::parent(
        "DeleteLaunchTemplateVersionsResponse",
        vec![
            Node::leaf("requestId", uuid::Uuid::new_v4().to_string()),
            Node::parent("successfullyDeletedLaunchTemplateVersionSet", ok),
            Node::parent("unsuccessfullyDeletedLaunchTemplateVersionSet", failed),
        ],
    );
    Ok(xml_reply(&doc))
}

/// Every version of a template as moto holds it.
async fn all_versions(side: &Side<'_>, id: Option<&str>, name: Option<&str>) -> Result<Vec<TemplateVersion>> {
    let mut params = vec![("MaxResults", "200".to_string())];
    if let Some(id) = id {
        params.push(("LaunchTemplateId", id.to_string()));
    } else if let Some(name) = name {
        params.push(("LaunchTemplateName", name.to_string()));
    }
    let doc = side.ec2("DescribeLaunchTemplateVersions", &params).await?;
    let mut out = Vec::new();
    for item in doc.child("launchTemplateVersionSet").into_iter().flat_map(|s| s.children_named("item")) {
        let data = item.child("launchTemplateData").cloned().unwrap_or_else(|| Node::leaf("launchTemplateData", ""));
        out.push(TemplateVersion {
            default: item.text_of("defaultVersion") == Some("true"),
            id: item.text_of("launchTemplateId").unwrap_or_default().to_string(),
            name: item.text_of("launchTemplateName").unwrap_or_default().to_string(),
            number: item.text_of("versionNumber").and_then(|v| v.parse().ok()).unwrap_or(0),
            data,
        });
    }
    if out.is_empty() {
        anyhow::bail!("launch template not found");
    }
    Ok(out)
}

/// Resolves `$Latest`, `$Default` or a number of a template (by id or name) to its version, with
/// the gate's user data and deleted versions applied. `None`: no such template or version.
pub(crate) async fn resolve_version(
    sh: &Shared,
    side: &Side<'_>,
    account: &str,
    id: Option<&str>,
    name: Option<&str>,
    spec: &str,
) -> Option<TemplateVersion> {
    let versions = all_versions(side, id, name).await.ok()?;
    let template_id = versions.first()?.id.clone();
    let state = sh.templates.lock().unwrap().templates.get(&key(account, side.region(), &template_id)).cloned();
    let state = state.unwrap_or_default();
    let live: Vec<&TemplateVersion> = versions.iter().filter(|v| !state.deleted.contains(&v.number)).collect();
    let chosen = match spec {
        "$Latest" => live.iter().max_by_key(|v| v.number).copied(),
        "" | "$Default" => live.iter().find(|v| v.default).copied(),
        n => n.parse::<i64>().ok().and_then(|n| live.iter().find(|v| v.number == n).copied()),
    }?;
    let mut version = chosen.clone();
    if let Some(ud) = state.user_data.get(&version.number) {
        version.data.set("userData", ud);
    }
    Some(version)
}

/// Terminating an Auto Scaling instance: detached first, so moto does not relaunch it from the
/// group's template; the gate's launcher replaces it.
async fn terminate_instances(sh: &Shared, ctx: &Ctx) -> Result<Reply> {
    let ids: Vec<String> =
        ctx.id.form.iter().filter(|(k, _)| k.starts_with("InstanceId.")).map(|(_, v)| v.clone()).collect();
    let _guard = sh.rules_lock.lock().await;
    super::autoscaling::before_ec2_terminate(sh, ctx, &ids).await;
    Ok(sh.forward(ctx, None).await?.into_response())
}

pub(crate) fn xml_reply(doc: &Node) -> Reply {
    http::Response::builder()
        .status(200)
        .header("content-type", "text/xml;charset=UTF-8")
        .body(http_body_util::Full::new(Bytes::from(doc.to_document(XMLNS))))
        .expect("static response")
}
