/**
 * Process output reaches a stream that reads slower than the process writes without piling up in
 * envd: the process's writes block while a stream lags, as on a full pipe, and nothing is lost.
 */
import assert from "node:assert/strict";
import { userInfo } from "node:os";
import { describe, test } from "node:test";
import { create } from "@bufbuild/protobuf";
import { ProcessConfigSchema } from "@moat/shared/gen/envd/process";
import { OUTPUT_HIGH_WATER_BYTES, ProcessHandle } from "../src/services/process/handle.js";

const me = userInfo();

async function spawn(script: string, pty = false): Promise<ProcessHandle> {
  return ProcessHandle.spawn({
    config: create(ProcessConfigSchema, { cmd: "/bin/sh", args: ["-c", script], envs: {} }),
    tag: undefined,
    user: { name: me.username, uid: me.uid, gid: me.gid, home: me.homedir, shell: "/bin/sh" },
    switchUser: false,
    env: { PATH: process.env.PATH ?? "/usr/bin:/bin" },
    cwd: "/",
    stdin: false,
    pty: pty ? { cols: 80, rows: 24 } : undefined,
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

describe("process output to a slow stream", () => {
  for (const pty of [false, true]) {
    test(`a stream that does not read holds the process back, not envd's memory${pty ? " (pty)" : ""}`, async () => {
      const total = 32 * 1024 * 1024;
      const handle = await spawn(`head -c ${total} /dev/zero; echo done >&2`, pty);
      const channel = handle.subscribe();
      await sleep(1500);
      // One pipe's worth (or a pty's) and a read chunk beyond the mark at most.
      assert.ok(
        channel.bytes < OUTPUT_HIGH_WATER_BYTES + 512 * 1024,
        `${channel.bytes} bytes waited for the stream`,
      );
      assert.equal(handle.running, true, "the process waits for its output to be read");

      let received = 0;
      let end: unknown;
      const signal = new AbortController().signal;
      for (;;) {
        const next = await channel.pull(signal, 10_000);
        if (next.kind === "done") break;
        if (next.kind !== "value") continue;
        const event = next.value.event;
        if (event?.case === "data") {
          const output = event.value.output;
          if (output?.case === "stdout" || output?.case === "pty") received += output.value.length;
        } else if (event?.case === "end") end = event.value;
      }
      // node-pty drops what its pty still holds when the process exits (it did before streams
      // could lag): a pty may miss a tail, pipes miss nothing.
      const missing = total - received;
      assert.ok(pty ? missing < 64 * 1024 : missing === 0, `${total} bytes written, ${received} arrived`);
      assert.deepEqual(end, { exitCode: 0, exited: true, status: "exit status 0" });
    });
  }

  test("a stream that goes away lets the process run on; a fast one is not held back", async () => {
    const handle = await spawn("head -c 8388608 /dev/zero");
    const slow = handle.subscribe();
    await sleep(500);
    assert.equal(handle.running, true);
    handle.unsubscribe(slow);
    await handle.whenEnded();
    assert.deepEqual(handle.exit, { exitCode: 0, exited: true, status: "exit status 0" });
  });
});
