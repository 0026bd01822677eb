/** A sandbox's own egress rules as nft tables in its outer namespace, and what the resolver opens. */
import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { parseEgressRules } from "@moat/shared";
import {
  admitRuleset,
  EgressRegistry,
  egressRuleset,
  MAX_RESOLVED_TTL,
  MIN_RESOLVED_TTL,
  resolvedTTL,
  SandboxEgress,
} from "../src/network/egress-rules.js";
import { Slot } from "../src/network/slot.js";

function recorder() {
  const scripts: Array<{ namespace: string; script: string }> = [];
  return {
    scripts,
    run: async (namespace: string, script: string) => {
      scripts.push({ namespace, script });
    },
  };
}

const closed = (allowOut: string[]) => parseEgressRules({ allowOut, denyOut: ["0.0.0.0/0"] });

describe("sandbox egress rules", () => {
  test("the table: DNS to the resolver, established, allow, resolved, then deny; sets replaced", () => {
    const script = egressRuleset(
      parseEgressRules({ allowOut: ["1.1.1.1", "8.8.8.0/24"], denyOut: ["0.0.0.0/0"] }),
    );
    const lines = script.trim().split("\n");
    const at = (line: string) => {
      const i = lines.indexOf(line);
      assert.ok(i >= 0, `missing: ${line}\n${script}`);
      return i;
    };
    at('add rule ip moat_egress dns iifname "tap0" udp dport 53 dnat to 10.12.0.1:5333');
    at('add rule ip moat_egress dns iifname "tap0" tcp dport 53 dnat to 10.12.0.1:5333');
    const order = [
      at('add rule ip moat_egress forward iifname != "tap0" accept'),
      at("add rule ip moat_egress forward ct state established,related accept"),
      at("add rule ip moat_egress forward ip daddr 10.12.0.1 meta l4proto { tcp, udp } th dport 5333 accept"),
      at("add rule ip moat_egress forward ip daddr @allow accept"),
      at("add rule ip moat_egress forward ip daddr @resolved accept"),
      at("add rule ip moat_egress forward ip daddr @deny meta l4proto tcp reject with tcp reset"),
    ];
    assert.deepEqual(
      order,
      [...order].sort((a, b) => a - b),
    );
    assert.ok(
      at("flush set ip moat_egress allow") <
        at("add element ip moat_egress allow { 1.1.1.1/32, 8.8.8.0/24 }"),
    );
    assert.ok(at("flush set ip moat_egress deny") < at("add element ip moat_egress deny { 0.0.0.0/0 }"));
    // The resolved set is left alone unless asked.
    assert.doesNotMatch(script, /flush set ip moat_egress resolved/);
    assert.match(
      egressRuleset(parseEgressRules({}), [{ address: "203.0.113.1", seconds: 12.2 }]),
      /flush set ip moat_egress resolved\nadd element ip moat_egress resolved \{ 203\.0\.113\.1 timeout 13s \}/,
    );
    // An open sandbox: empty sets, nothing denied.
    assert.doesNotMatch(egressRuleset(parseEgressRules({})), /add element/);
  });

  test("an answered address is opened for its TTL, within bounds; re-arming replaces the old timeout", () => {
    assert.equal(resolvedTTL(0), MIN_RESOLVED_TTL);
    assert.equal(resolvedTTL(300), 300);
    assert.equal(resolvedTTL(86_400), MAX_RESOLVED_TTL);
    assert.equal(
      admitRuleset(["203.0.113.1", "203.0.113.2"], 60),
      "add element ip moat_egress resolved { 203.0.113.1, 203.0.113.2 }\n" +
        "delete element ip moat_egress resolved { 203.0.113.1, 203.0.113.2 }\n" +
        "add element ip moat_egress resolved { 203.0.113.1 timeout 60s, 203.0.113.2 timeout 60s }\n",
    );
  });

  test("which names resolve: any for an open sandbox; for a closed one only what a domain rule allows", () => {
    const nft = recorder();
    const open = new SandboxEgress(new Slot(3), "a", parseEgressRules({ denyOut: ["8.8.8.8"] }), nft.run);
    assert.equal(open.decide("anything.example"), "forward");
    const shut = new SandboxEgress(new Slot(3), "a", closed(["api.example.com", "*.cdn.example"]), nft.run);
    assert.equal(shut.decide("api.example.com"), "admit");
    assert.equal(shut.decide("x.y.cdn.example"), "admit");
    assert.equal(shut.decide("cdn.example"), "refuse");
    assert.equal(shut.decide("example.com"), "refuse");
    const none = new SandboxEgress(
      new Slot(3),
      "a",
      parseEgressRules({ allowInternetAccess: false }),
      nft.run,
    );
    assert.equal(none.decide("example.com"), "refuse");
  });

  test("admissions: opened before they resolve, repeats skipped, none after the rules stop allowing the name", async () => {
    const nft = recorder();
    let now = 1_000_000;
    const egress = new SandboxEgress(
      new Slot(9),
      "sbx",
      closed(["a.example", "b.example"]),
      nft.run,
      () => now,
    );
    await egress.admit("a.example", ["203.0.113.1"], 120);
    assert.deepEqual(nft.scripts, [{ namespace: "moat-n9", script: admitRuleset(["203.0.113.1"], 120) }]);
    // Still open for more than half its time: no nft call.
    now += 30_000;
    await egress.admit("a.example", ["203.0.113.1"], 120);
    assert.equal(nft.scripts.length, 1);
    // Past half: re-armed.
    now += 60_000;
    await egress.admit("a.example", ["203.0.113.1"], 120);
    assert.equal(nft.scripts.length, 2);

    // The rules change: b.example's addresses stay open, a.example's go.
    await egress.admit("b.example", ["203.0.113.2"], 600);
    nft.scripts.length = 0;
    await egress.apply(closed(["b.example"]));
    assert.equal(nft.scripts.length, 1);
    assert.match(
      nft.scripts[0]!.script,
      /flush set ip moat_egress resolved\nadd element ip moat_egress resolved \{ 203\.0\.113\.2 timeout 600s \}/,
    );
    // An admission decided under the old rules that lands after the change opens nothing.
    const stale = egress.admit("a.example", ["203.0.113.1"], 60);
    await stale;
    assert.equal(nft.scripts.length, 1);
  });

  test("an admission under the rules that changed while it waited is checked again", async () => {
    const nft = recorder();
    let release!: () => void;
    const gate = new Promise<void>((r) => {
      release = r;
    });
    const slow = async (namespace: string, script: string) => {
      await gate;
      nft.scripts.push({ namespace, script });
    };
    const egress = new SandboxEgress(new Slot(9), "sbx", closed(["a.example"]), slow);
    const applying = egress.apply(closed(["a.example"]));
    const admitting = egress.admit("a.example", ["203.0.113.1"], 60);
    const narrowing = egress.apply(parseEgressRules({ allowInternetAccess: false }));
    release();
    await Promise.all([applying, admitting, narrowing]);
    assert.equal(
      nft.scripts.filter((s) => s.script.includes("203.0.113.1")).length,
      0,
      JSON.stringify(nft.scripts),
    );
  });

  test("the registry: attach applies and registers by host address; detach forgets; a bad rule throws", async () => {
    const nft = recorder();
    const registry = new EgressRegistry(nft.run);
    const slot = new Slot(300);
    await registry.attach(slot, "sbx", { allowInternetAccess: false });
    assert.equal(registry.forSource("10.11.1.44")?.sandboxID, "sbx");
    assert.match(nft.scripts[0]!.script, /add element ip moat_egress deny \{ 0\.0\.0\.0\/0 \}/);
    assert.equal(nft.scripts[0]!.namespace, "moat-n300");
    // The same slot again (a pool entry claimed, an update): the same entry, new rules.
    const before = registry.forSource("10.11.1.44");
    await registry.attach(slot, "user-sbx", { allowInternetAccess: true, denyOut: ["8.8.8.8"] });
    assert.equal(registry.forSource("10.11.1.44"), before);
    assert.equal(before!.sandboxID, "user-sbx");
    assert.throws(
      () => registry.attach(slot, "x", { allowInternetAccess: true, allowOut: ["10.0.0.0/33"] }),
      /not a valid/,
    );
    // A network just made holds the rules it was made with: nothing to apply when they fit.
    nft.scripts.length = 0;
    const fresh = new Slot(301);
    await registry.attach(fresh, "new", { allowInternetAccess: false }, { allowInternetAccess: false });
    await registry.attach(fresh, "new", { allowInternetAccess: false, denyOut: ["0.0.0.0/0"] });
    assert.deepEqual(nft.scripts, []);
    await registry.attach(fresh, "new", { allowInternetAccess: true }, { allowInternetAccess: false });
    assert.equal(nft.scripts.length, 1);
    registry.detach(fresh);
    registry.detach(slot);
    assert.equal(registry.forSource("10.11.1.44"), undefined);
    assert.equal(registry.size, 0);
  });
});
