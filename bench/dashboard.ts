/**
 * The dashboard's first load in Chromium (Debian's, driven by playwright-core) against `moat up`
 * with three running sandboxes: from navigation start to the sandboxes list rendered with their
 * rows, in a fresh browser context each time (cold cache, signed in through sessionStorage), beside
 * a static page of the same size class served on loopback, loaded in the same run the same way.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Sandbox } from "e2b";
import { chromium } from "playwright-core";
import { withMoat } from "./platform.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const CYCLES = 10;
const SANDBOXES = 3;
const CHROMIUM = process.env.MOAT_TEST_CHROMIUM ?? "/usr/bin/chromium";

function progress(what: string): void {
  console.error(`  [dashboard] ${what}`);
}

export async function benchDashboard(): Promise<Figure[]> {
  return withMoat({ MOAT_POOL_SIZE: "0" }, async (moat) => {
    const sandboxes = await Promise.all(Array.from({ length: SANDBOXES }, () => Sandbox.create("base")));
    // The baseline: a static HTML page with one stylesheet, as the dashboard's index.html has.
    const baseline = http.createServer((req, res) => {
      if (req.url === "/style.css") res.writeHead(200, { "content-type": "text/css" }).end("body{margin:0}");
      else {
        res
          .writeHead(200, { "content-type": "text/html" })
          .end(
            '<!doctype html><link rel="stylesheet" href="/style.css"><table><tr><td>static</td></tr></table>',
          );
      }
    });
    await new Promise<void>((resolve) => baseline.listen(0, "127.0.0.1", resolve));
    const baselineURL = `http://127.0.0.1:${(baseline.address() as AddressInfo).port}/`;
    const browser = await chromium.launch({ executablePath: CHROMIUM, args: ["--no-sandbox"] });
    try {
      const credentials = JSON.stringify({ kind: "key", secret: moat.env.E2B_API_KEY });
      // Functions, not strings: the dashboard's CSP forbids evaluating strings (as it should).
      const load = async (url: string, rendered: (count: number) => number | false) => {
        const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
        await context.addInitScript(
          (value) => sessionStorage.setItem("moat.dashboard.credentials", value),
          credentials,
        );
        const page = await context.newPage();
        try {
          await page.goto(url, { waitUntil: "commit" });
          // Milliseconds since the navigation started, when the page shows what it is for.
          return await (
            await page.waitForFunction(rendered, SANDBOXES, { polling: 10, timeout: 30_000 })
          ).jsonValue();
        } finally {
          await context.close();
        }
      };
      const dashboard: number[] = [];
      const statics: number[] = [];
      const listRendered = (count: number) =>
        document.querySelectorAll("tr[data-sandbox-id]").length >= count && performance.now();
      const staticRendered = () =>
        document.readyState === "complete" && document.querySelector("td") !== null && performance.now();
      for (let i = -1; i < CYCLES; i++) {
        progress(`cycle ${i + 1}/${CYCLES}`);
        const d = (await load(`${moat.env.E2B_API_URL}/dashboard`, listRendered)) as number;
        const s = (await load(baselineURL, staticRendered)) as number;
        if (i >= 0) {
          dashboard.push(d);
          statics.push(s);
        }
      }
      return [
        {
          name: `dashboard first load in Chromium: navigation → sandboxes list rendered with ${SANDBOXES} sandboxes (cold cache, ${CYCLES} loads)`,
          unit: "ms",
          value: summarize(dashboard),
          baseline: {
            name: "a static HTML page with a stylesheet on loopback, same browser",
            value: summarize(statics),
          },
          target: { median: 1000 },
        },
      ];
    } finally {
      await browser.close();
      baseline.close();
      await Promise.all(sandboxes.map((s) => s.kill().catch(() => undefined)));
    }
  });
}
