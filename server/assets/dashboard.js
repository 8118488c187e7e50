// Bulwark release dashboard: polls /v1/dashboard/summary with the token kept in sessionStorage
// and draws it with plain DOM calls (never innerHTML: every value is text).
"use strict";

(function () {
  const POLL_MS = 3000;
  const KEY = "bulwark.dashboard.token";
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#0969da", "#cf222e", "#1a7f37", "#8250df", "#9a6700", "#bf3989", "#1b7c83", "#57606a"];
  const openDetails = new Set();
  let timer = null;

  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "text") e.textContent = v;
      else e.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function svg(tag, attrs, ...children) {
    const e = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
    for (const c of children.flat()) {
      if (c === null || c === undefined) continue;
      e.append(c instanceof Node ? c : document.createTextNode(String(c)));
    }
    return e;
  }

  function time(secs) {
    if (secs === null || secs === undefined) return "—";
    return new Date(secs * 1000).toISOString().replace("T", " ").replace(/\.\d+Z$/, " UTC");
  }

  function duration(secs) {
    if (secs === null || secs === undefined) return "—";
    if (secs <= 0) return "done";
    const h = Math.floor(secs / 3600), m = Math.floor((secs % 3600) / 60), s = secs % 60;
    return (h ? h + " h " : "") + (h || m ? m + " min" : s + " s");
  }

  function num(x, digits) {
    if (x === null || x === undefined) return "—";
    if (typeof x !== "number") return String(x);
    if (digits === "p") return x === 0 ? "0" : x.toExponential(2);
    return Number.isInteger(x) ? String(x) : x.toFixed(digits === undefined ? 2 : digits);
  }

  function pct(ppm) { return (ppm / 10000).toLocaleString("en", { maximumFractionDigits: 3 }) + "%"; }

  function badge(word) { return el("span", { class: "badge " + word, text: word }); }

  function table(caption, headers, rows, numeric) {
    const num = new Set(numeric || []);
    return el("table", {},
      el("caption", { text: caption }),
      el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col", text: h })))),
      el("tbody", {}, rows.map((r) => el("tr", {}, r.map((c, i) =>
        i === 0 ? el("th", { scope: "row" }, c) : el("td", { class: num.has(i) ? "num" : null }, c))))));
  }

  function details(key, summary, ...body) {
    const d = el("details", { "data-key": key, open: openDetails.has(key) }, el("summary", { text: summary }), body);
    d.addEventListener("toggle", () => { if (d.open) openDetails.add(key); else openDetails.delete(key); });
    return d;
  }

  function verdictRows(verdicts) {
    return verdicts.map((v) => [
      v.test + (v.rule ? " (" + v.rule + ")" : ""),
      badge(v.outcome),
      num(v.new_count) + " in " + num(v.new_exposure) + " " + v.unit,
      num(v.base_count) + " in " + num(v.base_exposure) + " " + v.unit,
      v.p_value === null ? "—" : num(v.p_value, "p"),
      v.halt_below === null ? (v.ceiling === null ? "—" : "count ≥ " + v.ceiling) : "p < " + num(v.halt_below, "p"),
      v.reason,
    ]);
  }

  const VERDICT_HEADERS = ["Test", "Verdict", "Wave cohort", "Baseline", "p-value", "Halts when", "Reason"];

  function haltBlock(h) {
    return el("div", { class: "halt", role: "group", "aria-label": "Halt of release " + (h.version ?? "?") },
      el("p", {}, el("strong", { text: "Release " + (h.version ?? "?") + " halted" }),
        " at " + time(h.at) + " with " + h.open_waves + " wave(s) open" + (h.actor ? ", by " + h.actor : "") + "."),
      el("p", { class: "halt-reason", text: h.reason }),
      h.failed && h.failed.length
        ? table("Failed tests", VERDICT_HEADERS, verdictRows(h.failed), [])
        : null);
  }

  function rolloutSection(ch) {
    const r = ch.rollout;
    const id = "ch-" + ch.name;
    if (!r) return el("p", { class: "muted", text: "No rollout has been started on this channel." });
    if (r.error) return el("p", { class: "error", text: r.error });
    const facts = el("ul", { class: "facts" },
      el("li", {}, el("b", { text: "Release: " }), String(r.version)),
      el("li", {}, el("b", { text: "Baseline: " }), r.baseline_version === null ? "none" : String(r.baseline_version)),
      el("li", {}, el("b", { text: "Status: " }), badge(r.status), r.revert ? " (revert ordered)" : ""),
      el("li", {}, el("b", { text: "Open waves: " }), r.open_waves + " of " + r.waves.length),
      el("li", {}, el("b", { text: "Health now: " }), badge(r.health.outcome)),
      el("li", {}, el("b", { text: "Revision: " }), String(r.revision)));
    const extra = [];
    if (r.status === "paused" && r.status_detail) {
      extra.push(el("p", { class: "paused", text: "Paused at " + time(r.status_detail.at) + ": " + r.status_detail.reason }));
    }
    const waveRows = r.waves.map((w) => [
      w.index + " · " + w.name,
      w.open ? badge("open") : badge("closed"),
      pct(w.fraction_ppm),
      time(w.opened_at),
      w.open ? duration(w.bake_remaining_secs) + " of " + duration(w.bake_secs) : duration(w.bake_secs),
      w.open ? num(w.confirmed_healthy) + " / " + w.min_healthy : "0 / " + w.min_healthy,
      num(w.endpoints), num(w.exposure_hours), num(w.crashes), num(w.reverts), num(w.quarantines), num(w.silent),
    ]);
    const health = r.waves.filter((w) => w.open).map((w) => el("div", {},
      el("h4", { text: "Wave " + w.index + " (" + w.name + ") tests" }),
      w.verdicts.length
        ? table("Verdicts of wave " + w.index + " (" + w.name + ")", VERDICT_HEADERS, verdictRows(w.verdicts), [])
        : el("p", { class: "muted", text: "No verdicts yet." })));
    const b = r.health.baseline;
    return el("div", {}, facts, extra,
      table("Waves of release " + r.version,
        ["Wave", "State", "Fleet share", "Opened", "Bake remaining", "Healthy / needed", "Endpoints", "Endpoint-hours", "Crashes", "Reverts", "Quarantines", "Silent"],
        waveRows, [5, 6, 7, 8, 9, 10, 11]),
      el("h3", { id: id + "-health", text: "Health per wave" }),
      el("p", { class: "muted", text: "Baseline cohort: " + b.endpoints + " endpoints, " + num(b.exposure_hours) +
        " endpoint-hours, " + b.crashes + " crashes, " + b.reverts + " reverts, " + b.quarantines + " quarantines." }),
      health);
  }

  function chart(ch) {
    const share = ch.version_share;
    if (!share.samples.length) return el("p", { class: "muted", text: "No heartbeats on this channel yet." });
    const W = 720, H = 240, L = 48, R = 16, T = 12, B = 36;
    const t0 = share.samples[0].at, t1 = share.samples[share.samples.length - 1].at;
    const x = (t) => L + (t1 === t0 ? (W - L - R) : (t - t0) / (t1 - t0) * (W - L - R));
    const y = (f) => T + (1 - f) * (H - T - B);
    const total = (s) => Object.values(s.counts).reduce((a, b) => a + b, 0);
    const parts = [];
    for (const f of [0, 0.25, 0.5, 0.75, 1]) {
      parts.push(svg("line", { x1: L, x2: W - R, y1: y(f), y2: y(f), stroke: "#d0d7de", "stroke-width": 1 }));
      parts.push(svg("text", { x: L - 6, y: y(f) + 4, "text-anchor": "end", "font-size": 11, fill: "currentColor" }, (f * 100) + "%"));
    }
    parts.push(svg("text", { x: L, y: H - 8, "font-size": 11, fill: "currentColor" }, time(t0)));
    if (t1 !== t0) parts.push(svg("text", { x: W - R, y: H - 8, "text-anchor": "end", "font-size": 11, fill: "currentColor" }, time(t1)));
    const legend = [];
    share.versions.forEach((v, i) => {
      const color = COLORS[i % COLORS.length];
      const pts = share.samples.map((s) => {
        const n = total(s);
        const f = n ? (s.counts[String(v)] || 0) / n : 0;
        return x(s.at).toFixed(1) + "," + y(f).toFixed(1);
      });
      if (pts.length === 1) pts.push((W - R) + "," + pts[0].split(",")[1]);
      parts.push(svg("polyline", { points: pts.join(" "), fill: "none", stroke: color, "stroke-width": 2.5,
        "stroke-dasharray": i % 2 ? "6 3" : "none" }, svg("title", {}, "version " + v)));
      legend.push(el("li", {}, el("span", { class: "swatch", style: null, "data-color": color }), "version " + v));
    });
    const last = share.samples[share.samples.length - 1];
    const n = total(last);
    const desc = "Share of " + n + " endpoints per content version over time; now: " +
      share.versions.map((v) => "version " + v + " " + Math.round(((last.counts[String(v)] || 0) / (n || 1)) * 100) + "%").join(", ") + ".";
    const figure = svg("svg", { viewBox: "0 0 " + W + " " + H, width: W, height: H, role: "img", "aria-label": desc }, parts);
    const legendList = el("ul", { class: "legend", "aria-hidden": "true" }, legend);
    // Colours go in through the DOM, not a style attribute (the CSP forbids inline styles).
    legendList.querySelectorAll(".swatch").forEach((s) => { s.style.background = s.getAttribute("data-color"); });
    return el("figure", { class: "chart" }, figure, legendList, el("figcaption", { class: "muted", text: desc }),
      details("share-" + ch.name, "Version share as a table",
        table("Endpoints per version", ["Time"].concat(share.versions.map((v) => "v" + v)),
          share.samples.map((s) => [time(s.at)].concat(share.versions.map((v) => String(s.counts[String(v)] || 0)))),
          share.versions.map((_, i) => i + 1))));
  }

  function channelSection(ch) {
    const id = "ch-" + ch.name;
    const halts = ch.halts.length
      ? ch.halts.map(haltBlock)
      : [el("p", { class: "muted", text: "No halts on this channel." })];
    const releases = ch.releases.length
      ? table("Releases on " + ch.name + " (newest first)", ["Version", "Published", "By", "Rules", "Notes", "Envelope SHA-256"],
          ch.releases.map((r) => [String(r.version), time(r.published_at), r.published_by, String(r.rules.length),
            r.notes || "—", el("code", { text: r.envelope_sha256.slice(0, 16) + "…", title: r.envelope_sha256 })]), [3])
      : el("p", { class: "muted", text: "No releases published." });
    const events = ch.events.length
      ? details("events-" + ch.name, "Audit log (newest " + ch.events.length + ")",
          table("Audit log", ["Time", "Actor", "Release", "Event"], ch.events.map((e) => [time(e.at), e.actor, e.version === null ? "—" : String(e.version), e.text]), []))
      : null;
    return el("section", { class: "channel", id: id, "aria-labelledby": id + "-title" },
      el("h2", { id: id + "-title" }, "Channel ", el("code", { text: ch.name }), ch.critical ? " (critical)" : ""),
      el("h3", { text: "Rollout" }), rolloutSection(ch),
      el("h3", { id: id + "-halts-title", text: "Halts" }),
      el("div", { class: "halts", "aria-live": "polite" }, halts),
      el("h3", { text: "Fleet version share" }), chart(ch),
      el("h3", { text: "Releases" }), releases,
      events);
  }

  function render(summary) {
    $("pins").hidden = false;
    const pins = summary.pins.active;
    $("pins-text").textContent = pins.length
      ? pins.length + " pin(s) in force (of " + summary.pins.entries + " policy entries); each lapses on its own."
      : "No pins in force (" + summary.pins.entries + " policy entries).";
    $("pins-table").replaceChildren(...(pins.length ? [table("Pins in force",
      ["Host group", "Channel", "Version", "Lapses"],
      pins.map((p) => [p.host_group || "every host group", p.channel || "every channel", String(p.version), time(p.expires_at)]),
      [2])] : []));
    const channels = summary.channels.map(channelSection);
    $("channels").replaceChildren(...channels);
    $("status").textContent = "Updated " + time(summary.now) + " (server time); refreshes every " + POLL_MS / 1000 + " s.";
  }

  function showLogin(message) {
    clearTimeout(timer);
    $("login").hidden = false;
    $("forget").hidden = true;
    $("pins").hidden = true;
    $("channels").replaceChildren();
    $("login-error").textContent = message || "";
    $("status").textContent = "Signed out.";
    $("token").focus();
  }

  async function poll() {
    clearTimeout(timer);
    const token = sessionStorage.getItem(KEY);
    if (!token) { showLogin(); return; }
    try {
      const resp = await fetch("/v1/dashboard/summary", { headers: { Authorization: "Bearer " + token }, cache: "no-store" });
      if (resp.status === 401 || resp.status === 403) {
        sessionStorage.removeItem(KEY);
        const body = await resp.json().catch(() => ({}));
        showLogin("The server refused the token: " + (body.message || resp.status));
        return;
      }
      if (!resp.ok) throw new Error("HTTP " + resp.status);
      render(await resp.json());
    } catch (e) {
      $("status").textContent = "Could not refresh (" + e.message + "); retrying in " + POLL_MS / 1000 + " s.";
    }
    timer = setTimeout(poll, POLL_MS);
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("login").addEventListener("submit", (ev) => {
      ev.preventDefault();
      const t = $("token").value.trim();
      if (!t) return;
      sessionStorage.setItem(KEY, t);
      $("token").value = "";
      $("login").hidden = true;
      $("forget").hidden = false;
      $("status").textContent = "Loading…";
      poll();
    });
    $("forget").addEventListener("click", () => { sessionStorage.removeItem(KEY); showLogin(); });
    if (sessionStorage.getItem(KEY)) { $("forget").hidden = false; poll(); } else showLogin();
  });
})();
