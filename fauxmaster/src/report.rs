//! Utilization over time from a replay: a CSV and an SVG chart of capacity against what each
//! priority band holds, for capacity planners.
//!
//! The chart is a few dozen lines of SVG written directly: plotting crates need a font backend
//! (system fonts or a bundled font file) just to lay out axis labels.

use scheduler_core::{CellModel, Resource};
use std::fmt::Write as _;
use std::path::Path;

/// One sample of the cell.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Trace time, seconds.
    pub time_s: f64,
    /// Capacity of the machines that are up: [cpu cores, ram GiB].
    pub capacity: [f64; 2],
    /// Allocated by band (free, batch, production, monitoring): [band][cpu cores, ram GiB].
    pub allocated: [[f64; 2]; 4],
    /// Tasks placed, by band.
    pub placed: [usize; 4],
    /// Tasks pending.
    pub pending: usize,
}

/// Samples `cell` at `time_s`.
pub fn sample(cell: &CellModel, time_s: f64, pending: usize) -> Sample {
    let gib = (1u64 << 30) as f64;
    let conv = |r: Resource, v: u64| if r == Resource::Cpu { v as f64 / 1000.0 } else { v as f64 / gib };
    let mut s = Sample { time_s, capacity: [0.0; 2], allocated: [[0.0; 2]; 4], placed: [0; 4], pending };
    for m in (0..cell.len()).filter(|&m| cell.up[m]) {
        for (i, r) in [Resource::Cpu, Resource::Ram].into_iter().enumerate() {
            s.capacity[i] += conv(r, cell.capacity[m].get(r));
            for (b, a) in cell.allocated_by_band(m).iter().enumerate() {
                s.allocated[b][i] += conv(r, a.get(r));
            }
        }
        for r in cell.residents(m) {
            s.placed[CellModel::band_of(r.priority)] += 1;
        }
    }
    s
}

/// The samples as CSV, one row per sample, header first.
pub fn csv(samples: &[Sample]) -> String {
    let mut out = String::from(
        "time_s,cpu_capacity_cores,cpu_free_band,cpu_batch,cpu_production,cpu_monitoring,\
         ram_capacity_gib,ram_free_band,ram_batch,ram_production,ram_monitoring,\
         placed_free,placed_batch,placed_production,placed_monitoring,pending\n",
    );
    for s in samples {
        let _ = writeln!(
            out,
            "{:.0},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{:.1},{},{},{},{},{}",
            s.time_s,
            s.capacity[0],
            s.allocated[0][0],
            s.allocated[1][0],
            s.allocated[2][0],
            s.allocated[3][0],
            s.capacity[1],
            s.allocated[0][1],
            s.allocated[1][1],
            s.allocated[2][1],
            s.allocated[3][1],
            s.placed[0],
            s.placed[1],
            s.placed[2],
            s.placed[3],
            s.pending
        );
    }
    out
}

const COLORS: [&str; 4] = ["#9ecae1", "#fdae6b", "#74c476", "#9e9ac8"];
const NAMES: [&str; 4] = ["free", "batch", "production", "monitoring"];

/// Two stacked-area panels (CPU, RAM): allocation by band under the capacity line; `title`
/// and `subtitle` (e.g. the unit mapping) on top.
pub fn svg(samples: &[Sample], title: &str, subtitle: &str) -> String {
    let (w, ph, left, top) = (900.0, 260.0, 70.0, 64.0);
    let mut out = format!(
        "<svg xmlns='http://www.w3.org/2000/svg' width='{w}' height='{}' font-family='sans-serif' font-size='12'>\
         <rect width='100%' height='100%' fill='white'/><text x='{left}' y='20' font-size='15'>{}</text>\
         <text x='{left}' y='37' font-size='11' fill='#555'>{}</text>",
        top + 2.0 * (ph + 50.0) + 20.0,
        esc(title),
        esc(subtitle)
    );
    let (t0, t1) = (samples.first().map_or(0.0, |s| s.time_s), samples.last().map_or(1.0, |s| s.time_s));
    let span = (t1 - t0).max(1.0);
    let pw = w - left - 150.0;
    for (panel, unit) in [(0usize, "CPU (cores)"), (1, "RAM (GiB)")] {
        let y0 = top + panel as f64 * (ph + 50.0);
        let ymax = samples
            .iter()
            .map(|s| s.capacity[panel].max(s.allocated.iter().map(|b| b[panel]).sum()))
            .fold(1.0, f64::max)
            * 1.05;
        let x = |t: f64| left + (t - t0) / span * pw;
        let y = |v: f64| y0 + ph - v / ymax * ph;
        // stacked areas, highest band at the bottom
        let mut below = vec![0.0; samples.len()];
        for b in (0..4).rev() {
            let above: Vec<f64> = samples.iter().zip(&below).map(|(s, lo)| lo + s.allocated[b][panel]).collect();
            let mut pts: Vec<String> =
                samples.iter().zip(&above).map(|(s, v)| format!("{:.1},{:.1}", x(s.time_s), y(*v))).collect();
            pts.extend(samples.iter().zip(&below).rev().map(|(s, v)| format!("{:.1},{:.1}", x(s.time_s), y(*v))));
            let _ = write!(out, "<polygon points='{}' fill='{}' stroke='none'/>", pts.join(" "), COLORS[b]);
            below = above;
        }
        let cap: Vec<String> =
            samples.iter().map(|s| format!("{:.1},{:.1}", x(s.time_s), y(s.capacity[panel]))).collect();
        let _ = write!(out, "<polyline points='{}' fill='none' stroke='black' stroke-width='1.5'/>", cap.join(" "));
        let _ = write!(
            out,
            "<line x1='{left}' y1='{b}' x2='{r}' y2='{b}' stroke='#444'/><line x1='{left}' y1='{y0}' x2='{left}' y2='{b}' stroke='#444'/>\
             <text x='{left}' y='{ty}'>{unit}</text><text x='{lx}' y='{b}' text-anchor='end'>0</text>\
             <text x='{lx}' y='{ym}' text-anchor='end'>{ymax:.0}</text>\
             <text x='{left}' y='{tb}'>{t0:.0} s</text><text x='{r}' y='{tb}' text-anchor='end'>{t1:.0} s</text>",
            b = y0 + ph,
            r = left + pw,
            ty = y0 - 6.0,
            lx = left - 6.0,
            ym = y0 + 10.0,
            tb = y0 + ph + 16.0,
        );
    }
    let lx = left + pw + 20.0;
    let _ = write!(out, "<line x1='{lx}' y1='{top}' x2='{}' y2='{top}' stroke='black' stroke-width='1.5'/><text x='{}' y='{}'>capacity</text>", lx + 20.0, lx + 26.0, top + 4.0);
    for b in (0..4).rev() {
        let yy = top + 20.0 + (3 - b) as f64 * 18.0;
        let _ = write!(
            out,
            "<rect x='{lx}' y='{}' width='20' height='10' fill='{}'/><text x='{}' y='{}'>{}</text>",
            yy - 8.0,
            COLORS[b],
            lx + 26.0,
            yy + 1.0,
            NAMES[b]
        );
    }
    out.push_str("</svg>\n");
    out
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;").replace('\'', "&apos;")
}

/// The note a chart and a summary carry when allocation starts above capacity: the replay starts
/// from the trace's own time-0 placements, and the real cell had placed more requests than it
/// had capacity (Borg overcommits: requests are limits, not use). None when it does not.
pub fn overcommit_note(samples: &[Sample]) -> Option<String> {
    let first = samples.first()?;
    let cpu: f64 = first.allocated.iter().map(|b| b[0]).sum();
    (first.capacity[0] > 0.0 && cpu > first.capacity[0]).then(|| {
        format!(
            "Allocation starts above capacity: the replay starts from the trace's own time-0 placements, whose CPU requests are {:.0}% of the cell's capacity (the real cell overcommitted).",
            100.0 * cpu / first.capacity[0]
        )
    })
}

/// Writes `utilization.csv` and `utilization.svg` into `dir` (created if missing).
///
/// Errors: the directory or files cannot be written.
pub fn write(dir: &Path, samples: &[Sample], title: &str, subtitle: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("utilization.csv"), csv(samples))?;
    let subtitle = match overcommit_note(samples) {
        Some(note) => format!("{subtitle}. {note}"),
        None => subtitle.to_string(),
    };
    std::fs::write(dir.join("utilization.svg"), svg(samples, title, &subtitle))
}

#[cfg(test)]
mod tests {
    use super::*;
    use scheduler_core::{Attributes, MachineId, Priority, Resident, Resources, TaskRef};

    #[test]
    fn samples_sum_allocation_by_band_and_render() {
        let mut c = CellModel::new();
        c.push(MachineId("a".into()), Resources::new(4000, 8 << 30, 0), Attributes::new(), "a", true);
        c.push(MachineId("b".into()), Resources::new(4000, 8 << 30, 0), Attributes::new(), "b", false);
        c.add(0, Resident::new(TaskRef { job: 0, index: 0 }, Priority(250), Resources::new(1500, 1 << 30, 0)));
        let s = sample(&c, 60.0, 2);
        assert_eq!(s.capacity, [4.0, 8.0], "down machines do not count");
        assert_eq!(s.allocated[2], [1.5, 1.0]);
        assert_eq!(s.placed, [0, 0, 1, 0]);
        let text = csv(std::slice::from_ref(&s));
        assert_eq!(text.lines().nth(1), Some("60,4.0,0.0,0.0,1.5,0.0,8.0,0.0,0.0,1.0,0.0,0,0,1,0,2"));
        assert_eq!(overcommit_note(std::slice::from_ref(&s)), None, "1.5 of 4 cores: no note");
        let mut over = s.clone();
        over.allocated[0] = [3.0, 0.0];
        let note = overcommit_note(std::slice::from_ref(&over)).unwrap();
        assert!(note.contains("112% of the cell's capacity"), "(3 + 1.5) / 4: {note}");
        let chart = svg(&[s.clone(), Sample { time_s: 120.0, ..s }], "t <1>", "u");
        assert!(chart.starts_with("<svg") && chart.contains("t &lt;1&gt;") && chart.matches("<polygon").count() == 8);
    }
}
