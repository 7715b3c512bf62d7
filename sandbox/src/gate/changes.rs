//! What changed in moto through the gate, told to a listener (the ECS world), so the world looks
//! at what changed instead of re-reading everything: every mutating call the gate sends to moto,
//! its callers' and its own (Auto Scaling launches and terminations), is one [`Change`].

use std::sync::{Arc, RwLock};

use super::protocol::{self, Identified};

/// One mutating call that moto accepted.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Change {
    /// An ECS call naming this cluster (by name; `default` when it named none, as ECS reads it).
    EcsCluster { region: String, cluster: String },
    /// An EC2 call on these instances (launched, terminated, stopped, modified).
    Instances { region: String, ids: Vec<String> },
    /// Any other EC2 or Auto Scaling change: instances may come or go, the network may differ.
    Ec2 { region: String },
}

/// Told of every [`Change`]; called on the gate's request path, so it must be quick.
pub trait ChangeListener: Send + Sync {
    fn changed(&self, change: Change);
}

/// The listener slot shared by the gate's upstream handles.
#[derive(Clone, Default)]
pub(crate) struct Listener {
    inner: Arc<RwLock<Option<Arc<dyn ChangeListener>>>>,
}

impl Listener {
    pub(crate) fn set(&self, listener: Arc<dyn ChangeListener>) {
        *self.inner.write().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(listener);
    }

    pub(crate) fn get(&self) -> Option<Arc<dyn ChangeListener>> {
        self.inner.read().unwrap_or_else(std::sync::PoisonError::into_inner).clone()
    }
}

/// (pure) The change a call moto answered `status` with made, if any.
pub fn change_of(id: &Identified, status: u16, answer: &[u8]) -> Option<Change> {
    if status >= 300 || !protocol::is_mutating(&id.operation) {
        return None;
    }
    let region = id.region.clone();
    match id.service.as_str() {
        "ecs" => {
            let json = id.json.as_ref();
            let named = json.and_then(|j| j.get("cluster").or_else(|| j.get("clusterName"))).and_then(|v| v.as_str());
            // `arn:aws:ecs:<region>:<account>:cluster/<name>` or the name.
            let cluster = named.map(|c| c.rsplit_once(":cluster/").map_or(c, |(_, n)| n)).unwrap_or("default");
            Some(Change::EcsCluster { region, cluster: cluster.to_string() })
        }
        "ec2" if id.operation == "RunInstances" => Some(Change::Instances { region, ids: instance_ids(answer) }),
        "ec2" => {
            let ids: Vec<String> =
                id.form.iter().filter(|(k, _)| k.starts_with("InstanceId")).map(|(_, v)| v.clone()).collect();
            Some(if ids.is_empty() { Change::Ec2 { region } } else { Change::Instances { region, ids } })
        }
        "autoscaling" => Some(Change::Ec2 { region }),
        _ => None,
    }
}

/// The `<instanceId>`s of an EC2 answer.
fn instance_ids(answer: &[u8]) -> Vec<String> {
    const OPEN: &str = "<instanceId>";
    let text = String::from_utf8_lossy(answer);
    let mut out = Vec::new();
    let mut rest = text.as_ref();
    while let Some(start) = rest.find(OPEN) {
        rest = &rest[start + OPEN.len()..];
        let Some(end) = rest.find('<') else { break };
        out.push(rest[..end].to_string());
        rest = &rest[end..];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gate::protocol::Protocol;

    fn call(service: &str, operation: &str, json: Option<serde_json::Value>, form: &[(&str, &str)]) -> Identified {
        Identified {
            service: service.into(),
            operation: operation.into(),
            protocol: if json.is_some() { Protocol::Json } else { Protocol::Query },
            region: "eu-west-1".into(),
            json,
            form: form.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(),
        }
    }

    #[test]
    fn ecs_changes_name_their_cluster() {
        let create = call("ecs", "CreateService", Some(serde_json::json!({"cluster": "a", "serviceName": "s"})), &[]);
        let region = "eu-west-1".to_string();
        assert_eq!(
            change_of(&create, 200, b"{}"),
            Some(Change::EcsCluster { region: region.clone(), cluster: "a".into() })
        );
        let arn = serde_json::json!({"cluster": "arn:aws:ecs:eu-west-1:123456789012:cluster/b"});
        assert_eq!(
            change_of(&call("ecs", "UpdateService", Some(arn), &[]), 200, b"{}"),
            Some(Change::EcsCluster { region: region.clone(), cluster: "b".into() })
        );
        let new = call("ecs", "CreateCluster", Some(serde_json::json!({"clusterName": "c"})), &[]);
        assert_eq!(
            change_of(&new, 200, b"{}"),
            Some(Change::EcsCluster { region: region.clone(), cluster: "c".into() })
        );
        assert_eq!(change_of(&create, 400, b"{}"), None, "a refused call changed nothing");
        let read = call("ecs", "DescribeServices", Some(serde_json::json!({"cluster": "a"})), &[]);
        assert_eq!(change_of(&read, 200, b"{}"), None);
    }

    #[test]
    fn ec2_changes_name_their_instances() {
        let region = "eu-west-1".to_string();
        let answer = b"<RunInstancesResponse><instancesSet><item><instanceId>i-1</instanceId></item><item><instanceId>i-2</instanceId></item></instancesSet></RunInstancesResponse>";
        assert_eq!(
            change_of(&call("ec2", "RunInstances", None, &[("MinCount", "2")]), 200, answer),
            Some(Change::Instances { region: region.clone(), ids: vec!["i-1".into(), "i-2".into()] })
        );
        let terminate = call("ec2", "TerminateInstances", None, &[("InstanceId.1", "i-3")]);
        assert_eq!(
            change_of(&terminate, 200, b""),
            Some(Change::Instances { region: region.clone(), ids: vec!["i-3".into()] })
        );
        let route = call("ec2", "CreateRoute", None, &[("RouteTableId", "rtb-1")]);
        assert_eq!(change_of(&route, 200, b""), Some(Change::Ec2 { region: region.clone() }));
        let group = call("autoscaling", "UpdateAutoScalingGroup", None, &[]);
        assert_eq!(change_of(&group, 200, b""), Some(Change::Ec2 { region }));
    }
}
