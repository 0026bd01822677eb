/**
 * The client half of ZMTP 3.0 (ZeroMQ's wire protocol, rfc.zeromq.org/spec/23) with the NULL
 * mechanism, over a unix socket: enough to be a DEALER to a kernel's ROUTER sockets (shell,
 * control) and a SUB to its PUB socket (iopub). The server talks to kernels directly with it;
 * a Jupyter server in between cost two processes' worth of hops on every message.
 */
import { EventEmitter } from "node:events";
import net from "node:net";

export type SocketType = "DEALER" | "SUB";

const FLAG_MORE = 0x01;
const FLAG_LONG = 0x02;
const FLAG_COMMAND = 0x04;
const GREETING_BYTES = 64;

/** The 64-byte greeting: signature, version 3.0, mechanism NULL, as-server 0, filler. */
function greeting(): Buffer {
  const g = Buffer.alloc(GREETING_BYTES);
  g[0] = 0xff;
  g[9] = 0x7f;
  g[10] = 3;
  g[11] = 0;
  g.write("NULL", 12, "ascii");
  return g;
}

/** One frame: flags, then the size in one byte or eight, then the body. */
function frame(body: Buffer, flags: number): Buffer {
  if (body.length <= 255) return Buffer.concat([Buffer.from([flags, body.length]), body]);
  const head = Buffer.alloc(9);
  head[0] = flags | FLAG_LONG;
  head.writeBigUInt64BE(BigInt(body.length), 1);
  return Buffer.concat([head, body]);
}

/** The READY command with its Socket-Type property (the only one a NULL peer needs). */
function ready(type: SocketType): Buffer {
  const name = Buffer.from("Socket-Type", "ascii");
  const value = Buffer.from(type, "ascii");
  const length = Buffer.alloc(4);
  length.writeUInt32BE(value.length);
  const body = Buffer.concat([
    Buffer.from([5]),
    Buffer.from("READY"),
    Buffer.from([name.length]),
    name,
    length,
    value,
  ]);
  return frame(body, FLAG_COMMAND);
}

/**
 * One connection to one ZeroMQ socket. Emits `ready` (handshake done), `message` (Buffer[], the
 * frames of one message) and `close` (after which it is done; the owner makes a new one). Messages sent before the handshake
 * finished wait for it.
 */
export class ZmtpSocket extends EventEmitter {
  private readonly socket: net.Socket;
  private pending: Buffer[] = [];
  private pendingBytes = 0;
  /** Bytes the next step of parsing needs. */
  private need = 0;
  private greeted = false;
  private readyReceived = false;
  private parts: Buffer[] = [];
  private queued: Buffer[] = [];
  private closed = false;

  constructor(
    readonly path: string,
    readonly type: SocketType,
    /** Messages a frame may not exceed (a kernel printing too much at once ends its channel). */
    private readonly maxFrameBytes: number,
  ) {
    super();
    this.socket = net.connect(path);
    this.socket.setNoDelay?.(true);
    this.socket.on("connect", () => {
      this.socket.write(greeting());
      this.socket.write(ready(type));
    });
    this.socket.on("data", (chunk: Buffer) => this.receive(chunk));
    this.socket.on("error", (err) => this.close(err.message));
    this.socket.on("close", () => this.close("the connection closed"));
  }

  /** Sends one message (its frames). */
  send(frames: Buffer[]): void {
    if (this.closed) return;
    const wire = Buffer.concat(frames.map((f, i) => frame(f, i < frames.length - 1 ? FLAG_MORE : 0)));
    if (this.readyReceived) this.socket.write(wire);
    else this.queued.push(wire);
  }

  /** A SUB's subscription to every topic (ZMTP 3.0: a message starting with 1). */
  subscribeAll(): void {
    this.send([Buffer.from([1])]);
  }

  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  close(reason = "closed by this side"): void {
    if (this.closed) return;
    this.closed = true;
    this.socket.destroy();
    this.emit("close", reason);
  }

  private receive(chunk: Buffer): void {
    // Chunks are joined once a whole frame (or greeting) is there, not one by one: a big frame
    // arrives in many chunks.
    this.pending.push(chunk);
    this.pendingBytes += chunk.length;
    if (this.pendingBytes < this.need) return;
    let buffer = this.pending.length === 1 ? this.pending[0]! : Buffer.concat(this.pending);
    this.pending = [];
    this.pendingBytes = 0;
    this.need = 0;
    const keep = (needed: number) => {
      this.need = needed;
      if (buffer.length > 0) {
        this.pending = [buffer];
        this.pendingBytes = buffer.length;
      }
    };
    if (!this.greeted) {
      if (buffer.length < GREETING_BYTES) {
        keep(GREETING_BYTES);
        return;
      }
      const g = buffer.subarray(0, GREETING_BYTES);
      if (g[0] !== 0xff || g[9] !== 0x7f || g[10]! < 3) {
        this.close("the peer does not speak ZMTP 3");
        return;
      }
      if (g.subarray(12, 16).toString("ascii") !== "NULL") {
        this.close("the peer wants a security mechanism");
        return;
      }
      this.greeted = true;
      buffer = buffer.subarray(GREETING_BYTES);
    }
    while (!this.closed) {
      if (buffer.length < 2) {
        keep(2);
        return;
      }
      const flags = buffer[0]!;
      const long = (flags & FLAG_LONG) !== 0;
      const headBytes = long ? 9 : 2;
      if (buffer.length < headBytes) {
        keep(headBytes);
        return;
      }
      const size = long ? Number(buffer.readBigUInt64BE(1)) : buffer[1]!;
      if (size > this.maxFrameBytes) {
        this.close(
          `a single output message exceeded ${this.maxFrameBytes / 2 ** 20} MiB (print less at once)`,
        );
        return;
      }
      if (buffer.length < headBytes + size) {
        keep(headBytes + size);
        return;
      }
      const body = buffer.subarray(headBytes, headBytes + size);
      buffer = buffer.subarray(headBytes + size);
      if (flags & FLAG_COMMAND) this.command(body);
      else {
        this.parts.push(body);
        if (!(flags & FLAG_MORE)) {
          const message = this.parts;
          this.parts = [];
          this.emit("message", message);
        }
      }
    }
  }

  private command(body: Buffer): void {
    const name = body.subarray(1, 1 + body[0]!).toString("ascii");
    if (name === "READY") {
      this.readyReceived = true;
      for (const wire of this.queued) this.socket.write(wire);
      this.queued = [];
      this.emit("ready");
    } else if (name === "ERROR") {
      this.close(`the peer refused: ${body.subarray(2 + body[0]!).toString("utf8")}`);
    }
    // Other commands (PING/PONG heartbeats of ZMTP 3.1) do not occur on a 3.0 connection.
  }
}
