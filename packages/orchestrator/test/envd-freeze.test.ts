/**
 * The node's freeze before a checkpoint: /freeze must travel on a connection opened before the
 * gate closed (the gate drops new connections' SYNs, so a new one would wait out the timeout),
 * even when envd closes the connection its /health answer went over.
 */
import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo, Socket } from "node:net";
import { after, before, test } from "node:test";
import { ENVD_PORT } from "@moat/shared";
import { freezeEnvd } from "../src/sandbox/envd-client.js";

let server: http.Server;
let gateClosed = false;
/** Connections opened while the gate was closed (they would never have got through). */
const afterGate = new WeakSet<Socket>();
const freezes: Array<{ throughGate: boolean }> = [];
let closeAfterHealth = 0;
/** A hostile sandbox: every connection that has sent nothing a moment after it opened is dropped. */
let dropIdle = false;

before(async () => {
  server = http.createServer((req, res) => {
    if (req.url === "/health") {
      // envd (or the netstack under it) dropping the connection right after answering.
      const close = closeAfterHealth > 0;
      if (close) closeAfterHealth--;
      res.writeHead(204, close ? { connection: "close" } : {});
      res.end();
      return;
    }
    freezes.push({ throughGate: afterGate.has(req.socket) });
    res.writeHead(204, { connection: "close" });
    res.end();
  });
  server.on("connection", (socket: Socket) => {
    if (gateClosed) afterGate.add(socket);
    if (!dropIdle) return;
    let spoke = false;
    socket.once("data", () => {
      spoke = true;
    });
    setTimeout(() => spoke || socket.resetAndDestroy(), 10);
  });
  // envd's port is fixed; the test's envd is a loopback address of its own.
  await new Promise<void>((resolve) => server.listen(ENVD_PORT, "127.0.0.77", resolve));
  assert.equal((server.address() as AddressInfo).port, ENVD_PORT);
});

after(() => new Promise<void>((resolve) => server.close(() => resolve())));

const gate = {
  close: async () => {
    gateClosed = true;
  },
  open: async () => {
    gateClosed = false;
  },
};

test("a freeze goes over a connection opened before the gate closed", async () => {
  freezes.length = 0;
  await freezeEnvd("127.0.0.77", gate.close, undefined, gate.open);
  assert.deepEqual(freezes, [{ throughGate: false }]);
});

test("envd closing the connection after /health: /freeze still goes over one opened before the gate", async () => {
  freezes.length = 0;
  gateClosed = false;
  closeAfterHealth = 1;
  await freezeEnvd("127.0.0.77", gate.close, undefined, gate.open);
  assert.deepEqual(freezes, [{ throughGate: false }]);
});

test("a sandbox that drops the connection kept for /freeze: a few quick tries, then a clear error", async () => {
  freezes.length = 0;
  gateClosed = false;
  dropIdle = true;
  let closes = 0;
  const slowClose = async () => {
    closes++;
    await gate.close();
    // Long enough for the sandbox to drop the idle connection.
    await new Promise((resolve) => setTimeout(resolve, 50));
  };
  try {
    const started = performance.now();
    await assert.rejects(
      freezeEnvd("127.0.0.77", slowClose, undefined, gate.open),
      /envd closed its connection before \/freeze/,
    );
    assert.ok(performance.now() - started < 5000);
    assert.equal(closes, 3);
    assert.deepEqual(freezes, []);
  } finally {
    dropIdle = false;
  }
});
