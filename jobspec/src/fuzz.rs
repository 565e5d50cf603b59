//! Property-based fuzzing of the spec parser and the API conversion: arbitrary input must give a
//! spec or located problems, never a panic, and whatever is accepted must satisfy every rule.
//!
//! Run longer with `PROPTEST_CASES=100000 cargo test -p borg-jobspec fuzz --release`.

use crate::{parse_job_spec, JobSpec};
use borg_proto as pb;
use proptest::prelude::*;

const GOOD: &str = "name: hello\nuser: alice\npriority: batch\nkind: batch\ntasks: 3\n\
command: [/bin/echo, hi]\nresources: {cpu: 250m, ram: 64Mi, disk: 1Gi}\nrestart: {policy: never}\n\
constraints:\n  - {attribute: arch, op: \"==\", value: x86_64}\ngrace_period: 2s\n";

proptest! {
    // 2,000 cases per property in the test suite; PROPTEST_CASES sets more for a fuzzing run.
    #![proptest_config(ProptestConfig {
        cases: std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(2000),
        ..ProptestConfig::default()
    })]

    /// Any text: a spec that satisfies every rule, or problems; never a panic.
    #[test]
    fn fuzz_parser_never_panics(text in "\\PC{0,400}") {
        if let Ok(spec) = parse_job_spec("fuzz.yaml", &text) {
            prop_assert!(spec.problems().is_empty());
        }
    }

    /// A valid spec with one line mangled (replaced, duplicated, truncated, junk inserted).
    #[test]
    fn fuzz_mutated_spec(line in 0usize..12, how in 0u8..4, junk in "[ -~]{0,30}") {
        let mut lines: Vec<String> = GOOD.lines().map(str::to_string).collect();
        let i = line % lines.len();
        match how {
            0 => lines[i] = junk.clone(),
            1 => { let l = lines[i].clone(); lines.insert(i, l) }
            2 => { let cut = lines[i].len() / 2; lines[i].truncate(cut) }
            _ => lines[i].push_str(&junk),
        }
        match parse_job_spec("m.yaml", &lines.join("\n")) {
            Ok(spec) => prop_assert!(spec.problems().is_empty()),
            Err(e) => prop_assert!(e.0.iter().all(|p| p.file == "m.yaml" && !p.message.is_empty())),
        }
    }

    /// Any API spec: a valid JobSpec (which converts back to the same message's meaning) or
    /// problems; never a panic.
    #[test]
    fn fuzz_api_spec(
        name in "[a-zA-Z0-9_-]{0,70}", user in "[a-z_]{0,40}", priority in -10i32..500, kind in 0i32..5,
        tasks in 0u32..200_000, cmd in proptest::collection::vec("[ -~]{0,20}", 0..4),
        cpu in 0u64..100_000, ram in 0u64..(1u64 << 40), op in 0i32..6, values in proptest::collection::vec("[a-z0-9]{0,8}", 0..3),
        max_unavailable in 0u32..4, per_machine in any::<bool>(), alloc_set in "[a-z0-9-]{0,8}",
    ) {
        let p = pb::JobSpec {
            name, user, priority, kind, tasks, command: cmd,
            resources: Some(pb::Resources { cpu_millis: cpu, ram_bytes: ram, disk_bytes: 0, ports: 0 }),
            constraints: vec![pb::Constraint { attribute: "arch".into(), op, values }],
            max_unavailable, per_machine, alloc_set,
            ..Default::default()
        };
        if let Ok(spec) = JobSpec::try_from(&p) {
            prop_assert!(spec.problems().is_empty());
            let back = pb::JobSpec::from(&spec);
            prop_assert_eq!(JobSpec::try_from(&back).ok(), Some(spec));
        }
    }
}
