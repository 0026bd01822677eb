/**
 * Template builds over HTTP as the SDK drives them (request, upload, start, poll), against an API
 * with a data directory of its own (uploads land there) whose fake node downloads COPY files from
 * the API in-process.
 */

import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import type { OpenAPIOptions } from "../src/index.js";
import type { RequestedBuild } from "../src/template/request-build.js";
import { type Backend, startTestAPI, type TestAPI } from "./helpers.js";

export interface TemplateTestAPI extends TestAPI {
  dataDir: string;
  /** A request for an absolute URL the API answered (a signed file URL), served in-process. */
  requestURL(url: string, init?: RequestInit): Promise<Response>;
}

export async function startTemplateTestAPI(
  backend: Backend,
  options: Partial<OpenAPIOptions> = {},
): Promise<TemplateTestAPI> {
  const dataDir = await mkdtemp(path.join(tmpdir(), "moat-api-templates-"));
  const t = await startTestAPI(backend, { dataDir, ...options });
  const requestURL = async (url: string, init?: RequestInit) => {
    const parsed = new URL(url);
    return t.api.app.request(parsed.pathname + parsed.search, init);
  };
  t.fake.templates.fetchFile = (url) => requestURL(url);
  return {
    ...t,
    dataDir,
    requestURL,
    async close() {
      await t.close();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export function sha256(data: string | Buffer): string {
  return createHash("sha256").update(data).digest("hex");
}

/** An error answer: the status, `{code, message}` with the same code, the message matching. */
export async function expectError(res: Response, status: number, message?: RegExp): Promise<void> {
  const body = (await res.json()) as { code: number; message: string };
  assert.equal(res.status, status, JSON.stringify(body));
  assert.equal(body.code, status);
  if (message) assert.match(body.message, message);
}

/** POST /v3/templates, expecting 202. */
export async function requestBuild(
  t: TestAPI,
  body: Record<string, unknown>,
  key?: string,
): Promise<RequestedBuild> {
  const res = await t.request("/v3/templates", { method: "POST", json: body, key });
  const json = await res.json();
  assert.equal(res.status, 202, JSON.stringify(json));
  return json as RequestedBuild;
}

/** What the SDK does for one COPY step: ask for the link, PUT the files when not present. */
export async function uploadFiles(
  t: TemplateTestAPI,
  templateID: string,
  content: string | Buffer,
): Promise<{ hash: string; uploaded: boolean }> {
  const hash = sha256(content);
  const res = await t.request(`/templates/${templateID}/files/${hash}`);
  const link = (await res.json()) as { present: boolean; url?: string; headers?: Record<string, string> };
  assert.equal(res.status, 201, JSON.stringify(link));
  if (link.present) return { hash, uploaded: false };
  assert.ok(link.url);
  const put = await t.requestURL(link.url, { method: "PUT", headers: link.headers, body: content });
  assert.equal(put.status, 200, await put.text());
  return { hash, uploaded: true };
}

export async function startBuild(
  t: TestAPI,
  ids: { templateID: string; buildID: string },
  body: Record<string, unknown>,
): Promise<Response> {
  return t.request(`/v2/templates/${ids.templateID}/builds/${ids.buildID}`, { method: "POST", json: body });
}

export interface BuildInfo {
  templateID: string;
  buildID: string;
  status: "waiting" | "building" | "ready" | "error";
  logEntries: Array<{ timestamp: string; level: string; message: string; step?: string }>;
  logs: string[];
  reason?: { message: string; step?: string; logEntries?: unknown[] };
}

/**
 * Polls the status as the SDK does: advancing logsOffset by the entries received, until the build
 * ended and a poll answered no entries. Answers the last status with every entry received.
 */
export async function waitForBuild(
  t: TestAPI,
  ids: { templateID: string; buildID: string },
  timeoutMs = 5_000,
): Promise<BuildInfo & { polls: number }> {
  const deadline = Date.now() + timeoutMs;
  const entries: BuildInfo["logEntries"] = [];
  let polls = 0;
  for (;;) {
    const res = await t.request(
      `/templates/${ids.templateID}/builds/${ids.buildID}/status?logsOffset=${entries.length}`,
    );
    const info = (await res.json()) as BuildInfo;
    assert.equal(res.status, 200, JSON.stringify(info));
    polls++;
    entries.push(...info.logEntries);
    if ((info.status === "ready" || info.status === "error") && info.logEntries.length === 0) {
      return { ...info, logEntries: entries, polls };
    }
    if (Date.now() > deadline) throw new Error(`build still ${info.status} after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Request, upload, start and wait: a whole build from an image with `steps`. */
export async function buildTemplate(
  t: TemplateTestAPI,
  name: string,
  start: Record<string, unknown> = { fromImage: "e2bdev/base", steps: [] },
  request: Record<string, unknown> = {},
): Promise<RequestedBuild & { info: BuildInfo }> {
  const requested = await requestBuild(t, { name, ...request });
  const res = await startBuild(t, requested, start);
  assert.equal(res.status, 202, await res.text());
  return { ...requested, info: await waitForBuild(t, requested) };
}
