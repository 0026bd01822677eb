/**
 * Hostile tenants and hostile host users against moat's network boundaries, through `moat up` and
 * the unmodified e2b SDK:
 * - a sandbox reaches no private, carrier-NAT or link-local (cloud metadata) address, except what
 *   the operator's allow list names (a private resolver only on port 53);
 * - sandbox root cannot add addresses, and packets with another source never leave its
 *   namespaces (each of the two filters alone stops them);
 * - a non-root host process cannot connect to a sandbox's host address, root can;
 * - the orchestrator RPC refuses calls without its node token;
 * - names resolve through the node's resolver whatever resolver a sandbox names (its upstream is
 *   the test's resolver here).
 * The targets live in a namespace the test makes (helpers/net-targets.ts): nothing leaves the host.
 */
import assert from "node:assert/strict";
import { spawn } from "node:child_process";
import { stat } from "node:fs/promises";
import { after, before, describe, test } from "node:test";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { nodeTokenPath } from "@moat/orchestrator";
import { runCommand } from "@moat/shared";
import { SandboxService } from "@moat/shared/gen/orchestrator";
import { CommandExitError, Sandbox } from "e2b";
import { type RunningMoat, startMoat, useMoat } from "../helpers/moat-up.js";
import {
  CATCH_PORT,
  LAN_TARGET,
  type NetTargets,
  RESOLVED_ADDRESS,
  RESOLVER,
  startNetTargets,
  TARGET_PORT,
  TARGETS,
} from "../helpers/net-targets.js";
import { nodeTransport } from "../helpers/orchestrator.js";

const ALL_TARGETS = [...Object.values(TARGETS), RESOLVER, LAN_TARGET];

/** Runs a command as root in the sandbox; a non-zero exit is an answer, not an error. */
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

/** Connects from inside the sandbox to each address's TARGET_PORT at once: "ok <banner>" or "error <reason>". */
async function probe(sbx: Sandbox, addresses: string[], port = TARGET_PORT): Promise<Record<string, string>> {
  const script = `
import json, socket, sys, threading
out = {}
def go(a):
    try:
        s = socket.create_connection((a, ${port}), timeout=3)
        out[a] = "ok " + s.recv(100).decode().strip()
    except Exception as e:
        out[a] = "error " + type(e).__name__
ts = [threading.Thread(target=go, args=(a,)) for a in sys.argv[1:]]
[t.start() for t in ts]
[t.join() for t in ts]
print(json.dumps(out))
`;
  await sbx.files.write("/tmp/probe.py", script);
  const r = await asRoot(sbx, `python3 /tmp/probe.py ${addresses.join(" ")}`);
  assert.equal(r.exitCode, 0, r.stderr);
  return JSON.parse(r.stdout) as Record<string, string>;
}

/**
 * Resolves a name with the sandbox's resolv.conf, or with `nameserver` alone in it (rewritten as
 * root, one quick try): "" when nothing answers.
 */
async function resolveName(sbx: Sandbox, nameserver?: string): Promise<string> {
  const r = await asRoot(
    sbx,
    nameserver
      ? `cp /etc/resolv.conf /tmp/resolv.conf.orig
printf 'nameserver ${nameserver}\\noptions timeout:2 attempts:1\\n' > /etc/resolv.conf
getent ahostsv4 probe.moattest.invalid | awk 'NR == 1 { print $1 }'
cp /tmp/resolv.conf.orig /etc/resolv.conf`
      : "getent ahostsv4 probe.moattest.invalid | awk 'NR == 1 { print $1 }'",
  );
  return r.stdout.trim();
}

/** The node's view of a sandbox (its host address), through the authenticated RPC. */
async function hostAddressOf(moat: RunningMoat, sandboxId: string): Promise<string> {
  const node = createClient(SandboxService, nodeTransport(moat.orchestratorPort, moat.nodeToken));
  return (await node.get({ sandboxId })).sandbox!.hostAddress;
}

/** Tries a TCP connection from a host process running as `uid`: "connected" or the error code. */
async function connectAs(uid: number, host: string, port: number): Promise<string> {
  const child = spawn(
    process.execPath,
    [
      "-e",
      `const s = require("node:net").connect(${port}, "${host}");
s.setTimeout(5000, () => { console.log("ETIMEDOUT"); process.exit(); });
s.on("connect", () => { console.log("connected"); process.exit(); });
s.on("error", (e) => { console.log(e.code); process.exit(); });`,
    ],
    { uid, gid: uid, cwd: "/", env: { PATH: process.env.PATH }, stdio: ["ignore", "pipe", "inherit"] },
  );
  let out = "";
  child.stdout!.on("data", (c: Buffer) => {
    out += c.toString();
  });
  await new Promise((resolve) => child.once("exit", resolve));
  return out.trim();
}

/**
 * Sends UDP datagrams with chosen source addresses out of an interface, as raw Ethernet frames
 * (python3 on the host, inside the namespace): what a sandbox root able to forge packets would emit.
 */
async function injectUDP(
  namespace: string,
  iface: string,
  macs: { src: string; dst: string },
  datagrams: Array<{ src: string; payload: string }>,
  dst: string,
): Promise<void> {
  const script = `
import json, socket, struct, sys
iface, src_mac, dst_mac, dst, port, datagrams = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), json.loads(sys.argv[6])
def checksum(b):
    s = sum(struct.unpack("!%dH" % (len(b) // 2), b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
sock.bind((iface, 0))
for d in datagrams:
    payload = d["payload"].encode()
    udp = struct.pack("!HHHH", 40000, port, 8 + len(payload), 0) + payload
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0x4000, 64, 17, 0, socket.inet_aton(d["src"]), socket.inet_aton(dst))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    mac = lambda m: bytes.fromhex(m.replace(":", ""))
    sock.send(mac(dst_mac) + mac(src_mac) + b"\\x08\\x00" + ip + udp)
`;
  await runCommand([
    "nsenter",
    `--net=/var/run/netns/${namespace}`,
    "python3",
    "-c",
    script,
    iface,
    macs.src,
    macs.dst,
    dst,
    String(CATCH_PORT),
    JSON.stringify(datagrams),
  ]);
}

async function macOf(namespace: string | undefined, iface: string): Promise<string> {
  const argv = namespace
    ? ["ip", "-n", namespace, "-j", "link", "show", iface]
    : ["ip", "-j", "link", "show", iface];
  const [link] = JSON.parse((await runCommand(argv)).stdout) as Array<{ address: string }>;
  return link!.address;
}

const settle = () => new Promise((r) => setTimeout(r, 500));

describe("hostile network: egress, spoofing, host users, node RPC", { timeout: 900_000 }, () => {
  let targets: NetTargets;

  before(async () => {
    targets = await startNetTargets();
  });

  after(async () => {
    await targets?.remove();
    const left = (await runCommand(["ip", "netns", "list"])).stdout;
    assert.doesNotMatch(left, /moattest-egress/, "the test's namespace is gone");
  });

  test("the targets answer the host: a refused probe is the sandbox's boundary, not a broken test network", async () => {
    for (const address of ALL_TARGETS.filter((a) => a !== TARGETS.metadata)) {
      assert.equal(await connectAs(0, address, TARGET_PORT), "connected", address);
    }
  });

  describe("default deployment (no allow list)", () => {
    let moat: RunningMoat;
    let sbx: Sandbox;

    before(async () => {
      // Sandboxes' names resolve through moat, which asks the test's resolver: nothing leaves the host.
      moat = await startMoat({ env: { MOAT_DNS_UPSTREAM: RESOLVER } });
      useMoat(moat);
      sbx = await Sandbox.create("base", { timeoutMs: 300_000 });
    });

    after(async () => {
      await sbx?.kill().catch(() => undefined);
      await moat?.cleanup();
    });

    test("a sandbox reaches none of the private, carrier-NAT and metadata targets, nor the host's own network", async () => {
      const from = targets.events.length;
      const started = Date.now();
      const results = await probe(sbx, ALL_TARGETS);
      for (const address of ALL_TARGETS)
        assert.match(results[address]!, /^error /, `${address}: ${results[address]}`);
      assert.deepEqual(targets.events.slice(from), [], "no probe reached a target");
      // Refused at once (ICMP admin-prohibited), not left to time out.
      assert.ok(Date.now() - started < 10_000, `took ${Date.now() - started} ms`);
    });

    test("name resolution goes through moat, whatever resolver the sandbox names", async () => {
      // The template's resolvers, and the test's own resolver named directly (a private address
      // the sandbox cannot reach): port 53 goes to the node's resolver either way, which forwards
      // to its upstream (here the test's resolver).
      assert.equal(await resolveName(sbx), RESOLVED_ADDRESS);
      assert.equal(await resolveName(sbx, RESOLVER), RESOLVED_ADDRESS);
      assert.equal(await resolveName(sbx, "169.254.0.22"), RESOLVED_ADDRESS, "the sandbox's gateway");
      const results = await probe(sbx, [RESOLVER]);
      assert.match(results[RESOLVER]!, /^error /, "the resolver's address itself stays denied");
    });

    test("sandbox root cannot add an address or change a link", async () => {
      const add = await asRoot(sbx, "ip addr add 10.11.0.250/32 dev eth0");
      assert.notEqual(add.exitCode, 0);
      assert.match(add.stderr, /Permission denied|Operation not permitted/);
      const link = await asRoot(sbx, "ip link set eth0 mtu 1400");
      assert.notEqual(link.exitCode, 0);
      const eff = (await asRoot(sbx, "grep CapEff /proc/self/status")).stdout;
      assert.equal((BigInt(`0x${eff.split(":")[1]!.trim()}`) >> 12n) & 1n, 0n, `CAP_NET_ADMIN in ${eff}`);
      // What does not need the capability keeps working: sudo (through envd), ICMP (ping) sockets.
      assert.equal((await sbx.commands.run("sudo whoami")).stdout, "root\n");
      const icmp = await asRoot(
        sbx,
        "python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); print(\"ok\")'",
      );
      assert.equal(icmp.stdout, "ok\n", icmp.stderr);
    });

    test("a non-root host process cannot connect to a sandbox's host address; root can", async () => {
      await sbx.commands.run("python3 -m http.server 8000 >/dev/null 2>&1", { background: true });
      const address = await hostAddressOf(moat, sbx.sandboxId);
      await sbx.commands.run(
        "for i in $(seq 50); do curl -s -o /dev/null localhost:8000 && exit 0; sleep 0.1; done; exit 1",
      );
      for (const port of [49983, 8000]) {
        assert.equal(await connectAs(65534, address, port), "EHOSTUNREACH", `uid 65534 → ${address}:${port}`);
        assert.equal(await connectAs(0, address, port), "connected", `root → ${address}:${port}`);
      }
    });

    test("the orchestrator RPC refuses calls without the node token, or with another", async () => {
      assert.equal((await stat(nodeTokenPath(moat.dataDir))).mode & 0o777, 0o600);
      const url = `http://127.0.0.1:${moat.orchestratorPort}`;
      const bare = createClient(SandboxService, createGrpcTransport({ baseUrl: url }));
      const wrong = createClient(SandboxService, nodeTransport(moat.orchestratorPort, "x".repeat(64)));
      for (const [client, word] of [
        [bare, "missing"],
        [wrong, "wrong"],
      ] as const) {
        for (const call of [
          () => client.list({}),
          () => client.delete({ sandboxId: sbx.sandboxId }),
          async () => {
            for await (const _ of client.watchEvents({}, { signal: AbortSignal.timeout(5000) })) break;
          },
        ]) {
          await assert.rejects(call(), (err: unknown) => {
            assert.ok(err instanceof ConnectError);
            assert.equal(err.code, Code.Unauthenticated);
            assert.match(err.rawMessage, new RegExp(`^${word} node token`));
            return true;
          });
        }
      }
      assert.equal(await sbx.isRunning(), true, "the refused Delete did nothing");
      const good = createClient(SandboxService, nodeTransport(moat.orchestratorPort, moat.nodeToken));
      assert.ok((await good.list({})).sandboxes.some((s) => s.config!.sandboxId === sbx.sandboxId));
    });
  });

  describe("with an allow list naming one target and a resolver's port 53", () => {
    let moat: RunningMoat;
    let sbx: Sandbox;

    before(async () => {
      moat = await startMoat({
        env: { MOAT_EGRESS_ALLOW: `${TARGETS.private10}, ${RESOLVER}:53`, MOAT_DNS_UPSTREAM: RESOLVER },
      });
      useMoat(moat);
      sbx = await Sandbox.create("base", { timeoutMs: 300_000 });
    });

    after(async () => {
      await sbx?.kill().catch(() => undefined);
      await moat?.cleanup();
    });

    test("the allowed target answers; the others, and the resolver's other ports, do not", async () => {
      const from = targets.events.length;
      const results = await probe(sbx, ALL_TARGETS);
      assert.equal(results[TARGETS.private10], `ok moattest ${TARGETS.private10}`);
      for (const address of ALL_TARGETS.filter((a) => a !== TARGETS.private10)) {
        assert.match(results[address]!, /^error /, `${address}: ${results[address]}`);
      }
      assert.deepEqual(
        targets.events.slice(from).filter((e) => e.kind === "tcp"),
        [{ kind: "tcp", local: TARGETS.private10 }],
      );
    });

    test("name resolution through a private resolver: moat's upstream", async () => {
      assert.equal(await resolveName(sbx), RESOLVED_ADDRESS);
    });

    test("forged source addresses never leave: each filter alone drops them", async () => {
      const address = await hostAddressOf(moat, sbx.sandboxId);
      const [a, b] = address.split(".").slice(2).map(Number) as [number, number];
      const slot = a * 256 + b;
      const otherSandbox = `10.11.${a}.${b === 250 ? 251 : 250}`;
      const nonce = Date.now().toString(36);
      const payloads = (events: typeof targets.events) =>
        events.flatMap((e) => (e.kind === "udp" && e.payload.endsWith(nonce) ? [e.payload] : []));

      // Out of the sandbox's NIC (what gVisor's netstack sends), into the outer namespace.
      const from = targets.events.length;
      await injectUDP(
        `moat-g${slot}`,
        "eth0",
        { src: "02:00:a9:fe:00:15", dst: "02:00:a9:fe:00:16" },
        [
          { src: "169.254.0.21", payload: `inner-${nonce}` },
          { src: otherSandbox, payload: `other-sandbox-${nonce}` },
          { src: "10.203.255.77", payload: `elsewhere-${nonce}` },
        ],
        TARGETS.private10,
      );
      // Out of the outer namespace (a sandbox that got past the first filter), into the root one.
      await injectUDP(
        `moat-n${slot}`,
        "vpeer",
        { src: await macOf(`moat-n${slot}`, "vpeer"), dst: await macOf(undefined, `moat-v${slot}`) },
        [
          { src: address, payload: `host-address-${nonce}` },
          { src: "10.203.255.77", payload: `outer-elsewhere-${nonce}` },
        ],
        TARGETS.private10,
      );
      await settle();
      assert.deepEqual(payloads(targets.events.slice(from)).sort(), [
        `host-address-${nonce}`,
        `inner-${nonce}`,
      ]);
    });
  });
});
