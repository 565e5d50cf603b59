//! Conversion between [`JobSpec`] and the API's `borg_proto::JobSpec`, and between the shared
//! scheduler-core types and their API messages.

use crate::health::{Check, Health, Probe};
use crate::job::{JobKind, JobSpec, Problem, Restart, RestartPolicy};
use borg_proto as pb;
use scheduler_core::{Constraint, ConstraintOp, Priority, Resources};

/// An API `JobSpec` that is not a valid job spec: every problem, with its field path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid job spec: {}", .0.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("; "))]
pub struct ConvertError(pub Vec<Problem>);

/// API resources -> scheduler-core resources.
pub fn resources_from_pb(r: Option<&pb::Resources>) -> Resources {
    r.map(|r| Resources::new(r.cpu_millis, r.ram_bytes, r.disk_bytes).with_ports(r.ports)).unwrap_or_default()
}

/// scheduler-core resources -> API resources.
pub fn resources_to_pb(r: Resources) -> pb::Resources {
    pb::Resources { cpu_millis: r.cpu_millis, ram_bytes: r.ram_bytes, disk_bytes: r.disk_bytes, ports: r.ports }
}

/// A health check -> API message.
pub fn check_to_pb(c: &Check) -> pb::HealthCheck {
    use pb::health_check::Probe as P;
    let probe = match &c.probe {
        Probe::Http { port, path } => P::Http(pb::HttpProbe { port: port.clone(), path: path.clone() }),
        Probe::Tcp { port } => P::Tcp(pb::TcpProbe { port: port.clone() }),
        Probe::Exec { command } => P::Exec(pb::ExecProbe { command: command.clone() }),
    };
    pb::HealthCheck {
        probe: Some(probe),
        period_ms: c.period_ms,
        timeout_ms: c.timeout_ms,
        failures: c.failures,
        initial_delay_ms: c.initial_delay_ms,
    }
}

/// API message -> health check; `None` without a probe.
pub fn check_from_pb(c: &pb::HealthCheck) -> Option<Check> {
    use pb::health_check::Probe as P;
    let probe = match c.probe.as_ref()? {
        P::Http(h) => {
            Probe::Http { port: h.port.clone(), path: if h.path.is_empty() { "/".into() } else { h.path.clone() } }
        }
        P::Tcp(t) => Probe::Tcp { port: t.port.clone() },
        P::Exec(e) => Probe::Exec { command: e.command.clone() },
    };
    Some(Check {
        probe,
        period_ms: c.period_ms,
        timeout_ms: c.timeout_ms,
        failures: c.failures,
        initial_delay_ms: c.initial_delay_ms,
    })
}

/// Job kind -> API enum.
pub fn kind_to_pb(k: JobKind) -> pb::JobKind {
    match k {
        JobKind::Batch => pb::JobKind::Batch,
        JobKind::Service => pb::JobKind::Service,
        JobKind::AllocSet => pb::JobKind::AllocSet,
    }
}

/// API enum -> job kind; `None` for unspecified or unknown values.
pub fn kind_from_pb(k: i32) -> Option<JobKind> {
    match pb::JobKind::try_from(k).ok()? {
        pb::JobKind::Batch => Some(JobKind::Batch),
        pb::JobKind::Service => Some(JobKind::Service),
        pb::JobKind::AllocSet => Some(JobKind::AllocSet),
        pb::JobKind::Unspecified => None,
    }
}

/// Restart policy -> API message.
pub fn restart_to_pb(r: Restart) -> pb::Restart {
    let policy = match r.policy {
        RestartPolicy::Never => pb::RestartPolicy::Never,
        RestartPolicy::OnFailure => pb::RestartPolicy::OnFailure,
        RestartPolicy::Always => pb::RestartPolicy::Always,
    };
    pb::Restart { policy: policy as i32, max_restarts: r.max_restarts }
}

/// API message -> restart policy; `None` for unspecified or unknown policies.
pub fn restart_from_pb(r: &pb::Restart) -> Option<Restart> {
    let policy = match pb::RestartPolicy::try_from(r.policy).ok()? {
        pb::RestartPolicy::Never => RestartPolicy::Never,
        pb::RestartPolicy::OnFailure => RestartPolicy::OnFailure,
        pb::RestartPolicy::Always => RestartPolicy::Always,
        pb::RestartPolicy::Unspecified => return None,
    };
    Some(Restart { policy, max_restarts: r.max_restarts })
}

fn op_to_pb(op: ConstraintOp) -> pb::ConstraintOp {
    match op {
        ConstraintOp::Eq => pb::ConstraintOp::Eq,
        ConstraintOp::Ne => pb::ConstraintOp::Ne,
        ConstraintOp::In => pb::ConstraintOp::In,
        ConstraintOp::NotIn => pb::ConstraintOp::NotIn,
    }
}

fn op_from_pb(op: i32) -> Option<ConstraintOp> {
    Some(match pb::ConstraintOp::try_from(op).ok()? {
        pb::ConstraintOp::Eq => ConstraintOp::Eq,
        pb::ConstraintOp::Ne => ConstraintOp::Ne,
        pb::ConstraintOp::In => ConstraintOp::In,
        pb::ConstraintOp::NotIn => ConstraintOp::NotIn,
        pb::ConstraintOp::Unspecified => return None,
    })
}

impl From<&JobSpec> for pb::JobSpec {
    fn from(s: &JobSpec) -> Self {
        pb::JobSpec {
            name: s.name.clone(),
            user: s.user.clone(),
            priority: s.priority.0,
            kind: kind_to_pb(s.kind) as i32,
            tasks: s.tasks,
            command: s.command.clone(),
            env: s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            resources: Some(resources_to_pb(s.resources)),
            restart: Some(restart_to_pb(s.restart)),
            constraints: s
                .constraints
                .iter()
                .map(|c| pb::Constraint {
                    attribute: c.attribute.clone(),
                    op: op_to_pb(c.op) as i32,
                    values: c.values.clone(),
                })
                .collect(),
            different_machine: s.different_machine,
            grace_period_ms: s.grace_period_ms,
            alloc_set: s.alloc_set.clone(),
            max_unavailable: s.max_unavailable,
            per_machine: s.per_machine,
            ports: s.ports.clone(),
            liveness: s.health.liveness.as_deref().map(check_to_pb),
            readiness: s.health.readiness.as_deref().map(check_to_pb),
            min_ready_ms: s.min_ready_ms,
            progress_deadline_ms: s.progress_deadline_ms,
            after: s.after.clone(),
            ttl_after_finished_ms: Some(s.ttl_after_finished_ms),
            gang: s.gang,
            schedule: s.schedule.clone().unwrap_or_default(),
            concurrency: s.concurrency.name().to_string(),
            history: Some(s.history),
        }
    }
}

impl TryFrom<&pb::JobSpec> for JobSpec {
    type Error = ConvertError;

    /// Validates an API spec with the same rules as a YAML one ([`JobSpec::problems`]).
    ///
    /// Errors: [`ConvertError`] listing every problem (unspecified enums, missing resources, and
    /// each failed rule).
    fn try_from(p: &pb::JobSpec) -> Result<Self, ConvertError> {
        let mut problems = Vec::new();
        let kind = kind_from_pb(p.kind).unwrap_or_else(|| {
            problems.push(Problem::new("kind", "must be batch, service or alloc_set"));
            JobKind::Batch
        });
        let restart = match &p.restart {
            None => Restart::default_for(kind),
            Some(r) => restart_from_pb(r).unwrap_or_else(|| {
                problems.push(Problem::new("restart.policy", "must be never, on-failure or always"));
                Restart::default_for(kind)
            }),
        };
        if p.resources.is_none() {
            problems.push(Problem::new("resources", "missing"));
        }
        let mut constraints = Vec::new();
        for (i, c) in p.constraints.iter().enumerate() {
            let op = op_from_pb(c.op).unwrap_or_else(|| {
                problems.push(Problem::new(format!("constraints[{i}].op"), "must be one of ==, !=, in, not-in"));
                ConstraintOp::In
            });
            constraints.push(Constraint { attribute: c.attribute.clone(), op, values: c.values.clone() });
        }
        let spec = JobSpec {
            name: p.name.clone(),
            user: p.user.clone(),
            priority: Priority(p.priority),
            kind,
            tasks: p.tasks,
            command: p.command.clone(),
            env: p.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
            // the port count follows the named ports whatever the caller sent
            resources: resources_from_pb(p.resources.as_ref()).with_ports(p.ports.len() as u64),
            restart,
            constraints,
            different_machine: p.different_machine,
            grace_period_ms: p.grace_period_ms,
            alloc_set: p.alloc_set.clone(),
            max_unavailable: p.max_unavailable.max(1),
            per_machine: p.per_machine,
            ports: p.ports.clone(),
            health: Health {
                liveness: p.liveness.as_ref().and_then(check_from_pb).map(Box::new),
                readiness: p.readiness.as_ref().and_then(check_from_pb).map(Box::new),
            },
            min_ready_ms: p.min_ready_ms,
            progress_deadline_ms: if p.progress_deadline_ms == 0 {
                crate::job::DEFAULT_PROGRESS_DEADLINE_MS
            } else {
                p.progress_deadline_ms
            },
            after: p.after.clone(),
            ttl_after_finished_ms: p.ttl_after_finished_ms.unwrap_or(crate::job::DEFAULT_TTL_AFTER_FINISHED_MS),
            gang: p.gang,
            schedule: (!p.schedule.is_empty()).then(|| p.schedule.clone()),
            concurrency: crate::job::Concurrency::from_name(&p.concurrency).unwrap_or_default(),
            history: p.history.unwrap_or(crate::job::DEFAULT_HISTORY),
        };
        problems.extend(spec.problems());
        if problems.is_empty() {
            Ok(spec)
        } else {
            Err(ConvertError(problems))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_validation() {
        let mut s = crate::job::tests::sample();
        s.constraints.push(Constraint {
            attribute: "arch".into(),
            op: ConstraintOp::NotIn,
            values: vec!["arm64".into()],
        });
        s.env.insert("A".into(), "b".into());
        let p = pb::JobSpec::from(&s);
        assert_eq!(JobSpec::try_from(&p).unwrap(), s);
        let mut bad = p.clone();
        bad.kind = 0;
        bad.tasks = 0;
        bad.resources = None;
        let e = JobSpec::try_from(&bad).unwrap_err();
        let fields: Vec<_> = e.0.iter().map(|p| p.field.as_str()).collect();
        assert_eq!(fields, ["kind", "resources", "tasks", "resources.cpu", "resources.ram"]);
    }
}
