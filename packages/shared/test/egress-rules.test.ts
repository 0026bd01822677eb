/** A sandbox's egress rules as the API checks them and the node reads them (E2B's allowOut/denyOut). */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import {
  coversAllIPv4,
  domainMatches,
  EgressRuleError,
  MAX_EGRESS_ENTRIES,
  parseEgressRules,
} from "../src/egress-rules.js";

const bad = (input: Parameters<typeof parseEgressRules>[0], message: RegExp) =>
  assert.throws(
    () => parseEgressRules(input),
    (err: unknown) => {
      assert.ok(err instanceof EgressRuleError);
      assert.match(err.message, message);
      return true;
    },
  );

describe("egress rules", () => {
  test("addresses and CIDRs are normalized; host bits are dropped as E2B does", () => {
    const rules = parseEgressRules({
      allowOut: ["8.8.8.8", " 1.1.1.0/24 ", "203.0.113.7/16", "8.8.8.8/32"],
      denyOut: ["0.0.0.0/0"],
    });
    assert.deepEqual(rules.allowCIDRs, ["8.8.8.8/32", "1.1.1.0/24", "203.0.0.0/16"]);
    assert.deepEqual(rules.denyCIDRs, ["0.0.0.0/0"]);
    assert.equal(rules.closed, true);
  });

  test("domains: exact, leading wildcard, everything; lowercase ASCII", () => {
    const rules = parseEgressRules({
      allowOut: ["Example.COM.", "*.api.example.com", "*", "bücher.example"],
      denyOut: ["0.0.0.0/0"],
    });
    assert.deepEqual(rules.domains, ["example.com", "*.api.example.com", "*", "xn--bcher-kva.example"]);
  });

  test("internet access off is a deny of everything; domains need it (or denyOut 0.0.0.0/0)", () => {
    assert.deepEqual(parseEgressRules({ allowInternetAccess: false }), {
      allowCIDRs: [],
      denyCIDRs: ["0.0.0.0/0"],
      domains: [],
      closed: true,
    });
    assert.deepEqual(parseEgressRules({ allowInternetAccess: false, allowOut: ["a.example"] }).domains, [
      "a.example",
    ]);
    bad({ allowOut: ["example.com"] }, /denyOut must include '0\.0\.0\.0\/0'/);
    bad({ allowOut: ["example.com"], denyOut: ["0.0.0.0/1", "128.0.0.0/1"] }, /ALL_TRAFFIC/);
  });

  test("closed: the denies cover every address, however they are written", () => {
    assert.equal(parseEgressRules({ denyOut: ["0.0.0.0/1", "128.0.0.0/1"] }).closed, true);
    assert.equal(parseEgressRules({ denyOut: ["0.0.0.0/1", "128.0.0.0/2"] }).closed, false);
    assert.equal(parseEgressRules({ denyOut: ["8.8.8.8"] }).closed, false);
    assert.equal(parseEgressRules({}).closed, false);
    assert.equal(coversAllIPv4(["255.255.255.255/32", "0.0.0.0/1", "128.0.0.0/2", "192.0.0.0/2"]), true);
  });

  test("IPv6: a deny is accepted (always true), an allow is refused", () => {
    assert.deepEqual(parseEgressRules({ denyOut: ["::/0", "fd00::/8", "0.0.0.0/0"] }).denyCIDRs, [
      "0.0.0.0/0",
    ]);
    bad({ allowOut: ["2001:db8::1"] }, /IPv6.*IPv4 destinations only/);
  });

  test("malformed entries name the entry and what to write", () => {
    for (const entry of [
      "10.0.0.0/33",
      "10.0.0.256",
      "10.0.0",
      "010.0.0.1",
      "1.2.3.4/8/8",
      "10.0.0.0/abc",
      "http://example.com",
      "exa mple.com",
      "*.",
      "a.*.example.com",
      "**.example.com",
      "-bad.example.com",
      `${"a".repeat(64)}.example.com`,
      "fd00::/abc",
    ]) {
      bad({ allowOut: [entry], denyOut: ["0.0.0.0/0"] }, /is not a valid|longer than/);
    }
    bad({ allowOut: [""] }, /an entry is empty/);
    bad({ allowOut: ["1.2.3.4:80"] }, /names a port/);
    bad({ allowOut: ["example.com:443"], denyOut: ["0.0.0.0/0"] }, /names a port/);
    bad({ denyOut: ["example.com"] }, /denyOut: 'example.com' is a domain name/);
  });

  test("too many entries", () => {
    const many = Array.from({ length: MAX_EGRESS_ENTRIES + 1 }, (_, i) => `10.0.${i >> 8}.${i & 255}`);
    bad({ denyOut: many }, /network.denyOut has 257 entries; at most 256/);
    assert.equal(parseEgressRules({ denyOut: many.slice(1) }).denyCIDRs.length, MAX_EGRESS_ENTRIES);
  });

  test("domain patterns: a wildcard matches names under it at any depth, never the apex", () => {
    assert.ok(domainMatches("example.com", "example.com"));
    assert.ok(!domainMatches("example.com", "a.example.com"));
    assert.ok(domainMatches("*.example.com", "a.example.com"));
    assert.ok(domainMatches("*.example.com", "a.b.example.com"));
    assert.ok(!domainMatches("*.example.com", "example.com"));
    assert.ok(!domainMatches("*.example.com", "badexample.com"));
    assert.ok(domainMatches("*", "anything.at.all"));
  });
});
