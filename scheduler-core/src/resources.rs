//! The resource vector: CPU millicores, RAM bytes, disk bytes.

use serde::{Deserialize, Serialize};
use std::fmt;

/// A resource vector: what a task requests, what a machine offers, or what a machine holds.
///
/// All arithmetic saturates (never wraps), so a bookkeeping slip shows as zero free, not as a huge
/// number.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Resources {
    /// CPU in millicores (1000 = one core).
    pub cpu_millis: u64,
    /// RAM in bytes.
    pub ram_bytes: u64,
    /// Local disk in bytes.
    pub disk_bytes: u64,
    /// Network ports (a count: a task's named ports, a machine's port range). Concrete numbers
    /// are the state machine's business; the scheduler only counts them. Not under quota.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ports: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// One dimension of [`Resources`], for reasons and reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Resource {
    /// CPU, millicores.
    Cpu,
    /// RAM, bytes.
    Ram,
    /// Disk, bytes.
    Disk,
    /// Network ports, a count.
    Ports,
}

impl Resource {
    /// The divisible dimensions (cpu, ram, disk), in the order of [`Resources`]' fields: what
    /// utilization reports cover. Feasibility also checks [`Resource::Ports`].
    pub const ALL: [Resource; 3] = [Resource::Cpu, Resource::Ram, Resource::Disk];

    /// Lower-case name: `cpu`, `ram`, `disk`, `ports`.
    pub fn name(self) -> &'static str {
        match self {
            Resource::Cpu => "cpu",
            Resource::Ram => "ram",
            Resource::Disk => "disk",
            Resource::Ports => "ports",
        }
    }
}

impl Resources {
    /// The zero vector.
    pub const ZERO: Resources = Resources { cpu_millis: 0, ram_bytes: 0, disk_bytes: 0, ports: 0 };

    /// No limit in any dimension (`u64::MAX` each): a quota that does not limit a dimension.
    pub const UNLIMITED: Resources =
        Resources { cpu_millis: u64::MAX, ram_bytes: u64::MAX, disk_bytes: u64::MAX, ports: u64::MAX };

    /// A vector from its three divisible components (millicores, bytes, bytes), no ports.
    pub const fn new(cpu_millis: u64, ram_bytes: u64, disk_bytes: u64) -> Self {
        Resources { cpu_millis, ram_bytes, disk_bytes, ports: 0 }
    }

    /// The same vector with `ports` ports.
    pub const fn with_ports(self, ports: u64) -> Self {
        Resources { ports, ..self }
    }

    /// The component for one dimension.
    pub fn get(&self, r: Resource) -> u64 {
        match r {
            Resource::Cpu => self.cpu_millis,
            Resource::Ram => self.ram_bytes,
            Resource::Disk => self.disk_bytes,
            Resource::Ports => self.ports,
        }
    }

    /// Component-wise saturating sum.
    pub fn saturating_add(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_add(o.cpu_millis),
            ram_bytes: self.ram_bytes.saturating_add(o.ram_bytes),
            disk_bytes: self.disk_bytes.saturating_add(o.disk_bytes),
            ports: self.ports.saturating_add(o.ports),
        }
    }

    /// Component-wise saturating difference (`self - o`, floored at zero).
    pub fn saturating_sub(self, o: Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_sub(o.cpu_millis),
            ram_bytes: self.ram_bytes.saturating_sub(o.ram_bytes),
            disk_bytes: self.disk_bytes.saturating_sub(o.disk_bytes),
            ports: self.ports.saturating_sub(o.ports),
        }
    }

    /// Component-wise product by a count, saturating.
    pub fn saturating_mul(self, n: u64) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.saturating_mul(n),
            ram_bytes: self.ram_bytes.saturating_mul(n),
            disk_bytes: self.disk_bytes.saturating_mul(n),
            ports: self.ports.saturating_mul(n),
        }
    }

    /// Component-wise minimum.
    pub fn min_each(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.min(o.cpu_millis),
            ram_bytes: self.ram_bytes.min(o.ram_bytes),
            disk_bytes: self.disk_bytes.min(o.disk_bytes),
            ports: self.ports.min(o.ports),
        }
    }

    /// The mean over CPU, RAM and disk of `self / whole`, each at most 1 and 0 for a resource
    /// `whole` has none of (ports left out): how much of `whole` this is, in 0..=1.
    pub fn mean_fraction(&self, whole: &Resources) -> f64 {
        let frac = |part: u64, of: u64| if of == 0 { 0.0 } else { (part as f64 / of as f64).min(1.0) };
        (frac(self.cpu_millis, whole.cpu_millis)
            + frac(self.ram_bytes, whole.ram_bytes)
            + frac(self.disk_bytes, whole.disk_bytes))
            / 3.0
    }

    /// Component-wise maximum.
    pub fn max_each(&self, o: &Resources) -> Resources {
        Resources {
            cpu_millis: self.cpu_millis.max(o.cpu_millis),
            ram_bytes: self.ram_bytes.max(o.ram_bytes),
            disk_bytes: self.disk_bytes.max(o.disk_bytes),
            ports: self.ports.max(o.ports),
        }
    }

    /// True when every component of `self` is at most the same component of `available`.
    pub fn fits_in(&self, available: &Resources) -> bool {
        self.cpu_millis <= available.cpu_millis
            && self.ram_bytes <= available.ram_bytes
            && self.disk_bytes <= available.disk_bytes
            && self.ports <= available.ports
    }

    /// The first dimension (cpu, ram, disk, ports order) in which `self` exceeds `available`,
    /// if any.
    pub fn first_shortfall(&self, available: &Resources) -> Option<Resource> {
        Resource::ALL.into_iter().chain([Resource::Ports]).find(|&r| self.get(r) > available.get(r))
    }
}

impl fmt::Display for Resources {
    /// `cpu=250m ram=64Mi disk=100Mi` (binary units, see [`format_bytes`]), then ` ports=2`
    /// when there are ports (never for `u64::MAX`: ports are not under quota); a dimension at
    /// `u64::MAX` (a quota unlimited in that dimension) reads `unlimited`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let cpu = if self.cpu_millis == u64::MAX { "unlimited".to_string() } else { format!("{}m", self.cpu_millis) };
        write!(f, "cpu={cpu} ram={} disk={}", format_bytes(self.ram_bytes), format_bytes(self.disk_bytes))?;
        if self.ports > 0 && self.ports < u64::MAX {
            write!(f, " ports={}", self.ports)?;
        }
        Ok(())
    }
}

/// Formats a byte count with the largest binary suffix (Ki, Mi, Gi, Ti) not above it: exact when
/// it divides evenly (`64Mi`), else with one decimal (`23.5Gi`); below 1 KiB, plain (`1000`);
/// `u64::MAX` (unlimited) reads `unlimited`.
pub fn format_bytes(b: u64) -> String {
    if b == u64::MAX {
        return "unlimited".into();
    }
    const UNITS: [(&str, u64); 4] = [("Ti", 1 << 40), ("Gi", 1 << 30), ("Mi", 1 << 20), ("Ki", 1 << 10)];
    for (suffix, unit) in UNITS {
        if b >= unit {
            return if b.is_multiple_of(unit) {
                format!("{}{}", b / unit, suffix)
            } else {
                format!("{:.1}{}", b as f64 / unit as f64, suffix)
            };
        }
    }
    b.to_string()
}

/// Millicores as cores with two decimals: `1500` -> `1.50`.
pub fn format_cores(millicores: u64) -> String {
    if millicores == u64::MAX {
        return "unlimited".into();
    }
    format!("{:.2}", millicores as f64 / 1000.0)
}

/// `part` as a whole-number percentage of `whole`: `25%`; `-` when `whole` is 0.
pub fn format_share(part: u64, whole: u64) -> String {
    if whole == 0 {
        "-".into()
    } else {
        format!("{:.0}%", 100.0 * part as f64 / whole as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates_and_fit_is_componentwise() {
        let a = Resources::new(500, 100, 10);
        let b = Resources::new(1000, 50, 10);
        assert_eq!(a.saturating_sub(b), Resources::new(0, 50, 0));
        assert_eq!(a.saturating_add(b), Resources::new(1500, 150, 20));
        assert!(!b.fits_in(&a));
        assert_eq!(b.first_shortfall(&a), Some(Resource::Cpu));
        assert!(Resources::new(500, 100, 10).fits_in(&a));
        assert_eq!(Resources::new(u64::MAX, 1, 1).saturating_mul(2).cpu_millis, u64::MAX);
        // ports count like any dimension, and come last
        let with = Resources::new(100, 10, 0).with_ports(2);
        assert_eq!(with.first_shortfall(&Resources::new(500, 100, 10).with_ports(1)), Some(Resource::Ports));
        assert!(with.fits_in(&a.with_ports(2)));
        assert_eq!(with.to_string(), "cpu=100m ram=10 disk=0 ports=2");
    }

    #[test]
    fn bytes_format_with_exact_binary_suffix() {
        assert_eq!(format_bytes(64 << 20), "64Mi");
        assert_eq!(format_bytes(1536 << 10), "1.5Mi");
        assert_eq!(format_bytes(24684092 << 10), "23.5Gi");
        assert_eq!(format_bytes(1000), "1000");
        assert_eq!(Resources::new(250, 1 << 30, 0).to_string(), "cpu=250m ram=1Gi disk=0");
        assert_eq!(format_cores(1500), "1.50");
        assert_eq!(format_share(1, 4), "25%");
        assert_eq!(format_share(1, 0), "-");
    }
}
