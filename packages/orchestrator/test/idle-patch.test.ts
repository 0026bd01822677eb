import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  findIdleMonitorSleeps,
  PATCHED_PERIOD_NS,
  patchIdleMonitor,
  STOCK_PERIOD_NS,
} from "../src/setup/idle-patch.js";

/** controlFastPath's loop head as Go 1.22 compiles it for amd64 (runsc 20240729). */
function monitorLoop(periodNs = STOCK_PERIOD_NS): Buffer {
  const sleep = Buffer.alloc(5);
  sleep[0] = 0xb8;
  sleep.writeUInt32LE(periodNs, 1);
  return Buffer.concat([
    Buffer.from([0x48, 0xd1, 0xe1]), // shl rcx
    Buffer.from([0x89, 0x0d, 0xe6, 0x0b, 0x32, 0x01]), // mov [rip+0x1320be6], ecx
    sleep, // mov eax, period
    Buffer.from([0xe8, 0x98, 0xed, 0x68, 0xff]), // call time.Sleep
  ]);
}

const filler = (n: number) => Buffer.alloc(n, 0xcc);

describe("patchIdleMonitor", () => {
  test("stretches the monitor's sleep to the patched period and changes no other byte", () => {
    const binary = Buffer.concat([filler(64), monitorLoop(), filler(64)]);
    const patched = patchIdleMonitor(binary);
    assert.ok(patched);
    assert.equal(patched.length, binary.length);
    assert.deepEqual(patched, Buffer.concat([filler(64), monitorLoop(PATCHED_PERIOD_NS), filler(64)]));
    assert.deepEqual(findIdleMonitorSleeps(patched), [], "a patched copy does not match again");
    assert.deepEqual(binary, Buffer.concat([filler(64), monitorLoop(), filler(64)]), "input untouched");
  });

  test("a `mov eax, 400000; call` without the loop's prologue is someone else's code", () => {
    const lone = Buffer.concat([filler(16), monitorLoop().subarray(9), filler(16)]);
    assert.deepEqual(findIdleMonitorSleeps(lone), []);
    assert.equal(patchIdleMonitor(lone), undefined);
  });

  test("two matches are ambiguous, so nothing is patched", () => {
    const twice = Buffer.concat([monitorLoop(), filler(8), monitorLoop()]);
    assert.equal(findIdleMonitorSleeps(twice).length, 2);
    assert.equal(patchIdleMonitor(twice), undefined);
  });

  test("a binary without the loop (a fixed runsc) is left alone", () => {
    assert.equal(patchIdleMonitor(Buffer.from("runsc release-20260701.0")), undefined);
  });
});
