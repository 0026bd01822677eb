/**
 * The routing catalog's copy in Redis (a fleet): every change the API records is written to a real
 * redis-server with its node and node proxy and announced on `moat:catalog`; a kill removes it; a
 * Redis that restarts empty is refilled; a Redis that is down leaves the API working. And the
 * client proxies' auto-resume route, guarded by the node token.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type CatalogEntry,
  REDIS_CATALOG_CHANNEL,
  REDIS_SANDBOX_KEY_PREFIX,
  REDIS_TOKENS_KEY,
} from "@moat/shared";
import { Redis } from "ioredis";
import { startRedis, type TestRedis } from "../../shared/test/redis-server.js";
import { backends, createSandbox, startTestAPI, type TestAPI } from "./helpers.js";

const NODE_TOKEN = "node-token-for-the-api-tests-0123456789";
const PROXY_URL = "http://10.0.0.5:5007";

async function until(check: () => Promise<boolean>, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check().catch(() => false))) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(20);
  }
}

describe("routing catalog in Redis", { timeout: 60_000 }, () => {
  let redis: TestRedis;
  let reader: Redis;
  let subscriber: Redis;
  const messages: string[] = [];
  let t: TestAPI;

  const read = async (id: string): Promise<CatalogEntry | undefined> => {
    const text = await reader.get(REDIS_SANDBOX_KEY_PREFIX + id);
    return text ? (JSON.parse(text) as CatalogEntry) : undefined;
  };

  before(async () => {
    redis = await startRedis();
    const options = { maxRetriesPerRequest: 1, retryStrategy: () => 50 };
    reader = new Redis(redis.url, options);
    subscriber = new Redis(redis.url, options);
    for (const client of [reader, subscriber]) client.on("error", () => undefined);
    subscriber.on("message", (_channel: string, id: string) => messages.push(id));
    await subscriber.subscribe(REDIS_CATALOG_CHANNEL);
    t = await startTestAPI(
      backends[0]!,
      { redisURL: redis.url, nodeToken: NODE_TOKEN },
      { proxyURL: PROXY_URL },
    );
  });

  after(async () => {
    await t?.close();
    reader?.disconnect();
    subscriber?.disconnect();
    await redis?.close();
  });

  test("a create writes the entry with its node and node proxy, the token, and a message", async () => {
    const sbx = await createSandbox(t);
    await until(async () => (await read(sbx.sandboxID))?.state === "running");
    const entry = await read(sbx.sandboxID);
    assert.equal(entry?.nodeID, "node-1");
    assert.equal(entry?.nodeProxyURL, PROXY_URL);
    assert.equal(entry?.envdAccessToken, sbx.envdAccessToken);
    assert.equal(await reader.hget(REDIS_TOKENS_KEY, sbx.sandboxID), sbx.envdAccessToken);
    assert.ok(messages.includes(sbx.sandboxID));
    // The in-process catalog names the node proxy too.
    assert.equal((await t.api.catalog.lookup(sbx.sandboxID))?.nodeProxyURL, PROXY_URL);
  });

  test("a pause and a kill follow; the kill removes the entry and the token", async () => {
    const sbx = await createSandbox(t);
    assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}/pause`, { method: "POST" })).status, 204);
    await until(async () => (await read(sbx.sandboxID))?.state === "paused");
    messages.length = 0;
    assert.equal((await t.request(`/sandboxes/${sbx.sandboxID}`, { method: "DELETE" })).status, 204);
    await until(async () => (await read(sbx.sandboxID)) === undefined);
    assert.equal(await reader.hget(REDIS_TOKENS_KEY, sbx.sandboxID), null);
    assert.ok(messages.includes(sbx.sandboxID));
  });

  test("the resume route needs the node token", async () => {
    const path = "/internal/sandboxes/nosuchsandbox/resume";
    const missing = await t.request(path, { method: "POST", key: null });
    assert.equal(missing.status, 401);
    const wrong = await t.request(path, {
      method: "POST",
      key: null,
      headers: { authorization: `Bearer ${NODE_TOKEN}x` },
    });
    assert.equal(wrong.status, 401);
    // An API key is no substitute.
    assert.equal((await t.request(path, { method: "POST" })).status, 401);
    const unknown = await t.request(path, {
      method: "POST",
      key: null,
      headers: { authorization: `Bearer ${NODE_TOKEN}` },
    });
    assert.equal(unknown.status, 404);
    assert.equal(((await unknown.json()) as { code: number }).code, 404);
  });

  test("the resume route resumes an auto-resume sandbox and answers its entry; others get 409", async () => {
    const resume = (id: string) =>
      t.request(`/internal/sandboxes/${id}/resume`, {
        method: "POST",
        key: null,
        headers: { authorization: `Bearer ${NODE_TOKEN}` },
      });
    const auto = await createSandbox(t, { autoPause: true, autoResume: { enabled: true } });
    const plain = await createSandbox(t);
    for (const id of [auto.sandboxID, plain.sandboxID]) {
      assert.equal((await t.request(`/sandboxes/${id}/pause`, { method: "POST" })).status, 204);
    }
    const res = await resume(auto.sandboxID);
    assert.equal(res.status, 200);
    const entry = (await res.json()) as CatalogEntry;
    assert.equal(entry.state, "running");
    assert.equal(entry.nodeProxyURL, PROXY_URL);
    const refused = await resume(plain.sandboxID);
    assert.equal(refused.status, 409);
    assert.match(((await refused.json()) as { message: string }).message, /autoResume/);
  });

  test("a Redis that restarts empty is refilled; while it is down the API works on", async () => {
    const before = await createSandbox(t);
    await until(async () => (await read(before.sandboxID)) !== undefined);
    await redis.stop();
    // Down: creates and kills go on, the catalog in this process follows them.
    const during = await createSandbox(t);
    assert.equal((await t.api.catalog.lookup(during.sandboxID))?.state, "running");
    const killed = await createSandbox(t);
    assert.equal((await t.request(`/sandboxes/${killed.sandboxID}`, { method: "DELETE" })).status, 204);
    await redis.start();
    // Empty now: the API writes every live sandbox again on reconnecting.
    await until(
      async () =>
        (await read(during.sandboxID)) !== undefined && (await read(before.sandboxID)) !== undefined,
    );
    assert.equal(await read(killed.sandboxID), undefined);
  });
});
