/**
 * The Jupyter server inside the sandbox (loopback only, no token: nothing outside the sandbox
 * reaches it, and everything inside it is the tenant's anyway): its REST API for sessions and
 * kernels, and one websocket per kernel carrying the kernel's shell and iopub messages.
 */
import { randomUUID } from "node:crypto";
import http from "node:http";
import WebSocket from "ws";

export class JupyterError extends Error {
  constructor(
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = "JupyterError";
  }
}

export interface Session {
  id: string;
  name: string;
  path: string;
  kernel: { id: string; name: string };
}

export interface KernelMessage {
  header: { msg_id: string; msg_type: string; session?: string; date?: string };
  parent_header: { msg_id?: string };
  metadata: Record<string, unknown>;
  content: Record<string, unknown>;
  channel?: string;
}

/** A websocket frame bigger than this ends the kernel's channel (and the execution it belongs to). */
export const MAX_MESSAGE_BYTES = 64 * 2 ** 20;

export class Jupyter {
  /** `socket`: the unix socket the Jupyter server listens on. */
  constructor(readonly socket: string) {}

  async ready(): Promise<boolean> {
    try {
      return (await this.call("GET", "/api/status", undefined, 2_000)).status === 200;
    } catch {
      return false;
    }
  }

  async kernelNames(): Promise<string[]> {
    const specs = (await this.request("GET", "/api/kernelspecs")) as {
      kernelspecs?: Record<string, unknown>;
    };
    return Object.keys(specs.kernelspecs ?? {});
  }

  async sessions(): Promise<Session[]> {
    return (await this.request("GET", "/api/sessions")) as Session[];
  }

  async createSession(name: string, path: string, kernelName: string): Promise<Session> {
    return (await this.request("POST", "/api/sessions", {
      name,
      path,
      type: "notebook",
      kernel: { name: kernelName },
    })) as Session;
  }

  async deleteSession(id: string): Promise<void> {
    await this.request("DELETE", `/api/sessions/${encodeURIComponent(id)}`);
  }

  async restartKernel(id: string): Promise<void> {
    await this.request("POST", `/api/kernels/${encodeURIComponent(id)}/restart`);
  }

  async interruptKernel(id: string): Promise<void> {
    await this.request("POST", `/api/kernels/${encodeURIComponent(id)}/interrupt`);
  }

  channel(kernelID: string): KernelChannel {
    return new KernelChannel(
      `ws+unix://${this.socket}:/api/kernels/${encodeURIComponent(kernelID)}/channels`,
    );
  }

  /**
   * One request on a connection of its own, closed after it: over a unix socket, since a TCP
   * connection open when gVisor checkpoints the sandbox is cut, and cut ones can leave the
   * restored network stack unusable.
   */
  private call(
    method: string,
    path: string,
    body: unknown,
    timeoutMs: number,
  ): Promise<{ status: number; text: string }> {
    return new Promise((resolve, reject) => {
      const payload = body === undefined ? undefined : JSON.stringify(body);
      const req = http.request(
        {
          socketPath: this.socket,
          path,
          method,
          agent: false,
          headers: payload === undefined ? {} : { "content-type": "application/json" },
          timeout: timeoutMs,
        },
        (res) => {
          let text = "";
          res.setEncoding("utf8");
          res.on("data", (chunk: string) => {
            text += chunk;
          });
          res.on("end", () => resolve({ status: res.statusCode ?? 0, text }));
          res.on("error", reject);
        },
      );
      req.on("timeout", () => req.destroy(new JupyterError(`Jupyter ${method} ${path}: no answer`)));
      req.on("error", reject);
      req.end(payload);
    });
  }

  private async request(method: string, path: string, body?: unknown): Promise<unknown> {
    const res = await this.call(method, path, body, 60_000);
    const text = res.text;
    if (res.status < 200 || res.status >= 300) {
      let reason = text.slice(0, 500);
      try {
        const parsed = JSON.parse(text) as { message?: string; reason?: string };
        reason = parsed.message || parsed.reason || reason;
      } catch {}
      throw new JupyterError(`Jupyter ${method} ${path}: ${res.status} ${reason}`, res.status);
    }
    return text ? JSON.parse(text) : undefined;
  }
}

/** What a request on a channel hears: its replies, or that the channel closed under it. */
export type ChannelEvent = { kind: "message"; message: KernelMessage } | { kind: "closed"; reason: string };

/**
 * One kernel's websocket, opened on first use and again after it closed (a restored snapshot
 * resets every connection the sandbox held). Messages go to the request whose msg_id they answer.
 */
export class KernelChannel {
  private ws?: WebSocket;
  private opening?: Promise<WebSocket>;
  private readonly session = randomUUID();
  private readonly listeners = new Map<string, (event: ChannelEvent) => void>();

  constructor(private readonly url: string) {}

  /** Sends a request; `listener` hears every message answering it until `done()` is called. */
  async request(
    msgType: string,
    channel: "shell" | "control",
    content: Record<string, unknown>,
    listener: (event: ChannelEvent) => void,
  ): Promise<{ msgID: string; done(): void; pause(): void; resume(): void }> {
    const ws = await this.open();
    const msgID = randomUUID();
    this.listeners.set(msgID, listener);
    const message = {
      header: {
        msg_id: msgID,
        msg_type: msgType,
        session: this.session,
        username: "moat",
        date: new Date().toISOString(),
        version: "5.3",
      },
      parent_header: {},
      metadata: {},
      content,
      channel,
      buffers: [],
    };
    ws.send(JSON.stringify(message));
    return {
      msgID,
      done: () => this.listeners.delete(msgID),
      pause: () => ws.pause(),
      resume: () => ws.resume(),
    };
  }

  close(): void {
    this.ws?.terminate();
    this.ws = undefined;
  }

  private open(): Promise<WebSocket> {
    if (this.ws && this.ws.readyState === WebSocket.OPEN) return Promise.resolve(this.ws);
    this.opening ??= new Promise<WebSocket>((resolve, reject) => {
      const ws = new WebSocket(`${this.url}?session_id=${this.session}`, { maxPayload: MAX_MESSAGE_BYTES });
      ws.once("open", () => {
        this.ws = ws;
        this.opening = undefined;
        resolve(ws);
      });
      let failure: Error | undefined;
      ws.on("error", (err) => {
        failure = err;
        if (this.ws !== ws) {
          this.opening = undefined;
          reject(new JupyterError(`the kernel's channel did not open: ${err.message}`));
        }
      });
      ws.on("message", (data, isBinary) => this.dispatch(data as Buffer, isBinary));
      ws.once("close", (code, reason) => {
        if (this.ws === ws) this.ws = undefined;
        const why =
          code === 1009 || /max payload/i.test(failure?.message ?? "")
            ? `a single output message exceeded ${MAX_MESSAGE_BYTES / 2 ** 20} MiB (print less at once)`
            : `the kernel's channel closed (${code}${reason.length ? ` ${reason.toString()}` : ""})`;
        const listeners = [...this.listeners.values()];
        this.listeners.clear();
        for (const listener of listeners) listener({ kind: "closed", reason: why });
      });
    });
    return this.opening;
  }

  private dispatch(data: Buffer, isBinary: boolean): void {
    let message: KernelMessage;
    try {
      message = JSON.parse(isBinary ? binaryJSON(data) : data.toString("utf8")) as KernelMessage;
    } catch {
      return;
    }
    const parent = message.parent_header?.msg_id;
    if (parent) this.listeners.get(parent)?.({ kind: "message", message });
  }
}

/** The JSON part of a binary frame (a message with buffers): [n][offsets…][json][buffers…], big-endian. */
function binaryJSON(data: Buffer): string {
  const count = data.readUInt32BE(0);
  const start = data.readUInt32BE(4);
  const end = count > 1 ? data.readUInt32BE(8) : data.length;
  return data.subarray(start, end).toString("utf8");
}
