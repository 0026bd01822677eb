/**
 * `moat status`: is moat up, and how is it doing: the API (and its database), the client proxy,
 * the nodes with their load and warm pool, sandboxes by state, teams and builds in flight. Needs
 * the admin token for all but the first lines; exits 1 when a component is down.
 */
import { Command, Option } from "commander";
import {
  type CommandIO,
  type ConnectionOptions,
  call,
  connect,
  processIO,
  requireAdminToken,
  run,
  withConnection,
} from "../admin/client.js";
import { age, safeJSON, table } from "../admin/output.js";
import { parseHTTPURL } from "../args/fleet.js";

interface NodeView {
  nodeID: string;
  status: string;
  static: boolean;
  capacity: { cpus: number; memoryMB: number } | null;
  load: {
    cpuPercent: number;
    memoryUsedMB: number;
    sandboxes: number;
    starting: number;
    poolReady: number;
  } | null;
  sandboxCount: number;
  lastHeartbeat: string | null;
}

interface AdminStatus {
  teams: number;
  sandboxes: Record<string, number>;
  buildsInFlight: number;
}

interface StatusOptions extends ConnectionOptions {
  proxyUrl?: string;
}

export interface Status {
  api: { url: string; up: boolean; error?: string };
  proxy?: { url: string; up: boolean; error?: string };
  nodes?: NodeView[];
  overview?: AdminStatus;
}

async function probe(url: string): Promise<{ up: boolean; error?: string }> {
  try {
    const res = await fetch(url, { signal: AbortSignal.timeout(5_000) });
    await res.body?.cancel();
    return res.ok ? { up: true } : { up: false, error: `answered ${res.status}` };
  } catch (err) {
    const cause = (err as Error).cause;
    return { up: false, error: cause instanceof Error ? cause.message : (err as Error).message };
  }
}

export function statusCommand(io: CommandIO = processIO): Command {
  return withConnection(
    new Command("status").description("components, nodes, warm pool and sandboxes of a moat"),
    {
      adminToken: true,
    },
  )
    .addOption(
      new Option("--proxy-url <url>", "the client proxy (default: moat up's)")
        .env("E2B_SANDBOX_URL")
        .argParser(parseHTTPURL),
    )
    .action((o: StatusOptions) =>
      run(io, "status", async () => {
        const conn = await connect(o);
        const status: Status = { api: { url: conn.apiURL, ...(await probe(`${conn.apiURL}/health`)) } };
        const proxyURL = o.proxyUrl ?? conn.proxyURL;
        if (proxyURL) status.proxy = { url: proxyURL, ...(await probe(`${proxyURL}/health`)) };
        if (status.api.up) {
          const auth = { adminToken: requireAdminToken(conn) };
          [status.nodes, status.overview] = await Promise.all([
            call<NodeView[]>(conn, "/nodes", { auth }),
            call<AdminStatus>(conn, "/admin/status", { auth }),
          ]);
        }
        if (o.json) io.out(`${safeJSON(status)}\n`);
        else io.out(formatStatus(status));
        if (!status.api.up || status.proxy?.up === false) io.exit(1);
      }),
    );
}

export function formatStatus(s: Status): string {
  const lines: string[] = [];
  const component = (name: string, c: { url: string; up: boolean; error?: string }) => [
    name,
    c.url,
    c.up ? "up" : `DOWN (${c.error ?? "no answer"})`,
  ];
  const components = [component("api", s.api)];
  if (s.proxy) components.push(component("proxy", s.proxy));
  lines.push(table(["COMPONENT", "URL", "STATUS"], components), "");
  if (s.nodes) {
    const pool = s.nodes.reduce((n, node) => n + (node.load?.poolReady ?? 0), 0);
    lines.push(
      table(
        ["NODE", "STATUS", "SANDBOXES", "STARTING", "POOL", "CPU", "MEMORY", "HEARTBEAT"],
        s.nodes.map((n) => [
          n.nodeID,
          n.status,
          String(n.sandboxCount),
          n.load ? String(n.load.starting) : "-",
          n.load ? String(n.load.poolReady) : "-",
          n.load ? `${n.load.cpuPercent}%` : "-",
          n.load && n.capacity
            ? `${(n.load.memoryUsedMB / 1024).toFixed(1)}/${(n.capacity.memoryMB / 1024).toFixed(1)}G`
            : "-",
          n.static ? "in process" : age(n.lastHeartbeat),
        ]),
      ),
      "",
      `warm pool: ${pool} ready`,
    );
  }
  if (s.overview) {
    const states = Object.entries(s.overview.sandboxes)
      .filter(([, n]) => n > 0)
      .map(([state, n]) => `${n} ${state}`);
    lines.push(
      `sandboxes: ${states.length > 0 ? states.join(", ") : "none"}`,
      `teams: ${s.overview.teams}`,
      `template builds in flight: ${s.overview.buildsInFlight}`,
    );
  }
  return `${lines.join("\n")}\n`;
}
