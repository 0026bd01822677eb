/** What a node reports in its heartbeat: /proc parsed, CPU percent between samples, its address. */
import assert from "node:assert/strict";
import { test } from "node:test";
import { advertisedAddress, httpURL } from "../src/node/heartbeat.js";
import { cpuPercent, parseMeminfo, parseProcStat } from "../src/node/load.js";

test("/proc/stat: busy and total jiffies of the aggregate line; CPU percent between two samples", () => {
  const before = parseProcStat("cpu  100 0 50 800 50 0 0 0 0 0\ncpu0 50 0 25 400 25 0 0 0 0 0\n");
  const after = parseProcStat("cpu  200 0 100 1000 100 0 0 0 0 0\n");
  assert.deepEqual(before, { busy: 150, total: 1000 });
  assert.deepEqual(after, { busy: 300, total: 1400 });
  // 150 busy of 400 elapsed.
  assert.equal(cpuPercent(before, after), 37.5);
  assert.equal(cpuPercent(undefined, after), 0, "the first sample has nothing to compare with");
  assert.equal(cpuPercent(after, after), 0);
  assert.equal(parseProcStat("garbage"), undefined);
});

test("/proc/meminfo: total and used (total − available) in MiB", () => {
  const text = "MemTotal:       16384000 kB\nMemFree:         1000000 kB\nMemAvailable:    8192000 kB\n";
  assert.deepEqual(parseMeminfo(text), { totalMB: 16000, usedMB: 8000 });
  assert.equal(parseMeminfo("MemTotal: 1 kB\n"), undefined);
});

test("the advertised address: the option, else the listen host, else the first non-loopback IPv4", () => {
  const interfaces = {
    lo: [{ address: "127.0.0.1", family: "IPv4", internal: true }],
    eth0: [
      { address: "fe80::1", family: "IPv6", internal: false },
      { address: "10.98.0.5", family: "IPv4", internal: false },
    ],
  };
  assert.equal(advertisedAddress("0.0.0.0", "node-a.internal", interfaces), "node-a.internal");
  assert.equal(advertisedAddress("10.98.0.7", undefined, interfaces), "10.98.0.7");
  assert.equal(advertisedAddress("0.0.0.0", undefined, interfaces), "10.98.0.5");
  assert.equal(advertisedAddress("::", undefined, { lo: interfaces.lo }), "127.0.0.1");
  assert.equal(httpURL("10.98.0.5", 5008), "http://10.98.0.5:5008");
  assert.equal(httpURL("fd00::5", 5007), "http://[fd00::5]:5007");
});
