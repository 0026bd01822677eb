import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  PATCHED_PROBE_PATH,
  patchRunscNetnsCheck,
  ROOT_NETNS_PROBE_PATH,
  replaceAllBytes,
} from "../src/setup/netns-patch.js";

describe("patchRunscNetnsCheck", () => {
  test("the replacement has the same length, so offsets in the binary stay valid", () => {
    assert.equal(Buffer.byteLength(PATCHED_PROBE_PATH), Buffer.byteLength(ROOT_NETNS_PROBE_PATH));
  });

  test("replaces every occurrence and nothing else", () => {
    const fake = Buffer.concat([
      Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x00]),
      Buffer.from(ROOT_NETNS_PROBE_PATH),
      Buffer.from("\u0000other strings\u0000"),
      Buffer.from(ROOT_NETNS_PROBE_PATH),
      Buffer.from([0xff, 0x00]),
    ]);
    const { patched, count } = patchRunscNetnsCheck(fake);
    assert.equal(count, 2);
    assert.equal(patched.length, fake.length);
    assert.equal(patched.indexOf(ROOT_NETNS_PROBE_PATH), -1);
    const expected = Buffer.from(
      fake.toString("latin1").replaceAll(ROOT_NETNS_PROBE_PATH, PATCHED_PROBE_PATH),
      "latin1",
    );
    assert.deepEqual(patched, expected);
    // The input is left as it was.
    assert.notEqual(fake.indexOf(ROOT_NETNS_PROBE_PATH), -1);
  });

  test("a binary without the check is reported as such", () => {
    const { patched, count } = patchRunscNetnsCheck(
      Buffer.from("runsc release-20240807.0 /proc/sys/net/core/wmem"),
    );
    assert.equal(count, 0);
    assert.equal(patched.toString(), "runsc release-20240807.0 /proc/sys/net/core/wmem");
  });

  test("occurrences that touch each other are all replaced", () => {
    const { count } = replaceAllBytes(Buffer.from("abab"), "ab", "cd");
    assert.equal(count, 2);
  });

  test("refuses a replacement of another length", () => {
    assert.throws(() => replaceAllBytes(Buffer.from("abc"), "abc", "abcd"), /same non-zero length/);
  });
});
