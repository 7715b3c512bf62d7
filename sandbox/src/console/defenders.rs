//! (pure) Defender records as the Console lists them (`defender.Defender`, reference §3), and the
//! filters and paging of `GET /defenders` and `/defenders/names`.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Value, json};
use sha2::{Digest as _, Sha256};

/// `type` of a Defender started from the ECS task definition (`DEFENDER_TYPE=ecs`).
pub const DEFENDER_TYPE_ECS: &str = "ecs";
/// The only category ECS Defenders have.
pub const CATEGORY_CONTAINER: &str = "container";
/// The default page size and the SaaS maximum of `limit` (self-hosted allows 250).
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// [inferred] The licence count `/defenders/summary` reports; the real one comes from the licence.
pub const LICENSED_DEFENDERS: u64 = 1000;

/// One Defender the Console knows, connected or not.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Defender {
    /// The instance's private DNS name; the key of the record (and of `DELETE /defenders/{id}`).
    pub hostname: String,
    /// EC2 instance id (`cloudMetadata.resourceID`).
    pub instance_id: String,
    pub cluster: String,
    pub account_id: String,
    pub region: String,
    pub instance_type: String,
    /// The Defender's own version: that of the Console that issued its install bundle.
    pub version: String,
    pub connected: bool,
    /// When `connected` last changed.
    pub last_modified: DateTime<Utc>,
    /// The project whose install bundle it runs ("Central Console" without projects).
    pub project: String,
    /// Before this, `cluster` shows empty ([`super::ConsoleVariant::ClusterLate`]).
    pub cluster_visible_at: DateTime<Utc>,
}

/// How a Console variant renders records ([`super::ConsoleVariant`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Rendering {
    pub now: DateTime<Utc>,
    /// No `cloudMetadata.resourceID`.
    pub hostname_only: bool,
    /// Fields our types do not know.
    pub unknown_fields: bool,
}

impl Rendering {
    pub fn as_documented(now: DateTime<Utc>) -> Rendering {
        Rendering { now, hostname_only: false, unknown_fields: false }
    }
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

/// A stable UUID-shaped id for a cluster name (the real `clusterID` is a UUID).
fn cluster_id(cluster: &str) -> String {
    let h = hex::encode(Sha256::digest(cluster.as_bytes()));
    format!("{}-{}-{}-{}-{}", &h[..8], &h[8..12], &h[12..16], &h[16..20], &h[20..32])
}

impl Defender {
    /// The wire form, with the reference's field names (`accountID`, `resourceID` with capital ID).
    /// [inferred] The ECS-specific values (`clusterType: ECS`, `awsExecutionEnv: AWS_ECS_EC2`,
    /// `region` = the AWS region) follow the reference's guess for an ECS Defender element.
    pub fn to_json(&self) -> Value {
        self.render(&Rendering::as_documented(self.cluster_visible_at))
    }

    /// The cluster as the Console shows it at `now` (empty before it is known).
    pub fn cluster_at(&self, now: DateTime<Utc>) -> &str {
        if now < self.cluster_visible_at { "" } else { &self.cluster }
    }

    /// The wire form as a Console variant shows it.
    pub fn render(&self, r: &Rendering) -> Value {
        let cluster = self.cluster_at(r.now);
        let mut v = json!({
            "hostname": self.hostname,
            "version": self.version,
            "lastModified": rfc3339(self.last_modified),
            "type": DEFENDER_TYPE_ECS,
            "category": CATEGORY_CONTAINER,
            "connected": self.connected,
            "features": {"proxyListenerType": "none", "clusterMonitoring": false},
            "status": {
                "lastModified": rfc3339(self.last_modified),
                "filesystem": {"enabled": true},
                "process": {"enabled": true},
                "network": {"enabled": true},
                "features": {},
            },
            "fqdn": self.hostname,
            "collections": ["All"],
            "cloudMetadata": {
                "provider": "aws",
                "accountID": self.account_id,
                "region": self.region,
                "resourceID": self.instance_id,
                "name": self.hostname,
                "type": self.instance_type,
                "awsExecutionEnv": "AWS_ECS_EC2",
            },
            "cluster": cluster,
            "clusterID": if cluster.is_empty() { String::new() } else { cluster_id(cluster) },
            "clusterType": "ECS",
            "tasBlobstoreScanner": false,
            "systemInfo": {"cpuCount": 2, "kernelVersion": "6.1.0-amzn2023", "totalDiskSpaceGB": 30, "freeDiskSpaceGB": 20, "memoryGB": 3.8},
            "remoteMgmtSupported": false,
            "remoteLoggingSupported": true,
            "firewallProtection": {"enabled": false, "supported": false, "outOfBandMode": ""},
            "proxy": {"httpProxy": "", "noProxy": "", "ca": "", "user": "", "password": {"encrypted": ""}},
            "port": 8084,
            "compatibleVersion": true,
            "usingOldCA": false,
            "isARM64": false,
        });
        if r.hostname_only
            && let Some(meta) = v.get_mut("cloudMetadata").and_then(Value::as_object_mut)
        {
            meta.remove("resourceID");
        }
        if r.unknown_fields {
            v["agentlessScanEnabled"] = json!(false);
            v["runtimeVersion"] = json!({"name": "containerd", "version": "1.7.27"});
            v["cloudMetadata"]["tags"] = json!([{"key": "aws:autoscaling:groupName", "value": "unknown"}]);
        }
        v
    }
}

/// The filters and page of one `GET /defenders` (or `/defenders/names`) call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefenderQuery {
    pub clusters: Vec<String>,
    pub types: Vec<String>,
    pub hostname: Option<String>,
    pub connected: Option<bool>,
    pub reverse: bool,
    pub offset: usize,
    pub limit: usize,
}

fn parse_bool(key: &str, v: &str) -> Result<bool, String> {
    match v {
        "true" => Ok(true),
        "false" => Ok(false),
        _ => Err(format!("invalid value {v:?} for {key}: want true or false")),
    }
}

fn parse_count(key: &str, v: &str) -> Result<usize, String> {
    v.parse().map_err(|_| format!("invalid value {v:?} for {key}: want a non-negative integer"))
}

/// Parses the query. Arrays repeat the key (`cluster=a&cluster=b`); [inferred] comma-separated
/// values are accepted too. Unknown parameters (`sort`, `role`, ...) are ignored. `limit` absent
/// or 0 means the default page; larger values are clamped to `max_page`.
pub fn parse_defender_query(pairs: &[(String, String)], max_page: usize) -> Result<DefenderQuery, String> {
    let mut q = DefenderQuery { limit: DEFAULT_PAGE_SIZE.min(max_page), ..Default::default() };
    let split = |v: &str| v.split(',').map(str::trim).filter(|s| !s.is_empty()).map(String::from).collect::<Vec<_>>();
    for (k, v) in pairs {
        match k.as_str() {
            "cluster" => q.clusters.extend(split(v)),
            "type" => q.types.extend(split(v)),
            "hostname" if !v.is_empty() => q.hostname = Some(v.clone()),
            "connected" if !v.is_empty() => q.connected = Some(parse_bool(k, v)?),
            "reverse" if !v.is_empty() => q.reverse = parse_bool(k, v)?,
            "offset" if !v.is_empty() => q.offset = parse_count(k, v)?,
            "limit" if !v.is_empty() => {
                let n = parse_count(k, v)?;
                q.limit = if n == 0 { DEFAULT_PAGE_SIZE.min(max_page) } else { n.min(max_page) };
            }
            _ => {}
        }
    }
    Ok(q)
}

/// The page of `defenders` in `project` that match `q`, sorted by hostname, and the total
/// number that match (the `Total-Count` header).
pub fn select_defenders<'a>(
    defenders: &'a [Defender],
    project: &str,
    q: &DefenderQuery,
    now: DateTime<Utc>,
) -> (Vec<&'a Defender>, usize) {
    let mut hits: Vec<&Defender> = defenders
        .iter()
        .filter(|d| d.project == project)
        .filter(|d| q.clusters.is_empty() || q.clusters.iter().any(|c| c == d.cluster_at(now)))
        .filter(|_| q.types.is_empty() || q.types.iter().any(|t| t == DEFENDER_TYPE_ECS))
        .filter(|d| q.hostname.as_ref().is_none_or(|h| *h == d.hostname))
        .filter(|d| q.connected.is_none_or(|c| c == d.connected))
        .collect();
    // [inferred] The real default order is not documented; hostname order makes paging stable.
    hits.sort_by(|a, b| a.hostname.cmp(&b.hostname));
    if q.reverse {
        hits.reverse();
    }
    let total = hits.len();
    let page = hits.into_iter().skip(q.offset).take(q.limit).collect();
    (page, total)
}

/// `GET /defenders/summary`: one `types.DefenderSummary` per category (only `container` here).
pub fn build_summary<'a>(defenders: impl Iterator<Item = &'a Defender>) -> Value {
    let (mut deployed, mut connected) = (0u64, 0u64);
    for d in defenders {
        deployed += 1;
        connected += u64::from(d.connected);
    }
    json!([{"category": CATEGORY_CONTAINER, "connected": connected, "deployed": deployed, "licensed": LICENSED_DEFENDERS}])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(host: &str, cluster: &str, connected: bool) -> Defender {
        Defender {
            hostname: host.into(),
            instance_id: format!("i-{host}"),
            cluster: cluster.into(),
            account_id: "123456789012".into(),
            region: "us-east-1".into(),
            instance_type: "t3.small".into(),
            version: "34.03.138".into(),
            connected,
            last_modified: DateTime::UNIX_EPOCH,
            project: "Central Console".into(),
            cluster_visible_at: DateTime::UNIX_EPOCH,
        }
    }

    fn pairs(q: &str) -> Vec<(String, String)> {
        url::form_urlencoded::parse(q.as_bytes()).into_owned().collect()
    }

    #[test]
    fn query_parsing_clamps_and_rejects() {
        let q = parse_defender_query(&pairs("cluster=a&cluster=b,c&connected=true&limit=500&offset=3"), 50).unwrap();
        assert_eq!(q.clusters, ["a", "b", "c"]);
        assert_eq!((q.connected, q.limit, q.offset), (Some(true), 50, 3));
        assert_eq!(parse_defender_query(&pairs("limit=0"), 50).unwrap().limit, 50);
        assert_eq!(parse_defender_query(&pairs("limit=10&sort=hostname"), 50).unwrap().limit, 10);
        assert_eq!(parse_defender_query(&pairs("limit=200"), 250).unwrap().limit, 200);
        assert!(parse_defender_query(&pairs("connected=yes"), 50).is_err());
        assert!(parse_defender_query(&pairs("limit=-1"), 50).is_err());
        assert!(parse_defender_query(&pairs("offset=x"), 50).is_err());
    }

    #[test]
    fn selection_filters_sorts_and_pages() {
        let all = vec![d("c", "x", true), d("a", "x", false), d("b", "y", true), d("e", "x", true)];
        let mut other = d("z", "x", true);
        other.project = "p2".into();
        let all = [all, vec![other]].concat();
        let q = |s: &str| parse_defender_query(&pairs(s), 2).unwrap();
        let hosts = |v: Vec<&Defender>| v.iter().map(|d| d.hostname.clone()).collect::<Vec<_>>();
        let (page, total) = select_defenders(&all, "Central Console", &q(""), Utc::now());
        assert_eq!((hosts(page), total), (vec!["a".to_string(), "b".into()], 4));
        let (page, total) = select_defenders(&all, "Central Console", &q("offset=2"), Utc::now());
        assert_eq!((hosts(page), total), (vec!["c".to_string(), "e".into()], 4));
        let (page, total) = select_defenders(&all, "Central Console", &q("cluster=x&connected=true"), Utc::now());
        assert_eq!((hosts(page), total), (vec!["c".to_string(), "e".into()], 2));
        let (page, _) = select_defenders(&all, "Central Console", &q("hostname=b"), Utc::now());
        assert_eq!(hosts(page), ["b"]);
        assert_eq!(select_defenders(&all, "Central Console", &q("type=daemonset"), Utc::now()).1, 0);
        assert_eq!(select_defenders(&all, "Central Console", &q("type=ecs"), Utc::now()).1, 4);
        assert_eq!(select_defenders(&all, "p2", &q(""), Utc::now()).1, 1);
    }

    #[test]
    fn wire_form_uses_the_reference_field_names() {
        let v = d("ip-10-0-1-23.ec2.internal", "prod", true).to_json();
        assert_eq!(v["cloudMetadata"]["resourceID"], "i-ip-10-0-1-23.ec2.internal");
        assert_eq!(v["cloudMetadata"]["accountID"], "123456789012");
        assert_eq!(v["type"], "ecs");
        assert_eq!(v["lastModified"], "1970-01-01T00:00:00.000Z");
        assert_eq!(v["clusterID"].as_str().unwrap().len(), 36);
        let summary = build_summary([d("a", "x", true), d("b", "x", false)].iter());
        assert_eq!(summary, json!([{"category": "container", "connected": 1, "deployed": 2, "licensed": 1000}]));
    }

    #[test]
    fn variants_hide_the_cluster_for_a_while_or_the_instance_id() {
        let mut late = d("a", "x", true);
        late.cluster_visible_at = DateTime::UNIX_EPOCH + chrono::Duration::seconds(10);
        let early = DateTime::UNIX_EPOCH + chrono::Duration::seconds(5);
        let r = Rendering { now: early, hostname_only: true, unknown_fields: true };
        let v = late.render(&r);
        assert_eq!(v["cluster"], "");
        assert!(v["cloudMetadata"].get("resourceID").is_none());
        assert_eq!(v["agentlessScanEnabled"], false);
        let q = parse_defender_query(&pairs("cluster=x"), 50).unwrap();
        assert_eq!(select_defenders(std::slice::from_ref(&late), "Central Console", &q, early).1, 0);
        let later = DateTime::UNIX_EPOCH + chrono::Duration::seconds(11);
        assert_eq!(select_defenders(std::slice::from_ref(&late), "Central Console", &q, later).1, 1);
        assert_eq!(late.render(&Rendering::as_documented(later))["cluster"], "x");
    }
}
