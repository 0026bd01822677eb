/**
 * The routing catalog: what the client proxy needs to know to send traffic to a sandbox. The API
 * owns it (it knows every sandbox and its node); the proxy only reads it. In `moat up` both run in
 * one process and share one implementation; split across processes, the proxy reads it over HTTP.
 */
export interface CatalogEntry {
  sandboxID: string;
  /**
   * running: traffic flows; paused: resumable (auto-resume may apply); pausing and starting (a
   * create or resume): traffic waits for the outcome; stopping (a kill): 409.
   */
  state: "running" | "paused" | "pausing" | "starting" | "stopping";
  /** Where the sandbox's node reaches it, e.g. "10.11.0.7"; ports are the sandbox's own. */
  hostAddress: string;
  /** Required in X-Access-Token by envd (port 49983) when set. */
  envdAccessToken?: string;
  /** Required in e2b-traffic-access-token on non-envd ports when set. */
  trafficAccessToken?: string;
  /** Whether traffic to a paused sandbox may resume it. */
  autoResume: boolean;
  /** The node the sandbox runs on (a fleet; unset on a single box). */
  nodeID?: string;
  /**
   * Base URL of that node's proxy, e.g. "http://10.0.0.5:5007": a client proxy in a fleet forwards
   * there (with the node token) instead of to `hostAddress`, which only the node itself reaches.
   * Unset: the proxy reaches `hostAddress` directly (one box).
   */
  nodeProxyURL?: string;
}

export interface SandboxCatalog {
  lookup(sandboxID: string): Promise<CatalogEntry | undefined>;
  /** Resumes a paused sandbox for the proxy (auto-resume); undefined when it cannot. */
  resume?(sandboxID: string): Promise<CatalogEntry | undefined>;
  /**
   * The live sandbox whose envd access token `verifies` (a signed `/files` URL names no sandbox;
   * its signature covers one sandbox's token). Undefined when none does.
   */
  findByAccessToken?(verifies: (envdAccessToken: string) => boolean): Promise<CatalogEntry | undefined>;
}

/**
 * The routing catalog in Redis, for a fleet: the API processes write it on every state change, the
 * client proxies read it. `moat:sandbox:<id>` holds the JSON `CatalogEntry`, the hash `moat:tokens`
 * the envd access tokens of live secured sandboxes (sandbox id → token), and the channel
 * `moat:catalog` carries the id of each sandbox whose entry changed.
 */
export const REDIS_SANDBOX_KEY_PREFIX = "moat:sandbox:";
export const REDIS_TOKENS_KEY = "moat:tokens";
export const REDIS_CATALOG_CHANNEL = "moat:catalog";

const ENTRY_STATES = new Set<CatalogEntry["state"]>(["running", "paused", "pausing", "starting", "stopping"]);

/** A `CatalogEntry` read back from JSON; throws when the text is not one. */
export function parseCatalogEntry(text: string): CatalogEntry {
  const value = JSON.parse(text) as Partial<CatalogEntry> | null;
  if (
    typeof value !== "object" ||
    value === null ||
    typeof value.sandboxID !== "string" ||
    typeof value.hostAddress !== "string" ||
    typeof value.autoResume !== "boolean" ||
    !ENTRY_STATES.has(value.state as CatalogEntry["state"])
  ) {
    throw new Error("not a catalog entry");
  }
  return value as CatalogEntry;
}
