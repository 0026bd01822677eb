/**
 * Destinations for sandboxes' own egress rules, all on this machine:
 * - HTTP-like targets at public-looking addresses (TEST-NET-3, 203.0.113.0/24), on the loopback of
 *   a network namespace the test makes (`moattest-…`). Only traffic from sandbox host addresses is
 *   routed there (a policy rule with its own table, which also holds an unreachable route, so that
 *   nothing ever falls through to the default route); `assertRoutedHere` checks that route for a
 *   sandbox before anything is sent. Every target answers TCP on TARGET_PORT with a line naming it.
 * - the same targets echo whatever they are sent on ECHO_PORT;
 * - a rogue resolver in that namespace (ROGUE_RESOLVER, UDP and TCP 53, and UDP 5353) that answers
 *   every name with TARGETS.b: what a sandbox that brings its own resolver would ask;
 * - the resolver moat forwards to (MOAT_DNS_UPSTREAM), on 127.0.0.1 in this process, answering
 *   NAMES and noting every name it is asked (the proof that a refused name never left moat).
 * What the targets and the rogue resolver see is kept in `events`.
 */
import { type ChildProcess, spawn } from "node:child_process";
import dgram from "node:dgram";
import { runCommand } from "@moat/shared";
import dnsPacket from "dns-packet";
import { addTargetNamespace, removeTargetNamespace } from "./net-targets.js";

export const TARGETS = { a: "203.0.113.10", b: "203.0.113.11", c: "203.0.113.12" } as const;
export const ROGUE_RESOLVER = "203.0.113.53";
export const TARGET_PORT = 8080;
/** Every target echoes back whatever it is sent on this port (bulk transfers). */
export const ECHO_PORT = 8081;

/** What moat's upstream answers (A records, 60 s); anything else is NXDOMAIN. */
export const NAMES: Record<string, string> = {
  "allowed.moattest.test": TARGETS.a,
  "other.moattest.test": TARGETS.b,
  "wild.moattest.test": TARGETS.b,
  "a.wild.moattest.test": TARGETS.c,
  "deep.x.wild.moattest.test": TARGETS.c,
  "later.moattest.test": TARGETS.b,
  // A name whose address is in a range the node denies, whatever a sandbox allows (net-targets.ts).
  "private.moattest.test": "10.203.0.1",
};

const RANGE = "203.0.113.0/24";
const HOST_SIDE = "10.204.255.1";
const NS_SIDE = "10.204.255.2";
const RULE_TABLE = "28204";
const RULE_PRIORITY = "28204";

export type EgressEvent =
  | { kind: "tcp"; local: string }
  | { kind: "dns"; transport: "udp" | "tcp"; port: number; name: string };

export interface EgressTargets {
  readonly namespace: string;
  readonly events: EgressEvent[];
  /** host:port of the upstream resolver, for MOAT_DNS_UPSTREAM. */
  readonly upstream: string;
  /** Every name the upstream was asked, in order. */
  readonly asked: string[];
  /** Throws unless a sandbox's traffic to every target is routed into the test's namespace. */
  assertRoutedHere(hostAddress: string): Promise<void>;
  remove(): Promise<void>;
}

const SERVER = `
const net = require("node:net");
const dgram = require("node:dgram");
const report = (e) => process.stdout.write(JSON.stringify(e) + "\\n");
const nameOf = (q) => {
  const labels = [];
  for (let i = 12; q[i]; i += q[i] + 1) labels.push(q.subarray(i + 1, i + 1 + q[i]).toString());
  return labels.join(".");
};
// Every A question gets one answer: ${TARGETS.b}.
const answer = (q) => {
  const end = q.indexOf(0, 12) + 5;
  const header = Buffer.from([q[0], q[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
  const record = Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ${TARGETS.b.replaceAll(".", ", ")}]);
  return Buffer.concat([header, q.subarray(12, end), record]);
};
net.createServer((s) => {
  s.on("error", () => {});
  report({ kind: "tcp", local: s.localAddress });
  s.end("moattest " + s.localAddress + "\\n");
}).listen(${TARGET_PORT}, "0.0.0.0");
net.createServer((s) => {
  s.on("error", () => {});
  s.pipe(s);
}).listen(${ECHO_PORT}, "0.0.0.0");
for (const port of [53, 5353]) {
  const udp = dgram.createSocket("udp4");
  udp.on("message", (q, from) => {
    report({ kind: "dns", transport: "udp", port, name: nameOf(q) });
    udp.send(answer(q), from.port, from.address);
  });
  udp.bind(port, "${ROGUE_RESOLVER}");
}
net.createServer((s) => {
  s.on("error", () => {});
  s.once("data", (d) => {
    const q = d.subarray(2);
    report({ kind: "dns", transport: "tcp", port: 53, name: nameOf(q) });
    const a = answer(q);
    s.end(Buffer.concat([Buffer.from([a.length >> 8, a.length & 255]), a]));
  });
}).listen(53, "${ROGUE_RESOLVER}", () => setTimeout(() => report({ kind: "ready" }), 100));
`;

async function startUpstream(asked: string[]): Promise<{ socket: dgram.Socket; address: string }> {
  const socket = dgram.createSocket("udp4");
  socket.on("message", (msg, from) => {
    let q: dnsPacket.DecodedPacket;
    try {
      q = dnsPacket.decode(msg);
    } catch {
      return;
    }
    const question = q.questions?.[0];
    if (!question) return;
    const name = question.name.toLowerCase();
    asked.push(name);
    const address = NAMES[name];
    const answers: dnsPacket.Answer[] =
      address && question.type === "A" ? [{ type: "A", name: question.name, ttl: 60, data: address }] : [];
    socket.send(
      dnsPacket.encode({
        type: "response",
        id: q.id,
        flags: dnsPacket.RECURSION_DESIRED | dnsPacket.RECURSION_AVAILABLE | (address ? 0 : 3),
        questions: q.questions,
        answers,
      }),
      from.port,
      from.address,
    );
  });
  await new Promise<void>((resolve) => socket.bind(0, "127.0.0.1", resolve));
  return { socket, address: `127.0.0.1:${socket.address().port}` };
}

export async function startEgressTargets(): Promise<EgressTargets> {
  const namespace = `moattest-egrules-${process.pid}`;
  const hostVeth = `moattest-r${process.pid % 100_000}`;
  const events: EgressEvent[] = [];
  const asked: string[] = [];
  let server: ChildProcess | undefined;
  let upstream: dgram.Socket | undefined;
  const remove = async () => {
    server?.kill("SIGKILL");
    upstream?.close();
    await removeTargetNamespace({ namespace, hostVeth, rulePriority: RULE_PRIORITY, ruleTable: RULE_TABLE });
  };
  try {
    const inNs = await addTargetNamespace({ namespace, hostVeth, hostSide: HOST_SIDE, nsSide: NS_SIDE });
    for (const address of [...Object.values(TARGETS), ROGUE_RESOLVER]) {
      await inNs(["addr", "add", `${address}/32`, "dev", "lo"]);
    }
    // Sandbox sources only, in a table that ends in "unreachable": never the default route.
    await runCommand(["ip", "route", "add", "unreachable", RANGE, "table", RULE_TABLE, "metric", "4000"]);
    await runCommand(["ip", "route", "add", RANGE, "via", NS_SIDE, "dev", hostVeth, "table", RULE_TABLE]);
    await runCommand([
      "ip",
      "rule",
      "add",
      "priority",
      RULE_PRIORITY,
      "from",
      "10.11.0.0/16",
      "to",
      RANGE,
      "lookup",
      RULE_TABLE,
    ]);
    server = spawn("ip", ["netns", "exec", namespace, process.execPath, "-e", SERVER], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let buffered = "";
    let ready!: () => void;
    const listening = new Promise<void>((resolve) => {
      ready = resolve;
    });
    server.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      for (let nl = buffered.indexOf("\n"); nl !== -1; nl = buffered.indexOf("\n")) {
        const event = JSON.parse(buffered.slice(0, nl)) as EgressEvent | { kind: "ready" };
        buffered = buffered.slice(nl + 1);
        if (event.kind === "ready") ready();
        else events.push(event);
      }
    });
    await Promise.race([
      listening,
      new Promise((_, reject) => setTimeout(() => reject(new Error("the targets did not start")), 10_000)),
    ]);
    const up = await startUpstream(asked);
    upstream = up.socket;
    return {
      namespace,
      events,
      upstream: up.address,
      asked,
      async assertRoutedHere(hostAddress) {
        const [a, b] = hostAddress.split(".").slice(2).map(Number) as [number, number];
        const veth = `moat-v${a * 256 + b}`;
        for (const target of [...Object.values(TARGETS), ROGUE_RESOLVER]) {
          const { stdout } = await runCommand([
            "ip",
            "-j",
            "route",
            "get",
            target,
            "from",
            hostAddress,
            "iif",
            veth,
          ]);
          const [route] = JSON.parse(stdout) as Array<{ dev?: string; gateway?: string }>;
          if (route?.dev !== hostVeth || route.gateway !== NS_SIDE) {
            throw new Error(
              `${target} from ${hostAddress} is routed ${stdout}, not into ${namespace}: not sending`,
            );
          }
        }
      },
      remove,
    };
  } catch (err) {
    await remove();
    throw err;
  }
}
