import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { defaultDataDir, readDiskSizeMB, readNodeConfig } from "../src/config.js";
import { readSetupConfig } from "../src/setup/config.js";

describe("readNodeConfig", () => {
  test("an empty environment gives the defaults", () => {
    const config = readNodeConfig({});
    assert.equal(config.dataDir, "/var/lib/moat");
    assert.equal(config.faults.size, 0);
    assert.equal(config.templateSnapshots, true);
    assert.equal(config.poolSize, 2);
    assert.equal(config.networkPoolSize, 2);
    assert.equal(config.maxConnectionsPerSandbox, 8192);
    assert.equal(config.registryAllow.size, 0);
    assert.equal(config.imageMaxBytes, 10 * 2 ** 30);
    assert.deepEqual(config.egressAllow, []);
    assert.equal(config.diskSizeMB, 10240);
    assert.equal(config.nodeID, "local");
    assert.equal(config.namePrefix, "moat-");
    assert.equal(config.nodeToken, undefined);
  });

  test("sandbox logs: MOAT_LOGS_RETENTION_HOURS, MOAT_LOGS_MAX_MB, MOAT_LOGS_TOTAL_MB", () => {
    const defaults = readNodeConfig({});
    assert.deepEqual(
      [defaults.logsRetentionHours, defaults.logsMaxMB, defaults.logsTotalMB],
      [168, 10, 10240],
    );
    const set = readNodeConfig({
      MOAT_LOGS_RETENTION_HOURS: "0",
      MOAT_LOGS_MAX_MB: "2",
      MOAT_LOGS_TOTAL_MB: "100",
    });
    assert.deepEqual([set.logsRetentionHours, set.logsMaxMB, set.logsTotalMB], [0, 2, 100]);
    assert.throws(
      () => readNodeConfig({ MOAT_LOGS_MAX_MB: "0" }),
      /MOAT_LOGS_MAX_MB must be a whole number ≥ 1/,
    );
    assert.throws(() => readNodeConfig({ MOAT_LOGS_RETENTION_HOURS: "-1" }), /MOAT_LOGS_RETENTION_HOURS/);
  });

  test("a fleet node's identity: MOAT_NODE_ID, MOAT_NAME_PREFIX, MOAT_NODE_TOKEN", () => {
    const token = "t".repeat(32);
    const config = readNodeConfig({
      MOAT_NODE_ID: "node-1",
      MOAT_NAME_PREFIX: "moat-1-",
      MOAT_NODE_TOKEN: token,
    });
    assert.equal(config.nodeID, "node-1");
    assert.equal(config.namePrefix, "moat-1-");
    assert.equal(config.nodeToken, token);
  });

  test("the pool's growth and the create queue: defaults, values, and what is refused", () => {
    const defaults = readNodeConfig({});
    assert.equal(defaults.poolMaxSize, 64);
    assert.equal(defaults.poolIdleMs, 300_000);
    assert.ok(defaults.createConcurrency >= 1);
    assert.equal(defaults.createQueueMax, 256);
    assert.equal(defaults.createQueueTimeoutMs, 45_000);
    const config = readNodeConfig({
      MOAT_POOL_MAX: "8",
      MOAT_POOL_IDLE_SECONDS: "5",
      MOAT_CREATE_CONCURRENCY: "3",
      MOAT_CREATE_QUEUE_MAX: "0",
      MOAT_CREATE_QUEUE_TIMEOUT_SECONDS: "2",
    });
    assert.equal(config.poolMaxSize, 8);
    assert.equal(config.poolIdleMs, 5000);
    assert.equal(config.createConcurrency, 3);
    assert.equal(config.createQueueMax, 0);
    assert.equal(config.createQueueTimeoutMs, 2000);
    assert.throws(() => readNodeConfig({ MOAT_CREATE_CONCURRENCY: "0" }), /MOAT_CREATE_CONCURRENCY must be/);
    assert.throws(() => readNodeConfig({ MOAT_POOL_MAX: "-2" }), /MOAT_POOL_MAX must be/);
  });

  test("valid values are parsed", () => {
    const config = readNodeConfig({
      MOAT_DATA_DIR: "/srv/moat",
      MOAT_FAULTS: "pause:frozen=crash,resume:restored",
      MOAT_TEMPLATE_SNAPSHOTS: "off",
      MOAT_POOL_SIZE: "0",
      MOAT_NETWORK_POOL_SIZE: "5",
      MOAT_SANDBOX_MAX_CONNECTIONS: "100",
      MOAT_REGISTRY_ALLOW: "127.0.0.1:5000,10.0.0.0/8",
      MOAT_IMAGE_MAX_MB: "64",
      MOAT_EGRESS_ALLOW: "10.0.0.2:53",
      MOAT_DISK_SIZE_MB: "0",
    });
    assert.equal(config.dataDir, "/srv/moat");
    assert.deepEqual(
      [...config.faults],
      [
        ["pause:frozen", "crash"],
        ["resume:restored", "error"],
      ],
    );
    assert.equal(config.templateSnapshots, false);
    assert.equal(config.poolSize, 0);
    assert.equal(config.networkPoolSize, 5);
    assert.equal(config.maxConnectionsPerSandbox, 100);
    assert.equal(config.registryAllow.size, 2);
    assert.equal(config.imageMaxBytes, 64 * 2 ** 20);
    assert.equal(config.egressAllow.length, 1);
    assert.equal(config.egressAllow[0]?.port, 53);
    assert.equal(config.diskSizeMB, 0);
  });

  test("a bad value's error names the variable and what it accepts", () => {
    const cases: Array<[string, string, RegExp]> = [
      ["MOAT_POOL_SIZE", "-1", /MOAT_POOL_SIZE must be a whole number ≥ 0, got '-1'/],
      ["MOAT_NETWORK_POOL_SIZE", "two", /MOAT_NETWORK_POOL_SIZE must be a whole number ≥ 0/],
      ["MOAT_SANDBOX_MAX_CONNECTIONS", "1.5", /MOAT_SANDBOX_MAX_CONNECTIONS must be a whole number ≥ 0/],
      ["MOAT_IMAGE_MAX_MB", "lots", /MOAT_IMAGE_MAX_MB must be a whole number ≥ 0/],
      ["MOAT_FAULTS", "pause:frozen=boom", /MOAT_FAULTS: 'pause:frozen=boom' must end in =error or =crash/],
      ["MOAT_REGISTRY_ALLOW", "10.0.0.0/33", /MOAT_REGISTRY_ALLOW: '10\.0\.0\.0\/33' is not a CIDR/],
      [
        "MOAT_EGRESS_ALLOW",
        "example.com",
        /MOAT_EGRESS_ALLOW: 'example\.com' is not an IPv4 address or CIDR/,
      ],
      ["MOAT_DISK_SIZE_MB", "63", /MOAT_DISK_SIZE_MB must be 0 \(no limit\) or a whole number of MiB/],
      ["MOAT_NODE_ID", "node 1", /MOAT_NODE_ID must be 1 to 63 letters, digits/],
      ["MOAT_NAME_PREFIX", "../x-", /MOAT_NAME_PREFIX must be 2 to 20 lowercase letters/],
      ["MOAT_NAME_PREFIX", "moat", /MOAT_NAME_PREFIX must be .* ending in '-'/],
      ["MOAT_NODE_TOKEN", "short", /MOAT_NODE_TOKEN must be at least 32 printable characters/],
    ];
    for (const [name, value, message] of cases) {
      assert.throws(() => readNodeConfig({ [name]: value }), message, name);
    }
  });

  test("several bad values are reported together", () => {
    assert.throws(
      () => readNodeConfig({ MOAT_POOL_SIZE: "x", MOAT_DISK_SIZE_MB: "1" }),
      /2 malformed settings: MOAT_POOL_SIZE .*; MOAT_DISK_SIZE_MB /,
    );
  });

  test("a count set but empty reads as 0, as it always has; other empty values are unset", () => {
    const config = readNodeConfig({ MOAT_POOL_SIZE: "", MOAT_DISK_SIZE_MB: "", MOAT_DATA_DIR: "" });
    assert.equal(config.poolSize, 0);
    assert.equal(config.diskSizeMB, 10240);
    assert.equal(config.dataDir, "/var/lib/moat");
  });
});

test("defaultDataDir and readDiskSizeMB read one variable each", () => {
  assert.equal(defaultDataDir({}), "/var/lib/moat");
  assert.equal(defaultDataDir({ MOAT_DATA_DIR: "/srv/moat" }), "/srv/moat");
  assert.equal(readDiskSizeMB({ MOAT_DISK_SIZE_MB: "0" }), 0);
  assert.equal(readDiskSizeMB({ MOAT_DISK_SIZE_MB: "bad" }), undefined);
});

test("readSetupConfig: MOAT_RUNSC and MOAT_DEBIAN_MIRROR, empty as unset", () => {
  assert.deepEqual(readSetupConfig({}), { runsc: undefined, debianMirror: undefined });
  assert.deepEqual(readSetupConfig({ MOAT_RUNSC: "/opt/runsc", MOAT_DEBIAN_MIRROR: "" }), {
    runsc: "/opt/runsc",
    debianMirror: undefined,
  });
});
