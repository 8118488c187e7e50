// Drives the dashboard in headless Chromium for server/tests/dashboard.rs (which starts the
// server, feeds it and runs this script). Protocol on stdout, one line each:
//   READY    the page shows the release and its open first wave (the test then makes the
//            controller halt the rollout and writes "HALTED" on this script's stdin)
//   OK       the halt and its reason appeared without a reload; screenshots written
// Anything else goes to stderr; a failure exits 1 with the reason.
//
// Environment: DASHBOARD_URL (https://127.0.0.1:PORT), DASHBOARD_TOKEN (a viewer token),
// CHROMIUM (the browser's executable), PLAYWRIGHT_CORE (the playwright-core package directory),
// SCREENSHOT_DIR (where the PNGs go).
"use strict";

const path = require("path");
const readline = require("readline");

const env = (name) => {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set`);
  return v;
};

const { chromium } = require(env("PLAYWRIGHT_CORE"));
const base = env("DASHBOARD_URL");
const shots = env("SCREENSHOT_DIR");
const log = (...a) => console.error("drive.js:", ...a);

const stdinLines = readline.createInterface({ input: process.stdin });
const nextLine = () => new Promise((resolve, reject) => {
  stdinLines.once("line", resolve);
  stdinLines.once("close", () => reject(new Error("stdin closed before the test said HALTED")));
});

async function main() {
  const browser = await chromium.launch({
    executablePath: env("CHROMIUM"),
    headless: true,
    args: ["--no-sandbox", "--disable-dev-shm-usage"],
  });
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true, viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const problems = [];
    page.on("console", (m) => { if (m.type() === "error") problems.push("console: " + m.text()); });
    page.on("pageerror", (e) => problems.push("page error: " + e.message));
    let navigations = 0;
    page.on("framenavigated", (f) => { if (f === page.mainFrame()) navigations += 1; });

    const resp = await page.goto(base + "/dashboard");
    if (!resp || resp.status() !== 200) throw new Error(`GET /dashboard: ${resp && resp.status()}`);

    // Signed out: the page asks for a token; a wrong one is refused and asked for again.
    const form = page.getByRole("form").or(page.locator("#login"));
    await form.waitFor({ state: "visible", timeout: 10000 });
    await page.getByLabel("API token").fill("bwr_not-a-token");
    await page.getByRole("button", { name: "Show dashboard" }).click();
    await page.getByRole("alert").filter({ hasText: "refused the token" }).waitFor({ timeout: 10000 });
    log("a wrong token was refused");
    problems.length = 0; // Chromium logs the refused request (401) as a console error.

    await page.getByLabel("API token").fill(env("DASHBOARD_TOKEN"));
    await page.getByRole("button", { name: "Show dashboard" }).click();
    const stored = await page.evaluate(() => sessionStorage.getItem("bulwark.dashboard.token"));
    if (stored !== env("DASHBOARD_TOKEN")) throw new Error("the token is not kept in sessionStorage");

    // The release and its first wave, open.
    const channel = page.locator("section#ch-stable");
    await channel.waitFor({ timeout: 10000 });
    const waves = channel.getByRole("table", { name: "Waves of release 1" });
    await waves.waitFor({ timeout: 10000 });
    const canary = waves.getByRole("row").filter({ hasText: "0 · canary" });
    await canary.filter({ hasText: "open" }).waitFor({ timeout: 10000 });
    const allWave = waves.getByRole("row").filter({ hasText: "1 · all" });
    await allWave.filter({ hasText: "closed" }).waitFor({ timeout: 10000 });
    await channel.getByRole("table", { name: /Releases on stable/ }).getByRole("row").filter({ hasText: "published by the test" }).waitFor({ timeout: 10000 });
    await channel.getByRole("table", { name: /Verdicts of wave 0/ }).waitFor({ timeout: 10000 });
    await channel.getByText("No halts on this channel.").waitFor({ timeout: 10000 });
    // The chart: its lines exist (a flat line at 0% has an empty box, so "visible" cannot be
    // asked of the polyline itself; the figure is).
    await channel.locator("figure.chart svg").first().waitFor({ timeout: 10000 });
    await channel.locator("figure.chart svg polyline").first().waitFor({ state: "attached", timeout: 10000 });
    // The pin the test set, in force.
    const pins = page.getByRole("table", { name: "Pins in force" });
    await pins.getByRole("row").filter({ hasText: "servers" }).filter({ hasText: "stable" }).waitFor({ timeout: 10000 });
    await page.getByText("1 pin(s) in force").waitFor({ timeout: 10000 });
    log("canary row:", (await canary.innerText()).replace(/\s+/g, " "));
    await page.screenshot({ path: path.join(shots, "dashboard-before-halt.png"), fullPage: true });
    const before = navigations;
    await page.evaluate(() => { window.__sameDocument = true; });

    console.log("READY");
    const said = (await nextLine()).trim();
    if (said !== "HALTED") throw new Error(`expected HALTED on stdin, got ${JSON.stringify(said)}`);

    // The halt and its reason, without a reload.
    const reason = channel.locator(".halts .halt-reason");
    await reason.filter({ hasText: "quarantine" }).waitFor({ timeout: 15000 });
    await channel.locator(".badge.halted").first().waitFor({ timeout: 5000 });
    const text = await reason.first().innerText();
    if (!/halted by the controller/.test(text)) throw new Error(`unexpected halt reason: ${text}`);
    const same = await page.evaluate(() => window.__sameDocument === true);
    if (!same || navigations !== before) throw new Error("the page was reloaded to show the halt");
    log("halt reason:", text);
    await page.screenshot({ path: path.join(shots, "dashboard-halted.png"), fullPage: true });
    if (problems.length) throw new Error("the page reported errors:\n" + problems.join("\n"));
    console.log("OK");
  } finally {
    await browser.close();
  }
}

main().then(() => process.exit(0), (e) => {
  console.error("drive.js: FAIL:", e && e.stack ? e.stack : e);
  process.exit(1);
});
