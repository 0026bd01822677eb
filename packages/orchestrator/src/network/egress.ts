/**
 * Which addresses a sandbox's egress may reach. Every range that is not the public internet is
 * denied (private networks, cloud metadata, carrier NAT, loopback, multicast, reserved), as E2B
 * denies them, and so is every network the node itself sits on (its LAN, whatever its numbering);
 * an operator who needs one of them (a package mirror on the LAN, a private resolver) allows it
 * explicitly, per deployment. The rules live in the root namespace's forward chain (see
 * sandbox-network.ts), outside gVisor, where no sandbox can change them.
 */

/**
 * Not the public internet (IANA's special-purpose registry, IPv4). The documentation nets
 * (192.0.2.0/24, 198.51.100.0/24, 203.0.113.0/24) are left out: the internet routes them nowhere,
 * so denying them protects nothing, and some networks (lab and CI networks among them) number
 * their uplink and mirrors from them. A node's own network in them is denied as a network it sits
 * on (hostNetworks in sandbox-network.ts).
 */
export const DENIED_EGRESS_CIDRS = [
  "0.0.0.0/8",
  "10.0.0.0/8",
  "100.64.0.0/10",
  "127.0.0.0/8",
  "169.254.0.0/16",
  "172.16.0.0/12",
  "192.0.0.0/24",
  "192.88.99.0/24",
  "192.168.0.0/16",
  "198.18.0.0/15",
  "224.0.0.0/4",
  "240.0.0.0/4",
] as const;

/** One allowed destination: a CIDR, and when `port` is set only that port (TCP and UDP). */
export interface EgressAllowEntry {
  cidr: string;
  port?: number;
}

export class EgressAllowError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EgressAllowError";
  }
}

/**
 * Parses an allow list: entries separated by commas or spaces, each `a.b.c.d`, `a.b.c.d/n`, or
 * either with `:port` (TCP and UDP to that port only, e.g. a private resolver as `10.0.0.2:53`).
 * `source` names where the list came from in error messages.
 */
export function parseEgressAllow(spec: string | undefined, source = "MOAT_EGRESS_ALLOW"): EgressAllowEntry[] {
  const entries: EgressAllowEntry[] = [];
  for (const item of (spec ?? "").split(/[\s,]+/).filter(Boolean)) {
    const match = /^([0-9.]+)(?:\/(\d{1,2}))?(?::(\d{1,5}))?$/.exec(item);
    const address = match ? parseIPv4(match[1]!) : undefined;
    if (!match || address === undefined) {
      throw new EgressAllowError(
        `${source}: '${item}' is not an IPv4 address or CIDR (write e.g. 10.0.0.0/8, 192.168.1.5 or 10.0.0.2:53)`,
      );
    }
    const prefix = match[2] === undefined ? 32 : Number(match[2]);
    if (prefix > 32) throw new EgressAllowError(`${source}: '${item}' has a prefix longer than /32`);
    const network = prefix === 0 ? 0 : (address & (~0 << (32 - prefix))) >>> 0;
    if (network !== address) {
      throw new EgressAllowError(
        `${source}: '${item}' has bits set past its /${prefix}; did you mean ${formatIPv4(network)}/${prefix}?`,
      );
    }
    const port = match[3] === undefined ? undefined : Number(match[3]);
    if (port !== undefined && (port < 1 || port > 65535)) {
      throw new EgressAllowError(`${source}: '${item}' has a port outside 1..65535`);
    }
    entries.push({ cidr: `${formatIPv4(network)}/${prefix}`, port });
  }
  return entries;
}

/** Whether moat's deny list covers an IPv4 address (before any allow list). */
export function isDeniedEgress(ip: string): boolean {
  const address = parseIPv4(ip);
  if (address === undefined) throw new Error(`'${ip}' is not an IPv4 address`);
  return DENIED_EGRESS_CIDRS.some((cidr) => {
    const [base, bits] = cidr.split("/") as [string, string];
    const prefix = Number(bits);
    const mask = prefix === 0 ? 0 : (~0 << (32 - prefix)) >>> 0;
    return (address & mask) >>> 0 === parseIPv4(base);
  });
}

/**
 * The forward-chain rules for traffic coming from sandboxes (`iifname` matches their veths):
 * the allow list's accepts, then a refusal of the denied ranges and of `hostNetworks` (CIDRs).
 */
export function egressRules(
  iifname: string,
  allow: readonly EgressAllowEntry[],
  hostNetworks: readonly string[] = [],
): string[] {
  const rules = allow.map((entry) =>
    entry.port === undefined
      ? `iifname "${iifname}" ip daddr ${entry.cidr} accept`
      : `iifname "${iifname}" ip daddr ${entry.cidr} meta l4proto { tcp, udp } th dport ${entry.port} accept`,
  );
  // admin-prohibited: the sandbox's connect fails at once ("No route to host") instead of hanging.
  rules.push(
    `iifname "${iifname}" ip daddr { ${[...DENIED_EGRESS_CIDRS, ...hostNetworks].join(", ")} } reject with icmp type admin-prohibited`,
  );
  return rules;
}

function parseIPv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^\d{1,3}$/.test(part) || Number(part) > 255) return undefined;
    value = value * 256 + Number(part);
  }
  return value;
}

function formatIPv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join(".");
}
