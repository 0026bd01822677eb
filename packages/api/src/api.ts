/**
 * The API as a library: `openAPI` wires configuration, database, nodes and the HTTP app (tests
 * drive `app.request()` on it); `startAPI` also listens. Closing runs the closers in reverse
 * order of acquisition: stop listening (in-flight requests finish), stop the template builds this
 * process runs (recorded as interrupted), stop watching nodes, close the node connections, close
 * the database.
 */
import { randomUUID } from "node:crypto";
import type { AddressInfo } from "node:net";
import type { Transport } from "@connectrpc/connect";
import type { Logger, SandboxCatalog } from "@moat/shared";
import { createApp } from "./app.js";
import {
  type BootstrapResult,
  bootstrap,
  createAccessToken,
  createAPIKey,
  createTeam,
} from "./auth/teams.js";
import { type APIConfig, type APIOptions, ownsDatabase, parseConfig } from "./config.js";
import type { APIContext } from "./context.js";
import { type DB, openDatabase } from "./db/database.js";
import { listSandboxesInStates } from "./db/sandboxes.js";
import type { App } from "./http/env.js";
import { APIMetrics } from "./http/metrics.js";
import { createAPIServer } from "./http/node-server.js";
import { NodeRegistry } from "./nodes/registry.js";
import { NodeClient } from "./orchestrator/node-client.js";
import { BestOfKPlacement } from "./placement/placement.js";
import type { TeamLimitOverrides } from "./quotas/limits.js";
import { PAUSED_SWEEP_INTERVAL_MS, type SweepResult, sweepPausedSandboxes } from "./quotas/paused-sweep.js";
import { ABANDONED_AFTER_MS, APIInstance, sweepAbandonedCreates } from "./sandbox/abandoned-creates.js";
import { APICatalog, CATALOG_STATES } from "./sandbox/catalog.js";
import { RedisCatalogWriter } from "./sandbox/catalog-redis.js";
import { CreatesInFlight } from "./sandbox/creates-in-flight.js";
import { MemoryLocks, PostgresLocks } from "./sandbox/locks.js";
import { nodeProxyURL } from "./sandbox/nodes.js";
import { autoResume } from "./sandbox/resume.js";
import { SandboxTransitions } from "./sandbox/transitions.js";
import { sweepUnfinishedSnapshots } from "./snapshot/sweep.js";
import { TemplateBuilds } from "./template/build-runner.js";
import { TemplateFileStore } from "./template/file-store.js";
import { FileURLSigner } from "./template/file-urls.js";
import { removeUnusedFiles } from "./template/files.js";
import { VolumeTokens } from "./volume/tokens.js";

export interface API {
  readonly config: APIConfig;
  /** The HTTP application (Hono): `app.request(path, init)` serves a request in-process. */
  readonly app: App;
  /** The routing catalog for the client proxy. */
  readonly catalog: SandboxCatalog;
  readonly db: DB;
  /**
   * The default team, made with its first API key on the first start. `apiKey` is set only by the
   * call that created it; keep it then (it is stored only as a hash).
   */
  bootstrap(): Promise<BootstrapResult>;
  /** A new team, with its overrides of the default quotas. */
  createTeam(name: string, limits?: TeamLimitOverrides): Promise<{ teamID: string }>;
  /** A new API key for a team, answered once. */
  createAPIKey(teamID: string, name?: string): Promise<string>;
  /** A new access token (sk_e2b_…) for a team, answered once. */
  createAccessToken(teamID: string, name?: string): Promise<string>;
  /** Deletes paused sandboxes past their team's retention or paused-sandbox limit (every minute by itself). */
  sweepPausedSandboxes(): Promise<SweepResult>;
  /**
   * Reads the nodes table and the records once (the registry does it every second): new nodes,
   * status changes, unhealthy nodes' sandboxes recorded lost.
   */
  refreshNodes(): Promise<void>;
  /** Closes creates of API processes that stopped heartbeating (every 5 s by itself; PostgreSQL only). */
  sweepAbandonedCreates(): Promise<string[]>;
  /** Stops watching nodes and closes the node connections and the database. */
  close(): Promise<void>;
}

export interface RunningAPI extends API {
  readonly port: number;
  /** Base URL clients use, e.g. http://127.0.0.1:3000 (E2B_API_URL). */
  readonly url: string;
  /** Base URL of the signed template file URLs: `publicURL` when configured, else `url`. */
  readonly publicURL: string;
}

export interface OpenAPIOptions extends APIOptions {
  /** Watch the nodes' events and reconcile with them (default true; tests of the app alone turn it off). */
  watchNodes?: boolean;
  /** Collect Node process metrics into /metrics (default true for startAPI, false for openAPI). */
  processMetrics?: boolean;
  /** Tests: the transport to a registered node instead of its rpcURL (in-memory fakes). */
  nodeTransport?: (nodeID: string, rpcURL: string) => Transport | undefined;
}

/** Builds the API without listening. */
export async function openAPI(options: OpenAPIOptions): Promise<API> {
  return (await buildAPI(options)).api;
}

/** The API, and a way to tell it the base URL it is reachable at once it listens. */
async function buildAPI(options: OpenAPIOptions): Promise<{ api: API; setListenURL(url: string): void }> {
  const config = parseConfig(options);
  const logger = config.logger;
  const db = await openDatabase(config.database, logger);
  const nodes = new Map(config.orchestrators.map((o) => [o.id, new NodeClient(o)]));
  let publicURL = config.publicURL ?? listenURL(config.host, config.port);
  const placement = new BestOfKPlacement();
  const builds = new TemplateBuilds({
    db,
    nodes,
    placement,
    logger,
    ownsDatabase: ownsDatabase(config.database),
  });
  // The catalog resumes through the context it is part of (only ever called once it is built).
  const catalog = new APICatalog(db, {
    resume: (sandboxID) => autoResume(ctx, sandboxID),
    nodeProxyURL: (nodeID) => nodeProxyURL(nodes, nodeID),
  });
  const ctx: APIContext = {
    config,
    instanceID: randomUUID(),
    db,
    nodes,
    placement,
    catalog,
    logger,
    locks: config.database.kind === "postgres" ? new PostgresLocks(config.database.url) : new MemoryLocks(),
    transitions: new SandboxTransitions(),
    creates: new CreatesInFlight(),
    builds,
    templateFiles: new TemplateFileStore(config.dataDir, config.maxUploadBytes),
    fileURLs: new FileURLSigner(db, () => publicURL),
    volumeTokens: new VolumeTokens(db),
  };
  await ctx.templateFiles.makePrivate();
  // A fleet: proxies in other processes read the catalog from Redis, refilled from the database.
  const redisCatalog = config.redisURL
    ? new RedisCatalogWriter({
        redisURL: config.redisURL,
        logger,
        readAll: async () =>
          (await listSandboxesInStates(db, CATALOG_STATES)).map((row) =>
            catalog.redisRecord(row.sandbox_id, row),
          ),
      })
    : undefined;
  if (redisCatalog) {
    catalog.publishTo(redisCatalog);
    await redisCatalog.start();
  }
  // Builds an API process left unfinished are recorded as interrupted before any request.
  await builds.start();
  // So are snapshots (all of them when the database is this process's alone).
  const sweepSnapshots = (before?: Date) =>
    sweepUnfinishedSnapshots(ctx, before).catch((err: unknown) =>
      logger.warn({ err }, "could not sweep unfinished snapshots"),
    );
  await sweepSnapshots(ownsDatabase(config.database) ? new Date() : undefined);
  const metrics = new APIMetrics(db, { processMetrics: options.processMetrics ?? false });
  const app = createApp(ctx, metrics);
  // Every process on a shared database heartbeats, and closes creates of processes that stopped.
  const instance = ownsDatabase(config.database) ? undefined : new APIInstance(ctx);
  await instance?.start();
  const registry = new NodeRegistry(ctx, nodes, {
    watch: options.watchNodes !== false,
    transport: options.nodeTransport,
  });
  await registry.start();
  const fileSweep = setInterval(
    () =>
      void removeUnusedFiles(ctx).catch((err: unknown) =>
        logger.warn({ err }, "could not remove unused template files"),
      ),
    FILE_SWEEP_INTERVAL_MS,
  );
  fileSweep.unref();
  const pausedSweep = setInterval(() => {
    void sweepPausedSandboxes(ctx).catch((err: unknown) =>
      logger.warn({ err }, "could not sweep paused sandboxes"),
    );
    void sweepSnapshots();
  }, PAUSED_SWEEP_INTERVAL_MS);
  pausedSweep.unref();
  // "API listening" follows at once: this one is detail.
  logger.debug(
    { database: config.database.kind, nodes: [...nodes.keys()], watching: options.watchNodes !== false },
    "API ready",
  );

  let closing: Promise<void> | undefined;
  const api: API = {
    config,
    app,
    catalog,
    db,
    bootstrap: () => bootstrap(db),
    createTeam: (name, limits) => createTeam(db, name, limits),
    createAPIKey: (teamID, name) => createAPIKey(db, teamID, name),
    createAccessToken: (teamID, name) => createAccessToken(db, teamID, name),
    sweepPausedSandboxes: () => sweepPausedSandboxes(ctx),
    refreshNodes: () => registry.refresh(),
    sweepAbandonedCreates: () =>
      instance ? sweepAbandonedCreates(ctx, ABANDONED_AFTER_MS) : Promise.resolve([]),
    close() {
      closing ??= (async () => {
        await closeAll(logger, [
          ["template builds", () => builds.close()],
          ["template file sweep", () => clearInterval(fileSweep)],
          ["paused sandbox sweep", () => clearInterval(pausedSweep)],
          ["nodes (watchers and connections)", () => registry.close()],
          ["API heartbeat", () => instance?.stop()],
          ["sandbox locks", () => ctx.locks.close()],
          ["routing catalog in Redis", () => redisCatalog?.close()],
          ["database", () => db.destroy()],
        ]);
      })();
      return closing;
    },
  };
  return {
    api,
    setListenURL(url) {
      if (config.publicURL === undefined) publicURL = url;
    },
  };
}

/** http://<host>:<port>, with the wildcard addresses as loopback (what a local client can reach). */
function listenURL(host: string, port: number): string {
  const bracketed = host.includes(":") ? `[${host}]` : host;
  const reachable = bracketed === "0.0.0.0" || bracketed === "[::]" ? "127.0.0.1" : bracketed;
  return `http://${reachable}:${port}`;
}

/** How often uploaded template files are checked for removal (they are kept a week after use). */
const FILE_SWEEP_INTERVAL_MS = 3600_000;

/** How long close() lets in-flight requests finish before it cuts their connections. */
const DRAIN_MS = 5_000;

/**
 * Starts the API: opens the database (migrating it), connects to the orchestrators, starts
 * watching their events and listens on `host:port`.
 */
export async function startAPI(options: OpenAPIOptions): Promise<RunningAPI> {
  const { api, setListenURL } = await buildAPI({ processMetrics: true, ...options });
  const { config } = api;
  const server = createAPIServer(api.app.fetch);
  try {
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(config.port, config.host, () => {
        server.off("error", reject);
        resolve();
      });
    });
  } catch (err) {
    await api.close();
    throw err;
  }
  const { port } = server.address() as AddressInfo;
  const url = listenURL(config.host, port);
  setListenURL(url);
  const publicURL = config.publicURL ?? url;
  config.logger.info({ url, publicURL }, "API listening");

  let closing: Promise<void> | undefined;
  return {
    ...api,
    port,
    url,
    publicURL,
    close() {
      closing ??= (async () => {
        await closeAll(config.logger, [
          [
            "http server",
            async () => {
              const closed = new Promise<void>((resolve) => server.close(() => resolve()));
              if ("closeIdleConnections" in server) server.closeIdleConnections();
              const timer = setTimeout(() => {
                if ("closeAllConnections" in server) server.closeAllConnections();
              }, DRAIN_MS);
              await closed;
              clearTimeout(timer);
            },
          ],
          ["api", () => api.close()],
        ]);
      })();
      return closing;
    },
  };
}

/** Runs named closers in order; a failure is logged by name and the rest still run. */
async function closeAll(logger: Logger, closers: Array<[string, () => unknown]>): Promise<void> {
  for (const [name, close] of closers) {
    try {
      await close();
    } catch (err) {
      logger.error({ err, closer: name }, "close failed");
    }
  }
}
