/**
 * The web dashboard in a real browser (Debian's chromium driven by playwright-core) against
 * `moat up` with real sandboxes: sign in, see a created sandbox appear, open it, its logs and a
 * chart with points, kill it and see it go, a build's logs stream; at 1280 and 390 px. Hostile
 * cases: a bad key, another team's sandbox id in the URL, metadata and log lines holding HTML are
 * shown as text. The E2B CLI's link (https://<domain>/dashboard/inspect/sandbox/<id>) reaches the
 * sandbox's page through the client proxy. Screenshots go to $MOAT_TEST_ARTIFACTS_DIR (default: a
 * temp dir, printed).
 */
import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, afterEach, before, describe, test } from "node:test";
import { fileURLToPath } from "node:url";
import { Sandbox, Template, waitForTimeout } from "e2b";
import { type Browser, type BrowserContext, chromium, type Page } from "playwright-core";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";

const CHROMIUM = process.env.MOAT_TEST_CHROMIUM ?? "/usr/bin/chromium";
const E2B_CLI = fileURLToPath(new URL("../../../node_modules/@e2b/cli/dist/index.js", import.meta.url));
/** Would run as script if the page ever put it into the DOM as HTML. */
const HOSTILE = `<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script>`;

describe("the dashboard in chromium against moat up", { timeout: 300_000 }, () => {
  let moat: RunningMoat;
  let browser: Browser;
  let context: BrowserContext;
  let page: Page;
  let sbx: Sandbox;
  let artifacts: string;
  /** Screenshots in a temp dir of the test's own go once every test passed; a failure keeps them. */
  let ownArtifacts = false;
  let failed = false;
  let base: string;
  const problems: string[] = [];

  const shot = async (name: string, target = page) => {
    await target.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: true });
  };
  /** Watches a page for script errors and CSP violations: either fails the test at its end. */
  const watch = (p: Page) => {
    p.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    p.on("console", (msg) => {
      if (/Content Security Policy|Refused to/i.test(msg.text())) problems.push(`console: ${msg.text()}`);
    });
    p.on("dialog", (dialog) => void dialog.accept());
  };
  const textOf = async (locator: { textContent(): Promise<string | null> }) =>
    (await locator.textContent()) ?? "";
  const signIn = async (p: Page, secret: string) => {
    await p.getByLabel("API key (X-API-Key)").fill(secret);
    await p.getByRole("button", { name: "Sign in" }).click();
  };

  before(async () => {
    assert.ok(
      existsSync(CHROMIUM),
      `no chromium at ${CHROMIUM}: apt-get install chromium (scripts/prerequisites.sh)`,
    );
    ownArtifacts = !process.env.MOAT_TEST_ARTIFACTS_DIR;
    artifacts =
      process.env.MOAT_TEST_ARTIFACTS_DIR ??
      (await mkdtemp(path.join(tmpdir(), "moat-dashboard-artifacts-")));
    await mkdir(artifacts, { recursive: true });
    console.log(`dashboard screenshots: ${artifacts}`);
    moat = await startMoat();
    useMoat(moat);
    base = `${moat.env.E2B_API_URL}/dashboard`;
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      // The E2B CLI's dashboard link names the bare domain: it resolves to the proxy on loopback.
      args: [`--host-resolver-rules=MAP ${moat.env.E2B_DOMAIN} 127.0.0.1`, "--no-sandbox"],
    });
    context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    watch(page);
    sbx = await Sandbox.create({ metadata: { purpose: "dashboard-test", note: HOSTILE } });
  });

  afterEach((t) => {
    if (!t.passed) failed = true;
  });

  after(async () => {
    await sbx?.kill().catch(() => undefined);
    await browser?.close();
    await moat?.cleanup();
    if (ownArtifacts && !failed) await rm(artifacts, { recursive: true, force: true });
  });

  test("a bad key is refused on the sign-in page; the page is keyboard-usable", async () => {
    await page.goto(base);
    // Keyboard only: tab to the key field, type, Enter submits.
    await page.getByLabel("API key (X-API-Key)").focus();
    await page.keyboard.type("e2b_0000000000000000000000000000000000000000");
    await page.keyboard.press("Enter");
    await page
      .getByRole("alert")
      .filter({ hasText: /Sign-in failed/ })
      .waitFor();
    assert.equal(await page.getByRole("navigation").count(), 0);
    await shot("sign-in-bad-key");
  });

  test("signed in, the created sandbox appears with its metadata as text, and a chart with points", async () => {
    await page.goto(base);
    await signIn(page, moat.env.E2B_API_KEY!);
    const row = page.locator(`tr[data-sandbox-id="${sbx.sandboxId}"]`);
    await row.waitFor();
    assert.match(await textOf(row), /running/);
    assert.match(await textOf(row), /purpose=dashboard-test/);
    // The hostile metadata value is there, as text, and nothing of it ran.
    assert.ok((await textOf(row)).includes(HOSTILE.slice(0, 30)));
    assert.equal(await row.locator("img, script").count(), 0);
    await page.waitForFunction(
      () => Number(document.querySelector("[data-points]")?.getAttribute("data-points")) >= 2,
    );
    assert.equal(await page.evaluate(() => (window as { __pwned?: number }).__pwned), undefined);
    // Every navigation link is reachable by Tab.
    const reached = new Set<string>();
    for (let i = 0; i < 12; i++) {
      await page.keyboard.press("Tab");
      reached.add(await page.evaluate(() => document.activeElement?.textContent ?? ""));
    }
    for (const label of ["Sandboxes", "Templates", "Snapshots", "Volumes", "API keys"])
      assert.ok(reached.has(label), label);
    await shot("sandboxes-1280");
    await page.setViewportSize({ width: 390, height: 844 });
    assert.ok(
      await page.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth + 1),
      "no sideways scroll of the page at 390 px (tables scroll in their own box)",
    );
    await shot("sandboxes-390");
    await page.setViewportSize({ width: 1280, height: 900 });
  });

  test("the sandbox's page: details, a metrics chart with points, pause/resume/extend with the logs tailing them", async () => {
    await page.locator(`a[href="/dashboard/inspect/sandbox/${sbx.sandboxId}"]`).click();
    await page.getByRole("heading", { name: `Sandbox ${sbx.sandboxId}` }).waitFor();
    const logs = page.getByRole("list", { name: "Sandbox logs" });
    await logs.locator("li:not(.empty)").first().waitFor({ timeout: 20_000 });
    const chart = page.locator("#metrics-title ~ figure [data-points]");
    // Every sample the node kept is a point: once it has three (one each 5 s), so has the chart
    // soon after. (A range of an hour or more would come back in 30 s averages: fewer points.)
    const samples = async () => {
      const res = await fetch(`${moat.env.E2B_API_URL}/sandboxes/${sbx.sandboxId}/metrics`, {
        headers: { "X-API-Key": moat.env.E2B_API_KEY! },
      });
      assert.equal(res.status, 200);
      return ((await res.json()) as unknown[]).length;
    };
    const deadline = Date.now() + 40_000;
    while ((await samples()) < 3) {
      assert.ok(Date.now() < deadline, "the node keeps a sample of the sandbox every 5 s");
      await new Promise((r) => setTimeout(r, 500));
    }
    await page.waitForFunction(
      () =>
        Number(
          document.querySelector("#metrics-title ~ figure [data-points]")?.getAttribute("data-points"),
        ) >= 3,
      undefined,
      { timeout: 10_000 },
    );
    assert.ok(Number(await chart.getAttribute("data-points")) >= 3);
    assert.equal((await page.locator("canvas").count()) > 0, true);
    assert.equal(await logs.locator("img, script").count(), 0);
    assert.equal(await page.evaluate(() => (window as { __pwned?: number }).__pwned), undefined);
    await shot("sandbox-1280");
    await page.setViewportSize({ width: 390, height: 844 });
    await shot("sandbox-390");
    await page.setViewportSize({ width: 1280, height: 900 });

    // The buttons, and the lifecycle lines they cause arriving in the open page's logs.
    const endsBefore = (await sbx.getInfo()).endAt.getTime();
    await page.getByRole("button", { name: "Extend by 5 minutes" }).click();
    await page.waitForFunction(() => !document.querySelector(".actions button[disabled]"));
    assert.ok((await sbx.getInfo()).endAt.getTime() >= endsBefore + 250_000, "extended by about 5 minutes");
    await page.getByRole("button", { name: "Pause" }).click();
    await logs.getByText("sandbox paused").waitFor({ timeout: 60_000 });
    await page.locator(".facts .state-paused").waitFor();
    await page.getByRole("button", { name: "Resume" }).click();
    await logs.getByText("sandbox resumed").waitFor({ timeout: 60_000 });
    await page.locator(".facts .state-running").waitFor();
    assert.equal(await sbx.isRunning(), true);
  });

  test("the E2B CLI's link on moat's domain opens the sandbox's page", async () => {
    const source = await readFile(E2B_CLI, "utf8");
    // The form the CLI prints after `e2b sandbox create`: https://<E2B_DOMAIN>/dashboard/inspect/sandbox/<id>.
    assert.match(
      source,
      /DASHBOARD_BASE=process\.env\.E2B_DASHBOARD_BASE\|\|`https:\/\/\$\{process\.env\.E2B_DOMAIN\|\|`e2b\.dev`\}\/dashboard`/,
    );
    assert.match(source, /SANDBOX_INSPECT_URL=e=>`\$\{DASHBOARD_BASE\}\/inspect\/sandbox\/\$\{e\}`/);
    // No TLS on loopback: the same link in http, on the proxy's port.
    const proxyPort = new URL(moat.env.E2B_SANDBOX_URL!).port;
    const link = `http://${moat.env.E2B_DOMAIN}:${proxyPort}/dashboard/inspect/sandbox/${sbx.sandboxId}`;
    await page.goto(link);
    assert.equal(page.url(), `${base}/inspect/sandbox/${sbx.sandboxId}`);
    await page.getByRole("heading", { name: `Sandbox ${sbx.sandboxId}` }).waitFor();
    await page.locator(".facts").waitFor();
  });

  test("another team's sandbox id in the URL shows nothing of it", async () => {
    const res = await fetch(`${moat.env.E2B_API_URL}/admin/teams`, {
      method: "POST",
      headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN!, "content-type": "application/json" },
      body: JSON.stringify({ name: "dashboard-intruder" }),
    });
    assert.equal(res.status, 201);
    const other = (await res.json()) as { apiKey: string };
    const intruder = await context.newPage();
    watch(intruder);
    await intruder.goto(`${base}/inspect/sandbox/${sbx.sandboxId}`);
    // A tab of its own: its sessionStorage starts empty, so it signs in as the other team.
    await signIn(intruder, other.apiKey);
    await intruder.getByText(/it ended, or it belongs to another team/).waitFor();
    const body = await textOf(intruder.locator("main"));
    assert.doesNotMatch(body, /dashboard-test|running|Template/);
    assert.equal(await intruder.locator(".facts").count(), 0);
    await shot("other-team", intruder);
    await intruder.close();
  });

  test("kill from its page, and it goes from the list", async () => {
    await page.goto(`${base}/inspect/sandbox/${sbx.sandboxId}`);
    await page.getByRole("button", { name: "Kill" }).click();
    await page.getByRole("heading", { name: "Sandboxes" }).waitFor();
    await page.waitForFunction(
      (id) => !document.querySelector(`tr[data-sandbox-id="${id}"]`),
      sbx.sandboxId,
      { timeout: 15_000 },
    );
    assert.equal(await sbx.isRunning(), false);
    await shot("after-kill");
  });

  test("the nodes page needs the admin token; API keys: made, shown once, revoked", async () => {
    const admin = await context.newPage();
    watch(admin);
    await admin.goto(base);
    await admin.getByLabel("API key (X-API-Key)").fill(moat.env.E2B_API_KEY!);
    await admin.getByLabel(/Admin token/).fill("not-the-admin-token");
    await admin.getByRole("button", { name: "Sign in" }).click();
    await admin
      .getByRole("alert")
      .filter({ hasText: /Sign-in failed/ })
      .waitFor();
    await admin.getByLabel(/Admin token/).fill(moat.env.MOAT_ADMIN_TOKEN!);
    await admin.getByRole("button", { name: "Sign in" }).click();
    await admin.getByRole("link", { name: "Nodes" }).click();
    await admin.getByRole("cell", { name: "local", exact: true }).waitFor();
    await shot("nodes", admin);

    await admin.getByRole("link", { name: "API keys" }).click();
    await admin.getByLabel("New key's name").fill("dashboard-made");
    await admin.getByRole("button", { name: "Create key" }).click();
    const made = await textOf(admin.getByRole("status").locator("code"));
    assert.match(made, /^e2b_[0-9a-f]+$/);
    const works = (key: string) =>
      fetch(`${moat.env.E2B_API_URL}/v2/sandboxes`, { headers: { "X-API-Key": key } }).then((r) => r.status);
    assert.equal(await works(made), 200);
    const row = admin.getByRole("row").filter({ hasText: "dashboard-made" });
    await row.waitFor();
    // The list shows only the key's mask, never the key.
    assert.ok(!(await textOf(admin.locator("table"))).includes(made));
    await shot("keys", admin);
    await row.getByRole("button", { name: "Revoke" }).click();
    await row.waitFor({ state: "detached" });
    assert.equal(await works(made), 401);
    // The other pages answer too (empty here: this moat has no snapshots or volumes yet).
    for (const [link, heading] of [
      ["Snapshots", "Snapshots"],
      ["Volumes", "Volumes"],
      ["Templates", "Templates"],
    ]) {
      await admin.getByRole("link", { name: link }).click();
      await admin.getByRole("heading", { name: heading, level: 1 }).waitFor();
      await admin.locator("main .empty, main table").first().waitFor();
      assert.equal(await admin.locator("main .error").count(), 0, await textOf(admin.locator("main")));
    }
    await admin.close();
  });

  test("a build's logs stream while it runs; its sandbox's start command output, HTML included, is text", async () => {
    const build = await Template.buildInBackground(
      Template()
        .fromBaseImage()
        .runCmd("for i in 1 2 3 4 5 6; do echo dashboard-build-step-$i; sleep 1; done")
        // The start command runs in the build and goes on in every sandbox made from its snapshot:
        // a loop, so that its output reaches the new sandbox's logs too.
        .setStartCmd(
          `while true; do echo 'start-output ${HOSTILE.replaceAll('"', "")}'; sleep 1; done`,
          waitForTimeout(500),
        ),
      "dashboard-build",
      { cpuCount: 1, memoryMB: 512 },
    );
    await page.goto(`${base}/templates/${build.templateId}/builds/${build.buildId}`);
    const logs = page.getByRole("list", { name: "Build logs" });
    // A line of the step shows while the build is still running.
    await logs
      .getByText(/dashboard-build-step-/)
      .first()
      .waitFor({ timeout: 90_000 });
    const statusWhileStreaming = await textOf(page.locator(".build-status"));
    await page.locator(".build-status", { hasText: /^(ready|error)$/ }).waitFor({ timeout: 120_000 });
    const final = await textOf(page.locator(".build-status"));
    assert.equal(final, "ready", await textOf(logs));
    const text = await textOf(logs);
    assert.match(text, /dashboard-build-step-6/);
    assert.ok(
      statusWhileStreaming === "building" || statusWhileStreaming === "waiting",
      `lines arrived while the build ran (status then: ${statusWhileStreaming})`,
    );
    await shot("build-logs");

    const started = await Sandbox.create("dashboard-build");
    try {
      await page.goto(`${base}/inspect/sandbox/${started.sandboxId}`);
      const logs = page.getByRole("list", { name: "Sandbox logs" });
      // The start command prints a line a second: by the page's first render there may be several.
      await logs
        .getByText(/start-output/)
        .first()
        .waitFor({ timeout: 30_000 });
      assert.ok((await textOf(logs)).includes("<img src=x onerror=window.__pwned=1>"));
      assert.equal(await logs.locator("img, script").count(), 0);
      assert.equal(await page.evaluate(() => (window as { __pwned?: number }).__pwned), undefined);
      await shot("start-command-logs");
    } finally {
      await started.kill();
    }
    assert.deepEqual(problems, []);
  });
});
