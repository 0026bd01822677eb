/**
 * The node's resolver for its sandboxes: every DNS query a sandbox sends (UDP or TCP port 53, to
 * any address) is redirected here (network/egress-rules.ts), and forwarded to the host's own
 * resolvers (/etc/resolv.conf, or MOAT_DNS_UPSTREAM). It is where domain rules are enforced:
 * - a sandbox that may reach any address gets every name resolved, as before;
 * - a closed sandbox (its rules deny every address) gets only names a domain rule of its allowOut
 *   allows; the addresses in each answer are opened for it (its resolved set) before the answer
 *   leaves, for the records' TTL; other names are REFUSED and never leave the node, so DNS is no
 *   way out of a sandbox that has none.
 * Queries are known by their source, the sandbox's host address (its outer namespace translates
 * the inner one, and drops anything else: a sandbox cannot send as another). Anything else is
 * ignored. Each sandbox is held to a query rate and a number in flight, so that no sandbox can
 * flood the node's upstreams or this process.
 */
import { randomInt } from "node:crypto";
import dgram from "node:dgram";
import { readFile } from "node:fs/promises";
import net from "node:net";
import type { Logger } from "@moat/shared";
import { normalizeName } from "@moat/shared";
import dnsPacket from "dns-packet";
import { RESOLVER_ADDRESS, RESOLVER_PORT, type SandboxEgress } from "./egress-rules.js";

export interface Upstream {
  address: string;
  port: number;
}

export interface DnsResolverOptions {
  /** Who a query's source is. */
  sandboxes: { forSource(address: string): SandboxEgress | undefined };
  upstreams: readonly Upstream[];
  logger: Logger;
  address?: string;
  port?: number;
  /** How long one upstream may take to answer before the next is asked. */
  upstreamTimeoutMs?: number;
  /** Queries per second a sandbox may send (a burst of twice as many). */
  queriesPerSecond?: number;
}

const RCODE = { FORMERR: 1, SERVFAIL: 2, NOTIMP: 4, REFUSED: 5 } as const;
const MAX_IN_FLIGHT_PER_SANDBOX = 64;
const MAX_IN_FLIGHT = 1024;
const MAX_TCP_PER_SANDBOX = 8;
const TCP_IDLE_MS = 10_000;
/** Refusals logged per sandbox per minute; the rest are counted in the next line. */
const REFUSALS_LOGGED_PER_MINUTE = 20;

export class DnsResolver {
  private udp: dgram.Socket | undefined;
  private tcp: net.Server | undefined;
  private readonly buckets = new Map<string, { tokens: number; at: number; inFlight: number; tcp: number }>();
  private readonly refusals = new Map<string, { minute: number; logged: number; suppressed: number }>();
  private inFlight = 0;
  private readonly sockets = new Set<net.Socket>();

  constructor(private readonly options: DnsResolverOptions) {}

  get address(): string {
    return this.options.address ?? RESOLVER_ADDRESS;
  }

  get port(): number {
    return this.options.port ?? RESOLVER_PORT;
  }

  async start(): Promise<void> {
    const udp = dgram.createSocket("udp4");
    udp.on("message", (msg, rinfo) => void this.onDatagram(udp, msg, rinfo));
    udp.on("error", (err) => this.options.logger.error({ err }, "sandbox resolver (UDP) failed"));
    const tcp = net.createServer((socket) => this.onConnection(socket));
    tcp.on("error", (err) => this.options.logger.error({ err }, "sandbox resolver (TCP) failed"));
    try {
      await new Promise<void>((resolve, reject) => {
        udp.once("error", reject);
        udp.bind(this.port, this.address, () => {
          udp.off("error", reject);
          resolve();
        });
      });
      await new Promise<void>((resolve, reject) => {
        tcp.once("error", reject);
        tcp.listen(this.port, this.address, () => {
          tcp.off("error", reject);
          resolve();
        });
      });
    } catch (err) {
      udp.close();
      tcp.close();
      throw new Error(
        `the sandboxes' resolver cannot listen on ${this.address}:${this.port} (${(err as Error).message}): is another moat orchestrator running on this host?`,
      );
    }
    this.udp = udp;
    this.tcp = tcp;
    this.options.logger.info(
      {
        listen: `${this.address}:${this.port}`,
        upstreams: this.options.upstreams.map((u) => `${u.address}:${u.port}`),
      },
      "sandbox resolver listening",
    );
  }

  async close(): Promise<void> {
    for (const socket of this.sockets) socket.destroy();
    await Promise.all([
      new Promise<void>((resolve) => (this.udp ? this.udp.close(() => resolve()) : resolve())),
      new Promise<void>((resolve) => (this.tcp ? this.tcp.close(() => resolve()) : resolve())),
    ]);
    this.udp = undefined;
    this.tcp = undefined;
  }

  /**
   * The answer to one query from `source` (a sandbox's host address), or undefined when nothing
   * is to be sent back (not a sandbox, over its rate, not a query at all). Exported for tests.
   */
  async answer(query: Buffer, source: string, transport: "udp" | "tcp"): Promise<Buffer | undefined> {
    const egress = this.options.sandboxes.forSource(source);
    if (!egress || query.length < 12 || !this.take(source)) return undefined;
    const bucket = this.buckets.get(source)!;
    bucket.inFlight++;
    this.inFlight++;
    try {
      return await this.resolve(query, egress, transport);
    } finally {
      bucket.inFlight--;
      this.inFlight--;
    }
  }

  private async resolve(
    raw: Buffer,
    egress: SandboxEgress,
    transport: "udp" | "tcp",
  ): Promise<Buffer | undefined> {
    let query: dnsPacket.DecodedPacket;
    try {
      query = dnsPacket.decode(raw);
    } catch {
      return errorReply(raw, RCODE.FORMERR);
    }
    if (query.type !== "query") return undefined;
    // Standard queries only (opcode 0): no notify, update or status.
    if (((raw.readUInt16BE(2) >> 11) & 0xf) !== 0) return errorReply(raw, RCODE.NOTIMP);
    const questions = query.questions ?? [];
    if (questions.length !== 1) return errorReply(raw, RCODE.FORMERR);
    const question = questions[0]!;
    const name = normalizeName(question.name);
    const decision = egress.decide(name);
    if (decision === "refuse") {
      this.logRefusal(egress, name, question.type);
      return errorReply(raw, RCODE.REFUSED);
    }
    const response = await this.forward(raw, question, transport);
    if (!response) return errorReply(raw, RCODE.SERVFAIL);
    if (decision === "admit") {
      const { addresses, ttl } = answeredAddresses(response.raw, response.packet, name);
      let opened: string[];
      try {
        opened = await egress.admit(name, addresses, ttl);
      } catch (err) {
        this.options.logger.error(
          { err, sandboxID: egress.sandboxID, name },
          "opening resolved addresses failed",
        );
        return errorReply(raw, RCODE.SERVFAIL);
      }
      // Once per address and TTL at info; repeats (already open) at debug.
      this.options.logger[opened.length > 0 ? "info" : "debug"](
        { sandboxID: egress.sandboxID, name, type: question.type, decision: "allowed", opened, ttl },
        "dns: name allowed by the sandbox's egress rules",
      );
    }
    // The upstream's answer as it came, with the sandbox's query id.
    const out = Buffer.from(response.raw);
    out.writeUInt16BE(raw.readUInt16BE(0), 0);
    return out;
  }

  /** Asks each upstream in turn; the first whole answer to the same question wins. */
  private async forward(
    raw: Buffer,
    question: dnsPacket.Question,
    transport: "udp" | "tcp",
  ): Promise<{ raw: Buffer; packet: dnsPacket.DecodedPacket } | undefined> {
    for (const upstream of this.options.upstreams) {
      const id = randomInt(65536);
      const query = Buffer.from(raw);
      query.writeUInt16BE(id, 0);
      const timeoutMs = this.options.upstreamTimeoutMs ?? 1500;
      const answer = await (transport === "udp"
        ? askUDP(upstream, query, timeoutMs)
        : askTCP(upstream, query, timeoutMs * 2)
      ).catch(() => undefined);
      if (!answer || answer.length < 12 || answer.readUInt16BE(0) !== id) continue;
      try {
        const packet = dnsPacket.decode(answer);
        const q = packet.questions?.[0];
        if (packet.type !== "response" || !q || normalizeName(q.name) !== normalizeName(question.name))
          continue;
        return { raw: answer, packet };
      } catch {
        // Not an answer we can read: the next upstream.
      }
    }
    return undefined;
  }

  /** Token bucket per sandbox, and the caps on queries in flight. */
  private take(source: string): boolean {
    const rate = this.queriesPerSecond;
    const now = Date.now();
    const bucket = this.bucketOf(source);
    bucket.tokens = Math.min(rate * 2, bucket.tokens + ((now - bucket.at) / 1000) * rate);
    bucket.at = now;
    if (bucket.tokens < 1 || bucket.inFlight >= MAX_IN_FLIGHT_PER_SANDBOX || this.inFlight >= MAX_IN_FLIGHT)
      return false;
    bucket.tokens--;
    // Buckets of sandboxes gone are dropped once full again (an idle one is a fresh one).
    if (this.buckets.size > 4096) {
      for (const [key, b] of this.buckets)
        if (b.inFlight === 0 && b.tcp === 0 && key !== source) this.buckets.delete(key);
    }
    return true;
  }

  private get queriesPerSecond(): number {
    return this.options.queriesPerSecond ?? 100;
  }

  private bucketOf(source: string) {
    let bucket = this.buckets.get(source);
    if (!bucket) {
      bucket = { tokens: this.queriesPerSecond * 2, at: Date.now(), inFlight: 0, tcp: 0 };
      this.buckets.set(source, bucket);
    }
    return bucket;
  }

  private logRefusal(egress: SandboxEgress, name: string, type: string): void {
    const minute = Math.floor(Date.now() / 60_000);
    let count = this.refusals.get(egress.source);
    if (!count || count.minute !== minute) {
      if (count?.suppressed) {
        this.options.logger.info(
          { sandboxID: egress.sandboxID, refused: count.suppressed },
          "dns: more queries refused by the sandbox's egress rules",
        );
      }
      count = { minute, logged: 0, suppressed: 0 };
      this.refusals.set(egress.source, count);
      if (this.refusals.size > 4096) this.refusals.clear();
    }
    if (count.logged >= REFUSALS_LOGGED_PER_MINUTE) {
      count.suppressed++;
      return;
    }
    count.logged++;
    this.options.logger.info(
      { sandboxID: egress.sandboxID, name, type, decision: "refused" },
      "dns: query refused by the sandbox's egress rules",
    );
  }

  private async onDatagram(socket: dgram.Socket, msg: Buffer, rinfo: dgram.RemoteInfo): Promise<void> {
    const answer = await this.answer(msg, rinfo.address, "udp").catch((err: unknown) => {
      this.options.logger.error({ err }, "sandbox resolver: a query failed");
      return undefined;
    });
    if (answer) socket.send(answer, rinfo.port, rinfo.address);
  }

  /** DNS over TCP: two-byte length, message; one query at a time per connection. */
  private onConnection(socket: net.Socket): void {
    const source = socket.remoteAddress ?? "";
    if (!this.options.sandboxes.forSource(source) || this.bucketOf(source).tcp >= MAX_TCP_PER_SANDBOX) {
      socket.destroy();
      return;
    }
    const bucket = this.bucketOf(source);
    bucket.tcp++;
    this.sockets.add(socket);
    socket.setTimeout(TCP_IDLE_MS, () => socket.destroy());
    socket.on("error", () => undefined);
    socket.on("close", () => {
      this.sockets.delete(socket);
      bucket.tcp--;
    });
    let buffered = Buffer.alloc(0);
    let busy = false;
    const pump = async () => {
      if (busy) return;
      busy = true;
      try {
        while (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
          const length = buffered.readUInt16BE(0);
          const message = buffered.subarray(2, 2 + length);
          buffered = buffered.subarray(2 + length);
          const answer = await this.answer(Buffer.from(message), source, "tcp").catch(() => undefined);
          if (!answer) {
            socket.destroy();
            return;
          }
          const prefix = Buffer.alloc(2);
          prefix.writeUInt16BE(answer.length, 0);
          socket.write(Buffer.concat([prefix, answer]));
        }
      } finally {
        busy = false;
      }
    };
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length > 2 + 65_535 * 2) {
        socket.destroy();
        return;
      }
      void pump();
    });
  }
}

/**
 * The A records answering `name`, following its CNAME chain within the answer, and the smallest
 * TTL along the way. Records for other names (what an upstream added) are left out.
 */
export function answeredAddresses(
  raw: Buffer,
  packet: dnsPacket.DecodedPacket,
  name: string,
): { addresses: string[]; ttl: number } {
  const answers = (packet.answers ?? []) as Array<{
    type: string;
    name: string;
    ttl?: number;
    data: unknown;
  }>;
  if ((raw.readUInt16BE(2) & 0xf) !== 0) return { addresses: [], ttl: 0 };
  const chain = new Set([name]);
  let ttl = Number.POSITIVE_INFINITY;
  for (let grown = true; grown; ) {
    grown = false;
    for (const a of answers) {
      if (a.type !== "CNAME" || !chain.has(normalizeName(a.name))) continue;
      const target = normalizeName(String(a.data));
      if (!chain.has(target)) {
        chain.add(target);
        ttl = Math.min(ttl, a.ttl ?? 0);
        grown = true;
      }
    }
  }
  const addresses = new Set<string>();
  for (const a of answers) {
    if (a.type !== "A" || !chain.has(normalizeName(a.name)) || !net.isIPv4(String(a.data))) continue;
    addresses.add(String(a.data));
    ttl = Math.min(ttl, a.ttl ?? 0);
  }
  return { addresses: [...addresses], ttl: addresses.size > 0 ? ttl : 0 };
}

/** An answer with only the query's header and question, and `rcode`. */
function errorReply(query: Buffer, rcode: number): Buffer {
  const id = query.readUInt16BE(0);
  const rd = query.readUInt16BE(2) & dnsPacket.RECURSION_DESIRED;
  let questions: dnsPacket.Question[] = [];
  try {
    questions = (dnsPacket.decode(query).questions ?? []).slice(0, 1);
  } catch {
    // A question we cannot read is left out.
  }
  return dnsPacket.encode({
    type: "response",
    id,
    flags: rd | dnsPacket.RECURSION_AVAILABLE | rcode,
    questions,
  });
}

function askUDP(upstream: Upstream, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = dgram.createSocket(net.isIPv6(upstream.address) ? "udp6" : "udp4");
    const done = (err: Error | undefined, answer?: Buffer) => {
      clearTimeout(timer);
      socket.close();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => done(new Error("timed out")), timeoutMs);
    socket.on("error", (err) => done(err));
    // A connected socket takes datagrams from the upstream's address only.
    socket.on("message", (msg) => done(undefined, msg));
    socket.connect(upstream.port, upstream.address, () => socket.send(query));
  });
}

function askTCP(upstream: Upstream, query: Buffer, timeoutMs: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const socket = net.connect(upstream.port, upstream.address);
    let buffered = Buffer.alloc(0);
    const done = (err: Error | undefined, answer?: Buffer) => {
      clearTimeout(timer);
      socket.destroy();
      if (err) reject(err);
      else resolve(answer!);
    };
    const timer = setTimeout(() => done(new Error("timed out")), timeoutMs);
    socket.on("error", (err) => done(err));
    socket.on("connect", () => {
      const prefix = Buffer.alloc(2);
      prefix.writeUInt16BE(query.length, 0);
      socket.write(Buffer.concat([prefix, query]));
    });
    socket.on("data", (chunk: Buffer) => {
      buffered = Buffer.concat([buffered, chunk]);
      if (buffered.length >= 2 && buffered.length >= 2 + buffered.readUInt16BE(0)) {
        done(undefined, buffered.subarray(2, 2 + buffered.readUInt16BE(0)));
      }
    });
    socket.on("end", () => done(new Error("closed before answering")));
  });
}

/**
 * MOAT_DNS_UPSTREAM: resolvers separated by commas, each `address` or `address:port` (IPv6 as
 * `[address]:port`); port 53 when left out.
 */
export function parseUpstreams(spec: string, source = "MOAT_DNS_UPSTREAM"): Upstream[] {
  const out: Upstream[] = [];
  for (const item of spec.split(/[\s,]+/).filter(Boolean)) {
    const match =
      /^(?:\[([0-9a-fA-F:.]+)\]|([0-9.]+))(?::(\d{1,5}))?$/.exec(item) ?? /^([0-9a-fA-F:]+)()$/.exec(item);
    const address = match ? match[1] || match[2] || "" : "";
    const port = match?.[3] === undefined ? 53 : Number(match[3]);
    if (!match || net.isIP(address) === 0 || port < 1 || port > 65535) {
      throw new Error(
        `${source}: '${item}' is not a resolver address (write e.g. 10.0.0.2, 10.0.0.2:5353 or [fd00::53]:53)`,
      );
    }
    out.push({ address, port });
  }
  return out;
}

/** The host's resolvers from resolv.conf (at most three, as the C library reads them). */
export async function hostUpstreams(file = "/etc/resolv.conf"): Promise<Upstream[]> {
  const text = await readFile(file, "utf8").catch(() => "");
  const out: Upstream[] = [];
  for (const line of text.split("\n")) {
    const match = /^\s*nameserver\s+(\S+)/.exec(line);
    const address = match?.[1]?.replace(/%.*$/, "");
    if (address && net.isIP(address) !== 0) out.push({ address, port: 53 });
  }
  return out.slice(0, 3);
}
