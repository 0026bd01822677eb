import { CommandError, parseEgressRules, runCommand } from "@moat/shared";
import { type EgressAllowEntry, egressRules } from "./egress.js";
import { egressRuleset, RESOLVER_ADDRESS, RESOLVER_PORT } from "./egress-rules.js";
import { deleteLink, deleteNamespace, inNamespace, ip } from "./netns.js";
import {
  HOST_ADDRESS_CIDR,
  INNER_ADDRESS,
  INNER_GATEWAY,
  INNER_PREFIX,
  type Slot,
  TRANSFER_CIDR,
} from "./slot.js";

/**
 * Fixed MAC addresses on both ends of the inner link: a restored sandbox keeps its NIC's address
 * and its ARP cache from the snapshot, so every slot's inner link must look the same.
 */
const INNER_MAC = "02:00:a9:fe:00:15";
const GATEWAY_MAC = "02:00:a9:fe:00:16";

export interface NetworkOptions {
  /** When false, the sandbox can answer the host but cannot open connections outward. */
  allowInternetAccess: boolean;
  /** Connections the sandbox may have open outward at once (default DEFAULT_SANDBOX_CONNECTIONS; 0: no cap). */
  maxConnections?: number;
}

/**
 * Outbound connections one sandbox may have open at once, as connection tracking counts them
 * (TCP connections, UDP and ICMP flows). Every one of them also holds an entry in the host's
 * connection table, which all sandboxes and the host share: without a cap, one sandbox spraying
 * packets at many ports fills it and the host drops everyone's new connections.
 */
export const DEFAULT_SANDBOX_CONNECTIONS = 8192;

/**
 * The MTU of both veth pairs, and so of the sandbox's eth0 (gVisor takes it from the link). Every
 * frame costs gVisor's network stack about the same whatever its size, so 64 KiB frames move bulk
 * data between the host and a sandbox (the proxy, files) in a fraction of the work of 1500-byte
 * ones: a 10 MB download straight from a sandbox took 54 ms at 1500, 32 ms at this. Traffic past
 * the host is unaffected: TCP sends no segment larger than the peer's MSS allows, and the host
 * fragments or refuses (ICMP) whatever else is too big for a link on the way, as for any router.
 */
export const SANDBOX_MTU = 65_520;

/**
 * Creates the two namespaces, two veth pairs, routes and NAT of a slot (see slot.ts). On failure it
 * removes what it made, so the caller holds either a whole network or nothing.
 */
export async function createSandboxNetwork(slot: Slot, options: NetworkOptions): Promise<void> {
  const outer = slot.outerNamespace;
  const guest = slot.guestNamespace;
  try {
    await ip(["netns", "add", outer]);
    await ip(["netns", "add", guest]);
    await ip(
      [],
      [
        `link add ${slot.hostVeth} mtu ${SANDBOX_MTU} type veth peer name vpeer mtu ${SANDBOX_MTU} netns ${outer}`,
        `addr add ${slot.transferHostIP}/30 dev ${slot.hostVeth}`,
        `link set ${slot.hostVeth} up`,
        `route add ${slot.hostAddress}/32 via ${slot.transferPeerIP} dev ${slot.hostVeth}`,
      ],
    );
    await ip(
      ["-n", outer],
      [
        "link set lo up",
        `addr add ${slot.transferPeerIP}/30 dev vpeer`,
        "link set vpeer up",
        `route add default via ${slot.transferHostIP}`,
        `link add tap0 mtu ${SANDBOX_MTU} address ${GATEWAY_MAC} type veth peer name eth0 mtu ${SANDBOX_MTU} address ${INNER_MAC} netns ${guest}`,
        `addr add ${INNER_GATEWAY}/${INNER_PREFIX} dev tap0`,
        "link set tap0 up",
      ],
    );
    await ip(
      ["-n", guest],
      [
        "link set lo up",
        `addr add ${INNER_ADDRESS}/${INNER_PREFIX} dev eth0`,
        "link set eth0 up",
        `route add default via ${INNER_GATEWAY}`,
      ],
    );
    await inNamespace(outer, ["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
    // The sandbox's own egress rules start as internet access alone says; the factory applies
    // its whole rules before the sandbox runs (network/egress-rules.ts).
    await inNamespace(
      outer,
      ["nft", "-f", "-"],
      outerRuleset(slot) +
        connectionLimitRuleset(options.maxConnections) +
        egressRuleset(parseEgressRules({ allowInternetAccess: options.allowInternetAccess })),
    );
  } catch (err) {
    await destroySandboxNetwork(slot).catch(() => undefined);
    throw err;
  }
}

/** Removes everything createSandboxNetwork made; what is already gone is skipped. */
export async function destroySandboxNetwork(slot: Slot): Promise<void> {
  // Deleting the outer namespace destroys both veth pairs and with them the host route.
  await deleteNamespace(slot.outerNamespace);
  await deleteNamespace(slot.guestNamespace);
  await deleteLink(slot.hostVeth);
}

/**
 * NAT between the slot's host address and the inner address, and the anti-spoofing filter:
 * whatever the sandbox's root does to its netstack (addresses, raw packets), only IPv4 from the
 * inner address (and ARP) gets past tap0. The egress policy is a table of its own
 * (egress-rules.ts). Exported for the unit tests.
 */
export function outerRuleset(slot: Slot): string {
  return `table netdev moat_guard {
  chain ingress {
    type filter hook ingress device "tap0" priority -500; policy drop;
    meta protocol arp accept
    meta protocol ip ip saddr ${INNER_ADDRESS} accept
  }
}
table ip moat {
  chain prerouting {
    type nat hook prerouting priority dstnat;
    ip daddr ${slot.hostAddress} dnat to ${INNER_ADDRESS}
  }
  chain postrouting {
    type nat hook postrouting priority srcnat;
    oifname "vpeer" ip saddr ${INNER_ADDRESS} snat to ${slot.hostAddress}
  }
}
`;
}

/** Refuses the sandbox's new outbound connections beyond `max` open ones (TCP with a reset); 0: no cap. */
function connectionLimitRuleset(max = DEFAULT_SANDBOX_CONNECTIONS): string {
  if (max === 0) return "";
  return `table ip moat_limit {
  chain forward {
    type filter hook forward priority filter - 5; policy accept;
    iifname "tap0" ct state new ct count over ${max} jump refuse
  }
  chain refuse {
    meta l4proto tcp reject with tcp reset
    reject
  }
}
`;
}

export interface HostNetworkOptions {
  /** Destinations in the denied ranges that sandboxes may reach anyway (see egress.ts). */
  egressAllow?: readonly EgressAllowEntry[];
  /** The networks the node sits on, denied like the private ranges (default: none; see hostNetworks). */
  hostNetworks?: readonly string[];
}

/**
 * The node-wide rules in the root namespace (replaced as a whole, so applying them is idempotent):
 * - sandboxes reach neither each other nor the host's own services, and nothing outside opens
 *   connections to them;
 * - their egress to private, link-local (cloud metadata), loopback, multicast and reserved ranges
 *   is refused unless the operator's allow list names the destination;
 * - a packet from a sandbox's veth carries a sandbox host or transfer address (the outer namespace
 *   translates the inner one), else it is dropped: a second line behind the outer namespace's
 *   exact check;
 * - only root processes on the host (the orchestrator and the client proxy) open connections to
 *   sandbox host and transfer addresses: a local user cannot bypass the proxy's traffic tokens or
 *   reach envd's ports directly. Root on the host is trusted;
 * - the node's resolver (RESOLVER_ADDRESS) answers sandboxes only, on its port only.
 * Egress is masqueraded.
 */
export function hostRuleset(options: HostNetworkOptions = {}): string {
  const sandboxNets = `{ ${HOST_ADDRESS_CIDR}, ${TRANSFER_CIDR} }`;
  const forward = [
    'iifname "moat-v*" oifname "moat-v*" drop',
    'oifname "moat-v*" ct state established,related accept',
    'oifname "moat-v*" drop',
    ...egressRules("moat-v*", options.egressAllow ?? [], options.hostNetworks ?? []),
  ];
  return `table inet moat
delete table inet moat
table inet moat {
  chain prerouting {
    type filter hook prerouting priority raw; policy accept;
    iifname "moat-v*" meta nfproto ipv6 drop
    iifname "moat-v*" ip saddr != ${sandboxNets} drop
  }
  chain input {
    type filter hook input priority filter; policy accept;
    iifname "moat-v*" ct state established,related accept
    iifname "moat-v*" ip daddr ${RESOLVER_ADDRESS} meta l4proto { tcp, udp } th dport ${RESOLVER_PORT} accept
    iifname "moat-v*" drop
    ip daddr ${RESOLVER_ADDRESS} drop
  }
  chain forward {
    type filter hook forward priority filter; policy accept;
${forward.map((rule) => `    ${rule}\n`).join("")}  }
  chain output {
    type filter hook output priority filter; policy accept;
    ip daddr ${sandboxNets} meta skuid != 0 reject with icmp type admin-prohibited
  }
  chain postrouting {
    type nat hook postrouting priority srcnat;
    ip saddr ${HOST_ADDRESS_CIDR} oifname != "moat-v*" masquerade
  }
}
`;
}

/**
 * Applies the node-wide rules and routes (see hostRuleset) in the network namespace this process
 * is in: the host's root one, or a node's own (several nodes on one kernel). Everything here is
 * per network namespace (the sysctl, routes, addresses, nftables tables).
 */
export async function setupHostNetwork(options: HostNetworkOptions = {}): Promise<void> {
  await runCommand(["sysctl", "-qw", "net.ipv4.ip_forward=1"]);
  // Addresses of sandboxes that are gone must fail at once on this host, never follow the default
  // route off the machine; a live sandbox's /32 and /30 routes are more specific and win.
  for (const cidr of [HOST_ADDRESS_CIDR, TRANSFER_CIDR]) {
    await runCommand(["ip", "route", "replace", "unreachable", cidr]);
  }
  // The sandboxes' resolver listens here (a local address wins over the unreachable route). A node
  // started in a network namespace of its own may find its loopback down: the resolver needs it.
  await runCommand(["ip", "link", "set", "lo", "up"]);
  await runCommand(["ip", "addr", "replace", `${RESOLVER_ADDRESS}/32`, "dev", "lo"]);
  const networks =
    options.hostNetworks ??
    hostNetworks((await runCommand(["ip", "-j", "-4", "route", "show", "table", "main"])).stdout);
  await runCommand(["nft", "-f", "-"], { input: hostRuleset({ ...options, hostNetworks: networks }) });
}

/**
 * The IPv4 networks the node sits on (its links' routes in the root namespace, `ip -j route`
 * output), but moat's own sandbox links: a sandbox may cross the LAN to the gateway, never stop on
 * it. Read at start; a network added later is covered once the node restarts.
 */
export function hostNetworks(routesJSON: string): string[] {
  const routes = JSON.parse(routesJSON || "[]") as {
    dst?: string;
    dev?: string;
    scope?: string;
    type?: string;
  }[];
  const networks = new Set<string>();
  for (const route of routes) {
    if (route.scope !== "link" || (route.type ?? "unicast") !== "unicast") continue;
    if (!route.dst || route.dst === "default" || route.dev?.startsWith("moat-")) continue;
    networks.add(route.dst.includes("/") ? route.dst : `${route.dst}/32`);
  }
  return [...networks].sort();
}

/** Removes the node-wide rules (used when the node is taken down for good). */
export async function teardownHostNetwork(): Promise<void> {
  try {
    await runCommand(["nft", "delete", "table", "inet", "moat"]);
  } catch (err) {
    if (!(err instanceof CommandError)) throw err;
  }
  for (const cidr of [HOST_ADDRESS_CIDR, TRANSFER_CIDR]) {
    await runCommand(["ip", "route", "delete", "unreachable", cidr]).catch(() => undefined);
  }
  await runCommand(["ip", "addr", "delete", `${RESOLVER_ADDRESS}/32`, "dev", "lo"]).catch(() => undefined);
}

/**
 * Stops new TCP connections into the sandbox (a SYN towards it is dropped; the client retries)
 * while connections already open keep flowing: before a checkpoint, nothing may connect between
 * envd closing its connections and the save.
 */
export async function closeIngress(slot: Slot): Promise<void> {
  await addForwardFilter(slot, "moat_gate", -10, ['oifname "tap0" tcp flags & (syn | ack) == syn drop']);
}

/**
 * Answers every packet towards a sandbox that is being killed with a reset (or an ICMP error): its
 * runtime may already be gone while the container is deleted, and a connection to a netstack that
 * vanished goes silent instead of failing, so a client (or the proxy's keep-alive pool) would wait
 * for an answer that never comes. The namespace's deletion removes the table with it.
 */
export async function refuseIngress(slot: Slot): Promise<void> {
  await addForwardFilter(slot, "moat_stop", -20, [
    'oifname "tap0" meta l4proto tcp reject with tcp reset',
    'oifname "tap0" reject',
  ]);
}

/** A table of its own in the slot's outer namespace, filtering what is forwarded ahead of the egress policy. */
async function addForwardFilter(slot: Slot, table: string, priority: number, rules: string[]): Promise<void> {
  await inNamespace(
    slot.outerNamespace,
    ["nft", "-f", "-"],
    `table ip ${table} {
  chain forward {
    type filter hook forward priority filter ${priority < 0 ? "-" : "+"} ${Math.abs(priority)}; policy accept;
${rules.map((rule) => `    ${rule}\n`).join("")}  }
}
`,
  );
}

/** Undoes closeIngress; a gate that is not there is not an error. */
export async function openIngress(slot: Slot): Promise<void> {
  try {
    await inNamespace(slot.outerNamespace, ["nft", "delete", "table", "ip", "moat_gate"]);
  } catch (err) {
    if (!(err instanceof CommandError && /No such file|does not exist/i.test(err.stderrTail))) throw err;
  }
}
