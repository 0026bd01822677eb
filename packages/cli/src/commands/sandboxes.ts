/**
 * `moat sandboxes list | kill <id…> | logs <id> [--follow]`: a team's sandboxes, as the team of
 * the API key (E2B_API_KEY; on moat up's box, its default team's key from its .env). Logs come
 * from GET /v2/sandboxes/{id}/logs (or the v1 route on an API without it); `--follow` polls
 * every second from the last entry on. Whatever a sandbox wrote is printed with its control
 * characters escaped.
 */
import { Command, InvalidArgumentError, Option } from "commander";
import {
  APIError,
  type CommandIO,
  type Connection,
  type ConnectionOptions,
  call,
  connect,
  processIO,
  requireAPIKey,
  run,
  withConnection,
} from "../admin/client.js";
import { age, safeJSON, safeText, table } from "../admin/output.js";

interface ListedSandbox {
  sandboxID: string;
  templateID: string;
  alias?: string;
  state: string;
  startedAt: string;
  endAt: string;
  cpuCount: number;
  memoryMB: number;
  metadata?: Record<string, string>;
}

export interface LogEntry {
  timestamp: string;
  level: string;
  message: string;
  fields?: Record<string, string>;
}

interface ListOptions extends ConnectionOptions {
  state: string[];
  metadata?: string[];
}

interface LogsOptions extends ConnectionOptions {
  follow?: boolean;
  level?: string;
  search?: string;
  limit?: number;
  interval: number;
}

const LEVELS = ["debug", "info", "warn", "error"];

function parseLimit(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1 || n > 1000)
    throw new InvalidArgumentError("expected a whole number 1-1000");
  return n;
}

function parseInterval(value: string): number {
  const n = Number(value);
  if (!Number.isFinite(n) || n < 0.1 || n > 60) throw new InvalidArgumentError("expected seconds, 0.1-60");
  return n;
}

function parseMetadata(value: string, previous: string[] = []): string[] {
  if (!/^[^=]+=/.test(value)) throw new InvalidArgumentError("expected key=value");
  return [...previous, value];
}

export function sandboxesCommand(io: CommandIO = processIO): Command {
  const sandboxes = new Command("sandboxes").description(
    "list, kill and read the logs of a team's sandboxes",
  );

  sandboxes.addCommand(
    withConnection(new Command("list").description("the team's running and paused sandboxes"), {
      apiKey: true,
    })
      .addOption(
        new Option("--state <states...>", "running and/or paused")
          .choices(["running", "paused"])
          .default(["running", "paused"]),
      )
      .option("--metadata <key=value>", "only sandboxes with this metadata (repeatable)", parseMetadata)
      .action((o: ListOptions) =>
        run(io, "sandboxes list", async () => {
          const conn = await connect(o);
          const auth = { apiKey: requireAPIKey(conn) };
          const all: ListedSandbox[] = [];
          let next: string | undefined;
          do {
            const query = new URLSearchParams({ limit: "100" });
            for (const state of o.state) query.append("state", state);
            for (const pair of o.metadata ?? []) query.append("metadata", pair);
            if (next) query.set("nextToken", next);
            next = undefined;
            const page = await call<ListedSandbox[]>(conn, `/v2/sandboxes?${query}`, {
              auth,
              onHeaders: (h) => {
                next = h.get("x-next-token") ?? undefined;
              },
            });
            all.push(...page);
          } while (next);
          if (o.json) return io.out(`${safeJSON(all)}\n`);
          io.out(
            `${table(
              ["ID", "TEMPLATE", "STATE", "CPU", "MEMORY", "STARTED", "ENDS", "METADATA"],
              all.map((s) => [
                s.sandboxID,
                s.alias ?? s.templateID,
                s.state,
                String(s.cpuCount),
                `${s.memoryMB}M`,
                age(s.startedAt),
                age(s.endAt),
                Object.entries(s.metadata ?? {})
                  .map(([k, v]) => `${k}=${v}`)
                  .join(",") || "-",
              ]),
            )}\n`,
          );
        }),
      ),
  );

  sandboxes.addCommand(
    withConnection(
      new Command("kill")
        .description("kill sandboxes, running or paused")
        .argument("<sandboxIDs...>", "their ids"),
      { apiKey: true },
    ).action((ids: string[], o: ConnectionOptions) =>
      run(io, "sandboxes kill", async () => {
        const conn = await connect(o);
        const auth = { apiKey: requireAPIKey(conn) };
        const results: Array<{ sandboxID: string; killed: boolean; error?: string }> = [];
        for (const id of ids) {
          try {
            await call(conn, `/sandboxes/${encodeURIComponent(id)}`, { method: "DELETE", auth });
            results.push({ sandboxID: id, killed: true });
          } catch (err) {
            results.push({ sandboxID: id, killed: false, error: (err as Error).message });
          }
        }
        if (o.json) io.out(`${safeJSON(results)}\n`);
        else {
          for (const r of results) {
            if (r.killed) io.out(`sandbox ${safeText(r.sandboxID)} killed\n`);
            else io.err(`moat sandboxes kill: ${safeText(r.sandboxID)}: ${safeText(r.error ?? "")}\n`);
          }
        }
        if (results.some((r) => !r.killed)) io.exit(1);
      }),
    ),
  );

  sandboxes.addCommand(
    withConnection(
      new Command("logs")
        .description("a sandbox's log: its start command's output, envd's lines, its lifecycle")
        .argument("<sandboxID>", "the sandbox (also one that ended)"),
      { apiKey: true },
    )
      .option("-f, --follow", "keep printing new entries (Ctrl-C stops)")
      .addOption(new Option("--level <level>", "the lowest level shown").choices(LEVELS))
      .option("--search <text>", "only entries whose message holds this text")
      .option("--limit <n>", "at most this many entries (without --follow; 1-1000)", parseLimit)
      .addOption(
        new Option("--interval <seconds>", "how often --follow asks")
          .argParser(parseInterval)
          .default(1)
          .hideHelp(),
      )
      .action((sandboxID: string, o: LogsOptions) =>
        run(io, "sandboxes logs", async () => {
          const conn = await connect(o);
          const auth = { apiKey: requireAPIKey(conn) };
          const print = (entries: LogEntry[]) => {
            for (const e of entries) {
              io.out(o.json ? `${safeJSON(e).replace(/\n\s*/g, "")}\n` : `${formatEntry(e)}\n`);
            }
          };
          const page = (cursor: number | undefined) =>
            fetchLogs(conn, auth, sandboxID, { cursor, level: o.level, search: o.search, limit: o.limit });
          const first = await page(undefined);
          print(first);
          if (!o.follow) return;
          const tail = new LogTail(first);
          while (await io.sleep(o.interval * 1000)) print(tail.fresh(await page(tail.cursor)));
        }),
      ),
  );
  return sandboxes;
}

/** One entry as a line: time, level, source, message (escaped). */
export function formatEntry(e: LogEntry): string {
  const source = e.fields?.source ?? e.fields?.logger ?? "";
  return `${e.timestamp} ${e.level.toUpperCase().padEnd(5)} ${safeText(source ? `[${source}] ` : "")}${safeText(e.message)}`;
}

/**
 * Follows a log by its timestamps: the next page starts at the last entry's millisecond
 * (inclusive), so entries seen at that millisecond are left out the second time.
 */
export class LogTail {
  cursor: number | undefined;
  private seen = new Set<string>();

  constructor(initial: LogEntry[]) {
    this.fresh(initial);
  }

  /** The entries not printed yet; moves the cursor to the newest. */
  fresh(entries: LogEntry[]): LogEntry[] {
    const out: LogEntry[] = [];
    for (const e of entries) {
      const ms = Date.parse(e.timestamp);
      if (!Number.isFinite(ms)) continue;
      const key = `${e.timestamp}\u0000${e.level}\u0000${e.fields?.source ?? ""}\u0000${e.message}`;
      if (this.cursor !== undefined && ms < this.cursor) continue;
      if (this.seen.has(key)) continue;
      if (this.cursor === undefined || ms > this.cursor) {
        this.cursor = ms;
        this.seen = new Set();
      }
      this.seen.add(key);
      out.push(e);
    }
    return out;
  }
}

async function fetchLogs(
  conn: Connection,
  auth: { apiKey: string },
  sandboxID: string,
  q: { cursor?: number; level?: string; search?: string; limit?: number },
): Promise<LogEntry[]> {
  const id = encodeURIComponent(sandboxID);
  const query = new URLSearchParams({ direction: "forward", limit: String(q.limit ?? 1000) });
  if (q.cursor !== undefined) query.set("cursor", String(q.cursor));
  if (q.level) query.set("level", q.level);
  if (q.search) query.set("search", q.search);
  try {
    return (await call<{ logs: LogEntry[] }>(conn, `/v2/sandboxes/${id}/logs?${query}`, { auth })).logs;
  } catch (err) {
    // An API without the v2 route: the v1 route's entries, filtered here.
    if (!(err instanceof APIError && err.status === 404 && /no route for/.test(err.message))) throw err;
    const v1 = new URLSearchParams({ limit: String(q.limit ?? 1000) });
    if (q.cursor !== undefined) v1.set("start", String(q.cursor));
    const { logEntries } = await call<{ logEntries: LogEntry[] }>(conn, `/sandboxes/${id}/logs?${v1}`, {
      auth,
    });
    const min = LEVELS.indexOf(q.level ?? "debug");
    return logEntries.filter(
      (e) => LEVELS.indexOf(e.level) >= min && (q.search === undefined || e.message.includes(q.search)),
    );
  }
}
