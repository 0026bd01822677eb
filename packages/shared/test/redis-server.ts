/**
 * A real Redis for a test file: Debian's `redis-server` on 127.0.0.1 at a free port, in a temp
 * directory, persisting nothing. CI installs redis-server (.ci/run), so a missing binary fails
 * the test with a message instead of skipping it.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";

export interface TestRedis {
  readonly port: number;
  readonly url: string;
  /** Stops the server (its data is gone); `start` brings a fresh one up on the same port. */
  stop(): Promise<void>;
  start(): Promise<void>;
  /** Stops it for good and removes its directory. */
  close(): Promise<void>;
}

async function freePort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

async function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, "127.0.0.1");
    socket.once("connect", () => {
      socket.write("PING\r\n");
      socket.once("data", (data) => {
        socket.destroy();
        resolve(data.toString().startsWith("+PONG"));
      });
    });
    socket.once("error", () => resolve(false));
  });
}

export async function startRedis(): Promise<TestRedis> {
  const dir = await mkdtemp(path.join(tmpdir(), "moat-test-redis-"));
  const port = await freePort();
  let child: ChildProcess | undefined;
  let output = "";
  const start = async () => {
    const args = [
      "--port",
      String(port),
      "--bind",
      "127.0.0.1",
      "--dir",
      dir,
      "--save",
      "",
      "--appendonly",
      "no",
    ];
    const launched = spawn("redis-server", args, { stdio: ["ignore", "pipe", "pipe"] });
    child = launched;
    launched.stdout?.on("data", (chunk: Buffer) => {
      output += chunk.toString();
    });
    const failed = new Promise<never>((_, reject) =>
      launched.once("error", (err) =>
        reject(
          new Error(
            `redis-server could not start (${err.message}): install Debian's redis-server (apt-get install redis-server)`,
          ),
        ),
      ),
    );
    const deadline = Date.now() + 10_000;
    for (;;) {
      if (await Promise.race([answers(port), failed])) return;
      if (launched.exitCode !== null || Date.now() > deadline) {
        throw new Error(`redis-server did not start on port ${port}: ${output}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  };
  const stop = async () => {
    const running = child;
    child = undefined;
    if (!running || running.exitCode !== null || running.signalCode !== null) return;
    running.kill("SIGKILL");
    await once(running, "exit");
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop,
    start,
    async close() {
      await stop();
      await rm(dir, { recursive: true, force: true });
    },
  };
}
