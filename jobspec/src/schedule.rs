//! Cron schedules of job specs (`schedule: "*/5 * * * *"`), parsed and evaluated by the
//! croner crate: standard 5-field cron (minute hour day-of-month month day-of-week), or 6 fields
//! with seconds first; always UTC.

/// A parsed schedule.
#[derive(Debug, Clone)]
pub struct Schedule(croner::Cron);

impl Schedule {
    /// Parses `text`.
    ///
    /// Errors: what croner says is wrong with it.
    pub fn parse(text: &str) -> Result<Schedule, String> {
        croner::Cron::new(text).with_seconds_optional().parse().map(Schedule).map_err(|e| format!("{e:?}"))
    }

    /// The first tick strictly after `ms` (ms since the epoch), if any.
    pub fn next_after(&self, ms: i64) -> Option<i64> {
        use chrono::TimeZone;
        let t = chrono::Utc.timestamp_millis_opt(ms).single()?;
        self.0.find_next_occurrence(&t, false).ok().map(|n| n.timestamp_millis())
    }

    /// The last tick after `from` and at or before `now` (ms): a schedule that missed several
    /// ticks (the master was down) runs once, at the latest. `None` when none is due.
    pub fn latest_due(&self, from: i64, now: i64) -> Option<i64> {
        let mut t = self.next_after(from).filter(|t| *t <= now)?;
        // bounded: a per-second schedule after a long outage jumps to the last minute
        let mut steps = 0;
        let start = now.saturating_sub(60_000).max(t);
        if start > t {
            t = self.next_after(start - 1).filter(|x| *x <= now).unwrap_or(t);
        }
        while let Some(n) = self.next_after(t).filter(|n| *n <= now) {
            t = n;
            steps += 1;
            if steps > 100_000 {
                break;
            }
        }
        Some(t)
    }
}

#[cfg(test)]
mod tests {
    use super::Schedule;

    #[test]
    fn ticks_and_the_latest_due_one() {
        let s = Schedule::parse("*/5 * * * *").unwrap();
        assert_eq!(s.next_after(0), Some(300_000));
        assert_eq!(s.latest_due(0, 1_000_000), Some(900_000), "missed ticks run once, the latest");
        assert_eq!(s.latest_due(900_000, 1_000_000), None);
        let fast = Schedule::parse("*/2 * * * * *").unwrap();
        assert_eq!(fast.next_after(1_000), Some(2_000));
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("every day").is_err());
    }
}
