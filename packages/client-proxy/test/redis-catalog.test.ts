/**
 * The client proxy's routing catalog read from a real Redis: entries cached and dropped on the
 * API's change messages, signed-URL tokens, auto-resume through the API's internal route, and a
 * Redis that goes away and comes back (503 meanwhile, never a crash, an emptied cache after).
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { after, before, describe, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type CatalogEntry,
  createNoopLogger,
  REDIS_CATALOG_CHANNEL,
  REDIS_SANDBOX_KEY_PREFIX,
  REDIS_TOKENS_KEY,
} from "@moat/shared";
import { Redis } from "ioredis";
import { startRedis, type TestRedis } from "../../shared/test/redis-server.js";
import { CatalogUnavailableError } from "../src/errors.js";
import { RedisCatalog, startClientProxy } from "../src/index.js";

const NODE_TOKEN = "n".repeat(40);

function entry(sandboxID: string, fields: Partial<CatalogEntry> = {}): CatalogEntry {
  return { sandboxID, state: "running", hostAddress: "10.11.0.2", autoResume: false, ...fields };
}

async function until(check: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error("condition not met in time");
    await sleep(10);
  }
}

describe("RedisCatalog", { timeout: 60_000 }, () => {
  let redis: TestRedis;
  let writer: Redis;
  let catalog: RedisCatalog;
  let api: http.Server;
  const resumeCalls: Array<{ id: string; authorization: string | undefined }> = [];

  /** What an API process does on a change: the entry, the token, the message. */
  async function write(value: CatalogEntry | undefined, sandboxID = value?.sandboxID ?? "", token?: string) {
    const multi = writer.multi();
    if (value) multi.set(REDIS_SANDBOX_KEY_PREFIX + sandboxID, JSON.stringify(value));
    else multi.del(REDIS_SANDBOX_KEY_PREFIX + sandboxID);
    if (token) multi.hset(REDIS_TOKENS_KEY, sandboxID, token);
    else multi.hdel(REDIS_TOKENS_KEY, sandboxID);
    multi.publish(REDIS_CATALOG_CHANNEL, sandboxID);
    // The writer may still be reconnecting to a restarted Redis.
    for (let attempt = 0; ; attempt++) {
      try {
        await multi.exec();
        return;
      } catch (err) {
        if (attempt > 100) throw err;
        await sleep(50);
      }
    }
  }

  before(async () => {
    redis = await startRedis();
    writer = new Redis(redis.url, { lazyConnect: true, maxRetriesPerRequest: 1 });
    writer.on("error", () => undefined);
    await writer.connect();
    // A fake API: resumes "paused1", refuses the rest with 404.
    api = http.createServer((req, res) => {
      const id = /^\/internal\/sandboxes\/([a-z0-9]+)\/resume$/.exec(req.url ?? "")?.[1] ?? "";
      resumeCalls.push({ id, authorization: req.headers.authorization });
      if (req.method === "POST" && id === "paused1") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify(entry("paused1", { hostAddress: "10.11.0.9" })));
      } else {
        res.writeHead(404, { "content-type": "application/json" });
        res.end(JSON.stringify({ code: 404, message: "not found" }));
      }
    });
    await new Promise<void>((resolve) => api.listen(0, "127.0.0.1", resolve));
    catalog = await RedisCatalog.open({
      redisURL: redis.url,
      apiURL: `http://127.0.0.1:${(api.address() as AddressInfo).port}`,
      nodeToken: NODE_TOKEN,
      logger: createNoopLogger(),
      ttlMs: 60_000,
      missTTLMs: 60_000,
    });
  });

  after(async () => {
    await catalog?.close();
    writer?.disconnect();
    await new Promise((r) => api?.close(r));
    await redis?.close();
  });

  test("a lookup reads the entry; a change message drops the cached one", async () => {
    await write(entry("sbx1"));
    assert.equal((await catalog.lookup("sbx1"))?.hostAddress, "10.11.0.2");
    // Written without a message: the cache still answers (the TTL is long here).
    await writer.set(
      `${REDIS_SANDBOX_KEY_PREFIX}sbx1`,
      JSON.stringify(entry("sbx1", { hostAddress: "10.11.0.3" })),
    );
    assert.equal((await catalog.lookup("sbx1"))?.hostAddress, "10.11.0.2");
    // With the message, the next lookup reads the new entry.
    await write(entry("sbx1", { hostAddress: "10.11.0.4", state: "paused" }));
    await until(async () => (await catalog.lookup("sbx1"))?.hostAddress === "10.11.0.4");
    assert.equal((await catalog.lookup("sbx1"))?.state, "paused");
    // A kill deletes it: the cached entry goes with the message.
    await write(undefined, "sbx1");
    await until(async () => (await catalog.lookup("sbx1")) === undefined);
  });

  test("a miss is remembered until the sandbox's message", async () => {
    assert.equal(await catalog.lookup("later1"), undefined);
    await write(entry("later1"));
    await until(async () => (await catalog.lookup("later1")) !== undefined);
  });

  test("an entry that is not a catalog entry is an error, not a route", async () => {
    await writer.set(`${REDIS_SANDBOX_KEY_PREFIX}junk1`, "{not json");
    await assert.rejects(catalog.lookup("junk1"), /not a catalog entry/);
  });

  test("findByAccessToken reads the tokens and follows their changes", async () => {
    await write(entry("tok1", { envdAccessToken: "secret-1" }), "tok1", "secret-1");
    assert.equal((await catalog.findByAccessToken((t) => t === "secret-1"))?.sandboxID, "tok1");
    await write(entry("tok2", { envdAccessToken: "secret-2" }), "tok2", "secret-2");
    await until(async () => (await catalog.findByAccessToken((t) => t === "secret-2"))?.sandboxID === "tok2");
    // Killed: its token goes with the message.
    await write(undefined, "tok1");
    await until(async () => (await catalog.findByAccessToken((t) => t === "secret-1")) === undefined);
  });

  test("resume asks the API with the node token and answers its entry", async () => {
    const resumed = await catalog.resume?.("paused1");
    assert.equal(resumed?.hostAddress, "10.11.0.9");
    assert.equal(resumeCalls.at(-1)?.authorization, `Bearer ${NODE_TOKEN}`);
    assert.equal(await catalog.resume?.("gone1"), undefined);
  });

  test("Redis down: lookups fail with 503 at once, and after it is back (empty) the cache is gone", async () => {
    await write(entry("keep1"));
    assert.ok(await catalog.lookup("keep1"));
    await redis.stop();
    await until(() => !catalog.subscribed);
    const started = Date.now();
    const error = await catalog.lookup("keep1").then(
      () => undefined,
      (err: unknown) => err,
    );
    assert.ok(error instanceof CatalogUnavailableError, String(error));
    assert.equal(error.status, 503);
    assert.ok(Date.now() - started < 1_000, "a lookup must not wait for Redis to come back");
    // A fresh, empty Redis: the entry cached before must not be served.
    await redis.start();
    await until(() => catalog.subscribed, 10_000);
    // The subscriber and the command connection reconnect each on its own: 503 until both are.
    const answered = async () =>
      catalog.lookup("keep1").then(
        () => true,
        (err: unknown) => {
          if (err instanceof CatalogUnavailableError) return false;
          throw err;
        },
      );
    await until(answered, 10_000);
    assert.equal(await catalog.lookup("keep1"), undefined);
    await write(entry("keep1", { hostAddress: "10.11.0.5" }));
    await until(async () => (await catalog.lookup("keep1"))?.hostAddress === "10.11.0.5");
  });

  test("the client proxy answers 503 while Redis is down and routes again after", async () => {
    const upstream = http.createServer((_req, res) => res.end("hello from the sandbox"));
    await new Promise<void>((resolve) => upstream.listen(0, "127.0.0.1", resolve));
    const sandboxPort = (upstream.address() as AddressInfo).port;
    const proxy = await startClientProxy({
      port: 0,
      domain: "moat.local",
      redisURL: redis.url,
      nodeToken: NODE_TOKEN,
      logger: createNoopLogger(),
    });
    try {
      await write(entry("route1", { hostAddress: "127.0.0.1" }));
      const get = () =>
        fetch(`http://127.0.0.1:${proxy.port}/`, {
          headers: { "e2b-sandbox-id": "route1", "e2b-sandbox-port": String(sandboxPort) },
        });
      assert.equal(await (await get()).text(), "hello from the sandbox");
      await redis.stop();
      await sleep(200);
      const down = await get();
      assert.equal(down.status, 503);
      assert.match(((await down.json()) as { message: string }).message, /routing catalog/);
      await redis.start();
      await write(entry("route1", { hostAddress: "127.0.0.1" }));
      await until(async () => (await get()).status === 200, 10_000);
    } finally {
      await proxy.close();
      await new Promise((r) => upstream.close(r));
    }
  });
});
