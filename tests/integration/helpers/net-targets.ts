/**
 * Targets in the address ranges sandboxes must not reach, placed by the test in a network
 * namespace of its own (`moattest-…`) and routed from the root namespace, so that probing them
 * sends nothing off the machine. Every address answers TCP on TARGET_PORT with a line naming it;
 * RESOLVER answers DNS (UDP 53, every A query → RESOLVED_ADDRESS); any address takes UDP datagrams
 * on CATCH_PORT. What the targets see is kept in `events` (the proof that a probe never arrived).
 *
 * 169.254.169.254 is routed only for traffic from sandbox host addresses (a policy rule), so the
 * host's own requests to a real metadata service keep their way.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { runCommand } from "@moat/shared";

export const TARGETS = {
  private10: "10.203.0.1",
  private172: "172.16.203.1",
  private192: "192.168.203.1",
  carrierNat: "100.64.203.1",
  metadata: "169.254.169.254",
} as const;
export const RESOLVER = "10.203.0.53";
/**
 * A neighbour on a network the host sits on (a link route in the root namespace), numbered from
 * a documentation net that the fixed deny list leaves out: denied only because it is the host's
 * own network, as a node's LAN is, whatever its numbering. It must exist before moat starts.
 */
export const LAN_TARGET = "198.51.100.10";
const LAN_HOST_SIDE = "198.51.100.9";
export const RESOLVED_ADDRESS = "10.203.7.7";
export const TARGET_PORT = 8080;
export const CATCH_PORT = 9999;

const HOST_SIDE = "10.203.255.1";
const NS_SIDE = "10.203.255.2";
const RULE_TABLE = "28203";
const RULE_PRIORITY = "28203";

export type TargetEvent = { kind: "tcp"; local: string } | { kind: "udp"; from: string; payload: string };

export interface NetTargets {
  readonly namespace: string;
  readonly events: TargetEvent[];
  remove(): Promise<void>;
}

const SERVER = `
const net = require("node:net");
const dgram = require("node:dgram");
const report = (e) => process.stdout.write(JSON.stringify(e) + "\\n");
net.createServer((s) => {
  s.on("error", () => {}); // a prober that leaves at once resets the connection
  report({ kind: "tcp", local: s.localAddress });
  s.end("moattest " + s.localAddress + "\\n");
}).listen(${TARGET_PORT}, "0.0.0.0", () => report({ kind: "ready" }));
const dns = dgram.createSocket("udp4");
dns.on("message", (q, from) => {
  // Header (id, flags: response, recursion available), the question, one A answer pointing at it.
  const end = q.indexOf(0, 12) + 5;
  const header = Buffer.from([q[0], q[1], 0x81, 0x80, 0, 1, 0, 1, 0, 0, 0, 0]);
  const answer = Buffer.from([0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, ${RESOLVED_ADDRESS.replaceAll(".", ", ")}]);
  dns.send(Buffer.concat([header, q.subarray(12, end), answer]), from.port, from.address);
});
dns.bind(53, "${RESOLVER}");
const udp = dgram.createSocket("udp4");
udp.on("message", (m, from) => report({ kind: "udp", from: from.address, payload: m.toString() }));
udp.bind(${CATCH_PORT}, "0.0.0.0");
`;

/**
 * A namespace of the test's own, joined to the root namespace by a veth pair (`hostSide` on the
 * host's end, `nsSide` on its `eth0`, a /30) and routing back through it. Answers a runner of
 * `ip -n <namespace> …`.
 */
export async function addTargetNamespace(o: {
  namespace: string;
  hostVeth: string;
  hostSide: string;
  nsSide: string;
}): Promise<(args: string[]) => Promise<unknown>> {
  await runCommand(["ip", "netns", "add", o.namespace]);
  await runCommand([
    "ip",
    "link",
    "add",
    o.hostVeth,
    "type",
    "veth",
    "peer",
    "name",
    "eth0",
    "netns",
    o.namespace,
  ]);
  await runCommand(["ip", "addr", "add", `${o.hostSide}/30`, "dev", o.hostVeth]);
  await runCommand(["ip", "link", "set", o.hostVeth, "up"]);
  const inNs = (args: string[]) => runCommand(["ip", "-n", o.namespace, ...args]);
  await inNs(["link", "set", "lo", "up"]);
  await inNs(["addr", "add", `${o.nsSide}/30`, "dev", "eth0"]);
  await inNs(["link", "set", "eth0", "up"]);
  await inNs(["route", "add", "default", "via", o.hostSide]);
  return inNs;
}

/** Removes what addTargetNamespace made and the policy rule and table that route into it. */
export async function removeTargetNamespace(o: {
  namespace: string;
  hostVeth: string;
  rulePriority: string;
  ruleTable: string;
}): Promise<void> {
  await runCommand(["ip", "rule", "del", "priority", o.rulePriority]).catch(() => undefined);
  await runCommand(["ip", "route", "flush", "table", o.ruleTable]).catch(() => undefined);
  // The veth pair (and the routes through it) goes with the namespace.
  await runCommand(["ip", "netns", "delete", o.namespace]).catch(() => undefined);
  await runCommand(["ip", "link", "delete", o.hostVeth]).catch(() => undefined);
}

export async function startNetTargets(): Promise<NetTargets> {
  const namespace = `moattest-egress-${process.pid}`;
  const hostVeth = `moattest-e${process.pid % 100_000}`;
  const addresses = [...Object.values(TARGETS), RESOLVER];
  let server: ChildProcess | undefined;
  const events: TargetEvent[] = [];
  const remove = async () => {
    server?.kill("SIGKILL");
    await removeTargetNamespace({ namespace, hostVeth, rulePriority: RULE_PRIORITY, ruleTable: RULE_TABLE });
  };
  try {
    const inNs = await addTargetNamespace({ namespace, hostVeth, hostSide: HOST_SIDE, nsSide: NS_SIDE });
    await runCommand(["ip", "addr", "add", `${LAN_HOST_SIDE}/30`, "dev", hostVeth]);
    await inNs(["addr", "add", `${LAN_TARGET}/30`, "dev", "eth0"]);
    for (const address of addresses) {
      await inNs(["addr", "add", `${address}/32`, "dev", "lo"]);
      if (address !== TARGETS.metadata) {
        await runCommand(["ip", "route", "add", `${address}/32`, "via", NS_SIDE, "dev", hostVeth]);
      }
    }
    await runCommand([
      "ip",
      "route",
      "add",
      `${TARGETS.metadata}/32`,
      "via",
      NS_SIDE,
      "dev",
      hostVeth,
      "table",
      RULE_TABLE,
    ]);
    await runCommand([
      "ip",
      "rule",
      "add",
      "priority",
      RULE_PRIORITY,
      "from",
      "10.11.0.0/16",
      "to",
      `${TARGETS.metadata}/32`,
      "lookup",
      RULE_TABLE,
    ]);
    server = spawn("ip", ["netns", "exec", namespace, process.execPath, "-e", SERVER], {
      stdio: ["ignore", "pipe", "inherit"],
    });
    let buffered = "";
    let ready: () => void;
    const listening = new Promise<void>((resolve) => {
      ready = resolve;
    });
    server.stdout!.on("data", (chunk: Buffer) => {
      buffered += chunk.toString();
      for (let nl = buffered.indexOf("\n"); nl !== -1; nl = buffered.indexOf("\n")) {
        const event = JSON.parse(buffered.slice(0, nl)) as TargetEvent | { kind: "ready" };
        buffered = buffered.slice(nl + 1);
        if (event.kind === "ready") ready!();
        else events.push(event);
      }
    });
    await Promise.race([
      listening,
      new Promise((_, reject) => setTimeout(() => reject(new Error("the targets did not start")), 10_000)),
    ]);
  } catch (err) {
    await remove();
    throw err;
  }
  return { namespace, events, remove };
}
