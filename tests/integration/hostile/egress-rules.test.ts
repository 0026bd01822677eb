/**
 * A sandbox's own egress rules (E2B's network.allowOut/denyOut, allowInternetAccess,
 * updateNetwork) through `moat up` and the unmodified e2b SDK, against targets this test runs in a
 * namespace of its own (helpers/egress-targets.ts, helpers/net-targets.ts) and a resolver on
 * 127.0.0.1 that moat forwards to: nothing leaves the machine.
 * - allows and denies by address, allows winning;
 * - domain allows open only what resolving an allowed name through moat answered: not another
 *   name, not an address dialled directly, not an answer from the sandbox's own resolver, and a
 *   refused name never leaves moat;
 * - updates apply at once, and rules outlive pause and resume;
 * - the node's own denies (private ranges, metadata) stay whatever a sandbox allows;
 * - bad rules are a 400 naming the entry.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { createClient } from "@connectrpc/connect";
import { SANDBOX_MTU } from "@moat/orchestrator";
import { SandboxService } from "@moat/shared/gen/orchestrator";
import { CommandExitError, Sandbox, SandboxError, SandboxNotFoundError } from "e2b";
import {
  ECHO_PORT,
  type EgressTargets,
  ROGUE_RESOLVER,
  startEgressTargets,
  TARGET_PORT,
  TARGETS,
} from "../helpers/egress-targets.js";
import { assertNoSandboxOutlives, type ForeignResources, foreignResources } from "../helpers/host-state.js";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";
import { type NetTargets, TARGETS as PRIVATE, startNetTargets } from "../helpers/net-targets.js";
import { nodeTransport } from "../helpers/orchestrator.js";

const ALL = Object.values(TARGETS);

async function asRoot(
  sbx: Sandbox,
  cmd: string,
): Promise<{ stdout: string; stderr: string; exitCode: number }> {
  try {
    const r = await sbx.commands.run(cmd, { user: "root", timeoutMs: 60_000 });
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode };
  } catch (err) {
    if (err instanceof CommandExitError)
      return { stdout: err.stdout, stderr: err.stderr, exitCode: err.exitCode };
    throw err;
  }
}

const PROBE = `
import json, socket, sys, threading
out = {}
def go(a):
    try:
        s = socket.create_connection((a, ${TARGET_PORT}), timeout=3)
        out[a] = "ok " + s.recv(100).decode().strip()
    except Exception as e:
        out[a] = "error " + type(e).__name__
ts = [threading.Thread(target=go, args=(a,)) for a in sys.argv[1:]]
[t.start() for t in ts]
[t.join() for t in ts]
print(json.dumps(out))
`;

/** A DNS query for an A record sent by hand: to any server and port, over UDP or TCP. */
const DIG = `
import json, socket, struct, sys
mode, server, port, name = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
q = struct.pack("!HHHHHH", 0x1234, 0x0100, 1, 0, 0, 0)
q += b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\\0" + struct.pack("!HH", 1, 1)
try:
    if mode == "udp":
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(q, (server, port))
        data = s.recv(4096)
    else:
        s = socket.create_connection((server, port), timeout=3)
        s.sendall(struct.pack("!H", len(q)) + q)
        data = s.recv(4096)[2:]
    answers = struct.unpack("!H", data[6:8])[0]
    print(json.dumps({"rcode": data[3] & 15, "answers": answers, "address": ".".join(map(str, data[-4:])) if answers else ""}))
except Exception as e:
    print(json.dumps({"error": type(e).__name__}))
`;

describe("sandbox egress rules: allowOut/denyOut, domains, updateNetwork", { timeout: 600_000 }, () => {
  let targets: EgressTargets;
  let privateTargets: NetTargets;
  let moat: RunningMoat;
  let foreign: ForeignResources;
  const sandboxes: Sandbox[] = [];

  before(async () => {
    foreign = await foreignResources();
    targets = await startEgressTargets();
    privateTargets = await startNetTargets();
    moat = await startMoat({ env: { MOAT_DNS_UPSTREAM: targets.upstream } });
    useMoat(moat);
  });

  after(async () => {
    await Promise.allSettled(sandboxes.map((s) => s.kill()));
    if (moat) {
      await moat.stop();
      await assertNoSandboxOutlives(moat.dataDir, foreign);
      await moat.cleanup();
    }
    await privateTargets?.remove();
    await targets?.remove();
  });

  async function create(opts: Parameters<typeof Sandbox.create>[1] = {}): Promise<Sandbox> {
    const sbx = await Sandbox.create("base", { timeoutMs: 300_000, ...opts });
    sandboxes.push(sbx);
    await sbx.files.write("/tmp/probe.py", PROBE);
    await sbx.files.write("/tmp/dig.py", DIG);
    return sbx;
  }

  async function hostAddressOf(sandboxId: string): Promise<string> {
    const node = createClient(SandboxService, nodeTransport(moat.orchestratorPort, moat.nodeToken));
    return (await node.get({ sandboxId })).sandbox!.hostAddress;
  }

  /** Connects to each address at once; checks first that they are routed into the test's namespace. */
  async function probe(sbx: Sandbox, addresses: readonly string[]): Promise<Record<string, string>> {
    await targets.assertRoutedHere(await hostAddressOf(sbx.sandboxId));
    const r = await asRoot(sbx, `python3 /tmp/probe.py ${addresses.join(" ")}`);
    assert.equal(r.exitCode, 0, r.stderr);
    return JSON.parse(r.stdout) as Record<string, string>;
  }

  /** Which of `addresses` the sandbox reaches (and the targets saw exactly those). */
  async function reachable(sbx: Sandbox, addresses: readonly string[] = ALL): Promise<string[]> {
    const from = targets.events.length;
    const results = await probe(sbx, addresses);
    const ok = addresses.filter((a) => results[a] === `ok moattest ${a}`);
    for (const a of addresses)
      if (!ok.includes(a)) assert.match(results[a]!, /^error /, `${a}: ${results[a]}`);
    const seen = targets.events.slice(from).flatMap((e) => (e.kind === "tcp" ? [e.local] : []));
    assert.deepEqual(seen.sort(), [...ok].sort(), "the targets saw exactly the connections that succeeded");
    return ok;
  }

  /** The address the sandbox's resolver gives for `name` ("" when it gives none). */
  async function resolve(sbx: Sandbox, name: string): Promise<string> {
    const r = await asRoot(sbx, `getent ahostsv4 ${name} | awk 'NR == 1 { print $1 }'`);
    return r.stdout.trim();
  }

  async function dig(sbx: Sandbox, mode: "udp" | "tcp", server: string, port: number, name: string) {
    await targets.assertRoutedHere(await hostAddressOf(sbx.sandboxId));
    const r = await asRoot(sbx, `python3 /tmp/dig.py ${mode} ${server} ${port} ${name}`);
    return JSON.parse(r.stdout) as { rcode?: number; answers?: number; address?: string; error?: string };
  }

  test("deny all but an allowed address; refused at once", async () => {
    const sbx = await create({ network: { allowOut: [TARGETS.a], denyOut: ["0.0.0.0/0"] } });
    const started = Date.now();
    assert.deepEqual(await reachable(sbx), [TARGETS.a]);
    assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
    const info = await sbx.getInfo();
    assert.deepEqual(info.network?.allowOut, [TARGETS.a]);
    assert.deepEqual(info.network?.denyOut, ["0.0.0.0/0"]);
  });

  test("deny an address; allows win over denies", async () => {
    const deny = await create({ network: { denyOut: [`${TARGETS.b}/32`] } });
    assert.deepEqual(await reachable(deny), [TARGETS.a, TARGETS.c]);
    const both = await create({ network: { allowOut: [TARGETS.b], denyOut: ["203.0.113.0/24"] } });
    assert.deepEqual(await reachable(both), [TARGETS.b]);
    const off = await create({ allowInternetAccess: false, network: { allowOut: [TARGETS.c] } });
    assert.deepEqual(await reachable(off), [TARGETS.c]);
  });

  test("domains: an allowed name (exact or under a wildcard) opens its answer; nothing else opens", async () => {
    const sbx = await create({
      network: { allowOut: ["allowed.moattest.test", "*.wild.moattest.test"], denyOut: ["0.0.0.0/0"] },
    });
    // Nothing is open before a name is resolved, not even the allowed name's address.
    assert.deepEqual(await reachable(sbx), []);
    const asked = targets.asked.length;
    // The template's resolv.conf names other resolvers: moat answers all the same.
    assert.equal(await resolve(sbx, "allowed.moattest.test"), TARGETS.a);
    assert.equal(await resolve(sbx, "deep.x.wild.moattest.test"), TARGETS.c);
    assert.deepEqual(await reachable(sbx), [TARGETS.a, TARGETS.c]);
    // Another name, and the wildcard's own apex, are refused, and never leave moat.
    assert.equal(await resolve(sbx, "other.moattest.test"), "");
    assert.equal(await resolve(sbx, "wild.moattest.test"), "");
    const forwarded = targets.asked.slice(asked);
    assert.ok(forwarded.includes("allowed.moattest.test"), forwarded.join());
    assert.ok(
      !forwarded.some((n) => n === "other.moattest.test" || n === "wild.moattest.test"),
      forwarded.join(),
    );
    assert.deepEqual(await reachable(sbx, [TARGETS.b]), [], "the other name's address stays shut");
  });

  test("domains: a sandbox's own resolver is never reached on port 53; its answers open nothing", async () => {
    // Even with the rogue resolver's address allowed: all its ports but DNS's are open to the sandbox.
    const sbx = await create({
      network: { allowOut: ["allowed.moattest.test", ROGUE_RESOLVER], denyOut: ["0.0.0.0/0"] },
    });
    const from = targets.events.length;
    // Port 53 to any address goes to moat: a denied name is REFUSED, whatever the server named.
    for (const mode of ["udp", "tcp"] as const) {
      const answer = await dig(sbx, mode, ROGUE_RESOLVER, 53, "other.moattest.test");
      assert.deepEqual(answer, { rcode: 5, answers: 0, address: "" }, `${mode}: ${JSON.stringify(answer)}`);
    }
    // The allowed name asked of the rogue resolver gets moat's answer, not the rogue's.
    assert.equal((await dig(sbx, "udp", ROGUE_RESOLVER, 53, "allowed.moattest.test")).address, TARGETS.a);
    assert.deepEqual(
      targets.events.slice(from).filter((e) => e.kind === "dns"),
      [],
      "the rogue resolver was never asked on port 53",
    );
    // On another port the rogue resolver answers (its address is allowed), and that opens nothing.
    assert.equal((await dig(sbx, "udp", ROGUE_RESOLVER, 5353, "other.moattest.test")).address, TARGETS.b);
    assert.deepEqual(await reachable(sbx, [TARGETS.b]), []);
  });

  test("updateNetwork on a running sandbox applies to new connections at once", async () => {
    const sbx = await create();
    assert.deepEqual(await reachable(sbx), ALL);
    await sbx.updateNetwork({ allowOut: [TARGETS.a], denyOut: ["0.0.0.0/0"] });
    assert.deepEqual(await reachable(sbx), [TARGETS.a]);
    assert.deepEqual((await sbx.getInfo()).network?.allowOut, [TARGETS.a]);
    // A domain added later: resolvable from then on.
    assert.equal(await resolve(sbx, "later.moattest.test"), "");
    await sbx.updateNetwork({ allowOut: ["later.moattest.test"], denyOut: ["0.0.0.0/0"] });
    assert.equal(await resolve(sbx, "later.moattest.test"), TARGETS.b);
    assert.deepEqual(await reachable(sbx), [TARGETS.b]);
    await sbx.updateNetwork({ allowInternetAccess: false });
    assert.deepEqual(await reachable(sbx), []);
    assert.equal((await sbx.getInfo()).allowInternetAccess, false);
    // Everything left out: cleared, open again.
    await sbx.updateNetwork({});
    assert.deepEqual(await reachable(sbx), ALL);
  });

  test("the sandbox's link takes 64 KiB frames; bulk data still crosses a 1500-byte link on its way out, both ways", async () => {
    const sbx = await create({ network: { allowOut: [TARGETS.a], denyOut: ["0.0.0.0/0"] } });
    assert.match((await asRoot(sbx, "ip -o link show eth0")).stdout, new RegExp(` mtu ${SANDBOX_MTU} `));
    await targets.assertRoutedHere(await hostAddressOf(sbx.sandboxId));
    // The targets sit behind the test's veth at the default 1500: TCP's MSS keeps every segment
    // within it, whatever the sandbox's own link takes.
    const echo = `
import hashlib, os, socket, threading
data = os.urandom(4 << 20)
s = socket.create_connection(("${TARGETS.a}", ${ECHO_PORT}), timeout=30)
def send():
    s.sendall(data)
    s.shutdown(socket.SHUT_WR)
threading.Thread(target=send).start()
back = bytearray()
while len(back) < len(data):
    chunk = s.recv(1 << 20)
    if not chunk: break
    back += chunk
print(len(back), hashlib.sha256(back).hexdigest() == hashlib.sha256(data).hexdigest())
`;
    await sbx.files.write("/tmp/echo.py", echo);
    const r = await asRoot(sbx, "python3 /tmp/echo.py");
    assert.equal(r.stdout.trim(), `${4 << 20} True`, r.stderr);
  });

  test("rules outlive pause and resume; an update while paused holds on resume", async () => {
    const sbx = await create({ network: { allowOut: [TARGETS.a], denyOut: ["0.0.0.0/0"] } });
    await sbx.pause();
    const resumed = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
    assert.deepEqual(await reachable(resumed), [TARGETS.a]);
    await resumed.pause();
    await Sandbox.updateNetwork(sbx.sandboxId, { allowOut: [TARGETS.c], denyOut: ["0.0.0.0/0"] });
    const again = await Sandbox.connect(sbx.sandboxId, { timeoutMs: 300_000 });
    assert.deepEqual(await reachable(again), [TARGETS.c]);
  });

  test("the node's denies stay: a sandbox's allows never open private ranges or metadata", async () => {
    const privateAddresses = Object.values(PRIVATE);
    const sbx = await create({
      network: {
        allowOut: [
          "10.0.0.0/8",
          "172.16.0.0/12",
          "192.168.0.0/16",
          "100.64.0.0/10",
          "169.254.169.254",
          "0.0.0.0/0",
        ],
        denyOut: ["0.0.0.0/0"],
      },
    });
    const from = privateTargets.events.length;
    const results = await probe(sbx, privateAddresses);
    for (const a of privateAddresses) assert.match(results[a]!, /^error /, `${a}: ${results[a]}`);
    // Nor does a name that resolves into them.
    await sbx.updateNetwork({ allowOut: ["private.moattest.test"], denyOut: ["0.0.0.0/0"] });
    assert.equal(await resolve(sbx, "private.moattest.test"), PRIVATE.private10);
    const named = await probe(sbx, [PRIVATE.private10]);
    assert.match(named[PRIVATE.private10]!, /^error /);
    assert.deepEqual(privateTargets.events.slice(from), [], "no probe reached a private target");
  });

  test("bad rules are a 400 naming the entry; an unknown sandbox is not found", async () => {
    const before = (await Sandbox.list().nextItems()).length;
    for (const [network, message] of [
      [{ allowOut: ["10.0.0.0/33"] }, /400: network.allowOut: '10.0.0.0\/33' is not a valid/],
      [{ allowOut: ["example.com"] }, /400: .*denyOut must include '0.0.0.0\/0'/],
      [{ denyOut: ["*.example.com"] }, /400: network.denyOut: '\*.example.com' is a domain name/],
      [{ allowOut: ["fd00::1"] }, /400: .*IPv6/],
    ] as const) {
      await assert.rejects(Sandbox.create("base", { network }), (err: unknown) => {
        assert.ok(err instanceof SandboxError, String(err));
        assert.match(err.message, message);
        return true;
      });
    }
    assert.equal((await Sandbox.list().nextItems()).length, before, "no sandbox was made");
    const sbx = await create();
    await assert.rejects(sbx.updateNetwork({ allowOut: ["exa mple.com"], denyOut: ["0.0.0.0/0"] }), /400: /);
    await assert.rejects(Sandbox.updateNetwork("inosuchsandbox00000000", {}), SandboxNotFoundError);
    assert.deepEqual(await reachable(sbx), ALL, "a refused update changed nothing");
  });

  test("a moat that crashed: the next one adopts the sandbox with its rules and answers its names", async () => {
    const sbx = await create({ network: { allowOut: ["allowed.moattest.test"], denyOut: ["0.0.0.0/0"] } });
    await moat.restart({ signal: "SIGKILL" });
    assert.equal(await resolve(sbx, "allowed.moattest.test"), TARGETS.a);
    assert.deepEqual(await reachable(sbx), [TARGETS.a]);
    assert.equal(await resolve(sbx, "other.moattest.test"), "");
    await sbx.updateNetwork({ allowOut: [TARGETS.c], denyOut: ["0.0.0.0/0"] });
    assert.deepEqual(await reachable(sbx), [TARGETS.c]);
  });
});
