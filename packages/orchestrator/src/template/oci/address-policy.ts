/**
 * Where image pulls may connect: registries, their token services and every redirect hop are
 * public hosts unless the operator allows more (MOAT_REGISTRY_ALLOW). A pull names its registry,
 * so without this any tenant could make the node fetch from its own loopback services, the cloud
 * metadata address or the private network (a server-side request forgery). Checks apply to the
 * addresses actually connected to, so a name that resolves to a private address (DNS rebinding)
 * is refused too.
 */
import dns from "node:dns";
import net from "node:net";
import ipaddr from "ipaddr.js";

/** Why an address is not a public one (`loopback`, `private`, …), or undefined when it is. */
export function nonPublicRange(address: string): string | undefined {
  if (!ipaddr.isValid(address)) return "invalid";
  // process(): IPv4-mapped IPv6 (::ffff:127.0.0.1) is classified as the IPv4 address it is.
  const ip = ipaddr.process(address);
  const range = ip.range();
  if (range === "unicast") return undefined;
  if (ip.kind() === "ipv6") {
    const parts = (ip as ipaddr.IPv6).parts;
    // NAT64 (64:ff9b::/96) and 6to4 (2002::/16) reach the IPv4 address they embed.
    const embedded =
      range === "rfc6052" && parts.slice(0, 6).join() === "100,65435,0,0,0,0"
        ? [parts[6] ?? 0, parts[7] ?? 0]
        : range === "6to4"
          ? [parts[1] ?? 0, parts[2] ?? 0]
          : undefined;
    if (embedded) {
      const [high = 0, low = 0] = embedded;
      return nonPublicRange(`${high >> 8}.${high & 255}.${low >> 8}.${low & 255}`);
    }
  }
  return RANGE_NAMES[range] ?? range;
}

const RANGE_NAMES: Record<string, string> = {
  linkLocal: "link-local",
  carrierGradeNat: "shared (100.64.0.0/10)",
  uniqueLocal: "unique-local",
  deprecatedSiteLocal: "site-local",
  unspecified: "unspecified",
  rfc6052: "NAT64 local-use",
};

interface HostEntry {
  host: string;
  port?: number;
  /** Listed as `http://…`: spoken to over plain HTTP. */
  plain: boolean;
}

/**
 * The operator's allow list: `host`, `host:port`, `[v6]:port`, `http://host[:port]` (that registry
 * speaks plain HTTP) or a CIDR (`10.0.0.0/8`, `fd00::/8`). A listed host may resolve to any
 * address; an address in a listed CIDR may be connected to whatever the name.
 */
export class RegistryAllowList {
  private readonly hosts: HostEntry[] = [];
  private readonly cidrs: Array<[ipaddr.IPv4 | ipaddr.IPv6, number]> = [];
  private readonly entries: string[];

  constructor(entries: readonly string[] | string = []) {
    const list = typeof entries === "string" ? entries.split(",") : entries;
    this.entries = list.map((e) => e.trim()).filter(Boolean);
    for (const raw of this.entries) {
      if (raw.includes("/") && !raw.startsWith("http://")) {
        try {
          this.cidrs.push(ipaddr.parseCIDR(raw));
        } catch {
          throw new Error(`MOAT_REGISTRY_ALLOW: '${raw}' is not a CIDR (e.g. 10.0.0.0/8)`);
        }
        continue;
      }
      const plain = raw.startsWith("http://");
      const hostPort = splitHostPort(plain ? raw.slice(7).replace(/\/$/, "") : raw);
      if (!hostPort) {
        throw new Error(
          `MOAT_REGISTRY_ALLOW: '${raw}' is neither host[:port], http://host[:port] nor a CIDR`,
        );
      }
      this.hosts.push({ ...hostPort, plain });
    }
  }

  get size(): number {
    return this.entries.length;
  }

  toString(): string {
    return this.entries.join(",");
  }

  /** The operator listed this host (and port), so it may be on a non-public address. */
  listsHost(host: string, port: number): boolean {
    const name = normalizeHost(host);
    return this.hosts.some((h) => h.host === name && (h.port === undefined || h.port === port));
  }

  /** Plain HTTP is allowed: listed as http://, or a listed loopback registry (no TLS there). */
  allowsPlainHttp(host: string, port: number): boolean {
    const name = normalizeHost(host);
    const entry = this.hosts.find((h) => h.host === name && (h.port === undefined || h.port === port));
    if (entry) return entry.plain || isLoopbackName(name);
    return isLoopbackName(name) && net.isIP(name) !== 0 && this.inCidr(name);
  }

  /** Why connecting to `address` for `host:port` is refused, or undefined when it is allowed. */
  refusal(address: string, host: string, port: number): string | undefined {
    const range = nonPublicRange(address);
    if (!range) return undefined;
    if (this.listsHost(host, port) || this.inCidr(address)) return undefined;
    const target = normalizeHost(host) === normalizeHost(address) ? address : `${host} (${address})`;
    return (
      `refusing to connect to ${target}, a ${range} address: registries on loopback, private or ` +
      "link-local addresses must be allowed by the node's operator (MOAT_REGISTRY_ALLOW)"
    );
  }

  private inCidr(address: string): boolean {
    if (!ipaddr.isValid(address)) return false;
    const ip = ipaddr.process(address);
    return this.cidrs.some(([base, bits]) => {
      const candidate =
        base.kind() === ip.kind()
          ? ip
          : base.kind() === "ipv6" && ip.kind() === "ipv4"
            ? (ip as ipaddr.IPv4).toIPv4MappedAddress()
            : undefined;
      return candidate?.match([base, bits] as never) ?? false;
    });
  }
}

/** `host`, `host:port` or `[v6]:port` (hostnames lowercased), or undefined when malformed. */
export function splitHostPort(text: string): { host: string; port?: number } | undefined {
  const m = /^(?:\[([0-9a-fA-F:.]+)\]|([^:[\]/\s]+)|([0-9a-fA-F:.]+))(?::(\d{1,5}))?$/.exec(text);
  if (!m) {
    // A bare IPv6 address has colons of its own.
    return net.isIPv6(text) ? { host: normalizeHost(text) } : undefined;
  }
  const host = m[1] ?? m[2] ?? m[3]!;
  if (m[1] && !net.isIPv6(host)) return undefined;
  if (m[2] && !net.isIP(host) && !HOSTNAME.test(host)) return undefined;
  const port = m[4] === undefined ? undefined : Number(m[4]);
  if (port !== undefined && (port < 1 || port > 65535)) return undefined;
  return { host: normalizeHost(host), port };
}

const HOSTNAME =
  /^(?=.{1,253}$)[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$/;

/** Lowercase, without IPv6 brackets or a trailing dot. */
export function normalizeHost(host: string): string {
  const bare = host.startsWith("[") && host.endsWith("]") ? host.slice(1, -1) : host;
  return bare.toLowerCase().replace(/\.$/, "");
}

function isLoopbackName(host: string): boolean {
  return host === "localhost" || (ipaddr.isValid(host) && ipaddr.process(host).range() === "loopback");
}

type LookupAll = (
  hostname: string,
  options: dns.LookupAllOptions,
  callback: (err: NodeJS.ErrnoException | null, addresses: dns.LookupAddress[]) => void,
) => void;

/**
 * A `lookup` for net/http/https that answers only the addresses the allow list permits for
 * `host:port` (so the socket can only connect to those), failing when none is left.
 */
export function filteredLookup(
  allow: RegistryAllowList,
  host: string,
  port: number,
  resolve: LookupAll = dns.lookup as LookupAll,
): net.LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, "", 4);
      const allowed = addresses.filter((a) => !allow.refusal(a.address, host, port));
      if (allowed.length === 0) {
        const refusal = addresses.length
          ? allow.refusal(addresses[0]!.address, host, port)!
          : `${hostname} has no address`;
        return callback(Object.assign(new Error(refusal), { code: "EMOATREFUSED" }), "", 4);
      }
      if (options.all) (callback as (e: null, a: dns.LookupAddress[]) => void)(null, allowed);
      else callback(null, allowed[0]!.address, allowed[0]!.family);
    });
  };
}
