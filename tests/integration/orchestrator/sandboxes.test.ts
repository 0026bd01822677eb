import assert from "node:assert/strict";
import http from "node:http";
import type { AddressInfo } from "node:net";
import { before, describe, test } from "node:test";
import { SandboxEventType, type SandboxInfo } from "@moat/shared/gen/orchestrator";
import { createSandbox, hostResources, sdkFor, settledHostResources } from "../helpers/orchestrator.js";
import { withOrchestrator } from "../helpers/with-orchestrator.js";

describe("orchestrator: gVisor sandboxes on one node", { timeout: 600_000 }, () => {
  let baseline: Awaited<ReturnType<typeof hostResources>>;
  let sandboxes: SandboxInfo[] = [];
  let hostServer: http.Server;
  const orch = withOrchestrator({
    beforeTeardown: () => {
      hostServer?.close();
    },
  });

  before(async () => {
    baseline = await hostResources(orch);
    // A service on the host that sandboxes must not reach.
    hostServer = http.createServer((_req, res) => res.end("host secret")).listen(0, "0.0.0.0");
  });

  test("five sandboxes created at once each answer envd", async () => {
    sandboxes = await Promise.all(
      Array.from({ length: 5 }, (_, i) => createSandbox(orch, { envVars: { SANDBOX_NUMBER: String(i) } })),
    );
    const addresses = new Set(sandboxes.map((s) => s.hostAddress));
    assert.equal(addresses.size, 5, "each sandbox has its own host address");
    for (const [i, info] of sandboxes.entries()) {
      const res = await fetch(`http://${info.hostAddress}:49983/health`);
      assert.equal(res.status, 204);
      const out = await sdkFor(info).commands.run("echo $SANDBOX_NUMBER $E2B_SANDBOX_ID; hostname; whoami");
      assert.equal(out.stdout, `${i} ${info.config!.sandboxId}\n${info.config!.sandboxId}\nuser\n`);
    }
    const listed = (await orch.client.list({})).sandboxes.map((s) => s.config!.sandboxId).sort();
    assert.deepEqual(listed, sandboxes.map((s) => s.config!.sandboxId).sort());
  });

  test("inside: gVisor's kernel, and neither the host's processes nor its files", async () => {
    const sbx = sdkFor(sandboxes[0]!);
    const uname = await sbx.commands.run("uname -a; dmesg 2>/dev/null | head -3 || true", { user: "root" });
    assert.match(uname.stdout, /gVisor|4\.4\.0/, `uname/dmesg should show gVisor: ${uname.stdout}`);
    const ps = await sbx.commands.run("ps -e -o comm=", { user: "root" });
    assert.doesNotMatch(ps.stdout, /orchestrator|runsc|sshd|systemd/);
    assert.ok(ps.stdout.trim().split("\n").length < 20, `only the sandbox's processes: ${ps.stdout}`);
    const files = await sbx.commands.run(`test -e ${orch.dataDir} && echo visible || echo hidden`, {
      user: "root",
    });
    assert.equal(files.stdout, "hidden\n");
  });

  test("a sandbox reaches neither another sandbox nor the host's services", async () => {
    const [a, b] = sandboxes as [SandboxInfo, SandboxInfo];
    const sbx = sdkFor(a);
    const port = (hostServer.address() as AddressInfo).port;
    const probe = async (url: string) =>
      (await sbx.commands.run(`curl -s -m 2 -o /dev/null -w '%{http_code}' ${url} || echo failed`)).stdout;
    assert.match(await probe(`http://${b.hostAddress}:49983/health`), /failed|000/);
    assert.match(await probe("http://169.254.0.22:49983/health"), /failed|000/);
    assert.match(await probe(`http://10.12.0.1:${port}/`), /failed|000/);
    assert.match(await probe(`http://${a.hostAddress}:${port}/`), /failed|000/);
    // Its own envd, on its loopback, answers.
    assert.equal(await probe("http://127.0.0.1:49983/health"), "204");
  });

  test("a secured sandbox: the host needs the token; sudo works for user inside", async () => {
    const info = await createSandbox(orch, { accessToken: "secret-token-1" });
    const noToken = await fetch(`http://${info.hostAddress}:49983/process.Process/List`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: "{}",
    });
    assert.equal(noToken.status, 401);
    const sbx = sdkFor(info);
    const out = await sbx.commands.run(
      "whoami; sudo whoami; echo piped | sudo cat; sudo sh -c 'exit 3'; echo rc=$?",
    );
    assert.equal(out.stdout, "user\nroot\npiped\nrc=3\n");
    const owned = await sbx.commands.run(
      "sudo touch /root/made-by-sudo && sudo stat -c %U /root/made-by-sudo",
    );
    assert.equal(owned.stdout, "root\n");
    await orch.client.delete({ sandboxId: info.config!.sandboxId });
  });

  /** Waits until the orchestrator no longer lists the sandbox (it reaped a dead runtime). */
  async function waitUntilGone(sandboxID: string, ms: number): Promise<boolean> {
    const deadline = Date.now() + ms;
    while (Date.now() < deadline) {
      const listed = (await orch.client.list({})).sandboxes.some((s) => s.config!.sandboxId === sandboxID);
      if (!listed) return true;
      await new Promise((r) => setTimeout(r, 250));
    }
    return false;
  }

  /**
   * Every other sandbox answers (within a grace period: a bomb next door competes for the node's two
   * cores while the node reaps it) and runs commands, and the host's own service still answers.
   */
  async function othersAndHostStillWork(): Promise<void> {
    for (const info of sandboxes) {
      const deadline = Date.now() + 30_000;
      let status: number | string = "no answer";
      while (status !== 204 && Date.now() < deadline) {
        status = await fetch(`http://${info.hostAddress}:49983/health`, { signal: AbortSignal.timeout(2000) })
          .then((r) => r.status)
          .catch((err: Error) => err.message);
      }
      assert.equal(status, 204, `sandbox ${info.config!.sandboxId} answers`);
      assert.equal((await sdkFor(info).commands.run("echo ok")).stdout, "ok\n");
    }
    const host = await fetch(`http://127.0.0.1:${(hostServer.address() as AddressInfo).port}/`);
    assert.equal(await host.text(), "host secret");
  }

  test("a memory bomb is stopped by the sandbox's limit; the others and the host keep working", async () => {
    const victim = await createSandbox(orch, { memoryMB: 256 });
    const id = victim.config!.sandboxId;
    const events: string[] = [];
    // Resolves once the FAILED event arrives (or the watch ends): the event travels on its own
    // stream, so it may reach the test after a list that no longer shows the sandbox.
    const failed = (async () => {
      for await (const ev of orch.client.watchEvents({}, { signal: AbortSignal.timeout(70_000) })) {
        if (ev.sandboxId !== id) continue;
        events.push(`${ev.type}:${ev.reason}`);
        if (ev.type === SandboxEventType.FAILED) return;
      }
    })().catch(() => undefined);
    await sdkFor(victim).commands.run("python3 -c 'b=[]\nwhile True: b.append(bytearray(50*1024*1024))'", {
      background: true,
    });
    // gVisor's sentry is killed at the cgroup limit: the whole sandbox stops and the node reaps it.
    assert.ok(
      await waitUntilGone(id, 60_000),
      "the sandbox that exceeded its memory is stopped and released",
    );
    await failed;
    assert.ok(
      events.some((e) => e.startsWith(`${SandboxEventType.FAILED}:`)),
      `a FAILED event was sent: ${events}`,
    );
    await othersAndHostStillWork();
  });

  test("a fork bomb is stopped by the sandbox's limits; the others and the host keep working", async () => {
    const victim = await createSandbox(orch, { memoryMB: 256 });
    const id = victim.config!.sandboxId;
    await sdkFor(victim).commands.run("bomb() { bomb | bomb & }; bomb", { background: true });
    // Either the process limit holds it inside (the sandbox still answers), or the sandbox hits its
    // memory limit and the node stops it; in no case may it reach the others or the host.
    await new Promise((r) => setTimeout(r, 10_000));
    const alive = await fetch(`http://${victim.hostAddress}:49983/health`, {
      signal: AbortSignal.timeout(2000),
    })
      .then((r) => r.status === 204)
      .catch(() => false);
    if (alive) await orch.client.delete({ sandboxId: id });
    else assert.ok(await waitUntilGone(id, 60_000), "a sandbox that stopped answering was released");
    await othersAndHostStillWork();
  });

  test("while a kill runs, requests to the sandbox fail at once instead of hanging", async () => {
    const info = await createSandbox(orch);
    const health = `http://${info.hostAddress}:49983/health`;
    assert.equal((await fetch(health)).status, 204);
    const killed = orch.client.delete({ sandboxId: info.config!.sandboxId });
    // Deleting the container takes over a second; every request meanwhile gets an answer or an error.
    let failure: string | undefined;
    while (failure === undefined) {
      failure = await fetch(health, { signal: AbortSignal.timeout(1000) }).then(
        () => undefined,
        (err: Error) =>
          err.name === "TimeoutError" ? "timed out" : String((err.cause as { code?: string })?.code),
      );
    }
    await killed;
    assert.notEqual(failure, "timed out", "a request to a sandbox being killed fails fast");
  });

  test("kill returns the host to exactly what it had before", async () => {
    for (const info of sandboxes) await orch.client.delete({ sandboxId: info.config!.sandboxId });
    sandboxes = [];
    assert.deepEqual(await settledHostResources(orch, baseline), baseline);
    await assert.rejects(orch.client.get({ sandboxId: "nosuchsandbox" }), /not found/);
  });
});
