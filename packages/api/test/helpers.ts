/**
 * Builds an API for a test on a fake orchestrator, on each database: an in-memory PGlite and
 * PostgreSQL (each API gets a schema of its own, dropped on close). PostgreSQL is
 * MOAT_TEST_POSTGRES_URL, by default the role and database scripts/prerequisites.sh makes (npm test
 * runs it); MOAT_TEST_POSTGRES=off leaves PostgreSQL out, and the run says so.
 */
import { randomBytes } from "node:crypto";
import { createNoopLogger } from "@moat/shared";
import pg from "pg";
import { type API, type OpenAPIOptions, type OrchestratorNodeOptions, openAPI } from "../src/index.js";
import { FakeOrchestrator } from "./fakes/fake-orchestrator.js";

export interface Backend {
  name: string;
  /** A database URL for one API, and how to remove what it left. */
  database(): Promise<{ url: string; drop(): Promise<void> }>;
}

const POSTGRES_URL =
  process.env.MOAT_TEST_POSTGRES === "off"
    ? undefined
    : process.env.MOAT_TEST_POSTGRES_URL || "postgres://moat_test:moat_test@127.0.0.1:5432/moat_test";

/** Why PostgreSQL tests do not run, for their skip message; undefined when they do. */
export const POSTGRES_OFF = POSTGRES_URL ? undefined : "MOAT_TEST_POSTGRES=off";

export const backends: Backend[] = [
  { name: "pglite", database: async () => ({ url: "memory://", drop: async () => undefined }) },
  ...(POSTGRES_URL
    ? [
        {
          name: "postgres",
          async database() {
            const schema = `moat_test_${randomBytes(6).toString("hex")}`;
            await adminQuery(POSTGRES_URL, `create schema ${schema}`);
            const url = new URL(POSTGRES_URL);
            url.searchParams.set("options", `-c search_path=${schema}`);
            return {
              url: url.toString(),
              drop: () => adminQuery(POSTGRES_URL, `drop schema ${schema} cascade`),
            };
          },
        },
      ]
    : []),
];

async function adminQuery(url: string, text: string): Promise<void> {
  const client = new pg.Client({ connectionString: url });
  await client.connect().catch((err: Error) => {
    throw new Error(
      `PostgreSQL for the tests is not reachable at ${new URL(url).host} (${err.message}): run \`bash scripts/prerequisites.sh\` as root (npm test does), or set MOAT_TEST_POSTGRES=off to leave PostgreSQL out`,
    );
  });
  try {
    await client.query(text);
  } finally {
    await client.end();
  }
}

/** What the test APIs take as their metrics token (GET /metrics with Authorization: Bearer). */
export const METRICS_TOKEN = "metrics-token-for-tests-0123456789";

export interface TestAPI {
  api: API;
  fake: FakeOrchestrator;
  /** The default team's id and API key. */
  teamID: string;
  apiKey: string;
  /** A request with the default team's key (override `X-API-Key` in `init.headers`). */
  request(path: string, init?: RequestInit & { json?: unknown; key?: string | null }): Promise<Response>;
  /** A second team, with its own key. */
  newTeam(name?: string): Promise<{ teamID: string; apiKey: string }>;
  close(): Promise<void>;
}

/** `node` adds to the fake node's options (its call deadlines). */
export async function startTestAPI(
  backend: Backend,
  options: Partial<OpenAPIOptions> = {},
  node: Partial<OrchestratorNodeOptions> = {},
): Promise<TestAPI> {
  const fake = new FakeOrchestrator();
  const database = await backend.database();
  const api = await openAPI({
    dataDir: "/nonexistent-moat-test",
    databaseURL: database.url,
    orchestrators: [{ id: "node-1", transport: fake.transport(), ...node }],
    logger: createNoopLogger(),
    metricsToken: METRICS_TOKEN,
    ...options,
  });
  const boot = await api.bootstrap();
  if (!boot.apiKey) throw new Error("bootstrap of a fresh database must answer a key");
  const apiKey = boot.apiKey;
  return {
    api,
    fake,
    teamID: boot.teamID,
    apiKey,
    request(path, init = {}) {
      const { json, key, ...rest } = init;
      const headers = new Headers(rest.headers);
      if (key !== null && !headers.has("x-api-key")) headers.set("X-API-KEY", key ?? apiKey);
      if (json !== undefined) headers.set("Content-Type", "application/json");
      return Promise.resolve(
        api.app.request(path, {
          ...rest,
          headers,
          body: json !== undefined ? JSON.stringify(json) : rest.body,
        }),
      );
    },
    async newTeam(name = "other") {
      const { teamID } = await api.createTeam(name);
      return { teamID, apiKey: await api.createAPIKey(teamID) };
    },
    async close() {
      await api.close();
      fake.close();
      await database.drop();
    },
  };
}

/** Creates a sandbox through the API and answers its JSON. */
export async function createSandbox(
  t: TestAPI,
  body: Record<string, unknown> = {},
  key?: string,
): Promise<{ sandboxID: string; envdAccessToken?: string; [k: string]: unknown }> {
  const res = await t.request("/v2/sandboxes", {
    method: "POST",
    json: { templateID: "base", ...body },
    key,
  });
  if (res.status !== 201) throw new Error(`create answered ${res.status}: ${await res.text()}`);
  return (await res.json()) as { sandboxID: string };
}

/** Polls `check` until it holds or `timeoutMs` passes. */
export async function eventually(check: () => Promise<boolean>, timeoutMs = 5_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * An error answer's body without its `requestId`, which is checked to be the X-Request-Id the
 * API answered (every error body carries one): what is left compares with deepEqual.
 */
export async function errorBody(res: Response): Promise<Record<string, unknown>> {
  const { requestId, ...rest } = (await res.json()) as Record<string, unknown>;
  if (typeof requestId !== "string" || requestId !== res.headers.get("x-request-id")) {
    throw new Error(`error body's requestId ${String(requestId)} is not the X-Request-Id answered`);
  }
  return rest;
}
