/**
 * Jupyter kernels, run by this server itself: a kernel is a process started from its kernelspec
 * with a connection file (ZeroMQ over unix sockets: TCP connections do not survive a gVisor
 * checkpoint, and libzmq aborts on ones a restore cut), and a channel speaking the Jupyter
 * messaging protocol to its shell, control and iopub sockets. Kernels run in process groups of
 * their own, so that an interrupt reaches what they started and a restarted server adopts them.
 */
import { type ChildProcess, spawn } from "node:child_process";
import { createHmac, randomBytes, randomUUID } from "node:crypto";
import { mkdir, readdir, readFile, rm, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { ZmtpSocket } from "./zmtp.js";

/** A message frame bigger than this ends the kernel's channel (and the execution it belongs to). */
export const MAX_MESSAGE_BYTES = 64 * 2 ** 20;
/** How long a new kernel may take to answer. */
const START_TIMEOUT_MS = 60_000;

export class KernelError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "KernelError";
  }
}

export interface KernelSpec {
  name: string;
  argv: string[];
  env: Record<string, string>;
}

/** Where Jupyter looks for kernelspecs, the user's first. */
function kernelDirs(): string[] {
  const extra = (process.env.JUPYTER_PATH ?? "").split(":").filter(Boolean);
  return [
    ...extra.map((d) => path.join(d, "kernels")),
    path.join(homedir(), ".local/share/jupyter/kernels"),
    "/usr/local/share/jupyter/kernels",
    "/usr/share/jupyter/kernels",
  ];
}

export async function findKernelSpecs(dirs = kernelDirs()): Promise<Map<string, KernelSpec>> {
  const specs = new Map<string, KernelSpec>();
  for (const dir of dirs) {
    for (const name of await readdir(dir).catch(() => [] as string[])) {
      if (specs.has(name)) continue;
      try {
        const spec = JSON.parse(await readFile(path.join(dir, name, "kernel.json"), "utf8")) as {
          argv?: unknown;
          env?: Record<string, string>;
        };
        if (!Array.isArray(spec.argv) || !spec.argv.every((a) => typeof a === "string")) continue;
        specs.set(name, { name, argv: spec.argv, env: spec.env ?? {} });
      } catch {}
    }
  }
  return specs;
}

/** What the server keeps of a kernel to adopt it after its own restart. */
export interface KernelRecord {
  pid: number;
  connectionFile: string;
}

interface Connection {
  key: string;
  ip: string;
  shell_port: number;
  iopub_port: number;
  stdin_port: number;
  control_port: number;
  hb_port: number;
}

/** One running kernel process. */
export class Kernel {
  private constructor(
    readonly record: KernelRecord,
    readonly channel: KernelChannel,
    private readonly child?: ChildProcess,
  ) {}

  /** Starts a kernel from its spec in `cwd`; resolves once it answers on every channel. */
  static async start(spec: KernelSpec, runtimeDir: string, cwd: string): Promise<Kernel> {
    await mkdir(runtimeDir, { recursive: true, mode: 0o700 });
    const id = randomUUID();
    const connection = {
      transport: "ipc",
      ip: path.join(runtimeDir, id.slice(0, 13)),
      shell_port: 1,
      iopub_port: 2,
      stdin_port: 3,
      control_port: 4,
      hb_port: 5,
      key: randomBytes(16).toString("hex"),
      signature_scheme: "hmac-sha256",
      kernel_name: spec.name,
    };
    const connectionFile = path.join(runtimeDir, `kernel-${id}.json`);
    await writeFile(connectionFile, JSON.stringify(connection), { mode: 0o600 });
    const argv = spec.argv.map((a) => a.replaceAll("{connection_file}", connectionFile));
    const child = spawn(argv[0]!, argv.slice(1), {
      cwd,
      detached: true,
      stdio: ["ignore", "ignore", "inherit"],
      // Quiets debugpy's warning on every kernel start (Debian's Python uses frozen modules).
      env: { ...process.env, ...spec.env, PYDEVD_DISABLE_FILE_VALIDATION: "1" },
    });
    const failed = new Promise<never>((_, reject) => {
      child.once("error", (err) =>
        reject(new KernelError(`the ${spec.name} kernel did not start: ${err.message}`)),
      );
      child.once("exit", (code, signal) =>
        reject(new KernelError(`the ${spec.name} kernel exited as it started (${signal ?? code})`)),
      );
    });
    failed.catch(() => undefined);
    const kernel = new Kernel({ pid: child.pid ?? 0, connectionFile }, new KernelChannel(connection), child);
    try {
      await Promise.race([kernel.channel.open(START_TIMEOUT_MS), failed]);
    } catch (err) {
      await kernel.kill();
      throw err;
    }
    return kernel;
  }

  /** A kernel a previous server process started, when it still runs. */
  static async adopt(record: KernelRecord): Promise<Kernel | undefined> {
    const cmdline = await readFile(`/proc/${record.pid}/cmdline`, "utf8").catch(() => "");
    if (!cmdline.includes(record.connectionFile)) {
      // Gone: its files stay behind otherwise (the pid may be another process's now).
      await removeKernelFiles(record.connectionFile);
      return undefined;
    }
    const connection = await readConnection(record.connectionFile);
    const kernel = connection ? new Kernel(record, new KernelChannel(connection)) : undefined;
    try {
      if (!kernel) throw new KernelError("its connection file is unreadable");
      await kernel.channel.open(5_000);
      return kernel;
    } catch {
      // Running but unusable: ended, so that the context list does not keep it.
      signalGroup(record.pid, "SIGKILL");
      await removeKernelFiles(record.connectionFile);
      return undefined;
    }
  }

  alive(): boolean {
    if (this.child) return this.child.exitCode === null && this.child.signalCode === null;
    try {
      process.kill(this.record.pid, 0);
      return true;
    } catch {
      return false;
    }
  }

  /** SIGINT to the kernel's process group: KeyboardInterrupt in the code, and its children too. */
  interrupt(): void {
    signalGroup(this.record.pid, "SIGINT");
  }

  /** Ends the kernel and what it started, and removes its files. */
  async kill(): Promise<void> {
    this.channel.close();
    signalGroup(this.record.pid, "SIGKILL");
    for (let i = 0; i < 250 && this.alive(); i++) await sleep(20);
    await removeKernelFiles(this.record.connectionFile);
  }
}

function readConnection(connectionFile: string): Promise<Connection | undefined> {
  return readFile(connectionFile, "utf8")
    .then((text) => JSON.parse(text) as Connection)
    .catch(() => undefined);
}

/** A kernel's connection file and the unix sockets it names. */
async function removeKernelFiles(connectionFile: string): Promise<void> {
  const connection = await readConnection(connectionFile);
  await rm(connectionFile, { force: true });
  if (!connection) return;
  const { shell_port, iopub_port, stdin_port, control_port, hb_port } = connection;
  for (const port of [shell_port, iopub_port, stdin_port, control_port, hb_port])
    await rm(`${connection.ip}-${port}`, { force: true });
}

function signalGroup(pid: number, signal: NodeJS.Signals): void {
  if (pid <= 0) return;
  try {
    process.kill(-pid, signal);
  } catch {
    try {
      process.kill(pid, signal);
    } catch {}
  }
}

export interface KernelMessage {
  header: { msg_id: string; msg_type: string; session?: string; date?: string };
  parent_header: { msg_id?: string };
  metadata: Record<string, unknown>;
  content: Record<string, unknown>;
}

/** What a request on a channel hears: its replies, or that the channel closed under it. */
export type ChannelEvent = { kind: "message"; message: KernelMessage } | { kind: "closed"; reason: string };

const DELIMITER = "<IDS|MSG>";

/**
 * A kernel's shell, control and iopub sockets. Messages go to the request whose msg_id they
 * answer; when a socket closes (the kernel died), every request hears it.
 */
export class KernelChannel {
  private readonly session = randomUUID();
  private readonly listeners = new Map<string, (event: ChannelEvent) => void>();
  private sockets?: { shell: ZmtpSocket; control: ZmtpSocket; iopub: ZmtpSocket };
  private closedReason?: string;

  constructor(private readonly connection: Connection) {}

  /**
   * Connects (the kernel may still be creating its sockets) and waits until iopub delivers: a
   * subscription takes effect a moment after it is sent, and what the kernel publishes before
   * that is lost.
   */
  async open(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    const address = (port: number) => `${this.connection.ip}-${port}`;
    for (;;) {
      const settled = await Promise.allSettled([
        connect(address(this.connection.shell_port), "DEALER"),
        connect(address(this.connection.control_port), "DEALER"),
        connect(address(this.connection.iopub_port), "SUB"),
      ]);
      const sockets = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));
      const failure = settled.find((s): s is PromiseRejectedResult => s.status === "rejected");
      if (!failure) {
        const [shell, control, iopub] = sockets as [ZmtpSocket, ZmtpSocket, ZmtpSocket];
        iopub.subscribeAll();
        this.sockets = { shell, control, iopub };
        for (const socket of sockets) {
          socket.on("message", (frames: Buffer[]) => this.dispatch(frames));
          socket.on("close", (reason: string) => this.lost(reason));
        }
        break;
      }
      for (const socket of sockets) socket.close();
      if (Date.now() > deadline)
        throw new KernelError(`the kernel's sockets did not open: ${(failure.reason as Error).message}`);
      await sleep(50);
    }
    while (Date.now() < deadline) {
      if (this.closedReason) throw new KernelError(`the kernel's channel closed: ${this.closedReason}`);
      let published = false;
      let replied = false;
      const request = this.request("kernel_info_request", "shell", {}, (event) => {
        if (event.kind !== "message") return;
        if (event.message.header.msg_type === "kernel_info_reply") replied = true;
        else published = true;
      });
      for (let i = 0; i < 20 && !published && !this.closedReason; i++) await sleep(10);
      request.done();
      if (published) return;
      if (!replied) await sleep(100);
    }
    throw new KernelError("the kernel did not answer in time");
  }

  /** Sends a request; `listener` hears every message answering it until `done()` is called. */
  request(
    msgType: string,
    channel: "shell" | "control",
    content: Record<string, unknown>,
    listener: (event: ChannelEvent) => void,
  ): { msgID: string; done(): void; pause(): void; resume(): void } {
    const msgID = randomUUID();
    const sockets = this.sockets;
    if (!sockets || this.closedReason) {
      queueMicrotask(() => listener({ kind: "closed", reason: this.closedReason ?? "not connected" }));
      return { msgID, done: () => undefined, pause: () => undefined, resume: () => undefined };
    }
    this.listeners.set(msgID, listener);
    const header = JSON.stringify({
      msg_id: msgID,
      msg_type: msgType,
      session: this.session,
      username: "moat",
      date: new Date().toISOString(),
      version: "5.3",
    });
    const parts = [header, "{}", "{}", JSON.stringify(content)];
    const hmac = createHmac("sha256", this.connection.key);
    for (const part of parts) hmac.update(part);
    sockets[channel].send([
      Buffer.from(DELIMITER),
      Buffer.from(hmac.digest("hex")),
      ...parts.map((p) => Buffer.from(p)),
    ]);
    return {
      msgID,
      done: () => this.listeners.delete(msgID),
      pause: () => sockets.iopub.pause(),
      resume: () => sockets.iopub.resume(),
    };
  }

  close(): void {
    const sockets = this.sockets;
    this.sockets = undefined;
    if (sockets) for (const s of Object.values(sockets)) s.close();
    this.lost("the channel was closed");
  }

  private lost(reason: string): void {
    this.closedReason ??= reason;
    const listeners = [...this.listeners.values()];
    this.listeners.clear();
    for (const listener of listeners) listener({ kind: "closed", reason: this.closedReason });
    if (this.sockets) {
      const sockets = this.sockets;
      this.sockets = undefined;
      for (const s of Object.values(sockets)) s.close();
    }
  }

  private dispatch(frames: Buffer[]): void {
    const at = frames.findIndex((f) => f.length === DELIMITER.length && f.toString("latin1") === DELIMITER);
    if (at < 0 || frames.length < at + 6) return;
    let message: KernelMessage;
    try {
      message = {
        header: JSON.parse(frames[at + 2]!.toString("utf8")),
        parent_header: JSON.parse(frames[at + 3]!.toString("utf8")),
        metadata: JSON.parse(frames[at + 4]!.toString("utf8")),
        content: JSON.parse(frames[at + 5]!.toString("utf8")),
      };
    } catch {
      return;
    }
    const parent = message.parent_header?.msg_id;
    if (parent) this.listeners.get(parent)?.({ kind: "message", message });
  }
}

/** A connected, handshaken socket, or an error (e.g. the kernel has not created it yet). */
function connect(address: string, type: "DEALER" | "SUB"): Promise<ZmtpSocket> {
  return new Promise((resolve, reject) => {
    const socket = new ZmtpSocket(address, type, MAX_MESSAGE_BYTES);
    const onClose = (reason: string) => reject(new Error(`${address}: ${reason}`));
    socket.once("close", onClose);
    socket.once("ready", () => {
      socket.off("close", onClose);
      resolve(socket);
    });
  });
}
