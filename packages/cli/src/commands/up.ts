/**
 * `moat up`: the whole platform on one box. First run checks prerequisites and builds what is
 * missing (runsc, the base template, the code-interpreter template) with progress; then the orchestrator, the API and the client
 * proxy start in this process, a default team and API key exist, and the lines an E2B SDK
 * user needs are printed and written to <data-dir>/.env. Ctrl-C stops everything and kills the
 * sandboxes; teams, keys and templates stay for the next `moat up`.
 */
import { randomBytes } from "node:crypto";
import { realpathSync } from "node:fs";
import { readFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import { startAPI } from "@moat/api";
import { startClientProxy } from "@moat/client-proxy";
import {
  DEFAULT_DATA_DIR,
  type EgressAllowEntry,
  ensureBaseTemplate,
  ensureRunsc,
  LoadSampler,
  type Orchestrator,
  runDoctor,
  startOrchestrator,
  TemplateStore,
} from "@moat/orchestrator";
import { createLogger, type Logger, makeDataDirPrivate, writePrivateFile } from "@moat/shared";
import { startTelemetry, type Telemetry } from "@moat/shared/telemetry";
import { Command, Option } from "commander";
import { ARTIFACTS_HELP, artifactsOrExit } from "../args/artifacts.js";
import { parseCount } from "../args/count.js";
import { EGRESS_ALLOW_HELP, egressAllowOrExit, parseEgressAllowOption } from "../args/egress-allow.js";
import { metricsIntervalOption, metricsRetentionOption } from "../args/metrics.js";
import { parsePort } from "../args/port.js";
import { sandboxLogsOptions } from "../args/sandbox-logs.js";
import { UsageError } from "../console/errors.js";
import { StatusLine } from "../console/status-line.js";
import { unitArgs, upUnit } from "../console/systemd-unit.js";
import { startOrchestratorNodeProxy } from "../node-proxy.js";
import { DEFAULT_NODE_METRICS_PORT } from "./orchestrator.js";

interface UpOptions {
  dataDir: string;
  host: string;
  apiPort: number;
  proxyPort: number;
  orchestratorPort: number;
  orchestratorMetricsPort: number;
  nodeProxyPort?: number;
  domain: string;
  poolSize?: number;
  egressAllow?: EgressAllowEntry[];
  artifacts?: string;
  logsRetention?: number;
  logsMaxMb?: number;
  metricsInterval?: number;
  metricsRetention?: number;
  printSystemdUnit?: boolean;
}

export function upCommand(): Command {
  return new Command("up")
    .description("start moat on this machine: orchestrator, API and client proxy")
    .addOption(
      new Option("--data-dir <dir>", "where state, runtime, templates and sandboxes live")
        .env("MOAT_DATA_DIR")
        .default(DEFAULT_DATA_DIR),
    )
    .option("--host <host>", "address the API and proxy listen on", "127.0.0.1")
    .option("--api-port <port>", "API port (E2B_API_URL)", parsePort, 3000)
    .option("--proxy-port <port>", "client proxy port (E2B_SANDBOX_URL)", parsePort, 3002)
    .option("--orchestrator-port <port>", "orchestrator gRPC port (loopback only)", parsePort, 5008)
    .option(
      "--orchestrator-metrics-port <port>",
      "orchestrator's Prometheus GET /metrics port, on --host (with the metrics token)",
      parsePort,
      DEFAULT_NODE_METRICS_PORT,
    )
    .option(
      "--node-proxy-port <port>",
      "also serve the node proxy (loopback, node token): not needed on one box, the client proxy reaches sandboxes directly",
      parsePort,
    )
    .option("--domain <domain>", "domain of sandbox hosts: <port>-<sandboxID>.<domain>", "moat.local")
    .addOption(
      new Option("--pool-size <n>", "ready sandboxes kept per template for instant creates (default 2)")
        .env("MOAT_POOL_SIZE")
        .argParser(parseCount),
    )
    .addOption(
      new Option("--egress-allow <cidrs>", EGRESS_ALLOW_HELP)
        .env("MOAT_EGRESS_ALLOW")
        .argParser(parseEgressAllowOption),
    )
    .addOption(new Option("--artifacts <location>", ARTIFACTS_HELP).env("MOAT_ARTIFACTS"))
    .addOption(sandboxLogsOptions()[0]!)
    .addOption(sandboxLogsOptions()[1]!)
    .addOption(metricsIntervalOption())
    .addOption(metricsRetentionOption())
    .option(
      "--print-systemd-unit",
      "print a systemd unit running moat up with this data directory and these flags, and exit",
    )
    .action((opts: UpOptions) => up(opts));
}

async function up(opts: UpOptions): Promise<void> {
  opts.dataDir ||= DEFAULT_DATA_DIR;
  if (opts.printSystemdUnit) {
    const at = process.argv.indexOf("up", 2);
    process.stdout.write(
      upUnit({
        command: [process.execPath, realpathSync(process.argv[1]!)],
        dataDir: path.resolve(opts.dataDir),
        args: unitArgs(process.argv.slice(at + 1)),
      }),
    );
    return;
  }
  const logger = createLogger("moat");
  // The OTEL_* variables (docs/tracing.md); off unless set.
  const telemetry = startTelemetry({ serviceName: "moat", logger });
  const status = new StatusLine(process.stderr, "moat: ");
  const progress = (line: string) => status.line(line);
  if (process.getuid?.() !== 0) {
    throw new UsageError(
      "moat up must run as root (it creates network namespaces and runs gVisor). Try: sudo npx moat up",
    );
  }
  const egressAllow = egressAllowOrExit(opts.egressAllow);
  const artifacts = await artifactsOrExit(opts.artifacts);
  // Default: a quarter of this process's open-file limit.
  const maxConnections = envCount("MOAT_PROXY_MAX_CONNECTIONS");
  // Default: half of maxConnections; 0 behind a load balancer (every client has its address).
  const maxConnectionsPerClient = envCount("MOAT_PROXY_MAX_CONNECTIONS_PER_CLIENT");
  // Said now, not after minutes of setup.
  await portsFree([
    { flag: "--orchestrator-port", host: "127.0.0.1", port: opts.orchestratorPort },
    { flag: "--orchestrator-metrics-port", host: opts.host, port: opts.orchestratorMetricsPort },
    { flag: "--api-port", host: opts.host, port: opts.apiPort },
    { flag: "--proxy-port", host: opts.host, port: opts.proxyPort },
    { flag: "--node-proxy-port", host: "127.0.0.1", port: opts.nodeProxyPort },
  ]);
  // Tenant data lives there (tokens, env vars, memory images, the database): root only.
  await makeDataDirPrivate(opts.dataDir);

  const failing = (await runDoctor({ dataDir: opts.dataDir })).filter(
    (c) => !c.ok && !["runsc", "base-template"].includes(c.name),
  );
  for (const check of failing)
    progress(`prerequisite missing: ${check.name}: ${check.detail}${check.fix ? ` → ${check.fix}` : ""}`);
  if (failing.length > 0)
    throw new UsageError(
      `${failing.length} prerequisite(s) missing (above); \`moat doctor\` checks them again`,
    );

  progress("checking the gVisor runtime");
  const runsc = await ensureRunsc({ dataDir: opts.dataDir, logger, onProgress: (m) => status.transient(m) });
  progress(
    `runsc ${runsc.version} (${runsc.platform}, netns fix: ${runsc.netnsFix}, idle fix: ${runsc.idleFix})`,
  );
  progress("checking the base template (the first build takes about a minute)");
  const base = await ensureBaseTemplate({
    dataDir: opts.dataDir,
    logger,
    onProgress: (ev) => status.template(ev, `[${ev.phase}] `),
  });
  status.done();

  const envFile = path.join(opts.dataDir, ".env");
  const previous = parseEnv(await readFile(envFile, "utf8").catch(() => ""));
  // The operator's token for admin routes (POST /admin/teams), kept across restarts.
  const adminToken = previous.MOAT_ADMIN_TOKEN || randomBytes(24).toString("hex");
  // Prometheus scrapes the three /metrics with this token (the API also takes the admin token).
  const metricsToken = process.env.MOAT_METRICS_TOKEN || adminToken;
  const orchestrator = await startOrchestrator({
    dataDir: opts.dataDir,
    port: opts.orchestratorPort,
    host: "127.0.0.1",
    metricsPort: opts.orchestratorMetricsPort,
    metricsHost: opts.host,
    metricsToken,
    logger: createLogger("orchestrator"),
    runscBinary: runsc.path,
    platform: runsc.platform,
    templates: new TemplateStore(opts.dataDir, base.rootfs),
    poolSize: opts.poolSize,
    egressAllow,
    artifacts,
    logsRetentionHours: opts.logsRetention,
    logsMaxMB: opts.logsMaxMb,
    metricsIntervalSeconds: opts.metricsInterval,
    metricsRetentionHours: opts.metricsRetention,
  });
  // What started so far, stopped again when a later step fails (its sandboxes too).
  const started: Array<() => Promise<unknown>> = [
    () => orchestrator.close(),
    () => orchestrator.manager.killAll({ keepPaused: true }),
  ];
  try {
    await serve(opts, {
      logger,
      telemetry,
      progress,
      status,
      orchestrator,
      started,
      envFile,
      previous,
      adminToken,
      metricsToken,
      maxConnections,
      maxConnectionsPerClient,
    });
  } catch (err) {
    status.done();
    for (const stop of started.reverse()) await stop().catch(() => undefined);
    throw err;
  }
}

/** The API, the proxies and the code-interpreter template around a started orchestrator. */
async function serve(
  opts: UpOptions,
  ctx: {
    logger: Logger;
    telemetry: Telemetry;
    progress: (line: string) => void;
    status: StatusLine;
    orchestrator: Orchestrator;
    started: Array<() => Promise<unknown>>;
    envFile: string;
    previous: Record<string, string>;
    adminToken: string;
    metricsToken: string;
    maxConnections?: number;
    maxConnectionsPerClient?: number;
  },
): Promise<void> {
  const { logger, progress, status, orchestrator, envFile, previous, adminToken, metricsToken } = ctx;
  const nodeProxy =
    opts.nodeProxyPort === undefined
      ? undefined
      : await startOrchestratorNodeProxy(orchestrator, {
          host: "127.0.0.1",
          port: opts.nodeProxyPort,
          logger: createLogger("node-proxy"),
        });
  if (nodeProxy) ctx.started.push(() => nodeProxy.close());
  // The code-interpreter template (`@e2b/code-interpreter`'s default): built here on the first
  // start, a few minutes; a failure leaves the rest of moat up and creates of it failing.
  if (process.env.MOAT_CODE_INTERPRETER !== "off") {
    progress("checking the code-interpreter template (the first build takes a few minutes)");
    try {
      const ci = await orchestrator.ensureCodeInterpreter((m) => status.transient(`[code-interpreter] ${m}`));
      progress(`code-interpreter template ${ci.buildID} ${ci.reused ? "reused" : "built"}`);
    } catch (err) {
      progress(
        `building the code-interpreter template failed: ${err instanceof Error ? err.message : String(err)}; ` +
          "creates of code-interpreter-v1 fail until a later moat up or moat setup builds it",
      );
    }
  }
  const loadSampler = new LoadSampler();
  const api = await startAPI({
    dataDir: opts.dataDir,
    adminToken,
    port: opts.apiPort,
    host: opts.host,
    domain: opts.domain,
    orchestrators: [
      {
        id: "local",
        url: `http://127.0.0.1:${orchestrator.port}`,
        token: orchestrator.nodeToken,
        // moat status and GET /nodes show this node's load and warm pool (it sends no heartbeat).
        sampleLoad: () => loadSampler.sample(orchestrator.manager.loadCounts()),
      },
    ],
    logger: createLogger("api"),
  });
  ctx.started.push(() => api.close());
  const proxy = await startClientProxy({
    port: opts.proxyPort,
    host: opts.host,
    domain: opts.domain,
    catalog: api.catalog,
    logger: createLogger("client-proxy"),
    metricsToken,
    // The E2B CLI's links to https://<domain>/dashboard/… land on the API's dashboard.
    dashboardURL: `${api.publicURL}/dashboard`,
    maxConnections: ctx.maxConnections,
    maxConnectionsPerClient: ctx.maxConnectionsPerClient,
  });
  ctx.started.push(() => proxy.close());

  const team = await api.bootstrap();
  const apiKey = team.apiKey ?? previous.E2B_API_KEY;
  if (!apiKey) {
    progress(
      `the default team exists but its key is not in ${envFile}: create a team with POST /admin/teams`,
    );
  }
  const env = {
    E2B_API_KEY: apiKey ?? "",
    E2B_API_URL: api.url,
    E2B_SANDBOX_URL: `http://${opts.host}:${proxy.port}`,
    // The SDK's Volume sends its file requests there (E2B_API_URL is not used for them).
    E2B_VOLUME_API_URL: api.url,
    E2B_DOMAIN: opts.domain,
    MOAT_ADMIN_TOKEN: adminToken,
  };
  await writePrivateFile(
    envFile,
    `${Object.entries(env)
      .map(([k, v]) => `${k}=${v}`)
      .join("\n")}\n`,
  );
  process.stdout.write(
    `moat is up. Use it with the E2B SDK:\n\nexport E2B_API_KEY=${env.E2B_API_KEY}\nexport E2B_API_URL=${env.E2B_API_URL}\nexport E2B_SANDBOX_URL=${env.E2B_SANDBOX_URL}\nexport E2B_VOLUME_API_URL=${env.E2B_VOLUME_API_URL}\n\n(also written to ${envFile})\n` +
      `Prometheus: ${api.url}/metrics, ${env.E2B_SANDBOX_URL}/metrics and ` +
      `http://${opts.host}:${orchestrator.metricsPort}/metrics with Authorization: Bearer ` +
      `${process.env.MOAT_METRICS_TOKEN ? "$MOAT_METRICS_TOKEN" : `$MOAT_ADMIN_TOKEN (in ${envFile})`}\n`,
  );
  process.stdout.write(`Dashboard: ${api.publicURL}/dashboard (sign in with E2B_API_KEY)\n`);

  let stopping = false;
  const stop = async (signal: string) => {
    if (stopping) return;
    stopping = true;
    progress(`${signal}: stopping (killing running sandboxes; paused ones are kept for the next start)`);
    await proxy.close().catch((err: unknown) => logger.error({ err }, "proxy close"));
    await nodeProxy?.close();
    await api.close().catch((err: unknown) => logger.error({ err }, "api close"));
    await orchestrator.manager.killAll({ keepPaused: true });
    await orchestrator.close();
    await ctx.telemetry.shutdown();
    progress("stopped");
    process.exit(0);
  };
  process.once("SIGINT", () => void stop("SIGINT"));
  process.once("SIGTERM", () => void stop("SIGTERM"));
  // Its terminal closed (ssh dropped, window closed): stop as cleanly, not leave sandboxes behind.
  process.once("SIGHUP", () => void stop("SIGHUP"));
}

/** A whole-number setting from the environment; unset is undefined (the default applies). */
function envCount(name: string): number | undefined {
  const value = process.env[name];
  if (value === undefined || value === "") return undefined;
  try {
    return parseCount(value);
  } catch {
    throw new UsageError(`${name} must be a whole number ≥ 0, got '${value}'`);
  }
}

function parseEnv(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of text.split("\n")) {
    const eq = line.indexOf("=");
    if (eq > 0) out[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

/** Fails with the flag to change when one of these ports is taken (checked before the slow steps). */
async function portsFree(ports: Array<{ flag: string; host: string; port?: number }>): Promise<void> {
  for (const { flag, host, port } of ports) {
    if (!port) continue;
    const server = net.createServer();
    const problem = await new Promise<NodeJS.ErrnoException | undefined>((resolve) => {
      server.once("error", resolve);
      server.listen({ port, host, exclusive: true }, () => resolve(undefined));
    });
    await new Promise((resolve) => server.close(resolve));
    if (problem?.code === "EADDRINUSE") {
      throw new UsageError(
        `port ${port} on ${host} is in use (another moat up?): stop what listens there (ss -ltnp 'sport = :${port}') or choose another port with ${flag}`,
      );
    }
    if (problem) throw new UsageError(`cannot listen on ${host}:${port} (${flag}): ${problem.message}`);
  }
}
