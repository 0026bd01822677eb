/**
 * The node's registration with the API: with `apiURL` set, at start and every HEARTBEAT_MS it
 * sends PUT <apiURL>/internal/nodes/<nodeID> with the component secret as a bearer token and what
 * the API needs to place sandboxes here (where to reach the node and its proxy, version, runtime,
 * labels, capacity, load, the template builds it holds). The API marks a node unhealthy when the
 * heartbeats stop; an API that cannot be reached is logged once per change (failing, working
 * again), never fatal: the node runs on, and registers again once the API answers.
 */
import { type Logger, MAX_HEARTBEAT_BUILDS, type NodeHeartbeat } from "@moat/shared";
import type { LoadSampler, ManagerCounts } from "./load.js";

export const HEARTBEAT_MS = 2_000;
/** An API slower than this counts as not reached for this beat. */
const REQUEST_TIMEOUT_MS = 5_000;
/** The body of a heartbeat (the API's `PUT /internal/nodes/{nodeID}`). */
export type HeartbeatBody = NodeHeartbeat;

export interface HeartbeatOptions {
  apiURL: string;
  nodeID: string;
  token: string;
  rpcURL: string;
  proxyURL: string;
  version: string;
  runtime: string;
  labels: string[];
  sampler: LoadSampler;
  counts: () => ManagerCounts;
  builds: () => string[];
  logger: Logger;
  intervalMs?: number;
  fetch?: typeof fetch;
}

export class Heartbeat {
  private timer: NodeJS.Timeout | undefined;
  private inFlight: Promise<void> | undefined;
  /** What the last beat came to, so that only changes are logged. */
  private state: "unknown" | "ok" | "failing" = "unknown";
  private stopped = false;
  readonly url: string;

  constructor(private readonly options: HeartbeatOptions) {
    this.url = `${options.apiURL.replace(/\/+$/, "")}/internal/nodes/${encodeURIComponent(options.nodeID)}`;
  }

  /** Beats at once, then every interval. */
  start(): void {
    void this.beat();
    this.timer = setInterval(() => void this.beat(), this.options.intervalMs ?? HEARTBEAT_MS);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.inFlight;
  }

  /** One heartbeat (skipped while the previous one is still out); never throws. */
  beat(): Promise<void> {
    this.inFlight ??= this.send().finally(() => {
      this.inFlight = undefined;
    });
    return this.inFlight;
  }

  async body(): Promise<HeartbeatBody> {
    const o = this.options;
    const { capacity, load } = await o.sampler.sample(o.counts());
    return {
      rpcURL: o.rpcURL,
      proxyURL: o.proxyURL,
      version: o.version,
      runtime: o.runtime,
      labels: o.labels,
      capacity,
      load,
      builds: o.builds().slice(0, MAX_HEARTBEAT_BUILDS),
    };
  }

  private async send(): Promise<void> {
    if (this.stopped) return;
    const { logger } = this.options;
    try {
      const res = await (this.options.fetch ?? fetch)(this.url, {
        method: "PUT",
        headers: { authorization: `Bearer ${this.options.token}`, "content-type": "application/json" },
        body: JSON.stringify(await this.body()),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      if (!res.ok) {
        const text = await res.text().catch(() => "");
        throw new Error(`the API answered ${res.status}: ${text.slice(0, 300)}`);
      }
      await res.body?.cancel().catch(() => undefined);
      if (this.state !== "ok") {
        logger.info({ api: this.options.apiURL, nodeID: this.options.nodeID }, "registered with the API");
      }
      this.state = "ok";
    } catch (err) {
      if (this.state !== "failing" && !this.stopped) {
        logger.warn(
          { err, api: this.options.apiURL, nodeID: this.options.nodeID },
          "cannot reach the API to register; the node keeps running and retries every 2 s (check --api-url and MOAT_NODE_TOKEN)",
        );
      }
      this.state = "failing";
    }
  }
}

/**
 * Where others reach this node: `advertise` when given; else the listen address, or for a
 * wildcard listen address the first non-loopback IPv4 address of the host (loopback if none).
 */
export function advertisedAddress(
  host: string,
  advertise: string | undefined,
  interfaces: NodeJS.Dict<Array<{ address: string; family: string | number; internal: boolean }>>,
): string {
  if (advertise) return advertise;
  if (host !== "0.0.0.0" && host !== "::" && host !== "") return host;
  for (const list of Object.values(interfaces)) {
    for (const entry of list ?? []) {
      if (!entry.internal && (entry.family === "IPv4" || entry.family === 4)) return entry.address;
    }
  }
  return "127.0.0.1";
}

/** http://address:port, with an IPv6 address in brackets. */
export function httpURL(address: string, port: number): string {
  const host = address.includes(":") && !address.startsWith("[") ? `[${address}]` : address;
  return `http://${host}:${port}`;
}
