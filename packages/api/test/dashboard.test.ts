import assert from "node:assert/strict";
import { mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { OpenAPIHono } from "@hono/zod-openapi";
import { loadDashboard, registerDashboard } from "../src/http/dashboard.js";
import type { AppEnv } from "../src/http/env.js";
import { backends, startTestAPI, type TestAPI } from "./helpers.js";

describe("the dashboard's static files", () => {
  let t: TestAPI;
  before(async () => {
    t = await startTestAPI(backends[0]!);
  });
  after(() => t.close());

  const assertHardened = (response: Response) => {
    const csp = response.headers.get("content-security-policy") ?? "";
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'(;|$)/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval|\*/);
    assert.equal(response.headers.get("x-frame-options"), "DENY");
    assert.equal(response.headers.get("x-content-type-options"), "nosniff");
    assert.equal(response.headers.get("referrer-policy"), "no-referrer");
  };

  test("every page path answers index.html, without a key, with the hardening headers", async () => {
    for (const page of [
      "/dashboard",
      "/dashboard/",
      "/dashboard/inspect/sandbox/abc123",
      "/dashboard/templates/x/builds/y",
    ]) {
      const response = await t.request(page, { key: null });
      assert.equal(response.status, 200, page);
      assert.match(response.headers.get("content-type") ?? "", /text\/html/);
      assertHardened(response);
      const html = await response.text();
      assert.match(html, /<div id="app">/);
      // The CSP allows no inline script: every script is a file of this origin.
      for (const script of html.match(/<script[^>]*>[^<]*<\/script>/g) ?? []) {
        assert.match(
          script,
          /^<script type="module" src="\/dashboard\/assets\/app-[A-Z0-9]+\.js"><\/script>$/,
        );
      }
      assert.doesNotMatch(html, /<style|\sstyle=|\son\w+=/i);
    }
  });

  test("assets by their hashed names, cached for good; nothing else of the disk", async () => {
    const html = await (await t.request("/dashboard", { key: null })).text();
    const script = /src="(\/dashboard\/assets\/[^"]+\.js)"/.exec(html)?.[1];
    const style = /href="(\/dashboard\/assets\/[^"]+\.css)"/.exec(html)?.[1];
    assert.ok(script && style);
    const js = await t.request(script, { key: null });
    assert.equal(js.status, 200);
    assert.match(js.headers.get("content-type") ?? "", /text\/javascript/);
    assert.match(js.headers.get("cache-control") ?? "", /immutable/);
    assertHardened(js);
    assert.equal(
      (await t.request(style, { key: null })).headers.get("content-type"),
      "text/css; charset=utf-8",
    );
    for (const probe of [
      "/dashboard/assets/missing.js",
      "/dashboard/assets/index.html",
      "/dashboard/assets/..%2F..%2Fpackage.json",
      "/dashboard/assets/%2e%2e/%2e%2e/%2e%2e/api/package.json",
      "/dashboard/assets/",
    ]) {
      const response = await t.request(probe, { key: null });
      assert.equal(response.status, 404, probe);
      const body = (await response.json()) as { code: number; message: string };
      assert.equal(body.code, 404);
    }
  });

  test("a dashboard that was not built says how to build it", async () => {
    const app = new OpenAPIHono<AppEnv>();
    registerDashboard(app, loadDashboard("/nonexistent-moat-dashboard"));
    const response = await app.request("/dashboard/inspect/sandbox/x");
    assert.equal(response.status, 404);
    assert.match(((await response.json()) as { message: string }).message, /npm run build/);
  });

  test("only the asset files of known types are loaded", async () => {
    const dir = await mkdtemp(path.join(tmpdir(), "moat-dashboard-"));
    try {
      await mkdir(path.join(dir, "assets"));
      await writeFile(path.join(dir, "index.html"), "<!doctype html>");
      await writeFile(path.join(dir, "assets", "app-A.js"), "x");
      await writeFile(path.join(dir, "assets", "secret.env"), "KEY=1");
      const bundle = loadDashboard(dir);
      assert.deepEqual([...(bundle?.assets.keys() ?? [])], ["app-A.js"]);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});
