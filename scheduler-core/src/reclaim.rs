//! Reservations from usage (Borg §5.5, "Resource reclamation"): the estimate of what a task
//! needs, shared by the Borgmaster's estimator (`borgmaster::reservation`) and fauxmaster's
//! `--reclaim`, so both reclaim by one formula.

use crate::resources::Resources;

/// Added to every estimate: 50 millicores, 64 MiB, no disk (a task idle so far still gets
/// room to wake up in).
pub const FLOOR: Resources = Resources::new(50, 64 << 20, 0);

/// Default safety margin over the peak usage: 10% (Borg's "actual usage plus a safety margin";
/// Autopilot's recommenders add 10-15% over a peak or high percentile).
pub const DEFAULT_MARGIN: f64 = 0.10;

/// The reservation of a task of `request` whose peak usage is `peak`:
/// `min(request, peak * (1 + margin) + FLOOR)` for CPU and RAM; disk and ports stay at the
/// request (not sampled). Integer arithmetic, the margin in basis points rounded up.
pub fn estimate(request: Resources, peak: Resources, margin: f64) -> Resources {
    let bp = (margin.max(0.0) * 10_000.0).round() as u128;
    let up = |v: u64, floor: u64| {
        let extra = (u128::from(v) * bp).div_ceil(10_000);
        u64::try_from(u128::from(v) + extra).unwrap_or(u64::MAX).saturating_add(floor)
    };
    Resources {
        cpu_millis: up(peak.cpu_millis, FLOOR.cpu_millis),
        ram_bytes: up(peak.ram_bytes, FLOOR.ram_bytes),
        disk_bytes: request.disk_bytes,
        ports: request.ports,
    }
    .min_each(&request)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_estimate_is_the_peak_plus_margin_and_floor_capped_at_the_request() {
        let request = Resources::new(1500, 1024 * MIB, 10 * MIB);
        let e = estimate(request, Resources::new(100, 100 * MIB, 0), 0.10);
        assert_eq!(e, Resources::new(160, 110 * MIB + 64 * MIB, 10 * MIB), "disk stays at the request");
        assert_eq!(estimate(request, Resources::new(5000, 5000 * MIB, 0), 0.10), request);
        assert_eq!(estimate(request, Resources::ZERO, 0.10), Resources::new(50, 64 * MIB, 10 * MIB));
    }
}
