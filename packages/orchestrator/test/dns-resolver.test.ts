/**
 * The node's resolver for its sandboxes, against an upstream this test runs on 127.0.0.1: what it
 * forwards, what it refuses (and never forwards), what it opens, and its limits.
 */
import assert from "node:assert/strict";
import dgram from "node:dgram";
import net from "node:net";
import { after, before, describe, test } from "node:test";
import { createNoopLogger, parseEgressRules } from "@moat/shared";
import dnsPacket from "dns-packet";
import {
  answeredAddresses,
  DnsResolver,
  hostUpstreams,
  parseUpstreams,
} from "../src/network/dns-resolver.js";
import { SandboxEgress } from "../src/network/egress-rules.js";
import { Slot } from "../src/network/slot.js";

const RECORDS: Record<string, dnsPacket.Answer[]> = {
  "allowed.test": [{ type: "A", name: "allowed.test", ttl: 5, data: "203.0.113.10" }],
  "other.test": [{ type: "A", name: "other.test", ttl: 300, data: "203.0.113.11" }],
  "alias.test": [
    { type: "CNAME", name: "alias.test", ttl: 600, data: "edge.cdn.test" },
    { type: "A", name: "edge.cdn.test", ttl: 120, data: "203.0.113.20" },
    // What a careless upstream might add: never opened.
    { type: "A", name: "unrelated.test", ttl: 120, data: "203.0.113.99" },
  ],
};

/** An upstream answering RECORDS over UDP and TCP; it notes every name asked. */
async function startUpstream() {
  const asked: string[] = [];
  const reply = (msg: Buffer) => {
    const q = dnsPacket.decode(msg);
    const name = q.questions![0]!.name;
    asked.push(name);
    return dnsPacket.encode({
      type: "response",
      id: q.id,
      flags: dnsPacket.RECURSION_AVAILABLE | (RECORDS[name] ? 0 : 3),
      questions: q.questions,
      answers: RECORDS[name] ?? [],
    });
  };
  const udp = dgram.createSocket("udp4");
  udp.on("message", (msg, rinfo) => udp.send(reply(msg), rinfo.port, rinfo.address));
  await new Promise<void>((r) => udp.bind(0, "127.0.0.1", r));
  const port = udp.address().port;
  const tcp = net.createServer((s) => {
    s.on("data", (d) => {
      const out = reply(d.subarray(2));
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(out.length);
      s.end(Buffer.concat([prefix, out]));
    });
  });
  await new Promise<void>((r) => tcp.listen(port, "127.0.0.1", r));
  return {
    asked,
    port,
    close: () => {
      udp.close();
      tcp.close();
    },
  };
}

function query(name: string, id = 4242, type: dnsPacket.RecordType = "A"): Buffer {
  return dnsPacket.encode({
    type: "query",
    id,
    flags: dnsPacket.RECURSION_DESIRED,
    questions: [{ type, name }],
  });
}

const rcode = (answer: Buffer | undefined) => answer!.readUInt16BE(2) & 0xf;

describe("the sandboxes' resolver", () => {
  let upstream: Awaited<ReturnType<typeof startUpstream>>;
  const nft: string[] = [];
  const run = async (_ns: string, script: string) => {
    nft.push(script);
  };
  const slots = {
    open: new SandboxEgress(new Slot(1), "open", parseEgressRules({}), run),
    closed: new SandboxEgress(
      new Slot(2),
      "closed",
      parseEgressRules({ allowOut: ["allowed.test", "alias.test"], denyOut: ["0.0.0.0/0"] }),
      run,
    ),
    none: new SandboxEgress(new Slot(3), "none", parseEgressRules({ allowInternetAccess: false }), run),
  };
  const sandboxes = {
    forSource: (address: string) => Object.values(slots).find((s) => s.source === address),
  };
  let resolver: DnsResolver;

  before(async () => {
    upstream = await startUpstream();
    resolver = new DnsResolver({
      sandboxes,
      upstreams: [{ address: "127.0.0.1", port: upstream.port }],
      logger: createNoopLogger(),
    });
  });
  after(() => upstream.close());

  test("a source that is no sandbox gets nothing", async () => {
    assert.equal(await resolver.answer(query("allowed.test"), "10.11.200.200", "udp"), undefined);
    assert.equal(await resolver.answer(query("allowed.test"), "192.0.2.5", "udp"), undefined);
    assert.deepEqual(upstream.asked, []);
  });

  test("an open sandbox: any name is forwarded, its answer passed on with the sandbox's id; nothing opened", async () => {
    nft.length = 0;
    const answer = await resolver.answer(query("other.test", 777), slots.open.source, "udp");
    const packet = dnsPacket.decode(answer!);
    assert.equal(packet.id, 777);
    assert.deepEqual(
      packet.answers!.map((a) => a.data),
      ["203.0.113.11"],
    );
    assert.equal(rcode(await resolver.answer(query("missing.test"), slots.open.source, "udp")), 3);
    assert.deepEqual(nft, []);
  });

  test("a closed sandbox: an allowed name is answered once its addresses are open", async () => {
    nft.length = 0;
    const answer = await resolver.answer(query("allowed.test"), slots.closed.source, "udp");
    assert.equal(rcode(answer), 0);
    assert.deepEqual(nft, [
      "add element ip moat_egress resolved { 203.0.113.10 }\n" +
        "delete element ip moat_egress resolved { 203.0.113.10 }\n" +
        // TTL 5 s: held open for the lower bound, 30 s.
        "add element ip moat_egress resolved { 203.0.113.10 timeout 30s }\n",
    ]);
  });

  test("a closed sandbox: another name is REFUSED and never leaves the node", async () => {
    const before = upstream.asked.length;
    for (const name of ["other.test", "exfiltrate-a1b2c3.attacker.test", "allowed.test.evil.test"]) {
      assert.equal(rcode(await resolver.answer(query(name), slots.closed.source, "udp")), 5, name);
      assert.equal(rcode(await resolver.answer(query(name), slots.none.source, "tcp")), 5, name);
    }
    assert.equal(rcode(await resolver.answer(query("allowed.test"), slots.none.source, "udp")), 5);
    assert.deepEqual(upstream.asked.slice(before), []);
  });

  test("a CNAME chain opens the addresses of the name asked, not what else the answer holds", async () => {
    nft.length = 0;
    await resolver.answer(query("alias.test"), slots.closed.source, "tcp");
    assert.equal(nft.length, 1);
    assert.match(nft[0]!, /203\.0\.113\.20 timeout 120s/);
    assert.doesNotMatch(nft[0]!, /203\.0\.113\.99/);
    const packet = dnsPacket.decode(
      dnsPacket.encode({
        type: "response",
        id: 1,
        questions: [{ type: "A", name: "alias.test" }],
        answers: RECORDS["alias.test"],
      }),
    );
    assert.deepEqual(
      answeredAddresses(
        dnsPacket.encode({ type: "response", id: 1, answers: RECORDS["alias.test"] }),
        packet,
        "alias.test",
      ),
      { addresses: ["203.0.113.20"], ttl: 120 },
    );
  });

  test("malformed queries get FORMERR; answers and other opcodes are not served", async () => {
    const garbage = Buffer.alloc(20, 0xff);
    garbage.writeUInt16BE(9, 0);
    garbage.writeUInt16BE(0x0100, 2);
    assert.equal(rcode(await resolver.answer(garbage, slots.open.source, "udp")), 1);
    const two = dnsPacket.encode({
      type: "query",
      id: 1,
      questions: [
        { type: "A", name: "a.test" },
        { type: "A", name: "b.test" },
      ],
    });
    assert.equal(rcode(await resolver.answer(two, slots.open.source, "udp")), 1);
    const response = dnsPacket.encode({
      type: "response",
      id: 1,
      questions: [{ type: "A", name: "a.test" }],
    });
    assert.equal(await resolver.answer(response, slots.open.source, "udp"), undefined);
    const notify = query("a.test");
    notify.writeUInt16BE(notify.readUInt16BE(2) | (4 << 11), 2);
    assert.equal(rcode(await resolver.answer(notify, slots.open.source, "udp")), 4);
    assert.equal(await resolver.answer(Buffer.alloc(5), slots.open.source, "udp"), undefined);
  });

  test("no upstream answers: SERVFAIL", async () => {
    const dead = new DnsResolver({
      sandboxes,
      upstreams: [{ address: "127.0.0.1", port: 9 }],
      logger: createNoopLogger(),
      upstreamTimeoutMs: 300,
    });
    assert.equal(rcode(await dead.answer(query("other.test"), slots.open.source, "udp")), 2);
  });

  test("each sandbox is held to its query rate", async () => {
    const limited = new DnsResolver({
      sandboxes,
      upstreams: [{ address: "127.0.0.1", port: upstream.port }],
      logger: createNoopLogger(),
      queriesPerSecond: 2,
    });
    const answers = await Promise.all(
      Array.from({ length: 8 }, () => limited.answer(query("other.test"), slots.open.source, "udp")),
    );
    assert.equal(answers.filter(Boolean).length, 4, "a burst of twice the rate, then nothing");
    // Another sandbox has its own.
    assert.ok(await limited.answer(query("other.test"), slots.none.source, "udp"));
  });

  test("upstreams: MOAT_DNS_UPSTREAM and resolv.conf", async () => {
    assert.deepEqual(parseUpstreams("10.0.0.2, 10.0.0.3:5353,[fd00::53]:53 ::1"), [
      { address: "10.0.0.2", port: 53 },
      { address: "10.0.0.3", port: 5353 },
      { address: "fd00::53", port: 53 },
      { address: "::1", port: 53 },
    ]);
    for (const bad of ["resolver.example", "10.0.0.2:0", "10.0.0.256", "10.0.0.2:99999"]) {
      assert.throws(() => parseUpstreams(bad), /MOAT_DNS_UPSTREAM: '.*' is not a resolver address/);
    }
    assert.deepEqual(await hostUpstreams("/nonexistent"), []);
  });
});
