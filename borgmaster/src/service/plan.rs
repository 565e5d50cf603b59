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
        let copy = self.master.state().clone();
        plan_on(copy, self.master.config.reclaim.enabled, spec, expected_version, crate::master::now_ms())
            .map_err(|e| propose_status(ProposeError::Rejected(e)))
    }
}

/// [`BorgmasterService::plan`] on `copy` (a copy of the cell state, changed by the dry run), at
/// `now_ms`; `reclaim`: whether residents count at their reservations (Borg §5.5). "Pending"
/// in the answer means waiting for a machine: a task bound and starting is placed.
fn plan_on(
    mut copy: crate::state::CellState,
    reclaim: bool,
    spec: &JobSpec,
    expected_version: Option<u64>,
    now_ms: i64,
) -> Result<pb::ApplyJobResponse, crate::state::CommandError> {
    let before = copy.jobs.get(&spec.name).map(|j| j.tasks.clone()).unwrap_or_default();
    let in_place = copy.update_is_in_place(spec);
    let entry =
        crate::state::Entry { time_ms: now_ms, command: Command::ApplyJob { spec: spec.clone(), expected_version } };
    let (outcome, _) = copy.apply(&entry)?;
    let (action, version) = match outcome {
        ApplyOutcome::Created(v) => ("created", v),
        ApplyOutcome::Updated(v) => ("updated", v),
        ApplyOutcome::Unchanged(v) => ("unchanged", v),
        _ => ("unchanged", 0),
    };
    let after = copy.jobs.get(&spec.name).map(|j| j.tasks.clone()).unwrap_or_default();
    let created: Vec<u32> = after.iter().filter(|t| before.get(t.index as usize).is_none()).map(|t| t.index).collect();
    let removed: Vec<u32> = before.iter().filter(|t| t.index as usize >= after.len()).map(|t| t.index).collect();
    let restarted: Vec<u32> = after
        .iter()
        .filter(|t| {
            before.get(t.index as usize).is_some_and(|b| b.incarnation != t.incarnation || t.job_version < version)
        })
        .map(|t| t.index)
        .collect();
    let mut snap = snapshot(&copy, reclaim);
    // the scheduler loop's parameters (scheduler-core's defaults), with explanations on
    let params = scheduler_core::Params { explain: true, ..scheduler_core::Params::default() };
    let p = Scheduler::new(params).schedule(&mut snap.model, &snap.groups);
    let job_id = snap.jobs.iter().position(|j| *j == spec.name).map(|i| i as u32);
    let mine = |t: &scheduler_core::TaskRef| Some(t.job) == job_id;
    // waiting for a machine: a task bound and starting (pending until its Borglet reports it
    // running) is placed already
    let pending_now =
        after.iter().filter(|t| t.state == crate::state::TaskState::Pending && t.machine.is_none()).count() as u32;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::fixtures::{bind, machine, run, spec};
    use crate::state::{CellState, TaskState};

    /// A dry run of the spec a job already has: nothing to do; its tasks bound and starting
    /// (pending until their Borglet reports them running) are not "pending tasks that do not
    /// fit" (the dry run exited 2 for them, as if they could not be placed).
    #[test]
    fn tasks_bound_and_starting_are_placed_not_pending() {
        let mut s = CellState::default();
        run(&mut s, Command::RegisterMachine { machine: machine("m1") }).unwrap();
        let web = spec("web", 2);
        run(&mut s, Command::ApplyJob { spec: web.clone(), expected_version: None }).unwrap();
        let plan = plan_on(s.clone(), false, &web, None, 2000).unwrap();
        assert_eq!((plan.placeable, plan.unplaceable), (2, 0), "both would be placed now");
        bind(&mut s, "web", 0, "m1");
        bind(&mut s, "web", 1, "m1");
        assert!(s.jobs["web"].tasks.iter().all(|t| t.state == TaskState::Pending), "bound, not running yet");
        let plan = plan_on(s.clone(), false, &web, None, 2000).unwrap();
        assert_eq!(plan.action, "unchanged");
        assert_eq!((plan.placeable, plan.unplaceable), (0, 0), "nothing waits for a machine");
        // one more task: it is the one pending, and it fits
        let plan = plan_on(s.clone(), false, &spec("web", 3), None, 2000).unwrap();
        assert_eq!((plan.placeable, plan.unplaceable, plan.created.clone()), (1, 0, vec![2]));
        // more than the machine holds (4,000 millicores, 100 each): 38 fit, the rest do not
        let plan = plan_on(s, false, &spec("web", 42), None, 2000).unwrap();
        assert_eq!((plan.placeable, plan.unplaceable), (38, 2));
        assert!(!plan.why_pending.is_empty(), "and it says why: {plan:?}");
    }
}
