//! The YAML job spec format: parsing with `serde-saphyr` (unknown fields are an error), then
//! validation that reports every problem with its file, line, column and field.

use crate::health::{Check, Health, Probe};
use crate::job::{JobKind, JobSpec, Problem, Restart, RestartPolicy, DEFAULT_GRACE_MS};
use crate::quantity::{parse_bytes, parse_cpu, parse_duration_ms, Scalar};
use scheduler_core::{Band, Constraint, ConstraintOp, Priority, Resources};
use serde::Deserialize;
use serde_saphyr::Spanned;
use std::collections::{BTreeMap, HashMap};
use std::fmt;

/// Largest spec file accepted, bytes.
pub const MAX_SPEC_BYTES: usize = 1 << 20;

/// A problem located in a spec file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocatedProblem {
    /// File name as given by the caller.
    pub file: String,
    /// 1-based line (0 when unknown: the whole file, shown as `file: message`).
    pub line: u64,
    /// 1-based column (0 when unknown).
    pub column: u64,
    /// Dotted field path, or empty for a syntax error.
    pub field: String,
    /// What is wrong.
    pub message: String,
}

impl fmt::Display for LocatedProblem {
    /// `file:line:column: field: message`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: ", self.file)?;
        } else {
            write!(f, "{}:{}:{}: ", self.file, self.line, self.column)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Every problem found in one spec file, in file order. Displays as one line per problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct SpecErrors(pub Vec<LocatedProblem>);

impl fmt::Display for SpecErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let lines: Vec<String> = self.0.iter().map(|p| p.to_string()).collect();
        f.write_str(&lines.join("\n"))
    }
}

/// A YAML value that may be one scalar or a list of scalars (constraint values).
#[derive(Debug, Clone)]
struct Values(Vec<String>);

impl<'de> Deserialize<'de> for Values {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Values;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a value or a list of values")
            }
            fn visit_str<E>(self, v: &str) -> Result<Values, E> {
                Ok(Values(vec![v.to_string()]))
            }
            fn visit_i64<E>(self, v: i64) -> Result<Values, E> {
                Ok(Values(vec![v.to_string()]))
            }
            fn visit_u64<E>(self, v: u64) -> Result<Values, E> {
                Ok(Values(vec![v.to_string()]))
            }
            fn visit_f64<E>(self, v: f64) -> Result<Values, E> {
                Ok(Values(vec![v.to_string()]))
            }
            fn visit_bool<E>(self, v: bool) -> Result<Values, E> {
                Ok(Values(vec![v.to_string()]))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Values, A::Error> {
                let mut out = Vec::new();
                while let Some(s) = seq.next_element::<Scalar>()? {
                    out.push(match s {
                        Scalar::Str(s) => s,
                        other => other.to_string(),
                    });
                }
                Ok(Values(out))
            }
        }
        d.deserialize_any(V)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSpec {
    name: Spanned<String>,
    user: Spanned<String>,
    priority: Spanned<Scalar>,
    kind: Spanned<String>,
    tasks: Spanned<Scalar>,
    #[serde(default)]
    command: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    env: Option<Spanned<BTreeMap<String, String>>>,
    resources: Spanned<RawResources>,
    #[serde(default)]
    restart: Option<Spanned<RawRestart>>,
    #[serde(default)]
    constraints: Option<Vec<Spanned<RawConstraint>>>,
    #[serde(default)]
    different_machine: Option<bool>,
    #[serde(default)]
    grace_period: Option<Spanned<Scalar>>,
    #[serde(default)]
    alloc_set: Option<Spanned<String>>,
    #[serde(default)]
    max_unavailable: Option<Spanned<Scalar>>,
    #[serde(default)]
    per_machine: Option<bool>,
    #[serde(default)]
    ports: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    health: Option<Spanned<RawHealth>>,
    #[serde(default)]
    update: Option<Spanned<RawUpdate>>,
    #[serde(default)]
    after: Option<Spanned<Vec<String>>>,
    #[serde(default)]
    ttl_after_finished: Option<Spanned<Scalar>>,
    #[serde(default)]
    gang: Option<bool>,
    #[serde(default)]
    schedule: Option<Spanned<String>>,
    #[serde(default)]
    concurrency: Option<Spanned<String>>,
    #[serde(default)]
    history: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpdate {
    #[serde(default)]
    max_unavailable: Option<Spanned<Scalar>>,
    #[serde(default)]
    min_ready: Option<Spanned<Scalar>>,
    #[serde(default)]
    progress_deadline: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHealth {
    #[serde(default)]
    liveness: Option<Spanned<RawCheck>>,
    #[serde(default)]
    readiness: Option<Spanned<RawCheck>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCheck {
    #[serde(default)]
    http: Option<RawHttp>,
    #[serde(default)]
    tcp: Option<RawTcp>,
    #[serde(default)]
    exec: Option<RawExec>,
    #[serde(default)]
    period: Option<Spanned<Scalar>>,
    #[serde(default)]
    timeout: Option<Spanned<Scalar>>,
    #[serde(default)]
    failures: Option<Spanned<Scalar>>,
    #[serde(default)]
    initial_delay: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    port: String,
    #[serde(default)]
    path: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTcp {
    port: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawExec {
    command: Vec<String>,
}

/// One health check from YAML, or None with its problems recorded at `field`.
fn check_of(l: &mut Located, field: &str, raw: &Spanned<RawCheck>) -> Option<Check> {
    l.mark(field, raw);
    let r = &raw.value;
    let probe = match (&r.http, &r.tcp, &r.exec) {
        (Some(h), None, None) => {
            Probe::Http { port: h.port.clone(), path: h.path.clone().unwrap_or_else(|| "/".into()) }
        }
        (None, Some(t), None) => Probe::Tcp { port: t.port.clone() },
        (None, None, Some(e)) => Probe::Exec { command: e.command.clone() },
        _ => {
            return l.check::<Check, String>(field, Err("give exactly one of http, tcp or exec".into()));
        }
    };
    let mut c = Check::new(probe);
    for (name, v, out) in [
        ("period", &r.period, &mut c.period_ms),
        ("timeout", &r.timeout, &mut c.timeout_ms),
        ("initial_delay", &r.initial_delay, &mut c.initial_delay_ms),
    ] {
        if let Some(v) = v {
            let f = format!("{field}.{name}");
            l.mark(&f, v);
            *out = l.check(&f, parse_duration_ms(&v.value))?;
        }
    }
    if let Some(v) = &r.failures {
        let f = format!("{field}.failures");
        l.mark(&f, v);
        c.failures = l.check(&f, whole(&v.value, "1 or more"))?;
    }
    Some(c)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawResources {
    cpu: Spanned<Scalar>,
    ram: Spanned<Scalar>,
    #[serde(default)]
    disk: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRestart {
    policy: Spanned<String>,
    #[serde(default)]
    max_restarts: Option<Spanned<Scalar>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConstraint {
    attribute: Spanned<String>,
    op: Spanned<String>,
    #[serde(alias = "values")]
    value: Spanned<Values>,
}

/// Collects problems and remembers where each field was written.
struct Located<'a> {
    file: &'a str,
    at: HashMap<String, (u64, u64)>,
    problems: Vec<LocatedProblem>,
}

impl Located<'_> {
    fn mark<T>(&mut self, field: &str, s: &Spanned<T>) {
        self.at.insert(field.to_string(), (s.referenced.line(), s.referenced.column()));
    }

    /// Location of `field`, or of its nearest marked parent (`env.FOO` -> `env`).
    fn where_is(&self, field: &str) -> (u64, u64) {
        let mut f = field;
        loop {
            if let Some(&l) = self.at.get(f) {
                return l;
            }
            match f.rfind(['.', '[']) {
                Some(i) => f = &f[..i],
                None => return (0, 0),
            }
        }
    }

    fn push(&mut self, p: Problem) {
        let (line, column) = self.where_is(&p.field);
        self.problems.push(LocatedProblem {
            file: self.file.to_string(),
            line,
            column,
            field: p.field,
            message: p.message,
        });
    }

    fn check<T, E: std::fmt::Display>(&mut self, field: &str, r: Result<T, E>) -> Option<T> {
        r.map_err(|m| self.push(Problem::new(field, m.to_string()))).ok()
    }
}

/// A YAML whole number as a u32, or what is wrong with it; `range` says what is allowed
/// (`1 to 100000`).
fn whole(s: &Scalar, range: &str) -> Result<u32, String> {
    match s {
        Scalar::Int(i) if *i < 0 => Err(format!("{i} is negative: give a whole number, {range}")),
        Scalar::Int(i) => u32::try_from(*i).map_err(|_| format!("{i} is too large: give a whole number, {range}")),
        Scalar::Float(x) => Err(format!("{x} is not a whole number: give one, {range}")),
        Scalar::Str(t) => Err(format!("{t:?} is not a number: give a whole number in digits, {range}")),
    }
}

/// The YAML library's message in our words, with the field it names: (field, message). Its
/// advice to programmers (`set DuplicateKeyPolicy`, `use from_str_multiple`) is replaced by
/// what the author of the spec can do.
fn plain_yaml_error(message: &str) -> (String, String) {
    if let Some(rest) = message.strip_prefix("duplicate mapping key: ") {
        let key = rest.split(',').next().unwrap_or(rest).trim();
        return (key.to_string(), "given twice: each field may appear once; remove one".into());
    }
    if message.starts_with("multiple YAML documents") {
        return (
            String::new(),
            "more than one YAML document (`---`): a spec file holds one job; put each job in its own file".into(),
        );
    }
    if let Some(rest) = message.strip_prefix("missing field `") {
        let field = rest.trim_end_matches('`');
        return (field.to_string(), "missing: every spec gives name, user, priority, kind, tasks and resources".into());
    }
    (String::new(), message.to_string())
}

/// Where top-level field `field` of the spec `text` is (1-based line and column), when it is
/// there: to locate what the master refuses about a spec (`after: job "x" does not exist`).
pub fn field_position(text: &str, field: &str) -> Option<(u64, u64)> {
    let raw: RawSpec = serde_saphyr::from_str(text).ok()?;
    let span = match field {
        "after" => raw.after.map(|a| a.referenced)?,
        "name" => raw.name.referenced,
        "tasks" => raw.tasks.referenced,
        "priority" => raw.priority.referenced,
        _ => return None,
    };
    Some((span.line(), span.column()))
}

/// Parses and validates a YAML job spec.
///
/// `file` only labels the problems. Errors: [`SpecErrors`], one [`LocatedProblem`] per problem:
/// a YAML syntax or type error (parsing stops at the first), an unknown field, or every rule of
/// [`JobSpec::problems`] that fails, each with its line and column.
pub fn parse_job_spec(file: &str, text: &str) -> Result<JobSpec, SpecErrors> {
    if text.len() > MAX_SPEC_BYTES {
        return Err(SpecErrors(vec![LocatedProblem {
            file: file.into(),
            line: 0,
            column: 0,
            field: String::new(),
            message: format!("spec is {} bytes; at most {MAX_SPEC_BYTES}", text.len()),
        }]));
    }
    let raw: RawSpec = serde_saphyr::from_str(text).map_err(|e| {
        let (line, column) = e.location().map(|l| (l.line(), l.column())).unwrap_or((0, 0));
        let message = e.without_snippet().to_string();
        let message = message.lines().next().unwrap_or("invalid YAML");
        // the location is already in front of the message
        let message = match message.rfind(" at line ") {
            Some(i) => &message[..i],
            None => message,
        };
        let (field, message) = plain_yaml_error(message);
        SpecErrors(vec![LocatedProblem { file: file.into(), line, column, field, message }])
    })?;
    let mut l = Located { file, at: HashMap::new(), problems: Vec::new() };
    l.mark("name", &raw.name);
    l.mark("user", &raw.user);
    l.mark("priority", &raw.priority);
    l.mark("kind", &raw.kind);
    l.mark("tasks", &raw.tasks);
    let tasks = l.check("tasks", whole(&raw.tasks.value, &format!("1 to {}", crate::job::MAX_TASKS)));
    if let Some(c) = &raw.command {
        l.mark("command", c);
    }
    if let Some(a) = &raw.alloc_set {
        l.mark("alloc_set", a);
    }
    let update = raw.update.as_ref().map(|u| {
        l.mark("update", u);
        &u.value
    });
    let max_unavailable = match (&raw.max_unavailable, update.and_then(|u| u.max_unavailable.as_ref())) {
        (Some(_), Some(m)) => {
            l.mark("update.max_unavailable", m);
            l.check::<u32, String>(
                "update.max_unavailable",
                Err("given twice: keep update.max_unavailable and drop the top-level max_unavailable".into()),
            )
        }
        (Some(m), None) => {
            l.mark("max_unavailable", m);
            l.check("max_unavailable", whole(&m.value, "1 or more"))
        }
        (None, Some(m)) => {
            l.mark("update.max_unavailable", m);
            l.check("update.max_unavailable", whole(&m.value, "1 or more"))
        }
        (None, None) => Some(1),
    };
    let mut duration = |field: &str, v: Option<&Spanned<Scalar>>, default: u64| match v {
        Some(v) => {
            l.mark(field, v);
            l.check(field, parse_duration_ms(&v.value))
        }
        None => Some(default),
    };
    let min_ready_ms = duration("update.min_ready", update.and_then(|u| u.min_ready.as_ref()), 0);
    let progress_deadline_ms = duration(
        "update.progress_deadline",
        update.and_then(|u| u.progress_deadline.as_ref()),
        crate::job::DEFAULT_PROGRESS_DEADLINE_MS,
    );
    l.mark("resources", &raw.resources);
    l.mark("resources.cpu", &raw.resources.value.cpu);
    l.mark("resources.ram", &raw.resources.value.ram);

    let priority = match &raw.priority.value {
        Scalar::Int(i) => Some(Priority(i32::try_from(*i).unwrap_or(i32::MAX))),
        Scalar::Str(s) => match Band::from_name(s) {
            Some(b) => Some(b.base_priority()),
            None => l.check(
                "priority",
                Err(format!("{s:?} is not a band (free, batch, production, monitoring) or an integer 0-399")),
            ),
        },
        Scalar::Float(x) => l.check("priority", Err(format!("{x} is not an integer"))),
    };
    let kind = match raw.kind.value.as_str() {
        "batch" => Some(JobKind::Batch),
        "service" => Some(JobKind::Service),
        "alloc_set" => Some(JobKind::AllocSet),
        other => l.check("kind", Err(format!("{other:?} is not batch, service or alloc_set"))),
    };
    let cpu = l.check("resources.cpu", parse_cpu(&raw.resources.value.cpu.value));
    let ram = l.check("resources.ram", parse_bytes(&raw.resources.value.ram.value));
    let disk = match &raw.resources.value.disk {
        Some(d) => {
            l.mark("resources.disk", d);
            l.check("resources.disk", parse_bytes(&d.value))
        }
        None => Some(0),
    };
    let restart = match &raw.restart {
        None => kind.map(Restart::default_for),
        Some(r) => {
            l.mark("restart", r);
            l.mark("restart.policy", &r.value.policy);
            let max_restarts = match &r.value.max_restarts {
                Some(m) => {
                    l.mark("restart.max_restarts", m);
                    l.check("restart.max_restarts", whole(&m.value, "0 or more").map(Some))
                }
                None => Some(None),
            };
            match (RestartPolicy::from_name(&r.value.policy.value), max_restarts) {
                (Some(policy), Some(max_restarts)) => Some(Restart { policy, max_restarts }),
                (Some(_), None) => None,
                (None, _) => l.check(
                    "restart.policy",
                    Err(format!("{:?} is not never, on-failure or always", r.value.policy.value)),
                ),
            }
        }
    };
    let mut constraints = Vec::new();
    for (i, c) in raw.constraints.iter().flatten().enumerate() {
        let f = format!("constraints[{i}]");
        l.mark(&f, c);
        l.mark(&format!("{f}.attribute"), &c.value.attribute);
        l.mark(&format!("{f}.op"), &c.value.op);
        l.mark(&format!("{f}.value"), &c.value.value);
        match ConstraintOp::from_symbol(&c.value.op.value) {
            Some(op) => constraints.push(Constraint {
                attribute: c.value.attribute.value.clone(),
                op,
                values: c.value.value.value.0.clone(),
            }),
            None => {
                l.check::<(), String>(
                    &format!("{f}.op"),
                    Err(format!("{:?} is not one of ==, !=, in, not-in", c.value.op.value)),
                );
                // A placeholder keeps later constraints at their spec index.
                constraints.push(Constraint {
                    attribute: c.value.attribute.value.clone(),
                    op: ConstraintOp::In,
                    values: c.value.value.value.0.clone(),
                });
            }
        }
    }
    let grace_period_ms = match &raw.grace_period {
        Some(g) => {
            l.mark("grace_period", g);
            l.check("grace_period", parse_duration_ms(&g.value))
        }
        None => Some(DEFAULT_GRACE_MS),
    };
    if let Some(env) = &raw.env {
        l.mark("env", env);
    }
    if let Some(ports) = &raw.ports {
        l.mark("ports", ports);
    }
    if let Some(after) = &raw.after {
        l.mark("after", after);
    }
    if let Some(s) = &raw.schedule {
        l.mark("schedule", s);
    }
    let concurrency = match &raw.concurrency {
        Some(c) => {
            l.mark("concurrency", c);
            l.check(
                "concurrency",
                crate::job::Concurrency::from_name(&c.value)
                    .ok_or_else(|| format!("{:?} is not allow, forbid or replace", c.value)),
            )
        }
        None => Some(crate::job::Concurrency::Allow),
    };
    let history = match &raw.history {
        Some(h) => {
            l.mark("history", h);
            l.check("history", whole(&h.value, "0 to 100"))
        }
        None => Some(crate::job::DEFAULT_HISTORY),
    };
    let ttl_after_finished_ms = match &raw.ttl_after_finished {
        Some(t) => {
            l.mark("ttl_after_finished", t);
            if kind != Some(JobKind::Batch) {
                l.check::<u64, String>(
                    "ttl_after_finished",
                    Err("only batch jobs finish: a service or alloc set stays until it is deleted".into()),
                )
            } else {
                l.check("ttl_after_finished", parse_duration_ms(&t.value))
            }
        }
        None => Some(crate::job::DEFAULT_TTL_AFTER_FINISHED_MS),
    };
    let mut health = Health::default();
    if let Some(h) = &raw.health {
        l.mark("health", h);
        if let Some(c) = &h.value.liveness {
            health.liveness = check_of(&mut l, "health.liveness", c).map(Box::new);
        }
        if let Some(c) = &h.value.readiness {
            health.readiness = check_of(&mut l, "health.readiness", c).map(Box::new);
        }
    }
    // Fields that failed conversion get placeholders so that every other rule is still checked;
    // problems already reported for a field are not repeated.
    let spec = JobSpec {
        name: raw.name.value.clone(),
        user: raw.user.value.clone(),
        priority: priority.unwrap_or(Priority(0)),
        kind: kind.unwrap_or(JobKind::Batch),
        tasks: tasks.unwrap_or(1),
        command: raw.command.as_ref().map(|c| c.value.clone()).unwrap_or_default(),
        env: raw.env.as_ref().map(|e| e.value.clone()).unwrap_or_default(),
        resources: Resources::new(cpu.unwrap_or(1), ram.unwrap_or(1), disk.unwrap_or(0))
            .with_ports(raw.ports.as_ref().map_or(0, |p| p.value.len() as u64)),
        restart: restart.unwrap_or(Restart::default_for(JobKind::Batch)),
        constraints,
        different_machine: raw.different_machine.unwrap_or(false),
        grace_period_ms: grace_period_ms.unwrap_or(DEFAULT_GRACE_MS),
        alloc_set: raw.alloc_set.as_ref().map(|a| a.value.clone()).unwrap_or_default(),
        max_unavailable: max_unavailable.unwrap_or(1),
        per_machine: raw.per_machine.unwrap_or(false),
        ports: raw.ports.as_ref().map(|p| p.value.clone()).unwrap_or_default(),
        health,
        min_ready_ms: min_ready_ms.unwrap_or(0),
        progress_deadline_ms: progress_deadline_ms.unwrap_or(crate::job::DEFAULT_PROGRESS_DEADLINE_MS),
        after: raw.after.as_ref().map(|a| a.value.clone()).unwrap_or_default(),
        ttl_after_finished_ms: ttl_after_finished_ms.unwrap_or(crate::job::DEFAULT_TTL_AFTER_FINISHED_MS),
        gang: raw.gang.unwrap_or(false),
        schedule: raw.schedule.as_ref().map(|s| s.value.clone()),
        concurrency: concurrency.unwrap_or_default(),
        history: history.unwrap_or(crate::job::DEFAULT_HISTORY),
    };
    let already: Vec<String> = l.problems.iter().map(|p| p.field.clone()).collect();
    for p in spec.problems() {
        if !already.iter().any(|f| p.field.starts_with(f.as_str())) {
            l.push(p);
        }
    }
    if l.problems.is_empty() {
        Ok(spec)
    } else {
        l.problems.sort_by_key(|p| (p.line, p.column));
        Err(SpecErrors(l.problems))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: hello
user: alice
priority: batch
kind: batch
tasks: 3
command: ["/bin/sh", "-c", "echo hello from $BORG_TASK_INDEX"]
env: {GREETING: hi}
resources: {cpu: 250m, ram: 64Mi, disk: 100Mi}
restart: {policy: on-failure, max_restarts: 2}
constraints:
  - {attribute: arch, op: "==", value: x86_64}
  - {attribute: rack, op: in, value: [r1, r2]}
different_machine: false
grace_period: 10s
"#;

    #[test]
    fn the_documented_example_parses() {
        let s = parse_job_spec("hello.yaml", GOOD).unwrap();
        assert_eq!(s.name, "hello");
        assert_eq!(s.priority, Priority(100));
        assert_eq!(s.resources, Resources::new(250, 64 << 20, 100 << 20));
        assert_eq!(s.restart, Restart { policy: RestartPolicy::OnFailure, max_restarts: Some(2) });
        assert_eq!(s.constraints[1].values, vec!["r1", "r2"]);
        assert_eq!(s.constraints[1].op, ConstraintOp::In);
        assert_eq!(s.grace_period_ms, 10_000);
        assert_eq!(s.env["GREETING"], "hi");
    }

    #[test]
    fn unknown_field_is_an_error_with_its_line() {
        let text = GOOD.replace("different_machine: false", "different_machines: false");
        let e = parse_job_spec("x.yaml", &text).unwrap_err();
        assert_eq!(e.0.len(), 1);
        assert_eq!(e.0[0].line, 14, "{e}");
        assert!(e.0[0].message.contains("different_machines"), "{e}");
    }

    #[test]
    fn every_semantic_problem_is_reported_with_line_and_field() {
        let text = GOOD
            .replace("name: hello", "name: Hello_World")
            .replace("tasks: 3", "tasks: 0")
            .replace("cpu: 250m", "cpu: 2 cores")
            .replace("op: in", "op: like");
        let e = parse_job_spec("bad.yaml", &text).unwrap_err();
        let got: Vec<(u64, &str)> = e.0.iter().map(|p| (p.line, p.field.as_str())).collect();
        assert_eq!(got, vec![(2, "name"), (6, "tasks"), (9, "resources.cpu"), (13, "constraints[1].op")], "{e}");
        let text = GOOD.replace("name: hello", "name: Hello_World").replace("tasks: 3", "tasks: 0");
        let e = parse_job_spec("bad.yaml", &text).unwrap_err();
        let got: Vec<(u64, &str)> = e.0.iter().map(|p| (p.line, p.field.as_str())).collect();
        assert_eq!(got, vec![(2, "name"), (6, "tasks")]);
        assert!(e.to_string().starts_with("bad.yaml:2:7: name: "), "{e}");
    }

    #[test]
    fn syntax_and_type_errors_have_a_line() {
        let e = parse_job_spec("t.yaml", &GOOD.replace("tasks: 3", "tasks: three")).unwrap_err();
        assert_eq!(e.0[0].line, 6, "{e}");
        assert!(e.to_string().contains("tasks: \"three\" is not a number"), "{e}");
        assert!(e.to_string().contains("1 to 100000"), "{e}");
        for (bad, says) in
            [("tasks: -3", "-3 is negative"), ("tasks: 10000000000", "too large"), ("tasks: 1.5", "not a whole")]
        {
            let e = parse_job_spec("t.yaml", &GOOD.replace("tasks: 3", bad)).unwrap_err();
            assert!(e.to_string().starts_with("t.yaml:6:8: tasks: ") && e.to_string().contains(says), "{e}");
        }
        let e = parse_job_spec("t.yaml", &format!("{GOOD}name: again\n")).unwrap_err();
        assert!(e.to_string().contains("name: given twice"), "{e}");
        assert!(!e.to_string().contains("DuplicateKeyPolicy"), "{e}");
        let e = parse_job_spec("t.yaml", &format!("{GOOD}---\n{GOOD}")).unwrap_err();
        assert!(e.to_string().contains("put each job in its own file"), "{e}");
        assert!(!e.to_string().contains("from_str_multiple"), "{e}");
        let e = parse_job_spec("t.yaml", &"x".repeat(MAX_SPEC_BYTES + 1)).unwrap_err();
        assert!(e.to_string().starts_with("t.yaml: spec is "), "no 0:0 location: {e}");
        let e = parse_job_spec("t.yaml", "name: [unclosed\n").unwrap_err();
        assert!(e.0[0].line >= 1, "{e}");
        let e = parse_job_spec("t.yaml", &GOOD.replace("user: alice\n", "")).unwrap_err();
        assert!(e.to_string().contains("user"), "{e}");
    }

    #[test]
    fn defaults_fill_optional_fields() {
        let text = "name: s\nuser: bob\npriority: 250\nkind: service\ntasks: 1\ncommand: [sleep, '100']\nresources: {cpu: 1, ram: 1Gi}\n";
        let s = parse_job_spec("s.yaml", text).unwrap();
        assert_eq!(s.restart, Restart::default_for(JobKind::Service));
        assert_eq!(s.grace_period_ms, DEFAULT_GRACE_MS);
        assert_eq!(s.resources.cpu_millis, 1000);
        assert_eq!(s.band(), Band::Production);
    }

    #[test]
    fn ports_and_health_checks_parse_and_are_checked() {
        let base = "name: s\nuser: bob\npriority: 250\nkind: service\ntasks: 1\ncommand: [sleep, '100']\n\
                    resources: {cpu: 1, ram: 1Gi}\nports: [http, admin]\n";
        let text = format!(
            "{base}health:\n  liveness: {{http: {{port: http, path: /healthz}}, period: 5s, timeout: 1s, failures: 3, initial_delay: 2s}}\n  \
             readiness: {{tcp: {{port: admin}}, period: 2s}}\n"
        );
        let s = parse_job_spec("s.yaml", &text).unwrap();
        assert_eq!((s.ports.len(), s.resources.ports), (2, 2));
        let l = s.health.liveness.as_deref().unwrap();
        assert_eq!(l.probe, Probe::Http { port: "http".into(), path: "/healthz".into() });
        assert_eq!((l.period_ms, l.timeout_ms, l.failures, l.initial_delay_ms), (5000, 1000, 3, 2000));
        let r = s.health.readiness.as_deref().unwrap();
        assert_eq!((&r.probe, r.period_ms, r.failures), (&Probe::Tcp { port: "admin".into() }, 2000, 3));
        // round trip through the API keeps them
        let back = JobSpec::try_from(&borg_proto::JobSpec::from(&s)).unwrap();
        assert_eq!(back, s);
        for (health, field, says) in [
            ("{liveness: {tcp: {port: web}}}", "health.liveness.port", "not one of the spec's ports"),
            ("{liveness: {tcp: {port: http}, exec: {command: [true]}}}", "health.liveness", "exactly one of"),
            (
                "{readiness: {tcp: {port: http}, period: 1s, timeout: 2s}}",
                "health.readiness.timeout",
                "at most the period",
            ),
            ("{readiness: {http: {port: http, path: healthz}}}", "health.readiness.path", "must start with /"),
            ("{liveness: {exec: {command: []}}}", "health.liveness.command", "must name a program"),
        ] {
            let e = parse_job_spec("s.yaml", &format!("{base}health: {health}\n")).unwrap_err();
            assert!(e.0.iter().any(|p| p.field == field && p.message.contains(says) && p.line == 9), "{health}: {e}");
        }
    }
}
