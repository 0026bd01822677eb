/**
 * A raw HTTP/1.1 exchange for the fuzzers: any method, target, Host and headers (fetch forbids
 * some of them), the whole answer read within a deadline. A deadline passing is a hang.
 */
import http from "node:http";
import type { Socket } from "node:net";

export interface RawRequest {
  method: string;
  /** Origin-form target: path and query as they go on the wire. */
  target: string;
  headers: Record<string, string>;
  body?: Buffer | string;
}

export interface RawAnswer {
  status: number;
  headers: Headers;
  body: Buffer;
  text: string;
  /** The answer was still streaming at the deadline and the client stopped reading (`liveMs`). */
  cut: boolean;
}

/**
 * Sends `req` to 127.0.0.1:`port`; rejects with a "hang" error when no answer began within
 * `deadlineMs`. With `liveMs`, an answer still streaming that long after it began is cut there and
 * answered with what came: a stream may legitimately stay open (a watch, a process's output).
 */
export function send(
  port: number,
  req: RawRequest,
  deadlineMs: number,
  options: { liveMs?: number } = {},
): Promise<RawAnswer> {
  return new Promise((resolve, reject) => {
    let answer: ((cut: boolean) => void) | undefined;
    const headers = { ...req.headers };
    const named = (name: string) => Object.keys(headers).some((h) => h.toLowerCase() === name);
    // Node frames a body of GET-like methods with nothing at all: say how long it is.
    if (req.body !== undefined && !named("content-length") && !named("transfer-encoding")) {
      headers["Content-Length"] = String(Buffer.byteLength(req.body));
    }
    const outgoing = http.request({
      host: "127.0.0.1",
      port,
      method: req.method,
      path: req.target,
      headers,
      // A fresh connection each: a request the server refused may leave its connection closing,
      // and a pooled one would fail the next request with a reset that is not the server's fault.
      agent: false,
      // The proxy's own answers and envd's are small; nothing here needs redirects or retries.
      setHost: !Object.keys(req.headers).some((h) => h.toLowerCase() === "host"),
    });
    let timer = setTimeout(() => {
      outgoing.destroy();
      reject(new Error(`hang: ${req.method} ${req.target.slice(0, 200)} took longer than ${deadlineMs} ms`));
    }, deadlineMs);
    outgoing.once("error", (err) => {
      clearTimeout(timer);
      reject(err);
    });
    const headersOf = (res: http.IncomingMessage) => {
      const headers = new Headers();
      for (const [name, value] of Object.entries(res.headers)) {
        if (value === undefined) continue;
        for (const v of Array.isArray(value) ? value : [value]) headers.append(name, v);
      }
      return headers;
    };
    // A switched protocol (a WebSocket through the proxy) is an answer too; the tunnel is closed.
    outgoing.once("upgrade", (res: http.IncomingMessage, socket: Socket) => {
      clearTimeout(timer);
      socket.destroy();
      resolve({
        status: res.statusCode ?? 0,
        headers: headersOf(res),
        body: Buffer.alloc(0),
        text: "",
        cut: false,
      });
    });
    // Node reads any answer to a CONNECT as a tunnel, whatever its status: its body is what the
    // server writes before it closes.
    outgoing.once("connect", (res: http.IncomingMessage, socket: Socket, head: Buffer) => {
      const chunks = [head];
      socket.on("data", (chunk: Buffer) => chunks.push(chunk));
      socket.on("error", () => undefined);
      socket.once("close", () => {
        clearTimeout(timer);
        const body = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: headersOf(res),
          body,
          text: body.toString("utf8"),
          cut: false,
        });
      });
    });
    outgoing.once("response", (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (chunk: Buffer) => chunks.push(chunk));
      res.once("error", (err) => {
        if (answer && options.liveMs !== undefined && outgoing.destroyed) return;
        clearTimeout(timer);
        reject(err);
      });
      answer = (cut) => {
        clearTimeout(timer);
        const body = Buffer.concat(chunks);
        resolve({
          status: res.statusCode ?? 0,
          headers: headersOf(res),
          body,
          text: body.toString("utf8"),
          cut,
        });
      };
      res.once("end", () => answer!(false));
      if (options.liveMs !== undefined) {
        clearTimeout(timer);
        timer = setTimeout(() => {
          outgoing.destroy();
          answer!(true);
        }, options.liveMs);
      }
    });
    outgoing.end(req.body);
  });
}
