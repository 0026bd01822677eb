/**
 * The code-interpreter server on port 49999, speaking what E2B's `@e2b/code-interpreter` SDK
 * sends: `POST /execute` streaming NDJSON, `/contexts` (create, list, remove, restart) and
 * `/health`. Errors are `{code, message}` with the HTTP status as `code`. A client that goes away
 * mid-execution (its timeout, or a kill) interrupts the kernel.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { type Context, Contexts, KernelDiedError } from "./contexts.js";
import { CodeInterpreterError } from "./errors.js";
import type { OutputLine } from "./execute.js";
import { Jupyter } from "./jupyter.js";
import { ENV_NAME } from "./languages.js";

export interface ServerOptions {
  port: number;
  host: string;
  /** The Jupyter server's unix socket. */
  jupyterSocket: string;
  envdURL: string;
  /** moat's kernel-side files (moat_display.py). */
  supportDir: string;
  log(message: string): void;
}

/** Request bodies past this are refused (413). */
const MAX_BODY_BYTES = 16 * 2 ** 20;
/** A response buffer past this pauses the kernel's messages until the client reads. */
const HIGH_WATER = 4 * 2 ** 20;
const KEEPALIVE_MS = 5_000;

export interface CodeInterpreterServer {
  port: number;
  close(): Promise<void>;
}

export async function startServer(options: ServerOptions): Promise<CodeInterpreterServer> {
  const jupyter = new Jupyter(options.jupyterSocket);
  const contexts = new Contexts(jupyter, options.supportDir);
  let ready = false;
  let closed = false;

  void (async () => {
    // The Jupyter server may still be starting (or restarting under the supervisor).
    while (!closed) {
      if (await jupyter.ready()) {
        try {
          await contexts.start();
          ready = true;
          options.log("ready: the default python context is up");
          return;
        } catch (err) {
          options.log(`starting the default context failed: ${(err as Error).message}`);
        }
      }
      await new Promise((r) => setTimeout(r, 250));
    }
  })();

  // The Jupyter server restarted (the supervisor brings it back): its kernels are gone.
  const watch = setInterval(async () => {
    if (!ready) return;
    try {
      const sessions = await jupyter.sessions();
      const alive = new Set(sessions.map((s) => s.kernel.id));
      if (contexts.list().some((c) => !alive.has(c.id))) {
        options.log("kernels disappeared (the Jupyter server restarted): making the default contexts again");
        ready = false;
        contexts.reset();
        await contexts.start();
        ready = true;
      }
    } catch {
      // Down for now; the next round looks again.
    }
  }, 2_000);
  watch.unref();

  const server = http.createServer((req, res) => {
    // Closed after each response, for the same reason as getOnce.
    res.shouldKeepAlive = false;
    route(req, res).catch((err: unknown) => fail(res, err, options));
  });

  async function route(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const url = new URL(req.url ?? "/", "http://localhost");
    const parts = url.pathname.split("/").filter(Boolean);
    const method = req.method ?? "GET";
    if (parts.length === 1 && parts[0] === "health") {
      allow(method, ["GET", "HEAD"]);
      if (!ready) throw new CodeInterpreterError(503, "the code interpreter is starting");
      return send(res, 200, "OK");
    }
    if (parts.length === 1 && parts[0] === "execute") {
      allow(method, ["POST"]);
      return executeRoute(req, res);
    }
    if (parts[0] === "contexts") {
      if (parts.length === 1 && method === "GET") {
        await whenReady();
        return send(res, 200, contexts.list());
      }
      if (parts.length === 1) {
        allow(method, ["GET", "POST"]);
        const body = object(await readBody(req));
        const language = optionalString(body, "language");
        const cwd = optionalString(body, "cwd");
        await whenReady();
        const context = await contexts.create(language, cwd);
        return send(res, 200, context.info());
      }
      const id = decodeURIComponent(parts[1]!);
      if (parts.length === 2) {
        allow(method, ["DELETE"]);
        await whenReady();
        await contexts.remove(id);
        return send(res, 200, null);
      }
      if (parts.length === 3 && parts[2] === "restart") {
        allow(method, ["POST"]);
        await whenReady();
        await contexts.restart(id);
        return send(res, 200, null);
      }
    }
    throw new CodeInterpreterError(404, `no route ${method} ${url.pathname}`);
  }

  /** Requests wait (up to 30 s) for a starting or restarting Jupyter server. */
  async function whenReady(): Promise<void> {
    const deadline = Date.now() + 30_000;
    while (!ready && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
    if (!ready) throw new CodeInterpreterError(503, "the code interpreter is not ready yet; retry");
  }

  async function executeRoute(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const body = object(await readBody(req));
    if (typeof body.code !== "string") throw new CodeInterpreterError(400, "'code' must be a string");
    const code = body.code;
    const contextID = optionalString(body, "context_id");
    const language = optionalString(body, "language");
    if (contextID && language)
      throw new CodeInterpreterError(400, "give 'context_id' or 'language', not both");
    const envVars = envVarsOf(body.env_vars);
    await whenReady();
    const context = contextID ? contexts.get(contextID) : await contexts.defaultFor(language ?? "python");
    const token = req.headers["x-access-token"];

    res.writeHead(200, { "content-type": "application/x-ndjson", "cache-control": "no-store" });
    res.flushHeaders();
    let finished = false;
    let gone = false;
    // Only this request's own code is interrupted, never an earlier one it queued behind.
    let running = false;
    // The kernel's messages wait while the client reads slower than the code writes.
    let control: { pause(): void; resume(): void } | undefined;
    let paused = false;
    const write = (line: OutputLine | { type: string }) => {
      if (gone) return;
      res.write(`${JSON.stringify(line)}\n`);
      if (control && !paused && res.writableLength > HIGH_WATER) {
        paused = true;
        control.pause();
        res.once("drain", () => {
          paused = false;
          control?.resume();
        });
      }
    };
    const keepalive = setInterval(() => write({ type: "keepalive" }), KEEPALIVE_MS);
    res.on("close", () => {
      gone = true;
      control?.resume();
      if (running && !finished) {
        // The client timed out or went away: stop the code it no longer waits for.
        options.log(`client left mid-execution: interrupting kernel ${context.id}`);
        contexts.interrupt(context).catch(() => undefined);
      }
    });
    try {
      await context.exclusive(async () => {
        if (gone) return;
        running = true;
        await prepare(context, typeof token === "string" ? token : undefined);
        if (Object.keys(envVars).length > 0) await context.silent(context.language.pushEnv(envVars));
        try {
          const outcome = await context.run(code, write, (c) => {
            control = c;
          });
          if (outcome.died) throw new KernelDiedError();
          if (outcome.lost) {
            write({
              type: "error",
              name: "UnexpectedEndOfExecution",
              value: outcome.lost,
              traceback: "",
            });
          }
        } finally {
          if (Object.keys(envVars).length > 0)
            await context.silent(context.language.restoreEnv()).catch(() => undefined);
          running = false;
        }
      });
    } catch (err) {
      const message = err instanceof Error ? err.message : String(err);
      if (err instanceof KernelDiedError) {
        write({ type: "error", name: "KernelDied", value: message, traceback: "" });
        options.log(`kernel ${context.id} died: restarting it`);
        await context
          .exclusive(() => contexts.restart(context.id))
          .catch((e: unknown) =>
            options.log(`restarting kernel ${context.id} failed: ${(e as Error).message}`),
          );
      } else {
        write({ type: "error", name: "ExecutionError", value: message, traceback: "" });
      }
    } finally {
      finished = true;
      clearInterval(keepalive);
      write({ type: "end_of_execution" });
      res.end();
    }
  }

  /** A context's first execution: the sandbox's env vars (from envd) exported into its kernel. */
  async function prepare(context: Context, token: string | undefined): Promise<void> {
    if (context.envsLoaded) return;
    try {
      const res = await getOnce(`${options.envdURL}/envs`, token ? { "x-access-token": token } : {});
      if (res.status === 200) {
        const envs = JSON.parse(res.text) as Record<string, unknown>;
        const vars = Object.fromEntries(
          Object.entries(envs).filter(
            (e): e is [string, string] => ENV_NAME.test(e[0]) && typeof e[1] === "string",
          ),
        );
        if (Object.keys(vars).length > 0) await context.silent(context.language.setEnv(vars));
        context.envsLoaded = true;
      } else {
        options.log(`envd /envs answered ${res.status}`);
      }
    } catch (err) {
      options.log(`reading the sandbox's env vars from envd failed: ${(err as Error).message}`);
    }
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port, options.host, () => {
      server.off("error", reject);
      resolve();
    });
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () =>
      new Promise<void>((resolve) => {
        closed = true;
        clearInterval(watch);
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}

/**
 * A GET on a connection of its own, closed after it: no TCP connection of this server outlives
 * its request, since one open when gVisor checkpoints the sandbox is cut, and cut ones can leave
 * the restored network stack unusable.
 */
function getOnce(url: string, headers: Record<string, string>): Promise<{ status: number; text: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get(url, { headers, agent: false, timeout: 5_000 }, (res) => {
      let text = "";
      res.setEncoding("utf8");
      res.on("data", (chunk: string) => {
        text += chunk;
      });
      res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
      res.on("error", reject);
    });
    req.on("timeout", () => req.destroy(new Error("no answer within 5 s")));
    req.on("error", reject);
  });
}

function allow(method: string, methods: string[]): void {
  if (!methods.includes(method))
    throw new CodeInterpreterError(405, `method ${method} not allowed here (allowed: ${methods.join(", ")})`);
}

function send(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { "content-type": "application/json", "content-length": Buffer.byteLength(text) });
  res.end(text);
}

function fail(res: http.ServerResponse, err: unknown, options: ServerOptions): void {
  const known = err instanceof CodeInterpreterError;
  const status = known ? err.status : 500;
  const message = known ? err.message : `internal error: ${(err as Error)?.message ?? String(err)}`;
  if (!known) options.log(`request failed: ${(err as Error)?.stack ?? String(err)}`);
  if (res.headersSent) {
    res.end();
    return;
  }
  send(res, status, { code: status, message });
}

async function readBody(req: http.IncomingMessage): Promise<unknown> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    size += (chunk as Buffer).length;
    if (size > MAX_BODY_BYTES)
      throw new CodeInterpreterError(413, `the request body is over ${MAX_BODY_BYTES / 2 ** 20} MiB`);
    chunks.push(chunk as Buffer);
  }
  const text = Buffer.concat(chunks).toString("utf8");
  if (!text.trim()) return {};
  try {
    return JSON.parse(text);
  } catch {
    throw new CodeInterpreterError(400, "the request body is not valid JSON");
  }
}

function object(value: unknown): Record<string, unknown> {
  if (typeof value !== "object" || value === null || Array.isArray(value))
    throw new CodeInterpreterError(400, "the request body must be a JSON object");
  return value as Record<string, unknown>;
}

function optionalString(body: Record<string, unknown>, key: string): string | undefined {
  const value = body[key];
  if (value === undefined || value === null || value === "") return undefined;
  if (typeof value !== "string") throw new CodeInterpreterError(400, `'${key}' must be a string`);
  return value;
}

function envVarsOf(value: unknown): Record<string, string> {
  if (value === undefined || value === null) return {};
  const vars = object(value);
  for (const [name, v] of Object.entries(vars)) {
    if (!ENV_NAME.test(name)) throw new CodeInterpreterError(400, `'${name}' is not a valid env var name`);
    if (typeof v !== "string") throw new CodeInterpreterError(400, `env var '${name}' must be a string`);
  }
  return vars as Record<string, string>;
}
