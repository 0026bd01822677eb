/**
 * Where image pulls may connect and what they may send: address classes, the operator's allow
 * list, the connect-time lookup filter (DNS rebinding), the same-site rule for credentials, and
 * what of a registry's answers may reach the build log.
 */
import assert from "node:assert/strict";
import type dns from "node:dns";
import { describe, test } from "node:test";
import { filteredLookup, nonPublicRange, RegistryAllowList } from "../src/template/oci/address-policy.js";
import { parseImageReference } from "../src/template/oci/reference.js";
import { sameSite, sanitize } from "../src/template/oci/registry.js";

describe("registry address policy", () => {
  test("loopback, private, link-local, shared, multicast and reserved addresses are not public", () => {
    const cases: Array<[string, string | undefined]> = [
      ["127.0.0.1", "loopback"],
      ["127.255.0.9", "loopback"],
      ["10.1.2.3", "private"],
      ["172.16.0.1", "private"],
      ["172.31.255.255", "private"],
      ["192.168.1.1", "private"],
      ["100.64.0.1", "shared (100.64.0.0/10)"],
      ["169.254.169.254", "link-local"],
      ["0.0.0.0", "unspecified"],
      ["0.1.2.3", "unspecified"],
      ["224.0.0.1", "multicast"],
      ["240.0.0.1", "reserved"],
      ["255.255.255.255", "broadcast"],
      ["198.18.0.1", "reserved"],
      ["::1", "loopback"],
      ["::", "unspecified"],
      ["fc00::1", "unique-local"],
      ["fd12:3456::1", "unique-local"],
      ["fe80::1", "link-local"],
      ["ff02::1", "multicast"],
      ["::ffff:127.0.0.1", "loopback"],
      ["::ffff:a9fe:a9fe", "link-local"],
      ["::ffff:10.0.0.1", "private"],
      ["64:ff9b::a9fe:a9fe", "link-local"],
      ["2002:7f00:1::1", "loopback"],
      ["2001:db8::1", "reserved"],
      ["8.8.8.8", undefined],
      ["172.32.0.1", undefined],
      ["2606:4700::1111", undefined],
      ["64:ff9b::808:808", undefined],
    ];
    for (const [address, range] of cases) assert.equal(nonPublicRange(address), range, address);
  });

  test("the allow list: hosts, host:port, http:// (plain HTTP) and CIDRs; bad entries a clear error", () => {
    const allow = new RegistryAllowList(
      " registry.internal, 127.0.0.1:5000 ,http://10.0.0.5:5000,192.168.0.0/16,fd00::/8",
    );
    assert.equal(allow.size, 5);
    assert.match(
      allow.refusal("127.0.0.1", "127.0.0.1", 5001) ?? "",
      /refusing to connect to 127\.0\.0\.1, a loopback address.*MOAT_REGISTRY_ALLOW/,
    );
    assert.equal(allow.refusal("127.0.0.1", "127.0.0.1", 5000), undefined);
    assert.equal(
      allow.refusal("10.9.9.9", "registry.internal", 443),
      undefined,
      "a listed name may be private",
    );
    assert.match(
      allow.refusal("10.9.9.9", "other.example", 443) ?? "",
      /other\.example \(10\.9\.9\.9\), a private address/,
    );
    assert.equal(allow.refusal("192.168.4.4", "any.example", 443), undefined, "an address in a listed CIDR");
    assert.equal(
      allow.refusal("::ffff:192.168.4.4", "any.example", 443),
      undefined,
      "IPv4-mapped in a v4 CIDR",
    );
    assert.equal(allow.refusal("fd00::7", "any.example", 443), undefined);
    assert.equal(allow.refusal("8.8.8.8", "any.example", 443), undefined, "public addresses need no listing");
    assert.ok(allow.allowsPlainHttp("10.0.0.5", 5000));
    assert.ok(!allow.allowsPlainHttp("10.0.0.5", 5001));
    assert.ok(allow.allowsPlainHttp("127.0.0.1", 5000), "a listed loopback registry speaks plain HTTP");
    assert.ok(!allow.allowsPlainHttp("registry.internal", 80), "https unless listed as http://");
    assert.ok(!new RegistryAllowList("").allowsPlainHttp("127.0.0.1", 5000), "loopback needs listing too");
    assert.ok(!new RegistryAllowList("").allowsPlainHttp("localhost", 5000));
    assert.ok(new RegistryAllowList("127.0.0.0/8").allowsPlainHttp("127.0.0.2", 5000));
    assert.ok(new RegistryAllowList("[::1]:5000").allowsPlainHttp("::1", 5000));
    assert.throws(
      () => new RegistryAllowList("10.0.0.0/33"),
      /MOAT_REGISTRY_ALLOW: '10\.0\.0\.0\/33' is not a CIDR/,
    );
    assert.throws(() => new RegistryAllowList("bad host"), /'bad host' is neither host\[:port\]/);
    assert.throws(() => new RegistryAllowList("host:99999"), /neither host/);
  });

  test("the connect-time lookup offers only allowed addresses (DNS rebinding), else fails", async () => {
    const answers: Record<string, dns.LookupAddress[]> = {
      "mixed.example": [
        { address: "127.0.0.1", family: 4 },
        { address: "93.184.216.34", family: 4 },
      ],
      "rebound.example": [{ address: "169.254.169.254", family: 4 }],
    };
    const resolve = (name: string, _o: unknown, cb: (e: null, a: dns.LookupAddress[]) => void) =>
      cb(null, answers[name] ?? []);
    const lookup = (name: string, all: boolean) =>
      new Promise<unknown>((ok, fail) =>
        filteredLookup(
          new RegistryAllowList(),
          name,
          443,
          resolve,
        )(name, { all }, (err, address) => (err ? fail(err) : ok(address))),
      );
    assert.deepEqual(await lookup("mixed.example", true), [{ address: "93.184.216.34", family: 4 }]);
    assert.equal(await lookup("mixed.example", false), "93.184.216.34");
    await assert.rejects(
      lookup("rebound.example", true),
      /rebound\.example \(169\.254\.169\.254\), a link-local address/,
    );
  });

  test("credentials stay on the registry's host or site: public suffixes are not a site", () => {
    assert.ok(sameSite("registry-1.docker.io", "auth.docker.io"));
    assert.ok(sameSite("ghcr.io", "GHCR.io."));
    assert.ok(!sameSite("registry.example.com", "auth.example.org"));
    assert.ok(!sameSite("team-a.github.io", "team-b.github.io"));
    assert.ok(!sameSite("a.co.uk", "b.co.uk"));
    assert.ok(!sameSite("127.0.0.1", "127.0.0.2"));
    assert.ok(sameSite("127.0.0.1", "127.0.0.1"));
  });

  test("registry text reaching the log is printable and short", () => {
    assert.equal(sanitize("manifest\u001b[31m unknown\r\n\u0000!"), "manifest [31m unknown !");
    assert.equal(sanitize("x".repeat(500)).length, 201);
  });

  test("an image's registry must be a host[:port]: nothing else reaches the URL", () => {
    assert.equal(parseImageReference("[::1]:5000/team/img").registry, "[::1]:5000");
    for (const bad of [
      "evil.com?x=1/img",
      "evil.com#a/img",
      "user@evil.com:5000/img",
      "ev il.com/img",
      "a.com:0/img",
    ]) {
      assert.throws(() => parseImageReference(bad), /invalid image reference/, bad);
    }
  });
});
