//! (pure) Whether an EC2 instance can reach the internet, as AWS decides it: the ECS agent and the
//! Defender both dial out (to the ECS endpoint, to the Console), so an instance without a way out
//! never registers and its Defender never connects.
//!
//! A way out is either a public IP in a subnet whose route table sends `0.0.0.0/0` to an internet
//! gateway, or a `0.0.0.0/0` route to a NAT gateway (public IP or not). The public IP is decided at
//! launch: the launch data's `AssociatePublicIpAddress` when set, else the subnet's
//! `MapPublicIpOnLaunch`. A subnet without an explicit route-table association uses its VPC's main
//! route table.

use std::collections::BTreeMap;

/// The destination of a default route.
pub const DEFAULT_ROUTE: &str = "0.0.0.0/0";

/// One subnet as EC2 describes it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Subnet {
    pub id: String,
    pub vpc_id: String,
    pub map_public_ip_on_launch: bool,
}

/// One route table: its default route's target, and what it is associated with.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RouteTable {
    pub id: String,
    pub vpc_id: String,
    /// The main route table of its VPC (used by subnets without an association).
    pub main: bool,
    pub subnet_ids: Vec<String>,
    /// The `0.0.0.0/0` route goes to an internet gateway (`igw-...`).
    pub default_to_igw: bool,
    /// The `0.0.0.0/0` route goes to a NAT gateway (`nat-...`).
    pub default_to_nat: bool,
}

/// The network as one round of the ECS world sees it.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Network {
    pub subnets: BTreeMap<String, Subnet>,
    pub route_tables: Vec<RouteTable>,
}

/// Why an instance cannot reach the internet (for logs and tests).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoRoute {
    UnknownSubnet(String),
    /// The subnet's route table has no internet gateway or NAT default route.
    NoDefaultRoute {
        subnet: String,
        route_table: Option<String>,
    },
    /// An internet gateway route, but no public IP (and no NAT).
    NoPublicIp {
        subnet: String,
    },
}

impl std::fmt::Display for NoRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NoRoute::UnknownSubnet(s) => write!(f, "subnet {s} is unknown"),
            NoRoute::NoDefaultRoute { subnet, route_table } => write!(
                f,
                "route table {} of subnet {subnet} has no 0.0.0.0/0 route to an internet or NAT gateway",
                route_table.as_deref().unwrap_or("(none)")
            ),
            NoRoute::NoPublicIp { subnet } => {
                write!(f, "no public IP in subnet {subnet}, whose only way out is an internet gateway")
            }
        }
    }
}

/// Whether the instance gets a public IP: the launch data's explicit choice wins over the subnet's
/// `MapPublicIpOnLaunch` (AWS: "AssociatePublicIpAddress ... overrides the subnet's setting").
pub fn public_ip_at_launch(launch_data: Option<bool>, subnet: &Subnet) -> bool {
    launch_data.unwrap_or(subnet.map_public_ip_on_launch)
}

impl Network {
    /// The route table a subnet uses: its explicit association, else its VPC's main table.
    pub fn route_table_of(&self, subnet: &Subnet) -> Option<&RouteTable> {
        self.route_tables
            .iter()
            .find(|t| t.subnet_ids.contains(&subnet.id))
            .or_else(|| self.route_tables.iter().find(|t| t.main && t.vpc_id == subnet.vpc_id))
    }

    /// `Ok(())` when an instance in `subnet_id` with (or without) a public IP reaches the internet.
    pub fn internet_access(&self, subnet_id: &str, public_ip: bool) -> Result<(), NoRoute> {
        let subnet = self.subnets.get(subnet_id).ok_or_else(|| NoRoute::UnknownSubnet(subnet_id.to_string()))?;
        let table = self.route_table_of(subnet);
        match table {
            Some(t) if t.default_to_nat => Ok(()),
            Some(t) if t.default_to_igw && public_ip => Ok(()),
            Some(t) if t.default_to_igw => Err(NoRoute::NoPublicIp { subnet: subnet.id.clone() }),
            _ => Err(NoRoute::NoDefaultRoute { subnet: subnet.id.clone(), route_table: table.map(|t| t.id.clone()) }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(igw: bool, nat: bool, map_public: bool) -> Network {
        let subnet = Subnet { id: "subnet-1".into(), vpc_id: "vpc-1".into(), map_public_ip_on_launch: map_public };
        let main = RouteTable {
            id: "rtb-main".into(),
            vpc_id: "vpc-1".into(),
            main: true,
            subnet_ids: vec![],
            default_to_igw: igw,
            default_to_nat: false,
        };
        let private = RouteTable {
            id: "rtb-private".into(),
            vpc_id: "vpc-1".into(),
            main: false,
            subnet_ids: vec!["subnet-2".into()],
            default_to_igw: false,
            default_to_nat: nat,
        };
        let subnet2 = Subnet { id: "subnet-2".into(), ..subnet.clone() };
        Network {
            subnets: [("subnet-1".to_string(), subnet), ("subnet-2".to_string(), subnet2)].into(),
            route_tables: vec![main, private],
        }
    }

    #[test]
    fn public_ip_follows_the_subnet_unless_the_launch_data_says_otherwise() {
        let s = Subnet { map_public_ip_on_launch: true, ..Default::default() };
        assert!(public_ip_at_launch(None, &s));
        assert!(!public_ip_at_launch(Some(false), &s), "an explicit false overrides a public subnet");
        let s = Subnet { map_public_ip_on_launch: false, ..Default::default() };
        assert!(public_ip_at_launch(Some(true), &s));
        assert!(!public_ip_at_launch(None, &s));
    }

    #[test]
    fn a_public_ip_needs_an_internet_gateway_and_a_nat_needs_none() {
        let n = net(true, false, true);
        assert_eq!(n.internet_access("subnet-1", true), Ok(()));
        assert_eq!(n.internet_access("subnet-1", false), Err(NoRoute::NoPublicIp { subnet: "subnet-1".into() }));
        // subnet-2 uses its own table: no way out without a NAT, whatever the IP.
        assert!(matches!(n.internet_access("subnet-2", true), Err(NoRoute::NoDefaultRoute { .. })));
        let n = net(false, true, false);
        assert!(n.internet_access("subnet-1", true).is_err(), "the main table has no default route");
        assert_eq!(n.internet_access("subnet-2", false), Ok(()), "a NAT needs no public IP");
        assert_eq!(n.internet_access("subnet-9", true), Err(NoRoute::UnknownSubnet("subnet-9".into())));
    }
}
