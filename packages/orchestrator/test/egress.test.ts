import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { isDeniedEgress, parseEgressAllow } from "../src/network/egress.js";
import { hostNetworks, hostRuleset, outerRuleset } from "../src/network/sandbox-network.js";
import { Slot } from "../src/network/slot.js";
import { SANDBOX_CAPABILITIES } from "../src/runtime/oci-spec.js";

describe("sandbox egress", () => {
  test("private, link-local, loopback, carrier NAT, multicast and reserved ranges are denied", () => {
    for (const ip of [
      "10.1.2.3",
      "172.16.0.1",
      "172.31.255.255",
      "192.168.1.1",
      "169.254.169.254",
      "100.64.0.1",
      "127.0.0.1",
      "0.0.0.0",
      "224.0.0.251",
      "240.0.0.1",
      "255.255.255.255",
    ]) {
      assert.ok(isDeniedEgress(ip), ip);
    }
    // The public resolvers moat's templates name (/etc/resolv.conf) stay reachable.
    for (const ip of ["8.8.8.8", "8.8.4.4", "1.1.1.1", "172.32.0.1", "100.128.0.1", "151.101.2.132"]) {
      assert.ok(!isDeniedEgress(ip), ip);
    }
  });

  test("the allow list: addresses, CIDRs and address:port, separated by commas or spaces", () => {
    assert.deepEqual(parseEgressAllow(undefined), []);
    assert.deepEqual(parseEgressAllow(" 10.0.0.0/8, 192.168.1.5  10.0.0.2:53,169.254.169.254/32:80"), [
      { cidr: "10.0.0.0/8", port: undefined },
      { cidr: "192.168.1.5/32", port: undefined },
      { cidr: "10.0.0.2/32", port: 53 },
      { cidr: "169.254.169.254/32", port: 80 },
    ]);
  });

  test("a bad allow list entry is refused with what to write instead", () => {
    assert.throws(
      () => parseEgressAllow("10.0.0.5/8"),
      /has bits set past its \/8; did you mean 10\.0\.0\.0\/8\?/,
    );
    assert.throws(
      () => parseEgressAllow("fd00::/8"),
      /MOAT_EGRESS_ALLOW: 'fd00::\/8' is not an IPv4 address or CIDR/,
    );
    assert.throws(() => parseEgressAllow("10.0.0.256"), /not an IPv4 address/);
    assert.throws(() => parseEgressAllow("10.0.0.0/33"), /longer than \/32/);
    assert.throws(
      () => parseEgressAllow("10.0.0.2:0", "--egress-allow"),
      /--egress-allow: .*port outside 1\.\.65535/,
    );
    assert.throws(() => parseEgressAllow("example.com"), /not an IPv4 address/);
  });

  test("host rules: allowed destinations pass before the denied ranges are refused", () => {
    const rules = hostRuleset({ egressAllow: parseEgressAllow("10.9.0.0/16,10.0.0.2:53") });
    const forward = rules.slice(rules.indexOf("chain forward"), rules.indexOf("chain output"));
    const allow = forward.indexOf('iifname "moat-v*" ip daddr 10.9.0.0/16 accept');
    const resolver = forward.indexOf(
      'iifname "moat-v*" ip daddr 10.0.0.2/32 meta l4proto { tcp, udp } th dport 53 accept',
    );
    const deny = forward.search(
      /iifname "moat-v\*" ip daddr \{ [^}]*10\.0\.0\.0\/8[^}]*169\.254\.0\.0\/16[^}]*\} reject/,
    );
    assert.ok(allow > 0 && resolver > allow && deny > resolver, forward);
    // Sandboxes never reach each other, whatever the allow list says: that rule comes first.
    assert.ok(forward.indexOf('iifname "moat-v*" oifname "moat-v*" drop') < allow);
    assert.match(hostRuleset(), /ip daddr \{ 0\.0\.0\.0\/8, 10\.0\.0\.0\/8, [^}]+\} reject/);
    assert.doesNotMatch(hostRuleset(), / accept\n.*reject/);
  });

  test("the networks the node sits on are denied too, whatever their numbering; moat's own links are not", () => {
    // Documentation nets are not private: a node whose LAN and mirrors use them (as lab networks do)
    // has its LAN denied as the network it sits on, the mirror beyond the gateway reachable.
    for (const ip of ["192.0.2.1", "198.51.100.7", "203.0.113.80"]) assert.ok(!isDeniedEgress(ip), ip);
    const routes = JSON.stringify([
      { dst: "default", gateway: "192.0.2.1", dev: "eth0" },
      { type: "unreachable", dst: "10.11.0.0/16" },
      { dst: "10.11.3.137", gateway: "10.12.14.38", dev: "moat-v905" },
      { dst: "10.12.14.36/30", dev: "moat-v905", protocol: "kernel", scope: "link" },
      { dst: "192.0.2.0/24", dev: "eth0", protocol: "kernel", scope: "link" },
      { dst: "203.0.113.9", dev: "eth1", scope: "link" },
    ]);
    assert.deepEqual(hostNetworks(routes), ["192.0.2.0/24", "203.0.113.9/32"]);
    const rules = hostRuleset({
      hostNetworks: ["192.0.2.0/24"],
      egressAllow: parseEgressAllow("192.0.2.53:53"),
    });
    const forward = rules.slice(rules.indexOf("chain forward"), rules.indexOf("chain output"));
    const allow = forward.indexOf("ip daddr 192.0.2.53/32 meta l4proto { tcp, udp } th dport 53 accept");
    const deny = forward.search(/ip daddr \{ [^}]*10\.0\.0\.0\/8[^}]*, 192\.0\.2\.0\/24 \} reject/);
    assert.ok(allow > 0 && deny > allow, forward);
  });

  test("host rules: only root reaches sandbox addresses; sandbox packets carry sandbox addresses", () => {
    const rules = hostRuleset();
    assert.match(
      rules,
      /chain output \{[^}]*ip daddr \{ 10\.11\.0\.0\/16, 10\.12\.0\.0\/16 \} meta skuid != 0 reject with icmp type admin-prohibited/,
    );
    assert.match(rules, /iifname "moat-v\*" ip saddr != \{ 10\.11\.0\.0\/16, 10\.12\.0\.0\/16 \} drop/);
    assert.match(rules, /iifname "moat-v\*" meta nfproto ipv6 drop/);
  });

  test("outer rules: only the inner address leaves the sandbox; egress is the egress table's", () => {
    const rules = outerRuleset(new Slot(5));
    assert.match(rules, /hook ingress device "tap0" priority -500; policy drop;/);
    assert.match(rules, /meta protocol ip ip saddr 169\.254\.0\.21 accept/);
    assert.match(rules, /dnat to 169\.254\.0\.21/);
    assert.match(rules, /snat to 10\.11\.0\.5/);
    assert.doesNotMatch(rules, /chain forward/);
  });

  test("host rules: sandboxes reach the node's resolver on its port only; nothing else reaches it", () => {
    const input = hostRuleset().split("chain input")[1]!.split("chain forward")[0]!;
    const lines = input.split("\n").map((l) => l.trim());
    const accept = lines.indexOf(
      'iifname "moat-v*" ip daddr 10.12.0.1 meta l4proto { tcp, udp } th dport 5333 accept',
    );
    assert.ok(accept > 0 && accept < lines.indexOf('iifname "moat-v*" drop'), input);
    assert.ok(lines.indexOf("ip daddr 10.12.0.1 drop") > accept, input);
  });

  test("sandbox root holds no CAP_NET_ADMIN", () => {
    assert.ok(!SANDBOX_CAPABILITIES.includes("CAP_NET_ADMIN"));
    assert.ok(SANDBOX_CAPABILITIES.includes("CAP_NET_BIND_SERVICE"));
  });
});
