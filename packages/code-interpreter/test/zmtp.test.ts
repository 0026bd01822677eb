/**
 * The ZMTP client against libzmq itself (Debian's python3-zmq, as in the kernels): a ROUTER that
 * echoes and a PUB that publishes, on unix sockets as the kernels use.
 */
import assert from "node:assert/strict";
import { type ChildProcess, spawn } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import path from "node:path";
import { after, before, describe, test } from "node:test";
import { ZmtpSocket } from "../src/zmtp.js";

const PEER = `
import sys, zmq
ctx = zmq.Context()
router = ctx.socket(zmq.ROUTER); router.bind("ipc://" + sys.argv[1] + "-router")
pub = ctx.socket(zmq.PUB); pub.bind("ipc://" + sys.argv[1] + "-pub")
print("ready", flush=True)
while True:
    frames = router.recv_multipart()
    identity, body = frames[0], frames[1:]
    if body[0] == b"publish":
        pub.send_multipart([b"topic", body[1]])
    elif body[0] == b"quit":
        break
    else:
        router.send_multipart([identity] + body)
`;

function receive(socket: ZmtpSocket): Promise<Buffer[]> {
  return once(socket, "message").then(([frames]) => frames as Buffer[]);
}

function connected(address: string, type: "DEALER" | "SUB", max = 64 * 2 ** 20): Promise<ZmtpSocket> {
  const socket = new ZmtpSocket(address, type, max);
  return Promise.race([
    once(socket, "ready").then(() => socket),
    once(socket, "close").then(([reason]) => Promise.reject(new Error(String(reason)))),
  ]);
}

describe("ZMTP client against libzmq", () => {
  let dir: string;
  let base: string;
  let peer: ChildProcess;

  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), "moat-zmtp-"));
    base = path.join(dir, "peer");
    peer = spawn("/usr/bin/python3", ["-c", PEER, base], { stdio: ["ignore", "pipe", "inherit"] });
    const [line] = (await once(peer.stdout!, "data")) as [Buffer];
    assert.match(line.toString(), /ready/, "the libzmq peer needs python3-zmq (scripts/prerequisites.sh)");
  });

  after(async () => {
    peer.kill();
    await rm(dir, { recursive: true, force: true });
  });

  test("a DEALER's multipart messages reach a ROUTER and come back, short and long frames alike", async () => {
    const dealer = await connected(`${base}-router`, "DEALER");
    const frames = [Buffer.from("one"), Buffer.alloc(300, 7), Buffer.alloc(3 * 2 ** 20, 9), Buffer.alloc(0)];
    const back = receive(dealer);
    dealer.send(frames);
    const got = await back;
    assert.equal(got.length, frames.length);
    for (const [i, frame] of frames.entries()) assert.ok(got[i]!.equals(frame), `frame ${i}`);
    dealer.close();
  });

  test("a SUB subscribed to everything receives what the PUB publishes", async () => {
    const sub = await connected(`${base}-pub`, "SUB");
    sub.subscribeAll();
    const dealer = await connected(`${base}-router`, "DEALER");
    const heard = receive(sub);
    // A subscription takes effect a moment after it is sent: publish until it is heard.
    let done = false;
    void heard.then(() => {
      done = true;
    });
    for (let i = 0; i < 100 && !done; i++) {
      dealer.send([Buffer.from("publish"), Buffer.from(`news ${i}`)]);
      await new Promise((r) => setTimeout(r, 20));
    }
    const [topic, body] = await heard;
    assert.equal(topic!.toString(), "topic");
    assert.match(body!.toString(), /^news \d+$/);
    sub.close();
    dealer.close();
  });

  test("a frame over the limit closes the socket with a reason; a missing socket fails to connect", async () => {
    const dealer = await connected(`${base}-router`, "DEALER", 1024);
    const closed = once(dealer, "close");
    dealer.send([Buffer.alloc(2048)]);
    const [reason] = await closed;
    assert.match(String(reason), /exceeded/);
    await assert.rejects(connected(path.join(dir, "nothing-here"), "DEALER"), /ENOENT/);
  });
});
