//! The seam between the ECS world (which plays the Defender containers) and the Console simulator
//! (which shows them as connected). The ECS world calls these when a Defender task starts or stops.

/// A Defender container started by ECS on an EC2 instance.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DefenderStart {
    /// `INSTALL_BUNDLE` from the task definition's environment (opaque; only the issuing Console knows it).
    pub install_bundle: String,
    /// `WS_ADDRESS` from the task definition's environment, if set.
    pub ws_address: Option<String>,
    /// The cluster name the Defender reports: `DEFENDER_CLUSTER` if set, else the ECS cluster's name.
    pub cluster: String,
    /// EC2 instance id (`cloudMetadata.resourceID` on the Console).
    pub instance_id: String,
    /// The instance's private DNS name (the Defender's `hostname`).
    pub hostname: String,
    pub account_id: String,
    pub region: String,
    pub instance_type: String,
}

/// Something Defenders connect to: a Console simulator.
pub trait DefenderRegistry: Send + Sync {
    /// A Defender started; returns whether it connected (an install bundle this Console did not
    /// issue never connects, as a Defender with foreign certificates would not).
    fn defender_started(&self, defender: &DefenderStart) -> bool;
    /// The Defender on this EC2 instance stopped: it shows as disconnected.
    fn defender_stopped(&self, instance_id: &str);
}
