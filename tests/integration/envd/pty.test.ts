import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import type { Sandbox } from "e2b";
import { debugSandbox, type RunningEnvd, startEnvd } from "../helpers/envd.js";

const encoder = new TextEncoder();
const decoder = new TextDecoder();

/** Collects a PTY's output and waits until it contains a marker. */
function collector() {
  let text = "";
  const waiters: Array<{ marker: string; resolve: () => void }> = [];
  return {
    onData(data: Uint8Array) {
      text += decoder.decode(data);
      for (const w of [...waiters]) {
        if (text.includes(w.marker)) {
          waiters.splice(waiters.indexOf(w), 1);
          w.resolve();
        }
      }
    },
    text: () => text,
    waitFor(marker: string, ms = 10_000): Promise<void> {
      if (text.includes(marker)) return Promise.resolve();
      return new Promise((resolve, reject) => {
        const timer = setTimeout(
          () => reject(new Error(`no '${marker}' in pty output: ${JSON.stringify(text)}`)),
          ms,
        );
        waiters.push({
          marker,
          resolve: () => {
            clearTimeout(timer);
            resolve();
          },
        });
      });
    },
  };
}

// Both ways envd starts a terminal: its vfork addon (the default) and node-pty (the fallback where
// the addon does not load). Every test below holds for both.
for (const spawner of ["vfork", "node"] as const)
  describe(`envd pty through the e2b SDK (${spawner})`, () => {
    let envd: RunningEnvd;
    let sbx: Sandbox;

    before(async () => {
      envd = await startEnvd([], "debug", spawner === "node" ? { MOAT_ENVD_SPAWN: "node" } : {});
      sbx = await debugSandbox();
    });
    after(async () => {
      await envd.stop();
    });

    test("an interactive login shell on a terminal: input, output, exit", async () => {
      const out = collector();
      const terminal = await sbx.pty.create({ cols: 80, rows: 24, onData: out.onData });
      await sbx.pty.sendInput(terminal.pid, encoder.encode("echo $((6*7)); tty; echo $TERM\n"));
      await out.waitFor("42");
      await out.waitFor("/dev/pts/");
      await out.waitFor("xterm-256color");
      await sbx.pty.sendInput(terminal.pid, encoder.encode("exit 5\n"));
      const result = await terminal.wait().catch((err: { exitCode: number }) => err);
      assert.equal(result.exitCode, 5);
    });

    test("resize changes the terminal size the program sees", async () => {
      const out = collector();
      const terminal = await sbx.pty.create({ cols: 80, rows: 24, onData: out.onData });
      await sbx.pty.sendInput(terminal.pid, encoder.encode("stty size\n"));
      await out.waitFor("24 80");
      await sbx.pty.resize(terminal.pid, { cols: 132, rows: 50 });
      await sbx.pty.sendInput(terminal.pid, encoder.encode("stty size\n"));
      await out.waitFor("50 132");
      await sbx.pty.kill(terminal.pid);
    });

    test("the shell runs as the default user, or root when asked", async () => {
      for (const [user, expected] of [
        [undefined, "me=user"],
        ["root", "me=root"],
      ] as const) {
        const out = collector();
        const terminal = await sbx.pty.create({ cols: 80, rows: 24, onData: out.onData, user });
        await sbx.pty.sendInput(terminal.pid, encoder.encode('echo "me=$(whoami)"; exit\n'));
        await out.waitFor(expected);
        await terminal.wait();
      }
    });

    test("kill ends the terminal; connect attaches to a running one", async () => {
      const first = collector();
      const terminal = await sbx.pty.create({ cols: 80, rows: 24, onData: first.onData });
      await terminal.disconnect();
      const second = collector();
      const attached = await sbx.pty.connect(terminal.pid, { onData: second.onData });
      await sbx.pty.sendInput(terminal.pid, encoder.encode("echo again-$((1+1))\n"));
      await second.waitFor("again-2");
      assert.equal(await sbx.pty.kill(terminal.pid), true);
      await attached.wait().catch(() => undefined);
      assert.equal(await sbx.pty.kill(terminal.pid), false);
    });

    test("pty input to a plain command and stdin to a pty are refused", async () => {
      const handle = await sbx.commands.run("sleep 30", { background: true, stdin: true });
      await assert.rejects(sbx.pty.sendInput(handle.pid, encoder.encode("x")));
      await sbx.commands.kill(handle.pid);

      const terminal = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} });
      await assert.rejects(sbx.commands.sendStdin(terminal.pid, "x"));
      await assert.rejects(sbx.pty.resize(terminal.pid, { cols: 0, rows: 0 }));
      await sbx.pty.kill(terminal.pid);
    });

    test("a paste larger than the terminal's input buffer arrives whole", async () => {
      const out = collector();
      const terminal = await sbx.pty.create({ cols: 80, rows: 24, onData: out.onData });
      await sbx.pty.sendInput(
        terminal.pid,
        encoder.encode("stty -echo; cat > /tmp/moat-pty-paste; echo pasted\n"),
      );
      // 20,000 short lines: 200 kB, far past the 4 kB a terminal buffers before the writer must wait.
      const lines = Array.from({ length: 20_000 }, (_, i) => `${String(i).padStart(8, "0")}\n`).join("");
      await sbx.pty.sendInput(terminal.pid, encoder.encode(lines));
      await sbx.pty.sendInput(terminal.pid, new Uint8Array([4])); // ^D ends cat's input
      await out.waitFor("pasted", 30_000);
      await sbx.pty.sendInput(
        terminal.pid,
        encoder.encode("wc -c < /tmp/moat-pty-paste; rm /tmp/moat-pty-paste\n"),
      );
      await out.waitFor(`${lines.length}`);
      await sbx.pty.kill(terminal.pid);
    });

    test("the exit is reported though a background job still holds the terminal; a kill ends it with -1", async () => {
      const out = collector();
      const terminal = await sbx.pty.create({ cols: 80, rows: 24, onData: out.onData });
      // The job holds the terminal open for 5 s (and then goes: nothing is left behind).
      await sbx.pty.sendInput(terminal.pid, encoder.encode("sleep 5 & echo started; exit 3\n"));
      const started = Date.now();
      const result = await terminal.wait().catch((err: { exitCode: number }) => err);
      assert.equal(result.exitCode, 3);
      assert.ok(Date.now() - started < 4_000, `took ${Date.now() - started} ms`);

      const killed = await sbx.pty.create({ cols: 80, rows: 24, onData: () => {} });
      await sbx.pty.kill(killed.pid);
      // A signal's end: exit code -1 (envd's status "signal: killed"), as for a plain command.
      const end = await killed.wait().catch((err: { exitCode: number }) => err);
      assert.equal(end.exitCode, -1);
    });
  });
