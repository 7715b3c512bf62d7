//! (pure) What the ECS agent registers for an instance type: CPU units (1024 per vCPU), memory in
//! MiB, and the CPU architecture. ECS registers less memory than the instance has (the kernel and
//! the agent keep some); the figures below are the instance's MiB less that overhead, close to what
//! `DescribeContainerInstances` shows for the ECS-optimized AMI (exact figures vary by AMI).

/// `x86_64` or `arm64`, as EC2 names architectures.
pub const X86_64: &str = "x86_64";
pub const ARM64: &str = "arm64";

/// Resources in ECS units.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Resources {
    /// CPU units (1024 per vCPU).
    pub cpu: i64,
    /// MiB.
    pub memory: i64,
}

impl Resources {
    pub fn fits_in(&self, available: &Resources) -> bool {
        self.cpu <= available.cpu && self.memory <= available.memory
    }

    pub fn minus(&self, other: &Resources) -> Resources {
        Resources { cpu: self.cpu - other.cpu, memory: self.memory - other.memory }
    }
}

/// (type, vCPUs, GiB of memory). Graviton families (`*g.`) are arm64.
const TYPES: &[(&str, i64, f64)] = &[
    ("t2.nano", 1, 0.5),
    ("t2.micro", 1, 1.0),
    ("t2.small", 1, 2.0),
    ("t2.medium", 2, 4.0),
    ("t2.large", 2, 8.0),
    ("t2.xlarge", 4, 16.0),
    ("t3.nano", 2, 0.5),
    ("t3.micro", 2, 1.0),
    ("t3.small", 2, 2.0),
    ("t3.medium", 2, 4.0),
    ("t3.large", 2, 8.0),
    ("t3.xlarge", 4, 16.0),
    ("t3a.medium", 2, 4.0),
    ("t3a.large", 2, 8.0),
    ("t4g.micro", 2, 1.0),
    ("t4g.small", 2, 2.0),
    ("t4g.medium", 2, 4.0),
    ("t4g.large", 2, 8.0),
    ("m5.large", 2, 8.0),
    ("m5.xlarge", 4, 16.0),
    ("m6g.large", 2, 8.0),
    ("m6i.large", 2, 8.0),
    ("m7g.large", 2, 8.0),
    ("c5.large", 2, 4.0),
    ("c5.xlarge", 4, 8.0),
    ("c6g.large", 2, 4.0),
    ("r5.large", 2, 16.0),
];

/// MiB the OS and the agent keep on the ECS-optimized AMI (of the order AWS shows).
const RESERVED_MIB: f64 = 0.035;
const MIN_RESERVED_MIB: i64 = 64;

/// The architecture of an instance type: Graviton families (`t4g`, `m6g`, `c7g`, ...) are arm64.
pub fn architecture(instance_type: &str) -> &'static str {
    let family = instance_type.split('.').next().unwrap_or_default();
    // A Graviton family is a letter, a generation digit, then `g` (and maybe more letters: `m6gd`).
    let bytes = family.as_bytes();
    let graviton = bytes.len() >= 3 && bytes[1].is_ascii_digit() && bytes[2] == b'g';
    if graviton { ARM64 } else { X86_64 }
}

/// What the agent registers for `instance_type`; `None` for a type this table does not know (the
/// world then places without a resource check, as it did before this table).
pub fn registered_resources(instance_type: &str) -> Option<Resources> {
    let (_, vcpus, gib) = TYPES.iter().find(|(t, _, _)| *t == instance_type)?;
    let mib = (gib * 1024.0) as i64;
    let reserved = ((mib as f64 * RESERVED_MIB) as i64).max(MIN_RESERVED_MIB);
    Some(Resources { cpu: vcpus * 1024, memory: mib - reserved })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_types_register_their_cpu_and_most_of_their_memory() {
        let r = registered_resources("t2.medium").unwrap();
        assert_eq!(r.cpu, 2048);
        assert!(r.memory > 3800 && r.memory < 4096, "{r:?}");
        let nano = registered_resources("t2.nano").unwrap();
        assert!(nano.memory < 512, "a 512 MiB task does not fit a t2.nano: {nano:?}");
        assert_eq!(registered_resources("x9.huge"), None);
    }

    #[test]
    fn graviton_families_are_arm64() {
        assert_eq!(architecture("t4g.medium"), ARM64);
        assert_eq!(architecture("m6gd.large"), ARM64);
        assert_eq!(architecture("t3.medium"), X86_64);
        assert_eq!(architecture("g5.xlarge"), X86_64, "a GPU family, not Graviton");
    }
}
