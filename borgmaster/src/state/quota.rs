//! Quota (Borg §2.5): per user, per priority band, a resource vector, checked at admission.
//!
//! The rule followed: a job is charged against its owner's quota **at its own band** only.
//! Quota granted at a band is not spent by jobs of other bands (a production grant does not
//! admit batch work; a user who wants batch capacity gets batch quota), and the free band needs
//! none: best-effort work is admitted freely and is the first to be preempted. A job's charge
//! is its request times its tasks that are not dead (so finished batch tasks and killed jobs
//! give their quota back); an alloc set is charged for its allocs, and the jobs that run inside
//! it are not charged again.

use super::{CellState, Job, TaskState};
use scheduler_core::{Band, Resources};

/// One line of `quota get`: a user's limit, use and headroom at a band.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuotaRow {
    /// User.
    pub user: String,
    /// Band.
    pub band: Band,
    /// Limit (`None` = unlimited default).
    pub limit: Option<Resources>,
    /// Charged to live jobs.
    pub used: Resources,
    /// Fair-share weight (1 unless set).
    pub weight: u32,
}

/// What is left of `limit` once `used` is charged: per dimension, `limit - used`, except that a
/// dimension the limit leaves unlimited (`u64::MAX`, see `quota set`) stays unlimited. The one
/// headroom of admission, `quota get` and the status page.
pub fn headroom(limit: Resources, used: Resources) -> Resources {
    let left = |l: u64, u: u64| if l == u64::MAX { u64::MAX } else { l.saturating_sub(u) };
    // ports are a machine's, not a user's: never under quota
    Resources::new(
        left(limit.cpu_millis, used.cpu_millis),
        left(limit.ram_bytes, used.ram_bytes),
        left(limit.disk_bytes, used.disk_bytes),
    )
    .with_ports(u64::MAX)
}

/// What `job` is charged now.
pub(crate) fn charge(job: &Job) -> Resources {
    if !job.spec.alloc_set.is_empty() || job.killed {
        return Resources::ZERO;
    }
    let live = job.tasks.iter().filter(|t| t.state != TaskState::Dead).count() as u64;
    job.spec.resources.saturating_mul(live)
}

impl CellState {
    /// The limit for `user` at `band`: their grant, or the cell default (`None` = unlimited).
    pub fn quota_limit(&self, user: &str, band: Band) -> Option<Resources> {
        match self.quotas.get(user).and_then(|b| b.get(band.name())) {
            Some(l) => Some(*l),
            None => self.default_quota,
        }
    }

    /// What `user`'s jobs at `band` are charged, not counting job `except`.
    pub fn quota_used(&self, user: &str, band: Band, except: Option<&str>) -> Resources {
        self.jobs
            .values()
            .filter(|j| j.spec.user == user && j.spec.band() == band && Some(j.spec.name.as_str()) != except)
            .fold(Resources::ZERO, |acc, j| acc.saturating_add(charge(j)))
    }

    /// Quota rows for `user` (or every user with a grant or a job), by user then band; the free
    /// band is left out (it needs no quota).
    pub fn quota_rows(&self, user: Option<&str>) -> Vec<QuotaRow> {
        let mut users: std::collections::BTreeSet<String> = self.quotas.keys().cloned().collect();
        users.extend(self.jobs.values().map(|j| j.spec.user.clone()));
        users
            .into_iter()
            .filter(|u| user.is_none_or(|x| x == u))
            .flat_map(|u| [Band::Batch, Band::Production, Band::Monitoring].into_iter().map(move |b| (u.clone(), b)))
            .map(|(u, b)| QuotaRow {
                limit: self.quota_limit(&u, b),
                used: self.quota_used(&u, b, None),
                weight: self.share_weight(&u, b),
                user: u,
                band: b,
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unlimited_dimension_stays_unlimited_after_use() {
        let limit = Resources::new(2000, 1 << 30, u64::MAX);
        let used = Resources::new(500, 1 << 20, 300 << 20);
        // ports are never under quota
        let expected = Resources::new(1500, (1 << 30) - (1 << 20), u64::MAX).with_ports(u64::MAX);
        assert_eq!(headroom(limit, used), expected);
    }
}
