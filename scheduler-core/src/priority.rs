//! Priorities and priority bands (Borg §2.5).

use serde::{Deserialize, Serialize};
use std::fmt;

/// A task's priority: an integer; higher wins. Its [`Band`] is fixed by ranges of 100:
/// free 0-99, batch 100-199, production 200-299, monitoring 300-399.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Priority(pub i32);

/// Priority band. Ordered: `Free < Batch < Production < Monitoring`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Band {
    /// Best-effort, 0-99: no quota needed, preempted by everything above.
    Free,
    /// Batch, 100-199.
    Batch,
    /// Production, 200-299: never preempted by production.
    Production,
    /// Monitoring, 300-399.
    Monitoring,
}

impl Band {
    /// All bands, lowest first.
    pub const ALL: [Band; 4] = [Band::Free, Band::Batch, Band::Production, Band::Monitoring];

    /// The band's name as in job specs: `free`, `batch`, `production`, `monitoring`.
    pub fn name(self) -> &'static str {
        match self {
            Band::Free => "free",
            Band::Batch => "batch",
            Band::Production => "production",
            Band::Monitoring => "monitoring",
        }
    }

    /// The band with this spec name, if any.
    pub fn from_name(s: &str) -> Option<Band> {
        Band::ALL.into_iter().find(|b| b.name() == s)
    }

    /// The lowest priority in the band (what a spec's band name maps to).
    pub fn base_priority(self) -> Priority {
        Priority(match self {
            Band::Free => 0,
            Band::Batch => 100,
            Band::Production => 200,
            Band::Monitoring => 300,
        })
    }
}

impl fmt::Display for Band {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Highest valid priority.
pub const MAX_PRIORITY: i32 = 399;

impl Priority {
    /// The band of a valid priority; `None` outside 0..=399.
    pub fn band(self) -> Option<Band> {
        match self.0 {
            0..=99 => Some(Band::Free),
            100..=199 => Some(Band::Batch),
            200..=299 => Some(Band::Production),
            300..=MAX_PRIORITY => Some(Band::Monitoring),
            _ => None,
        }
    }
}

impl fmt::Display for Priority {
    /// `200 (production)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.band() {
            Some(b) => write!(f, "{} ({})", self.0, b),
            None => write!(f, "{} (invalid)", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bands_cover_ranges_of_one_hundred() {
        assert_eq!(Priority(0).band(), Some(Band::Free));
        assert_eq!(Priority(99).band(), Some(Band::Free));
        assert_eq!(Priority(100).band(), Some(Band::Batch));
        assert_eq!(Priority(299).band(), Some(Band::Production));
        assert_eq!(Priority(399).band(), Some(Band::Monitoring));
        assert_eq!(Priority(400).band(), None);
        assert_eq!(Priority(-1).band(), None);
        assert!(Band::Free < Band::Monitoring);
        for b in Band::ALL {
            assert_eq!(Band::from_name(b.name()), Some(b));
            assert_eq!(b.base_priority().band(), Some(b));
        }
    }
}
