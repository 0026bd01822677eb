/**
 * A sandbox's own egress rules (E2B's allowOut/denyOut, parsed by @moat/shared's parseEgressRules),
 * enforced in its outer namespace, outside gVisor, where code in the sandbox cannot reach them:
 *
 *   table ip moat_egress (in moat-n<i>)
 *     set allow     the allowed CIDRs
 *     set deny      the denied CIDRs (0.0.0.0/0 when internet access is off)
 *     set resolved  addresses the node's resolver answered for a name a domain rule allows, each
 *                   for its record's TTL (bounded): what resolving an allowed name through moat
 *                   opens, and nothing else
 *     chain dns     every DNS query (UDP and TCP port 53, to any address) goes to the node's
 *                   resolver (network/dns-resolver.ts), whatever resolver the sandbox names
 *     chain forward established traffic, the resolver, then allow, resolved, deny; the rest passes
 *
 * Allows win over denies, as in E2B. This table only ever narrows what passes: the root
 * namespace's rules (network/egress.ts, sandbox-network.ts) deny private ranges, metadata and the
 * node's own networks after it, whatever a sandbox allows. Updates replace the sets in one nft
 * transaction: connections already open carry on, new ones follow the new rules.
 */
import { domainMatches, EgressRuleError, type ParsedEgressRules, parseEgressRules } from "@moat/shared";
import { inNamespace } from "./netns.js";
import type { Slot } from "./slot.js";

/**
 * Where the node's resolver listens, on the host's loopback device: the unused transfer /30 of
 * slot 0, inside the range only root reaches (hostRuleset's output chain) and only sandboxes' veths
 * may send to (its input chain).
 */
export const RESOLVER_ADDRESS = "10.12.0.1";
export const RESOLVER_PORT = 5333;

/** How long an answered address stays open: its record's TTL, within these bounds (seconds). */
export const MIN_RESOLVED_TTL = 30;
export const MAX_RESOLVED_TTL = 3600;
/** Addresses one sandbox may have open through resolved names at once. */
export const MAX_RESOLVED_PER_SANDBOX = 4096;

/** The egress fields of a create or a record (absent in records made before they existed). */
export interface EgressFields {
  allowInternetAccess: boolean;
  allowOut?: string[];
  denyOut?: string[];
}

/** Runs an nft script in a namespace; tests pass a fake. */
export type NftRunner = (namespace: string, script: string) => Promise<void>;

export const runNft: NftRunner = (namespace, script) => inNamespace(namespace, ["nft", "-f", "-"], script);

/** A record's rules parsed; an InvalidRules error names the bad entry. */
export function egressRulesOf(fields: EgressFields): ParsedEgressRules {
  return parseEgressRules({
    allowInternetAccess: fields.allowInternetAccess,
    allowOut: fields.allowOut,
    denyOut: fields.denyOut,
  });
}

export { EgressRuleError };

/**
 * The whole table as one nft transaction (idempotent: objects are added if missing, chains and the
 * allow and deny sets replaced). `resolved`: when given, the resolved set is replaced by these
 * addresses (with seconds left); when not, it is kept as it is.
 */
export function egressRuleset(
  rules: ParsedEgressRules,
  resolved?: ReadonlyArray<{ address: string; seconds: number }>,
): string {
  const t = "ip moat_egress";
  const lines = [
    `add table ${t}`,
    `add set ${t} allow { type ipv4_addr; flags interval; auto-merge; }`,
    `add set ${t} deny { type ipv4_addr; flags interval; auto-merge; }`,
    `add set ${t} resolved { type ipv4_addr; flags timeout; }`,
    `add chain ${t} dns { type nat hook prerouting priority dstnat - 10; policy accept; }`,
    `add chain ${t} forward { type filter hook forward priority filter - 1; policy accept; }`,
    `flush chain ${t} dns`,
    `add rule ${t} dns iifname "tap0" udp dport 53 dnat to ${RESOLVER_ADDRESS}:${RESOLVER_PORT}`,
    `add rule ${t} dns iifname "tap0" tcp dport 53 dnat to ${RESOLVER_ADDRESS}:${RESOLVER_PORT}`,
    `flush chain ${t} forward`,
    `add rule ${t} forward iifname != "tap0" accept`,
    `add rule ${t} forward ct state established,related accept`,
    `add rule ${t} forward ip daddr ${RESOLVER_ADDRESS} meta l4proto { tcp, udp } th dport ${RESOLVER_PORT} accept`,
    `add rule ${t} forward ip daddr @allow accept`,
    `add rule ${t} forward ip daddr @resolved accept`,
    // Refused at once ("Connection refused" / "No route to host"), not left to time out.
    `add rule ${t} forward ip daddr @deny meta l4proto tcp reject with tcp reset`,
    `add rule ${t} forward ip daddr @deny reject with icmp type admin-prohibited`,
    `flush set ${t} allow`,
    `flush set ${t} deny`,
  ];
  if (rules.allowCIDRs.length > 0) lines.push(`add element ${t} allow { ${rules.allowCIDRs.join(", ")} }`);
  if (rules.denyCIDRs.length > 0) lines.push(`add element ${t} deny { ${rules.denyCIDRs.join(", ")} }`);
  if (resolved) {
    lines.push(`flush set ${t} resolved`);
    const elements = resolved.map((r) => `${r.address} timeout ${Math.max(1, Math.ceil(r.seconds))}s`);
    if (elements.length > 0) lines.push(`add element ${t} resolved { ${elements.join(", ")} }`);
  }
  return `${lines.join("\n")}\n`;
}

/**
 * Opens `addresses` for `seconds` (re-arming the timeout of any already open): add, delete, add
 * in one transaction, since adding an element that is there leaves its old timeout.
 */
export function admitRuleset(addresses: readonly string[], seconds: number): string {
  const t = "ip moat_egress resolved";
  const plain = addresses.join(", ");
  const timed = addresses.map((a) => `${a} timeout ${seconds}s`).join(", ");
  return `add element ${t} { ${plain} }\ndelete element ${t} { ${plain} }\nadd element ${t} { ${timed} }\n`;
}

/** The bounded time an answered address stays open for a record TTL. */
export function resolvedTTL(ttl: number): number {
  return Math.min(MAX_RESOLVED_TTL, Math.max(MIN_RESOLVED_TTL, Math.floor(ttl)));
}

/**
 * One sandbox's rules on its current slot: what the resolver asks (which names it may resolve)
 * and the nft calls, one at a time, so that an update and the resolver's admissions never cross.
 */
export class SandboxEgress {
  /** Addresses admitted for allowed names: when each closes, and for which names. */
  private readonly resolved = new Map<string, { expires: number; names: Set<string> }>();
  private queue: Promise<void> = Promise.resolve();
  rules: ParsedEgressRules;
  /** Whether `rules` are known to be the table's (false until applied, and after a failed apply). */
  private applied: boolean;

  /** `made`: the rules the slot's network was made with (its table holds them already). */
  constructor(
    readonly slot: Slot,
    public sandboxID: string,
    made: ParsedEgressRules | undefined,
    private readonly run: NftRunner,
    private readonly now: () => number = Date.now,
  ) {
    this.rules = made ?? parseEgressRules({});
    this.applied = made !== undefined;
  }

  /** Whether the table already holds exactly `rules`: nothing to apply. */
  holds(rules: ParsedEgressRules): boolean {
    const same = (a: readonly string[], b: readonly string[]) =>
      [...a].sort().join() === [...b].sort().join();
    return (
      this.applied &&
      same(this.rules.allowCIDRs, rules.allowCIDRs) &&
      same(this.rules.denyCIDRs, rules.denyCIDRs) &&
      same(this.rules.domains, rules.domains)
    );
  }

  /** Where the sandbox's packets come from on the host (the resolver's key). */
  get source(): string {
    return this.slot.hostAddress;
  }

  /**
   * How a query for `name` is answered: "forward" (the sandbox may reach any address, so any name
   * resolves), "admit" (closed, but a domain rule allows the name: its answers are opened) or
   * "refuse" (closed: resolving it would open nothing, and forwarding it would be a way out).
   */
  decide(name: string): "forward" | "admit" | "refuse" {
    if (!this.rules.closed) return "forward";
    return this.rules.domains.some((pattern) => domainMatches(pattern, name)) ? "admit" : "refuse";
  }

  /** Replaces the rules (applied now); answers admitted for names still allowed stay open. */
  apply(rules: ParsedEgressRules): Promise<void> {
    const domainsChanged = rules.domains.join("\n") !== this.rules.domains.join("\n");
    this.rules = rules;
    return this.enqueue(async () => {
      let keep: Array<{ address: string; seconds: number }> | undefined;
      if (domainsChanged) {
        keep = [];
        const now = this.now();
        for (const [address, entry] of this.resolved) {
          const names = [...entry.names].filter((n) => this.decide(n) === "admit");
          if (names.length === 0 || entry.expires <= now) this.resolved.delete(address);
          else {
            entry.names = new Set(names);
            keep.push({ address, seconds: (entry.expires - now) / 1000 });
          }
        }
      }
      try {
        await this.run(this.slot.outerNamespace, egressRuleset(rules, keep));
        this.applied = true;
      } catch (err) {
        this.applied = false;
        throw err;
      }
    });
  }

  /**
   * Opens the addresses an allowed name resolved to, for `ttl` seconds (bounded); resolves, with
   * the addresses it had to open (not those open already), once they are open, so that the sandbox's connection right after the answer passes. Nothing is
   * opened when the rules no longer allow the name by the time its turn comes.
   */
  admit(name: string, addresses: readonly string[], ttl: number): Promise<string[]> {
    if (addresses.length === 0) return Promise.resolve([]);
    const seconds = resolvedTTL(ttl);
    return this.enqueue(async () => {
      // Decided before an update that may have come since: asked again under the rules now.
      if (this.decide(name) !== "admit") return [];
      const now = this.now();
      const expires = now + seconds * 1000;
      if (this.resolved.size >= MAX_RESOLVED_PER_SANDBOX) this.forgetExpired(now);
      // Open for at least half as long already: no nft call (most answers are repeats).
      const due: string[] = [];
      for (const address of addresses) {
        const open = this.resolved.get(address);
        if (open && open.expires > now) {
          open.names.add(name);
          if (open.expires >= now + (seconds * 1000) / 2) continue;
          open.expires = expires;
        } else if (this.resolved.size >= MAX_RESOLVED_PER_SANDBOX) {
          throw new Error(`more than ${MAX_RESOLVED_PER_SANDBOX} resolved addresses open at once`);
        } else this.resolved.set(address, { expires, names: new Set([name]) });
        due.push(address);
      }
      if (due.length > 0) await this.run(this.slot.outerNamespace, admitRuleset(due, seconds));
      return due;
    });
  }

  private forgetExpired(now: number): void {
    for (const [address, open] of this.resolved) if (open.expires <= now) this.resolved.delete(address);
  }

  private enqueue<T>(work: () => Promise<T>): Promise<T> {
    const next = this.queue.then(work, work);
    this.queue = next.then(
      () => undefined,
      () => undefined,
    );
    return next;
  }
}

/**
 * The rules of every sandbox with a network on this node, by slot: the factory attaches a
 * sandbox's rules when its network is taken and detaches them when it is released, the resolver
 * looks its queries' sources up here. In memory only: a restarted node attaches the sandboxes it
 * adopts again.
 */
export class EgressRegistry {
  private readonly bySource = new Map<string, SandboxEgress>();

  constructor(private readonly run: NftRunner = runNft) {}

  /**
   * Applies a sandbox's rules to its slot, now; registered at once, so the resolver knows the
   * sandbox from its first query. `made`: for a network just made, what it was made with (its
   * table holds those rules; no nft call when they are the sandbox's, ~25 ms off a create). Throws
   * EgressRuleError for rules that do not parse.
   */
  attach(slot: Slot, sandboxID: string, fields: EgressFields, made?: EgressFields): Promise<void> {
    const rules = egressRulesOf(fields);
    let egress = this.bySource.get(slot.hostAddress);
    if (egress && egress.slot.index !== slot.index) egress = undefined;
    if (!egress) {
      egress = new SandboxEgress(slot, sandboxID, made && egressRulesOf(made), this.run);
      this.bySource.set(slot.hostAddress, egress);
    }
    egress.sandboxID = sandboxID;
    if (egress.holds(rules)) return Promise.resolve();
    return egress.apply(rules);
  }

  /** Forgets a slot's rules (its namespace, and the table with it, goes with the network). */
  detach(slot: Slot): void {
    this.bySource.delete(slot.hostAddress);
  }

  /** The sandbox whose packets come from `address`, if any. */
  forSource(address: string): SandboxEgress | undefined {
    return this.bySource.get(address);
  }

  get size(): number {
    return this.bySource.size;
  }
}
