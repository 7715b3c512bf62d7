//! Batched reads shared by every resource of one AWS target (account, region, credentials): one
//! DescribeClusters answers for up to 100 clusters, one DescribeAutoScalingGroups for many groups,
//! one DescribeLaunchTemplates (by a name filter) for many templates, one GetParameters for 10
//! parameters. A resource that glances at its cluster ([`crate::reconcile::glance`]) asks the
//! cache; a stale entry is fetched together with the other names that have waited longest, so a
//! fleet costs about one request per 100 resources instead of one each.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use aws_sdk_ec2::types::Filter;
use aws_sdk_ecs::types::ClusterField;

use super::{
    AwsClients, AwsError, autoscaling::AutoScalingGroup, autoscaling::group_of, ec2::LaunchTemplate,
    ec2::launch_template_of, ecs::Cluster, ecs::cluster_of,
};

/// Names nobody asked for in this long are dropped from the batches.
const FORGET_AFTER: Duration = Duration::from_secs(3600);

/// The batched views of one target.
#[derive(Debug, Default)]
pub struct FleetCache {
    clusters: Batched<Cluster>,
    groups: Batched<AutoScalingGroup>,
    launch_templates: Batched<LaunchTemplate>,
    parameters: Batched<String>,
}

#[derive(Debug)]
struct Entry<V> {
    value: Option<V>,
    /// When the answer holding `value` arrived; `None`: never fetched.
    fetched: Option<Instant>,
    asked: Instant,
}

/// One kind of batched read: the latest answer per name, and one request in flight at a time.
#[derive(Debug)]
struct Batched<V> {
    entries: Mutex<HashMap<String, Entry<V>>>,
    flight: tokio::sync::Mutex<()>,
}

impl<V> Default for Batched<V> {
    fn default() -> Self {
        Self { entries: Default::default(), flight: Default::default() }
    }
}

impl<V: Clone> Batched<V> {
    /// `Some(answer)` when `name` was fetched no earlier than `not_before`.
    fn fresh(&self, name: &str, not_before: Instant) -> Option<Option<V>> {
        let mut entries = self.entries.lock().unwrap();
        let e = entries.entry(name.to_string()).or_insert(Entry { value: None, fetched: None, asked: Instant::now() });
        e.asked = Instant::now();
        e.fetched.filter(|f| *f >= not_before).map(|_| e.value.clone())
    }

    /// `name` as AWS had it at `not_before` or later; fetched with up to `batch - 1` other names
    /// (those fetched longest ago first) when the answer held is older.
    async fn get<F, Fut>(&self, name: &str, not_before: Instant, batch: usize, fetch: F) -> Result<Option<V>, AwsError>
    where
        F: FnOnce(Vec<String>) -> Fut,
        Fut: Future<Output = Result<HashMap<String, V>, AwsError>>,
    {
        if let Some(v) = self.fresh(name, not_before) {
            return Ok(v);
        }
        let _flight = self.flight.lock().await;
        // Another request may have answered for this name while we waited for ours.
        if let Some(v) = self.fresh(name, not_before) {
            return Ok(v);
        }
        let names = {
            let mut entries = self.entries.lock().unwrap();
            entries.retain(|_, e| e.asked.elapsed() < FORGET_AFTER);
            let mut others: Vec<(&String, Option<Instant>)> =
                entries.iter().filter(|(n, _)| n.as_str() != name).map(|(n, e)| (n, e.fetched)).collect();
            others.sort_by_key(|(_, fetched)| *fetched);
            let mut names = vec![name.to_string()];
            names.extend(others.into_iter().take(batch.saturating_sub(1)).map(|(n, _)| n.clone()));
            names
        };
        // An answer tells how things were when its request was sent, not when it arrived: a
        // change made while it was under way (our own create, say) may not be in it.
        let now = Instant::now();
        let answers = fetch(names.clone()).await?;
        let mut entries = self.entries.lock().unwrap();
        for n in names {
            let value = answers.get(&n).cloned();
            let e = entries.entry(n).or_insert(Entry { value: None, fetched: None, asked: now });
            e.value = value;
            e.fetched = Some(now);
        }
        Ok(entries.get(name).and_then(|e| e.value.clone()))
    }
}

impl AwsClients {
    /// The cluster (not INACTIVE) as of `not_before` or later, batched with others.
    pub async fn glance_cluster(&self, name: &str, not_before: Instant) -> Result<Option<Cluster>, AwsError> {
        self.fleet.clusters.get(name, not_before, 100, |names| self.describe_clusters(names)).await
    }

    pub async fn glance_auto_scaling_group(
        &self,
        name: &str,
        not_before: Instant,
    ) -> Result<Option<AutoScalingGroup>, AwsError> {
        self.fleet.groups.get(name, not_before, 50, |names| self.describe_auto_scaling_groups(names)).await
    }

    pub async fn glance_launch_template(
        &self,
        name: &str,
        not_before: Instant,
    ) -> Result<Option<LaunchTemplate>, AwsError> {
        self.fleet.launch_templates.get(name, not_before, 100, |names| self.describe_launch_templates(names)).await
    }

    pub async fn glance_ssm_parameter(&self, name: &str, not_before: Instant) -> Result<Option<String>, AwsError> {
        self.fleet.parameters.get(name, not_before, 10, |names| self.get_ssm_parameters(names)).await
    }

    async fn describe_clusters(&self, names: Vec<String>) -> Result<HashMap<String, Cluster>, AwsError> {
        let out = self.finish(
            "ecs:DescribeClusters",
            self.ecs.describe_clusters().set_clusters(Some(names)).include(ClusterField::Tags).send().await,
        )?;
        Ok(out
            .clusters()
            .iter()
            .filter(|c| c.status() != Some("INACTIVE"))
            .map(|c| (c.cluster_name().unwrap_or_default().to_string(), cluster_of(c)))
            .collect())
    }

    async fn describe_auto_scaling_groups(
        &self,
        names: Vec<String>,
    ) -> Result<HashMap<String, AutoScalingGroup>, AwsError> {
        let mut found = HashMap::new();
        let mut token = None;
        loop {
            let req = self
                .autoscaling
                .describe_auto_scaling_groups()
                .set_auto_scaling_group_names(Some(names.clone()))
                .set_next_token(token);
            let out = self.finish("autoscaling:DescribeAutoScalingGroups", req.send().await)?;
            found.extend(out.auto_scaling_groups().iter().map(|g| {
                let g = group_of(g);
                (g.name.clone(), g)
            }));
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(found);
            }
        }
    }

    /// By a name filter, which (unlike `LaunchTemplateNames`) does not fail the whole request when
    /// one of the names does not exist.
    async fn describe_launch_templates(&self, names: Vec<String>) -> Result<HashMap<String, LaunchTemplate>, AwsError> {
        let mut found = HashMap::new();
        let mut token = None;
        loop {
            let req = self
                .ec2
                .describe_launch_templates()
                .filters(Filter::builder().name("launch-template-name").set_values(Some(names.clone())).build())
                .set_next_token(token);
            let out = self.finish("ec2:DescribeLaunchTemplates", req.send().await)?;
            found.extend(out.launch_templates().iter().map(|t| {
                let t = launch_template_of(t);
                (t.name.clone(), t)
            }));
            token = out.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(found);
            }
        }
    }

    async fn get_ssm_parameters(&self, names: Vec<String>) -> Result<HashMap<String, String>, AwsError> {
        let out = self.finish("ssm:GetParameters", self.ssm.get_parameters().set_names(Some(names)).send().await)?;
        Ok(out.parameters().iter().filter_map(|p| Some((p.name()?.to_string(), p.value()?.to_string()))).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ago(d: Duration) -> Instant {
        Instant::now().checked_sub(d).unwrap_or_else(Instant::now)
    }

    fn answer(names: &[String], calls: &Mutex<Vec<Vec<String>>>) -> HashMap<String, String> {
        calls.lock().unwrap().push(names.to_vec());
        names.iter().filter(|n| !n.starts_with("missing")).map(|n| (n.clone(), format!("v-{n}"))).collect()
    }

    #[tokio::test]
    async fn a_stale_name_is_fetched_with_the_names_fetched_longest_ago() {
        let b = Batched::<String>::default();
        let calls = Mutex::new(vec![]);
        let fetch = |names: Vec<String>| {
            let r = answer(&names, &calls);
            async move { Ok::<_, AwsError>(r) }
        };
        let long = ago(Duration::from_secs(600));
        assert_eq!(b.get("a", long, 3, fetch).await.unwrap().as_deref(), Some("v-a"));
        assert_eq!(b.get("b", long, 3, fetch).await.unwrap().as_deref(), Some("v-b"));
        assert_eq!(b.get("missing", long, 3, fetch).await.unwrap(), None, "looked at, not there");
        // Fresh enough: answered from the cache, no request.
        assert_eq!(b.get("a", long, 3, fetch).await.unwrap().as_deref(), Some("v-a"));
        assert_eq!(calls.lock().unwrap().len(), 3);
        // Wanting it newer than the cache: one request, with the two others fetched longest ago.
        assert_eq!(b.get("b", Instant::now(), 3, fetch).await.unwrap().as_deref(), Some("v-b"));
        let mut last = calls.lock().unwrap().last().unwrap().clone();
        assert_eq!(last[0], "b");
        last[1..].sort();
        assert_eq!(last, ["b", "a", "missing"]);
    }

    #[tokio::test]
    async fn concurrent_askers_share_one_request() {
        let b = std::sync::Arc::new(Batched::<String>::default());
        let calls = std::sync::Arc::new(Mutex::new(vec![]));
        // Every name known (asked once), then all stale together.
        for n in ["a", "b", "c"] {
            b.fresh(n, Instant::now());
        }
        let mut tasks = vec![];
        for n in ["a", "b", "c"] {
            let (b, calls) = (b.clone(), calls.clone());
            tasks.push(tokio::spawn(async move {
                b.get(n, ago(Duration::from_secs(60)), 100, |names: Vec<String>| {
                    let r = answer(&names, &calls);
                    async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        Ok::<_, AwsError>(r)
                    }
                })
                .await
                .unwrap()
            }));
        }
        for t in tasks {
            assert!(t.await.unwrap().is_some());
        }
        assert_eq!(calls.lock().unwrap().len(), 1, "one request answered all three");
    }

    #[tokio::test]
    async fn an_answer_sent_before_a_change_does_not_show_it() {
        let b = std::sync::Arc::new(Batched::<String>::default());
        let calls = std::sync::Arc::new(Mutex::new(vec![]));
        let slow = {
            let (b, calls) = (b.clone(), calls.clone());
            tokio::spawn(async move {
                b.get("a", Instant::now(), 10, |names: Vec<String>| {
                    let r = answer(&names, &calls);
                    async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        Ok::<_, AwsError>(r)
                    }
                })
                .await
            })
        };
        tokio::time::sleep(Duration::from_millis(30)).await;
        let changed = Instant::now(); // say, our own create, while that request was under way
        slow.await.unwrap().unwrap();
        let fetch = |names: Vec<String>| {
            let r = answer(&names, &calls);
            async move { Ok::<_, AwsError>(r) }
        };
        b.get("a", changed, 10, fetch).await.unwrap();
        assert_eq!(calls.lock().unwrap().len(), 2, "the answer that arrived after the change was sent before it");
    }
}
