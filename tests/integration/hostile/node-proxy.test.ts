/**
 * The node proxy's boundary: in a fleet it listens on an address other machines reach, beside the
 * orchestrator's RPC. Code in a sandbox must reach neither (the node's `input` rules drop
 * everything a sandbox sends to the host but its resolver), and a caller without the node token
 * gets 401 from the node proxy.
 *
 * The node listens on an address the test adds to a dummy link of its own (moattest-np0, a veth pair), which
 * the sandbox's egress allow list names: only the node's input rule stands between the sandbox and
 * the two ports, so this test fails without it.
 */
import assert from "node:assert/strict";
import { after, before, describe, test } from "node:test";
import { runCommand } from "@moat/shared";
import type { SandboxInfo } from "@moat/shared/gen/orchestrator";
import { CommandExitError, type Sandbox } from "e2b";
import { createSandbox, sdkFor } from "../helpers/orchestrator.js";
import { withOrchestrator } from "../helpers/with-orchestrator.js";

const LINK = "moattest-np0";
/** Not a fleet host address (10.98/16) nor a sandbox one (10.11/16, 10.12/16). */
const NODE_ADDRESS = "10.97.250.1";

async function removeLink(): Promise<void> {
  await runCommand(["ip", "link", "del", LINK]).catch(() => undefined);
}

/** Connects from inside the sandbox to each port of `address`: "ok" or "error <reason>". */
async function probe(sbx: Sandbox, address: string, ports: number[]): Promise<Record<string, string>> {
  const script = `
import json, socket, sys, threading
out = {}
def go(p):
    try:
        s = socket.create_connection(("${address}", int(p)), timeout=3)
        out[p] = "ok"
        s.close()
    except Exception as e:
        out[p] = "error " + type(e).__name__
ts = [threading.Thread(target=go, args=(p,)) for p in sys.argv[1:]]
[t.start() for t in ts]
[t.join() for t in ts]
print(json.dumps(out))
`;
  await sbx.files.write("/tmp/probe.py", script);
  try {
    const r = await sbx.commands.run(`python3 /tmp/probe.py ${ports.join(" ")}`, {
      user: "root",
      timeoutMs: 60_000,
    });
    return JSON.parse(r.stdout) as Record<string, string>;
  } catch (err) {
    if (err instanceof CommandExitError) throw new Error(`probe failed: ${err.stderr}`);
    throw err;
  }
}

describe("node proxy: sandboxes cannot reach it or the RPC; callers need the node token", {
  timeout: 300_000,
}, () => {
  before(async () => {
    await removeLink();
    // A veth pair kept in the root namespace (no dummy driver everywhere); the peer goes with it.
    await runCommand(["ip", "link", "add", LINK, "type", "veth", "peer", "name", `${LINK}p`]);
    await runCommand(["ip", "addr", "add", `${NODE_ADDRESS}/32`, "dev", LINK]);
    await runCommand(["ip", "link", "set", LINK, "up"]);
    await runCommand(["ip", "link", "set", `${LINK}p`, "up"]);
  });
  const orch = withOrchestrator({
    host: NODE_ADDRESS,
    // The sandbox's egress policy lets it try: what stops it is the node's own rule.
    env: { MOAT_EGRESS_ALLOW: `${NODE_ADDRESS}/32` },
    afterTeardown: removeLink,
  });
  let info: SandboxInfo;
  let sbx: Sandbox;

  before(async () => {
    info = await createSandbox(orch, { accessToken: "node-proxy-test-envd-token" });
    sbx = sdkFor(info);
  });

  after(async () => {
    await removeLink();
  });

  test("a sandbox cannot connect to the node proxy port nor the RPC port", async () => {
    // The host reaches both (the ports listen on the address probed).
    const fromHost = await fetch(`http://${NODE_ADDRESS}:${orch.proxyPort}/`);
    assert.equal(fromHost.status, 401);
    const result = await probe(sbx, NODE_ADDRESS, [orch.proxyPort, orch.port]);
    assert.match(
      result[String(orch.proxyPort)] ?? "",
      /^error/,
      `node proxy port: ${JSON.stringify(result)}`,
    );
    assert.match(result[String(orch.port)] ?? "", /^error/, `RPC port: ${JSON.stringify(result)}`);
  });

  test("a request without the node token, or with a wrong one, gets 401; with it, the sandbox answers", async () => {
    const url = `http://${NODE_ADDRESS}:${orch.proxyPort}/health`;
    const route = { "e2b-sandbox-id": info.config!.sandboxId, "e2b-sandbox-port": "49983" };
    const missing = await fetch(url, { headers: route });
    assert.equal(missing.status, 401);
    assert.match(((await missing.json()) as { message: string }).message, /node token/);
    const wrong = await fetch(url, { headers: { ...route, "x-moat-node-token": `${orch.token.slice(1)}x` } });
    assert.equal(wrong.status, 401);
    const right = await fetch(url, { headers: { ...route, "x-moat-node-token": orch.token } });
    assert.ok(right.status === 200 || right.status === 204, `envd /health answered ${right.status}`);
  });
});
