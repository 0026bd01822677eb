/**
 * The code-interpreter server on port 49999, speaking what E2B's `@e2b/code-interpreter` SDK
 * sends: `POST /execute` streaming NDJSON, `/contexts` (create, list, remove, restart) and
 * `/health`. Errors are `{code, message}` with the HTTP status as `code`. A client that goes away
 * mid-execution (its timeout, or a kill) interrupts the kernel.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { Contexts, KernelDiedError } from "./contexts.js";
import { CodeInterpreterError } from "./errors.js";
import type { OutputLine } from "./execute.js";
import { ENV_NAME } from "./languages.js";

export interface ServerOptions {
  port: number;
  host: string;
  /** The kernels' connection files and sockets, and the list of contexts. */
  runtimeDir: string;
  /** Where kernelspecs are looked for (default: where Jupyter looks). */
  kernelDirs?: string[];
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
/** A tick this late means the sandbox was checkpointed in between and restored. */
const RESTORE_JUMP_MS = 5_000;
/** Executions slower than this log where their time went (the code's own time included). */
const SLOW_EXECUTION_MS = 1_000;

export interface CodeInterpreterServer {
  port: number;
  close(): Promise<void>;
}

export async function startServer(options: ServerOptions): Promise<CodeInterpreterServer> {
  const contexts = new Contexts(options.supportDir, options.runtimeDir, options.kernelDirs);
  let ready = false;
  let closed = false;

  void (async () => {
    while (!closed) {
      try {
        await contexts.start();
        ready = true;
        options.log("ready: the default python context is up");
        return;
      } catch (err) {
        options.log(`starting the default context failed: ${(err as Error).message}`);
      }
      await new Promise((r) => setTimeout(r, 1_000));
    }
  })();

  // A kernel killed or crashed between executions is replaced (its state is gone), so the next
  // execution runs instead of failing.
  const watch = setInterval(() => {
    if (ready) void contexts.reviveDead(options.log);
  }, 2_000);
  watch.unref();

  // A restored sandbox (from the warm pool, a snapshot or a pause) takes its first execution
  // several times as long as later ones: memory paged back in, connections to the kernels
  // re-established. The clock jumping past a tick tells that the sandbox
  // was restored; a silent execution on each context then pays that before a client's code does.
  let tick = Date.now();
  const restored = setInterval(() => {
    const now = Date.now();
    const jumped = now - tick > RESTORE_JUMP_MS;
    tick = now;
    if (!jumped || !ready) return;
    const started = performance.now();
    void contexts
      .warm()
      .then(() => options.log(`restored: kernels warmed in ${Math.round(performance.now() - started)} ms`));
  }, 500);
  restored.unref();

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

  /** Requests wait (up to 30 s) for the default context of a starting server. */
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
    // Written once, as soon as the user's code is done (moat's own snippets after it run on).
    const finish = () => {
      if (finished) return;
      finished = true;
      clearInterval(keepalive);
      write({ type: "end_of_execution" });
      res.end();
    };
    const started = performance.now();
    const phases: string[] = [];
    const lap = (name: string) => phases.push(`${name} ${Math.round(performance.now() - started)} ms`);
    try {
      await context.exclusive(async () => {
        if (gone) return;
        running = true;
        lap("queued");
        // moat's snippets go to the kernel right before and after the user's code, without
        // waiting for their replies: the kernel runs its shell requests in order, so the code sees
        // them, and an execution costs one round trip to the kernel, not three.
        const snippets: Promise<void>[] = [];
        const snippet = (code: string, what: string) =>
          snippets.push(
            context.silent(code).catch((err: unknown) => {
              options.log(`${what} failed in kernel ${context.id}: ${(err as Error).message}`);
              if (err instanceof KernelDiedError) throw err;
            }),
          );
        const sandboxEnvs = context.envsLoaded
          ? undefined
          : await sandboxEnvVars(typeof token === "string" ? token : undefined);
        if (sandboxEnvs) {
          context.envsLoaded = true;
          if (Object.keys(sandboxEnvs).length > 0)
            snippet(context.language.setEnv(sandboxEnvs), "exporting the sandbox's env vars");
        }
        lap("envs");
        const scoped = Object.keys(envVars).length > 0;
        if (scoped) snippet(context.language.pushEnv(envVars), "setting the execution's env vars");
        const run = context.run(code, write, (c) => {
          control = c;
        });
        if (scoped) snippet(context.language.restoreEnv(), "restoring the env vars");
        try {
          const outcome = await run;
          lap("run");
          if (outcome.died) throw new KernelDiedError();
          if (outcome.lost) {
            write({
              type: "error",
              name: "UnexpectedEndOfExecution",
              value: outcome.lost,
              traceback: "",
            });
          }
          finish();
        } finally {
          // The next execution of this context starts after moat's snippets of this one.
          await Promise.allSettled(snippets);
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
      finish();
      if (performance.now() - started > SLOW_EXECUTION_MS)
        options.log(`slow execution in kernel ${context.id}: ${phases.join(", ")}`);
    }
  }

  /**
   * The sandbox's env vars (envd's /envs), exported into a context's kernel before its first
   * execution; undefined when envd could not say (the next execution asks again).
   */
  async function sandboxEnvVars(token: string | undefined): Promise<Record<string, string> | undefined> {
    try {
      const res = await getOnce(`${options.envdURL}/envs`, token ? { "x-access-token": token } : {});
      if (res.status !== 200) {
        options.log(`envd /envs answered ${res.status}`);
        return undefined;
      }
      const envs = JSON.parse(res.text) as Record<string, unknown>;
      return Object.fromEntries(
        Object.entries(envs).filter(
          (e): e is [string, string] => ENV_NAME.test(e[0]) && typeof e[1] === "string",
        ),
      );
    } catch (err) {
      options.log(`reading the sandbox's env vars from envd failed: ${(err as Error).message}`);
      return undefined;
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
        clearInterval(restored);
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
