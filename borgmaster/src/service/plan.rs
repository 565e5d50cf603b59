//! Dry runs (`borgctl apply --dry-run`): the apply on a copy of the cell state and a scheduling
//! pass on the copy, reported without changing anything.

use super::{propose_status, BorgmasterService};
use crate::master::ProposeError;
use crate::snapshot::{alloc_bindings, snapshot};
use crate::soft::Pending;
use crate::state::{ApplyOutcome, Command};
use borg_jobspec::JobSpec;
use borg_proto as pb;
use scheduler_core::Scheduler;
use tonic::Status;

impl BorgmasterService {
    /// Dry run of an apply: the command is applied to a copy of the cell state (the state
    /// machine is pure), and a scheduling pass runs on the copy. Reports what would be created,
    /// restarted (rolling update) or removed, what would be placed now and what preempted, and
    /// the owner's quota after.
    ///
    /// Errors: the command would be rejected (version mismatch, over quota).
    pub(super) fn plan(&self, spec: &JobSpec, expected_version: Option<u64>) -> Result<pb::ApplyJobResponse, Status> {
        // Clone copies the derived machine index too: the copy is ready to apply to.
        let mut copy = self.master.state().clone();
        let before = copy.jobs.get(&spec.name).map(|j| j.tasks.clone()).unwrap_or_default();
        let in_place = copy.update_is_in_place(spec);
        let entry = crate::state::Entry {
            time_ms: crate::master::now_ms(),
            command: Command::ApplyJob { spec: spec.clone(), expected_version },
        };
        let (outcome, _) = copy.apply(&entry).map_err(|e| propose_status(ProposeError::Rejected(e)))?;
        let (action, version) = match outcome {
            ApplyOutcome::Created(v) => ("created", v),
            ApplyOutcome::Updated(v) => ("updated", v),
            ApplyOutcome::Unchanged(v) => ("unchanged", v),
            _ => ("unchanged", 0),
        };
        let after = copy.jobs.get(&spec.name).map(|j| j.tasks.clone()).unwrap_or_default();
        let created: Vec<u32> =
            after.iter().filter(|t| before.get(t.index as usize).is_none()).map(|t| t.index).collect();
        let removed: Vec<u32> = before.iter().filter(|t| t.index as usize >= after.len()).map(|t| t.index).collect();
        let restarted: Vec<u32> = after
            .iter()
            .filter(|t| {
                before.get(t.index as usize).is_some_and(|b| b.incarnation != t.incarnation || t.job_version < version)
            })
            .map(|t| t.index)
            .collect();
        let mut snap = snapshot(&copy, self.master.config.reclaim.enabled);
        // the scheduler loop's parameters (scheduler-core's defaults), with explanations on
        let params = scheduler_core::Params { explain: true, ..scheduler_core::Params::default() };
        let p = Scheduler::new(params).schedule(&mut snap.model, &snap.groups);
        let job_id = snap.jobs.iter().position(|j| *j == spec.name).map(|i| i as u32);
        let mine = |t: &scheduler_core::TaskRef| Some(t.job) == job_id;
        let pending_now = after.iter().filter(|t| t.state == crate::state::TaskState::Pending).count() as u32;
        let (placeable, why) = if spec.alloc_set.is_empty() {
            let placeable = p.bindings.iter().filter(|b| mine(&b.task)).count() as u32;
            (placeable, p.unplaced.iter().find(|u| u.tasks.iter().any(mine)).map(|u| Pending::Machines(u.why.clone())))
        } else {
            // tasks of alloc-set jobs go into allocs, not onto machines
            let (binds, whys) = alloc_bindings(&copy);
            let placeable = binds.iter().filter(|b| b.job == spec.name).count() as u32;
            (placeable, whys.into_iter().find(|(j, _)| *j == spec.name).map(|(_, w)| Pending::Other(w)))
        };
        let why_pending_reasons =
            why.as_ref().map(|w| w.reasons().1.into_iter().map(|(r, n)| (r, n as u32)).collect()).unwrap_or_default();
        let why = why.map(|w| w.to_string()).unwrap_or_default();
        let evicted = p.preempted.iter().filter(|e| mine(&e.by)).map(|e| snap.name(e.victim)).collect();
        let band = spec.band();
        Ok(pb::ApplyJobResponse {
            job: spec.name.clone(),
            version,
            action: action.into(),
            placeable,
            unplaceable: pending_now.saturating_sub(placeable),
            why_pending: why,
            why_pending_reasons,
            created,
            restarted,
            removed,
            in_place,
            evicted,
            quota_used_after: Some(borg_jobspec::convert::resources_to_pb(copy.quota_used(&spec.user, band, None))),
            quota_limit: copy.quota_limit(&spec.user, band).map(borg_jobspec::convert::resources_to_pb),
        })
    }
}
