import { Command, Option } from "commander";
import { parseHTTPURL } from "../args/fleet.js";

interface NodeCommandOptions {
  apiUrl: string;
  adminToken?: string;
  json?: boolean;
}

interface NodeView {
  nodeID: string;
  status: string;
  static: boolean;
  rpcURL: string | null;
  labels: string[];
  capacity: { cpus: number; memoryMB: number } | null;
  load: { cpuPercent: number; sandboxes: number; starting: number } | null;
  sandboxCount: number;
  version: string | null;
  lastHeartbeat: string | null;
}

/** Where the command writes, and how it ends on an error (tests collect them). */
export interface CommandIO {
  out(text: string): void;
  err(text: string): void;
  exit(code: number): never;
}

const processIO: CommandIO = {
  out: (text) => process.stdout.write(text),
  err: (text) => process.stderr.write(text),
  exit: (code) => process.exit(code),
};

/**
 * `moat node list | drain <id> | ready <id>`: the API's admin routes for nodes (GET /nodes, POST
 * /nodes/{id}), with the admin token. A drained node takes no new sandboxes; those it has finish.
 */
export function nodeCommand(io: CommandIO = processIO): Command {
  const fail = (message: string): never => {
    io.err(`moat node: ${message}\n`);
    return io.exit(1);
  };
  const withAPI = (cmd: Command) =>
    cmd
      .addOption(
        new Option("--api-url <url>", "the API")
          .env("MOAT_API_URL")
          .default("http://127.0.0.1:3000")
          .argParser(parseHTTPURL),
      )
      .addOption(
        new Option("--admin-token <token>", "the API's admin token (prefer the environment variable)").env(
          "MOAT_ADMIN_TOKEN",
        ),
      );
  const node = new Command("node").description("list the API's nodes, drain one or make it ready again");
  node.addCommand(
    withAPI(new Command("list").description("the nodes, their status and load"))
      .option("--json", "print the API's answer as JSON")
      .action(async (opts: NodeCommandOptions) => {
        const nodes = (await call(opts, "GET", "/nodes", fail)) as NodeView[];
        if (opts.json) {
          io.out(`${JSON.stringify(nodes, null, 2)}\n`);
          return;
        }
        io.out(`${table(nodes)}\n`);
      }),
  );
  for (const [name, status, what] of [
    ["drain", "draining", "stop placing sandboxes on a node; its sandboxes run to their end"],
    ["ready", "ready", "let a drained node take sandboxes again"],
  ] as const) {
    node.addCommand(
      withAPI(
        new Command(name).description(what).argument("<nodeID>", "the node's id (moat node list)"),
      ).action(async (nodeID: string, opts: NodeCommandOptions) => {
        const view = (await call(opts, "POST", `/nodes/${encodeURIComponent(nodeID)}`, fail, {
          status,
        })) as NodeView;
        io.out(`node ${view.nodeID}: ${view.status} (${view.sandboxCount} sandboxes)\n`);
      }),
    );
  }
  return node;
}

async function call(
  opts: NodeCommandOptions,
  method: string,
  path: string,
  fail: (message: string) => never,
  body?: unknown,
): Promise<unknown> {
  if (!opts.adminToken) {
    fail("no admin token: set MOAT_ADMIN_TOKEN (or --admin-token) to the API's admin token");
  }
  let res: Response;
  try {
    res = await fetch(`${opts.apiUrl}${path}`, {
      method,
      headers: {
        "X-Admin-Token": opts.adminToken!,
        ...(body === undefined ? {} : { "Content-Type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: AbortSignal.timeout(15_000),
    });
  } catch (err) {
    fail(
      `cannot reach the API at ${opts.apiUrl} (${(err as Error).message}): check --api-url / MOAT_API_URL`,
    );
  }
  const text = await res.text();
  if (!res.ok) {
    let message = text;
    try {
      message = (JSON.parse(text) as { message?: string }).message ?? text;
    } catch {}
    if (res.status === 404 && path === "/nodes") {
      message = "the API has no admin routes: it was started without MOAT_ADMIN_TOKEN";
    }
    if (res.status === 401) message = `${message} (check MOAT_ADMIN_TOKEN / --admin-token)`;
    fail(`the API answered ${res.status}: ${message}`);
  }
  return JSON.parse(text);
}

function table(nodes: NodeView[]): string {
  const rows = [
    ["NODE", "STATUS", "SANDBOXES", "CPU", "CPUS", "MEMORY", "LABELS", "ADDRESS", "LAST HEARTBEAT"],
    ...nodes.map((n) => [
      n.nodeID,
      n.static ? `${n.status} (static)` : n.status,
      String(n.sandboxCount),
      n.load ? `${n.load.cpuPercent}%` : "-",
      n.capacity ? String(n.capacity.cpus) : "-",
      n.capacity ? `${Math.round(n.capacity.memoryMB / 1024)}G` : "-",
      n.labels.join(",") || "-",
      n.rpcURL ?? "-",
      n.lastHeartbeat ?? "-",
    ]),
  ];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows
    .map((r) =>
      r
        .map((cell, i) => cell.padEnd(widths[i]!))
        .join("  ")
        .trimEnd(),
    )
    .join("\n");
}
