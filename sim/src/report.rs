//! The HTML report (`bulwark sim --report DIR` writes `DIR/index.html`): the outcome as a table
//! and three SVG charts drawn from the timeline: the fleet's content over time, crashes and
//! reverts over time, and each wave's exposure and damage. The release's start and the halt are
//! marked on the time charts. One self-contained file: no script, no external resource.

use std::fmt::Write as _;

use crate::outcome::{Outcome, Timeline};

/// Escapes text for HTML and SVG.
#[must_use]
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            _ => out.push(c),
        }
    }
    out
}

const WIDTH: f64 = 900.0;
const HEIGHT: f64 = 300.0;
const LEFT: f64 = 60.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 20.0;
const BOTTOM: f64 = 40.0;

/// A time chart's frame: maps minutes and values to SVG coordinates.
struct Frame {
    max_minute: f64,
    max_value: f64,
}

impl Frame {
    fn x(&self, minute: f64) -> f64 {
        LEFT + (WIDTH - LEFT - RIGHT) * (minute / self.max_minute.max(1.0))
    }
    fn y(&self, value: f64) -> f64 {
        HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * (value / self.max_value.max(f64::MIN_POSITIVE))
    }
}

fn axes(svg: &mut String, f: &Frame, y_label: &str, y_ticks: &[(f64, String)]) {
    let _ = write!(
        svg,
        r##"<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#444"/><line x1="{l}" y1="{t}" x2="{l}" y2="{b}" stroke="#444"/>"##,
        l = LEFT,
        r = WIDTH - RIGHT,
        t = TOP,
        b = HEIGHT - BOTTOM
    );
    // Hours along the bottom, every 6 hours (every hour on short runs).
    let hours = (f.max_minute / 60.0).ceil() as u64;
    let step = if hours <= 12 { 1 } else { 6 };
    for h in (0..=hours).step_by(step) {
        let x = f.x(h as f64 * 60.0);
        let _ = write!(
            svg,
            r##"<line x1="{x:.1}" y1="{b}" x2="{x:.1}" y2="{b2}" stroke="#444"/><text x="{x:.1}" y="{ty}" font-size="11" text-anchor="middle">{h} h</text>"##,
            b = HEIGHT - BOTTOM,
            b2 = HEIGHT - BOTTOM + 4.0,
            ty = HEIGHT - BOTTOM + 16.0
        );
    }
    for (v, label) in y_ticks {
        let y = f.y(*v);
        let _ = write!(
            svg,
            r##"<line x1="{l2}" y1="{y:.1}" x2="{l}" y2="{y:.1}" stroke="#444"/><text x="{tx}" y="{ty:.1}" font-size="11" text-anchor="end">{label}</text>"##,
            l = LEFT,
            l2 = LEFT - 4.0,
            tx = LEFT - 6.0,
            ty = y + 4.0,
            label = escape(label)
        );
    }
    let _ = write!(
        svg,
        r##"<text x="12" y="{y}" font-size="11" transform="rotate(-90 12 {y})" text-anchor="middle">{}</text><text x="{x}" y="{yb}" font-size="11" text-anchor="middle">hours from the start of the simulation</text>"##,
        escape(y_label),
        y = (TOP + HEIGHT - BOTTOM) / 2.0,
        x = (LEFT + WIDTH - RIGHT) / 2.0,
        yb = HEIGHT - 4.0
    );
}

fn markers(svg: &mut String, f: &Frame, t: &Timeline) {
    let mut mark = |minute: u64, label: &str, colour: &str| {
        let x = f.x(minute as f64);
        let _ = write!(
            svg,
            r##"<line class="marker" x1="{x:.1}" y1="{t}" x2="{x:.1}" y2="{b}" stroke="{colour}" stroke-dasharray="4 3"/><text x="{tx:.1}" y="{ty}" font-size="11" fill="{colour}">{label}</text>"##,
            t = TOP,
            b = HEIGHT - BOTTOM,
            tx = x + 3.0,
            ty = TOP + 10.0,
            label = escape(label)
        );
    };
    mark(t.release_start_minute, "release", "#555");
    if let Some(h) = t.halt_minute {
        mark(h, "halt", "#c00");
    }
}

fn polyline(svg: &mut String, f: &Frame, points: &[(f64, f64)], colour: &str, name: &str) {
    let mut pts = String::new();
    for (m, v) in points {
        let _ = write!(pts, "{:.1},{:.1} ", f.x(*m), f.y(*v));
    }
    let _ = write!(
        svg,
        r##"<polyline class="series" data-name="{name}" fill="none" stroke="{colour}" stroke-width="2" points="{}"/>"##,
        pts.trim_end(),
        name = escape(name)
    );
}

fn legend(svg: &mut String, items: &[(&str, &str)]) {
    for (i, (colour, name)) in items.iter().enumerate() {
        let x = LEFT + 10.0 + 170.0 * i as f64;
        let _ = write!(
            svg,
            r##"<rect x="{x}" y="{y}" width="12" height="12" fill="{colour}"/><text x="{tx}" y="{ty}" font-size="12">{}</text>"##,
            escape(name),
            y = TOP + 16.0,
            tx = x + 16.0,
            ty = TOP + 26.0
        );
    }
}

fn svg_open(title: &str) -> String {
    format!(
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{}">"##,
        escape(title)
    )
}

fn max_minute(t: &Timeline) -> f64 {
    t.samples.last().map_or(1.0, |s| s.minute as f64).max(1.0)
}

/// The fleet's content over time: shares of the fleet on the release, on the previous release,
/// on line, and down (crashing or booting).
#[must_use]
pub fn share_chart(t: &Timeline) -> String {
    let n = t.endpoints.max(1) as f64;
    let f = Frame {
        max_minute: max_minute(t),
        max_value: 1.0,
    };
    let mut svg = svg_open("Share of the fleet over time");
    let ticks: Vec<(f64, String)> = [0.0, 0.25, 0.5, 0.75, 1.0]
        .iter()
        .map(|v| (*v, format!("{:.0}%", v * 100.0)))
        .collect();
    axes(&mut svg, &f, "share of the fleet", &ticks);
    let series = |get: fn(&crate::outcome::Sample) -> u64| -> Vec<(f64, f64)> {
        t.samples
            .iter()
            .map(|s| (s.minute as f64, get(s) as f64 / n))
            .collect()
    };
    polyline(&mut svg, &f, &series(|s| s.online), "#9ab", "on line");
    polyline(
        &mut svg,
        &f,
        &series(|s| s.on_previous),
        "#38c",
        "previous release",
    );
    polyline(
        &mut svg,
        &f,
        &series(|s| s.on_release),
        "#2a2",
        "the release",
    );
    polyline(&mut svg, &f, &series(|s| s.down), "#c33", "down");
    legend(
        &mut svg,
        &[
            ("#2a2", "on the release"),
            ("#38c", "on the previous release"),
            ("#9ab", "on line"),
            ("#c33", "down (crashing, booting)"),
        ],
    );
    markers(&mut svg, &f, t);
    svg.push_str("</svg>");
    svg
}

/// Crashes and reverts per sample interval.
#[must_use]
pub fn crash_chart(t: &Timeline) -> String {
    let peak = t
        .samples
        .iter()
        .map(|s| s.release_crashes.max(s.baseline_crashes).max(s.reverts))
        .max()
        .unwrap_or(0)
        .max(1) as f64;
    let f = Frame {
        max_minute: max_minute(t),
        max_value: peak,
    };
    let mut svg = svg_open("Crashes and reverts over time");
    let ticks: Vec<(f64, String)> = [0.0, 0.5, 1.0]
        .iter()
        .map(|v| (v * peak, format!("{:.0}", v * peak)))
        .collect();
    axes(
        &mut svg,
        &f,
        &format!("per {} minutes", t.sample_minutes),
        &ticks,
    );
    let series = |get: fn(&crate::outcome::Sample) -> u64| -> Vec<(f64, f64)> {
        t.samples
            .iter()
            .map(|s| (s.minute as f64, get(s) as f64))
            .collect()
    };
    polyline(
        &mut svg,
        &f,
        &series(|s| s.baseline_crashes),
        "#999",
        "baseline crashes",
    );
    polyline(
        &mut svg,
        &f,
        &series(|s| s.release_crashes),
        "#c33",
        "release crashes",
    );
    polyline(&mut svg, &f, &series(|s| s.reverts), "#e90", "reverts");
    legend(
        &mut svg,
        &[
            ("#c33", "crashes caused by the release"),
            ("#999", "baseline crashes"),
            ("#e90", "guard reverts"),
        ],
    );
    markers(&mut svg, &f, t);
    svg.push_str("</svg>");
    svg
}

/// Per wave: endpoints exposed, crashed, reverted and quarantined, as grouped bars (log scale, so
/// a wave of 100 and one of 50,000 both show).
#[must_use]
pub fn wave_chart(t: &Timeline) -> String {
    let mut svg = svg_open("Exposure and damage per wave");
    let groups = t.waves.len().max(1) as f64;
    let peak = t
        .waves
        .iter()
        .map(|w| w.exposed.max(w.crashed).max(w.reverts).max(w.quarantines))
        .max()
        .unwrap_or(1)
        .max(1) as f64;
    let log_peak = (peak + 1.0).log10();
    let plot_h = HEIGHT - TOP - BOTTOM;
    let group_w = (WIDTH - LEFT - RIGHT) / groups;
    let bar_w = group_w / 5.0;
    let _ = write!(
        svg,
        r##"<line x1="{l}" y1="{b}" x2="{r}" y2="{b}" stroke="#444"/>"##,
        l = LEFT,
        r = WIDTH - RIGHT,
        b = HEIGHT - BOTTOM
    );
    let colours = ["#38c", "#c33", "#e90", "#636"];
    for (i, w) in t.waves.iter().enumerate() {
        let x0 = LEFT + group_w * i as f64;
        for (j, v) in [w.exposed, w.crashed, w.reverts, w.quarantines]
            .iter()
            .enumerate()
        {
            let h = plot_h * ((*v as f64) + 1.0).log10() / log_peak.max(f64::MIN_POSITIVE);
            let x = x0 + bar_w * (0.5 + j as f64);
            let _ = write!(
                svg,
                r##"<rect class="bar" x="{x:.1}" y="{y:.1}" width="{bw:.1}" height="{h:.1}" fill="{c}"><title>{v}</title></rect><text x="{tx:.1}" y="{ty:.1}" font-size="10" text-anchor="middle">{v}</text>"##,
                y = HEIGHT - BOTTOM - h,
                bw = bar_w * 0.9,
                c = colours[j],
                tx = x + bar_w * 0.45,
                ty = HEIGHT - BOTTOM - h - 3.0
            );
        }
        let opened = w.opened_after_minutes.map_or_else(
            || "never opened".to_owned(),
            |m| format!("opened at +{m} min"),
        );
        let _ = write!(
            svg,
            r##"<text x="{tx:.1}" y="{ty}" font-size="11" text-anchor="middle">{} ({} endpoints, {})</text>"##,
            escape(&w.name),
            w.endpoints,
            opened,
            tx = x0 + group_w / 2.0,
            ty = HEIGHT - BOTTOM + 16.0
        );
    }
    legend(
        &mut svg,
        &[
            ("#38c", "exposed"),
            ("#c33", "crashed"),
            ("#e90", "reverted"),
            ("#636", "quarantined"),
        ],
    );
    svg.push_str("</svg>");
    svg
}

fn opt<T: std::fmt::Display>(v: &Option<T>) -> String {
    v.as_ref()
        .map_or_else(|| "never".to_owned(), ToString::to_string)
}

/// The whole page.
#[must_use]
pub fn html(outcome: &Outcome, description: &str, t: &Timeline) -> String {
    let mut page = String::new();
    let _ = write!(
        page,
        r#"<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>bulwark sim: {name}</title>
<style>body{{font-family:sans-serif;max-width:960px;margin:2em auto;color:#222}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:3px 8px;text-align:left}}td.n{{text-align:right}}</style>
</head><body>
<h1>bulwark sim: {name}</h1>
<p>{description}</p>
<table>
<tr><th>endpoints</th><td class="n">{endpoints}</td></tr>
<tr><th>seed</th><td class="n">{seed}</td></tr>
<tr><th>simulated hours</th><td class="n">{hours}</td></tr>
<tr><th>bricked</th><td class="n">{bricked}</td></tr>
<tr><th>crashed at least once because of the release</th><td class="n">{crashed}</td></tr>
<tr><th>most crashes on one endpoint</th><td class="n">{max}</td></tr>
<tr><th>halted</th><td>{halted}</td></tr>
<tr><th>first crash after (minutes)</th><td class="n">{first}</td></tr>
<tr><th>halt after (minutes)</th><td class="n">{halt}</td></tr>
<tr><th>share of the fleet on the release at the end</th><td class="n">{fraction}</td></tr>
<tr><th>hours until 95% of the fleet is on it</th><td class="n">{h95}</td></tr>
</table>
"#,
        name = escape(&outcome.scenario),
        description = escape(description),
        endpoints = outcome.endpoints,
        seed = outcome.seed,
        hours = outcome.simulated_hours,
        bricked = outcome.bricked,
        crashed = outcome.crashed_once,
        max = outcome.max_crashes_per_endpoint,
        halted = match &outcome.halt_reason {
            Some(r) if outcome.halted => format!("yes: {}", escape(r)),
            _ if outcome.halted => "yes".to_owned(),
            _ => "no".to_owned(),
        },
        first = opt(&outcome.first_crash_after_minutes),
        halt = opt(&outcome.halt_after_minutes),
        fraction = outcome.final_fraction_on_release,
        h95 = opt(&outcome.hours_to_95pct),
    );
    let _ = write!(
        page,
        "<h2>The fleet's content over time</h2>\n{}\n<h2>Crashes and reverts</h2>\n{}\n<h2>Per wave</h2>\n{}\n</body></html>\n",
        share_chart(t),
        crash_chart(t),
        wave_chart(t)
    );
    page
}

/// Writes `dir/index.html` (creating `dir`) and each of its charts as a file of its own
/// (`share.svg`, `crashes.svg`, `waves.svg`, for documents that embed one), and returns the
/// page's path.
pub fn write(
    dir: &std::path::Path,
    outcome: &Outcome,
    description: &str,
    t: &Timeline,
) -> std::io::Result<std::path::PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join("index.html");
    std::fs::write(&path, html(outcome, description, t))?;
    std::fs::write(dir.join("share.svg"), share_chart(t))?;
    std::fs::write(dir.join("crashes.svg"), crash_chart(t))?;
    std::fs::write(dir.join("waves.svg"), wave_chart(t))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outcome::{EndpointTally, Sample, WaveStats};

    fn timeline(halt: Option<u64>) -> Timeline {
        Timeline {
            endpoints: 1000,
            sample_minutes: 60,
            release_start_minute: 60,
            halt_minute: halt,
            halt_reason: halt.map(|_| "crash rate <above> baseline".to_owned()),
            samples: (0..=6)
                .map(|h| Sample {
                    minute: h * 60,
                    online: 800,
                    on_release: h * 100,
                    on_previous: 1000 - h * 100,
                    release_crashes: h,
                    ..Sample::default()
                })
                .collect(),
            waves: vec![
                WaveStats {
                    name: "canary & co".into(),
                    endpoints: 10,
                    opened_after_minutes: Some(0),
                    exposed: 10,
                    crashed: 3,
                    crashes: 5,
                    reverts: 3,
                    quarantines: 1,
                },
                WaveStats {
                    name: "all".into(),
                    endpoints: 990,
                    ..WaveStats::default()
                },
            ],
        }
    }

    #[test]
    fn series_are_plotted_where_the_values_are() {
        let t = timeline(None);
        let svg = share_chart(&t);
        // "the release": 0% at minute 0 (x = LEFT, y = bottom), 60% at the last minute (x =
        // right edge, y = 60% of the plot's height above the bottom).
        let line = svg
            .split("<polyline")
            .find(|p| p.contains("data-name=\"the release\""))
            .unwrap();
        let points = line
            .split("points=\"")
            .nth(1)
            .unwrap()
            .split('"')
            .next()
            .unwrap();
        let pts: Vec<&str> = points.split(' ').collect();
        assert_eq!(pts.len(), 7);
        assert_eq!(pts[0], format!("{:.1},{:.1}", LEFT, HEIGHT - BOTTOM));
        let top = HEIGHT - BOTTOM - (HEIGHT - TOP - BOTTOM) * 0.6;
        assert_eq!(pts[6], format!("{:.1},{:.1}", WIDTH - RIGHT, top));
        // No halt: only the release's marker.
        assert_eq!(svg.matches("class=\"marker\"").count(), 1);
    }

    #[test]
    fn the_halt_is_marked_and_text_is_escaped() {
        let t = timeline(Some(180));
        let tallies = [EndpointTally::default()];
        let o = crate::outcome::Outcome::from_run("x<y", 1, 6, &t, &tallies, None);
        let page = html(&o, "a \"quoted\" <b>", &t);
        assert_eq!(share_chart(&t).matches("class=\"marker\"").count(), 2);
        assert!(page.contains("bulwark sim: x&lt;y"));
        assert!(page.contains("a &quot;quoted&quot; &lt;b&gt;"));
        assert!(page.contains("yes: crash rate &lt;above&gt; baseline"));
        assert!(page.contains("canary &amp; co (10 endpoints, opened at +0 min)"));
        assert!(page.contains("all (990 endpoints, never opened)"));
        assert!(!page.contains("<b>"));
        // Three charts, each closed.
        assert_eq!(page.matches("<svg ").count(), 3);
        assert_eq!(page.matches("</svg>").count(), 3);
    }

    #[test]
    fn wave_bars_are_log_scaled() {
        let t = timeline(None);
        let svg = wave_chart(&t);
        let heights: Vec<f64> = svg
            .split("class=\"bar\"")
            .skip(1)
            .map(|b| {
                b.split("height=\"")
                    .nth(1)
                    .unwrap()
                    .split('"')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        assert_eq!(heights.len(), 8);
        let plot = HEIGHT - TOP - BOTTOM;
        // exposed 10 is the peak: full height; crashed 3: log10(4)/log10(11) of it; 0: nothing.
        assert!((heights[0] - plot).abs() < 0.06, "{heights:?}");
        assert!((heights[1] - plot * 4f64.log10() / 11f64.log10()).abs() < 0.06);
        assert_eq!(heights[4], 0.0);
    }
}
