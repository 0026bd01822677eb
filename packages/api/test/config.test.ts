import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { createNoopLogger } from "@moat/shared";
import { ConfigError, parseConfig } from "../src/config.js";
import { DEFAULT_TEAM_LIMITS } from "../src/quotas/limits.js";

const logger = createNoopLogger();
const NODE_TOKEN = "a".repeat(64);
const node = { id: "node-1", url: "http://127.0.0.1:5008", token: NODE_TOKEN };

describe("config", () => {
  test("defaults: PGlite under <dataDir>/db, 127.0.0.1:3000, 1 MiB bodies, no domain", () => {
    const config = parseConfig({ dataDir: "/var/lib/moat", orchestrators: [node], logger }, {});
    assert.deepEqual(config.database, { kind: "pglite", dir: "/var/lib/moat/db" });
    assert.equal(config.port, 3000);
    assert.equal(config.host, "127.0.0.1");
    assert.equal(config.maxBodyBytes, 1024 * 1024);
    assert.equal(config.domain, null);
    assert.equal(config.adminToken, undefined);
    assert.equal(config.publicURL, undefined, "derived from where the API listens");
    assert.equal(config.maxUploadBytes, 2 * 1024 ** 3);
  });

  test("diskSizeMB: the option, else MOAT_DISK_SIZE_MB, else 10 GiB; 0 turns the limit off", () => {
    const parse = (env: Record<string, string>, diskSizeMB?: number) =>
      parseConfig({ dataDir: "/d", orchestrators: [node], logger, diskSizeMB }, env).diskSizeMB;
    assert.equal(parse({}), 10240);
    assert.equal(parse({ MOAT_DISK_SIZE_MB: "512" }), 512);
    assert.equal(parse({ MOAT_DISK_SIZE_MB: "0" }), 0);
    assert.equal(parse({ MOAT_DISK_SIZE_MB: "512" }, 2048), 2048);
    for (const bad of ["10", "1.5", "big", String(2 * 1024 * 1024)]) {
      assert.throws(() => parse({ MOAT_DISK_SIZE_MB: bad }), /MOAT_DISK_SIZE_MB/, bad);
    }
  });

  test("publicURL: the option, else MOAT_API_PUBLIC_URL; an http(s) base without query", () => {
    const env = { MOAT_API_PUBLIC_URL: "https://moat.example.com/api/" };
    assert.equal(
      parseConfig({ dataDir: "/d", orchestrators: [node], logger }, env).publicURL,
      "https://moat.example.com/api",
    );
    const option = parseConfig(
      { dataDir: "/d", orchestrators: [node], logger, publicURL: "http://10.0.0.5:3000" },
      env,
    );
    assert.equal(option.publicURL, "http://10.0.0.5:3000");
    for (const publicURL of ["ftp://x", "not a url", "http://x/?a=1"]) {
      assert.throws(
        () => parseConfig({ dataDir: "/d", orchestrators: [node], logger, publicURL }, {}),
        /publicURL/,
      );
    }
    assert.throws(
      () => parseConfig({ dataDir: "/d", orchestrators: [node], logger, maxUploadBytes: 10 }, {}),
      /maxUploadBytes/,
    );
  });

  test("DATABASE_URL selects PostgreSQL unless an option says otherwise", () => {
    const env = { DATABASE_URL: "postgres://u:p@db:5432/moat", MOAT_ADMIN_TOKEN: "0123456789abcdef0123" };
    const fromEnv = parseConfig({ dataDir: "/d", orchestrators: [node], logger }, env);
    assert.deepEqual(fromEnv.database, { kind: "postgres", url: env.DATABASE_URL });
    assert.equal(fromEnv.adminToken, env.MOAT_ADMIN_TOKEN);
    const explicit = parseConfig(
      { dataDir: "/d", orchestrators: [node], logger, databaseURL: "memory://" },
      env,
    );
    assert.deepEqual(explicit.database, { kind: "pglite-memory" });
  });

  test("every problem is reported at once", () => {
    assert.throws(
      () =>
        parseConfig(
          {
            dataDir: "",
            port: 70_000,
            databaseURL: "mysql://x",
            orchestrators: [{ id: "a b" }, { id: "n", url: "http://x", transport: {} as never }],
            adminToken: "short",
            logger,
          },
          {},
        ),
      (err: unknown) => {
        assert.ok(err instanceof ConfigError);
        const text = err.problems.join("\n");
        for (const field of [
          "dataDir",
          "port",
          "databaseURL",
          "orchestrators.0",
          "orchestrators.1",
          "adminToken",
        ]) {
          assert.match(text, new RegExp(field.replace(".", "\\.")), field);
        }
        return true;
      },
    );
    assert.throws(
      () => parseConfig({ dataDir: "/d", orchestrators: [], logger }, {}),
      /at least one orchestrator is required, or set MOAT_NODE_TOKEN/,
    );
    // Nodes may register instead: then none need be configured.
    const token = "t".repeat(32);
    const fleet = parseConfig({ dataDir: "/d", orchestrators: [], logger }, { MOAT_NODE_TOKEN: token });
    assert.equal(fleet.nodeToken, token);
    assert.equal(fleet.nodeHeartbeatTimeoutMs, 10_000, "default 10 s");
    assert.equal(
      parseConfig(
        { dataDir: "/d", orchestrators: [], logger },
        {
          MOAT_NODE_TOKEN: token,
          MOAT_NODE_HEARTBEAT_TIMEOUT_SECONDS: "30",
        },
      ).nodeHeartbeatTimeoutMs,
      30_000,
    );
    assert.throws(
      () =>
        parseConfig(
          { dataDir: "/d", orchestrators: [], logger },
          {
            MOAT_NODE_TOKEN: token,
            MOAT_NODE_HEARTBEAT_TIMEOUT_SECONDS: "soon",
          },
        ),
      /MOAT_NODE_HEARTBEAT_TIMEOUT_SECONDS must be a number of seconds/,
    );
    assert.throws(
      () => parseConfig({ dataDir: "/d", orchestrators: [], logger }, { MOAT_NODE_TOKEN: "short" }),
      /MOAT_NODE_TOKEN must be at least 32 printable characters/,
    );
    assert.throws(
      () => parseConfig({ dataDir: "/d", orchestrators: [node, node], logger }, {}),
      /orchestrator ids must be unique/,
    );
  });

  test("quotas: safe defaults, each from its MOAT_TEAM_* variable, options first; a bad value names its variable", () => {
    const defaults = parseConfig({ dataDir: "/d", orchestrators: [node], logger }, {}).quotas;
    assert.deepEqual(defaults, DEFAULT_TEAM_LIMITS);
    assert.equal(defaults.maxSandboxes, 20);
    const env = {
      MOAT_TEAM_MAX_SANDBOXES: "5",
      MOAT_TEAM_REQUESTS_PER_SECOND: "2.5",
      MOAT_TEAM_MAX_UPLOAD_BYTES: "4096",
    };
    const fromEnv = parseConfig({ dataDir: "/d", orchestrators: [node], logger }, env);
    assert.equal(fromEnv.quotas.maxSandboxes, 5);
    assert.equal(fromEnv.quotas.requestsPerSecond, 2.5);
    assert.equal(fromEnv.maxUploadBytes, 4096, "the upload cap is the same setting");
    const options = parseConfig(
      { dataDir: "/d", orchestrators: [node], logger, quotas: { maxSandboxes: 9 }, maxUploadBytes: 8192 },
      env,
    );
    assert.equal(options.quotas.maxSandboxes, 9);
    assert.equal(options.quotas.maxUploadBytes, 8192);
    for (const [variable, value] of [
      ["MOAT_TEAM_MAX_SANDBOXES", "many"],
      ["MOAT_TEAM_MAX_PAUSED_SANDBOXES", "-1"],
      ["MOAT_TEAM_MAX_VCPU", "0"],
    ] as const) {
      assert.throws(
        () => parseConfig({ dataDir: "/d", orchestrators: [node], logger }, { [variable]: value }),
        (err: unknown) => err instanceof ConfigError && err.message.includes(variable),
        variable,
      );
    }
    assert.equal(
      parseConfig({ dataDir: "/d", orchestrators: [node], logger }, { MOAT_METRICS_TOKEN: "m".repeat(16) })
        .metricsToken,
      "m".repeat(16),
    );
  });

  test("a node reached by url needs its token: the option, else MOAT_NODE_TOKEN", () => {
    const bare = { id: "node-1", url: "http://127.0.0.1:5008" };
    assert.throws(
      () => parseConfig({ dataDir: "/d", orchestrators: [bare], logger }, {}),
      /orchestrators\.0: a node reached by url needs its token .*MOAT_NODE_TOKEN/,
    );
    const fromEnv = parseConfig(
      { dataDir: "/d", orchestrators: [bare], logger },
      { MOAT_NODE_TOKEN: NODE_TOKEN },
    );
    assert.equal(fromEnv.orchestrators[0]!.token, NODE_TOKEN);
    const option = parseConfig(
      { dataDir: "/d", orchestrators: [node], logger },
      { MOAT_NODE_TOKEN: "b".repeat(64) },
    );
    assert.equal(option.orchestrators[0]!.token, NODE_TOKEN, "the option wins");
    for (const token of ["short", `${"a".repeat(40)} b`]) {
      assert.throws(
        () => parseConfig({ dataDir: "/d", orchestrators: [{ ...bare, token }], logger }, {}),
        /node token is at least 32 printable characters/,
      );
    }
  });

  test("MOAT_SHARED_ARTIFACTS turns it on; a bad value is refused", () => {
    const parse = (env: NodeJS.ProcessEnv) =>
      parseConfig({ dataDir: "/d", orchestrators: [node], logger }, env).sharedArtifacts;
    assert.equal(parse({}), false);
    assert.equal(parse({ MOAT_SHARED_ARTIFACTS: "1" }), true);
    assert.equal(parse({ MOAT_SHARED_ARTIFACTS: "0" }), false);
    assert.throws(
      () => parse({ MOAT_SHARED_ARTIFACTS: "yes" }),
      /sharedArtifacts: must be true or false \(MOAT_SHARED_ARTIFACTS: 1 or 0\)/,
    );
  });
});
