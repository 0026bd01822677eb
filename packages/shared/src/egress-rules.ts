/**
 * A sandbox's own egress rules, as E2B's `network.allowOut` / `network.denyOut` and
 * `allow_internet_access` state them. The API validates them with this parser and the node parses
 * them again before it enforces them (network/egress-rules.ts in the orchestrator), so both agree
 * on what an entry means:
 * - an entry is an IPv4 address (`8.8.8.8`), an IPv4 CIDR (`8.8.8.0/24`; host bits are dropped,
 *   as E2B does) or, in allowOut only, a domain name: exact (`example.com`), a leading wildcard
 *   (`*.example.com`: every name under it at any depth, not the name itself), or `*` (every name);
 * - allowOut wins over denyOut; what neither names is allowed; `allow_internet_access: false` is
 *   denyOut `0.0.0.0/0`;
 * - domains need everything else denied (denyOut `0.0.0.0/0`, or no internet access), as E2B asks:
 *   a domain rule only means something when the addresses are closed by default.
 * IPv6 destinations are always denied (sandboxes have IPv4 egress only): an IPv6 allow is refused,
 * an IPv6 deny is accepted and changes nothing. These rules never open what the node itself denies
 * (private networks, metadata, the node's own networks).
 */
import { isIPv6 } from "node:net";
import { domainToASCII } from "node:url";

/** E2B's "all traffic" (the SDK's ALL_TRAFFIC). */
export const ALL_TRAFFIC = "0.0.0.0/0";
/** Entries one list may hold: each becomes set elements and resolver work on the node. */
export const MAX_EGRESS_ENTRIES = 256;
const MAX_ENTRY_LENGTH = 256;

export class EgressRuleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "EgressRuleError";
  }
}

export interface EgressRuleInput {
  /** null or undefined: the create did not say (internet access on). */
  allowInternetAccess?: boolean | null;
  allowOut?: readonly string[];
  denyOut?: readonly string[];
}

export interface ParsedEgressRules {
  /** IPv4 CIDRs (`a.b.c.d/n`, host bits cleared), deduplicated. */
  allowCIDRs: string[];
  /** Denied IPv4 CIDRs, with `0.0.0.0/0` when internet access is off. */
  denyCIDRs: string[];
  /** Domain patterns, lowercase ASCII: `example.com`, `*.example.com` or `*`. */
  domains: string[];
  /**
   * Whatever no allow names is denied (the deny list covers every IPv4 address): names resolve
   * only when a domain rule allows them, so DNS is no way out either.
   */
  closed: boolean;
}

/**
 * Parses and checks one sandbox's rules; EgressRuleError names the first bad entry and what to
 * write instead. Field names in messages are the SDK's (`network.allowOut`, …).
 */
export function parseEgressRules(input: EgressRuleInput): ParsedEgressRules {
  const allowOut = input.allowOut ?? [];
  const denyOut = input.denyOut ?? [];
  for (const [field, list] of [
    ["network.allowOut", allowOut],
    ["network.denyOut", denyOut],
  ] as const) {
    if (list.length > MAX_EGRESS_ENTRIES) {
      throw new EgressRuleError(
        `${field} has ${list.length} entries; at most ${MAX_EGRESS_ENTRIES} are allowed (use CIDRs that cover several addresses)`,
      );
    }
  }
  const allowCIDRs = new Set<string>();
  const domains = new Set<string>();
  for (const entry of allowOut) {
    const parsed = parseEntry("network.allowOut", entry);
    if (parsed.kind === "ipv6") {
      throw new EgressRuleError(
        `network.allowOut: '${entry}' is IPv6; sandboxes reach IPv4 destinations only (IPv6 egress is always denied)`,
      );
    }
    if (parsed.kind === "cidr") allowCIDRs.add(parsed.value);
    else domains.add(parsed.value);
  }
  const denyCIDRs = new Set<string>();
  for (const entry of denyOut) {
    const parsed = parseEntry("network.denyOut", entry);
    if (parsed.kind === "domain") {
      throw new EgressRuleError(
        `network.denyOut: '${entry}' is a domain name; denyOut takes IP addresses and CIDRs only. To reach only some names, deny ${ALL_TRAFFIC} and list the names in allowOut`,
      );
    }
    if (parsed.kind === "cidr") denyCIDRs.add(parsed.value);
  }
  if (input.allowInternetAccess === false) denyCIDRs.add(ALL_TRAFFIC);
  if (domains.size > 0 && !denyCIDRs.has(ALL_TRAFFIC)) {
    throw new EgressRuleError(
      `network.allowOut names domains, so network.denyOut must include '${ALL_TRAFFIC}' (ALL_TRAFFIC) to block all other traffic`,
    );
  }
  return {
    allowCIDRs: [...allowCIDRs],
    denyCIDRs: [...denyCIDRs],
    domains: [...domains],
    closed: coversAllIPv4([...denyCIDRs]),
  };
}

/** Whether `name` (lowercase, no trailing dot) matches a domain pattern of parseEgressRules. */
export function domainMatches(pattern: string, name: string): boolean {
  if (pattern === "*") return true;
  if (pattern.startsWith("*.")) return name.endsWith(pattern.slice(1));
  return name === pattern;
}

/** A query name as patterns see it: lowercase, without the trailing dot. */
export function normalizeName(name: string): string {
  return name.toLowerCase().replace(/\.$/, "");
}

type Entry = { kind: "cidr"; value: string } | { kind: "ipv6" } | { kind: "domain"; value: string };

function parseEntry(field: string, raw: string): Entry {
  const entry = raw.trim();
  if (entry === "") throw new EgressRuleError(`${field}: an entry is empty`);
  if (entry.length > MAX_ENTRY_LENGTH) {
    throw new EgressRuleError(
      `${field}: '${entry.slice(0, 40)}…' is longer than ${MAX_ENTRY_LENGTH} characters`,
    );
  }
  const [host, bits, ...extra] = entry.split("/");
  if (isIPv6(host!.replace(/^\[|\]$/g, "")) && extra.length === 0) {
    if (bits !== undefined && !/^\d{1,3}$/.test(bits)) throw invalid(field, entry);
    return { kind: "ipv6" };
  }
  if (/^[0-9.]+$/.test(host!)) {
    const address = parseIPv4(host!);
    const prefix = bits === undefined ? 32 : /^\d{1,2}$/.test(bits) ? Number(bits) : Number.NaN;
    if (address === undefined || extra.length > 0 || !(prefix >= 0 && prefix <= 32))
      throw invalid(field, entry);
    return { kind: "cidr", value: `${formatIPv4(maskIPv4(address, prefix))}/${prefix}` };
  }
  if (/:\d+(-\d+)?$/.test(entry)) {
    throw new EgressRuleError(
      `${field}: '${entry}' names a port; this moat version filters by address and name only (write it without the port)`,
    );
  }
  if (bits !== undefined) throw invalid(field, entry);
  return { kind: "domain", value: parseDomain(field, entry) };
}

function invalid(field: string, entry: string): EgressRuleError {
  return new EgressRuleError(
    `${field}: '${entry}' is not a valid IPv4 address, CIDR or domain name (write e.g. 8.8.8.8, 8.8.8.0/24 or example.com)`,
  );
}

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?$/;

/** `example.com`, `*.example.com` or `*`; internationalized names become their ASCII form. */
function parseDomain(field: string, entry: string): string {
  if (entry === "*") return "*";
  const wildcard = entry.startsWith("*.");
  const rest = (wildcard ? entry.slice(2) : entry).replace(/\.$/, "");
  const ascii = rest === "" || rest.includes("*") ? "" : domainToASCII(rest);
  const labels = ascii.split(".");
  const valid =
    ascii !== "" &&
    ascii.length <= 253 &&
    labels.every((label) => LABEL.test(label)) &&
    // A name never ends in a number: '1.2.3' or '10.0.0.256' is a mistyped address.
    !/^\d+$/.test(labels[labels.length - 1]!);
  if (!valid) {
    throw new EgressRuleError(
      `${field}: '${entry}' is not a valid domain name, IP address or CIDR (a wildcard is allowed only as a leading '*.', e.g. *.example.com)`,
    );
  }
  return wildcard ? `*.${ascii}` : ascii;
}

/** Whether the CIDRs together cover every IPv4 address. */
export function coversAllIPv4(cidrs: readonly string[]): boolean {
  const ranges = cidrs
    .map((cidr) => {
      const [base, bits] = cidr.split("/") as [string, string];
      const start = parseIPv4(base)!;
      return [start, start + 2 ** (32 - Number(bits)) - 1] as const;
    })
    .sort((a, b) => a[0] - b[0]);
  let next = 0;
  for (const [start, end] of ranges) {
    if (start > next) return false;
    next = Math.max(next, end + 1);
    if (next > 0xffffffff) return true;
  }
  return false;
}

/** A dotted quad without leading zeros, as a number; undefined otherwise. */
export function parseIPv4(text: string): number | undefined {
  const parts = text.split(".");
  if (parts.length !== 4) return undefined;
  let value = 0;
  for (const part of parts) {
    if (!/^(0|[1-9]\d{0,2})$/.test(part) || Number(part) > 255) return undefined;
    value = value * 256 + Number(part);
  }
  return value;
}

function maskIPv4(address: number, prefix: number): number {
  return prefix === 0 ? 0 : (address & (~0 << (32 - prefix))) >>> 0;
}

function formatIPv4(value: number): string {
  return [24, 16, 8, 0].map((shift) => (value >>> shift) & 255).join(".");
}
