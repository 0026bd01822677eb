/**
 * The fleet's extra hop: `commands.run("true")` through the SDK via a client proxy that reaches the
 * sandbox directly (one box) beside one that goes through the node's proxy (a fleet), on the same
 * sandbox, interleaved. Target: the hop adds ≤ 2 ms to the median. Both proxies and the node proxy
 * share this machine's cores with the orchestrator and the sandbox, so this is an overhead, not a
 * throughput figure.
 */
import http from "node:http";
import type { AddressInfo } from "node:net";
import { startClientProxy, startNodeProxy } from "@moat/client-proxy";
import { type CatalogEntry, createNoopLogger, type SandboxCatalog } from "@moat/shared";
import { Sandbox } from "e2b";
import {
  createSandbox,
  removeDataDir,
  startOrchestrator,
} from "../tests/integration/helpers/orchestrator.js";
import type { Figure } from "./report.js";
import { sample, summarize } from "./stats.js";

const ACCESS_TOKEN = "bench-node-proxy-envd-token";
const ROUNDS = 10;
const RUNS_PER_ROUND = 40;

function fixedCatalog(entry: CatalogEntry): SandboxCatalog {
  return { lookup: async (id) => (id === entry.sandboxID ? entry : undefined) };
}

export async function benchNodeProxy(): Promise<Figure[]> {
  return [...(await benchHopAlone()), ...(await benchHopWithSandbox())];
}

/** A GET through a client proxy to a loopback server, directly and through a node proxy: the hop alone. */
async function benchHopAlone(): Promise<Figure[]> {
  const token = "bench-node-token-0123456789abcdefghij";
  const server = http.createServer((_req, res) => res.end("ok"));
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const port = (server.address() as AddressInfo).port;
  const node = await startNodeProxy({
    host: "127.0.0.1",
    port: 0,
    token,
    lookup: () => "127.0.0.1",
    logger: createNoopLogger(),
  });
  const entry: CatalogEntry = {
    sandboxID: "bench1",
    state: "running",
    hostAddress: "127.0.0.1",
    autoResume: false,
  };
  const direct = await startClientProxy({
    port: 0,
    domain: "moat.local",
    catalog: fixedCatalog(entry),
    logger: createNoopLogger(),
  });
  const viaNode = await startClientProxy({
    port: 0,
    domain: "moat.local",
    catalog: fixedCatalog({ ...entry, nodeProxyURL: `http://127.0.0.1:${node.port}` }),
    nodeToken: token,
    logger: createNoopLogger(),
  });
  const agent = new http.Agent({ keepAlive: true });
  const get = (proxyPort: number) =>
    new Promise<void>((resolve, reject) => {
      const req = http.get(
        {
          host: "127.0.0.1",
          port: proxyPort,
          agent,
          headers: { "e2b-sandbox-id": "bench1", "e2b-sandbox-port": String(port) },
        },
        (res) => {
          res.resume();
          res.on("end", resolve);
        },
      );
      req.on("error", reject);
    });
  try {
    const directSamples: number[] = [];
    const hopSamples: number[] = [];
    for (let round = 0; round < ROUNDS; round++) {
      directSamples.push(...(await sample(100, () => get(direct.port))));
      hopSamples.push(...(await sample(100, () => get(viaNode.port))));
    }
    return [hopFigure("client proxy → node proxy: GET to a loopback server", hopSamples, directSamples)];
  } finally {
    agent.destroy();
    await direct.close();
    await viaNode.close();
    await node.close();
    server.close();
  }
}

function hopFigure(name: string, hopSamples: number[], directSamples: number[]): Figure {
  const hop = summarize(hopSamples);
  const base = summarize(directSamples);
  const extra = hop.median - base.median;
  return {
    name,
    unit: "ms",
    value: hop,
    baseline: { name: "client proxy straight to the target", value: base },
    notes: [
      `extra median of the node proxy hop: ${extra.toFixed(2)} ms (target ≤ 2 ms: ${extra <= 2 ? "met" : "MISSED"}); extra minimum ${(hop.min - base.min).toFixed(2)} ms`,
      "all on this machine's shared cores: an overhead, not throughput (a loaded machine inflates medians)",
    ],
  };
}

async function benchHopWithSandbox(): Promise<Figure[]> {
  const orch = await startOrchestrator(undefined, { env: { MOAT_LOG_LEVEL: "info" } });
  const proxies: Array<{ close(): Promise<void> }> = [];
  try {
    const info = await createSandbox(orch, { accessToken: ACCESS_TOKEN, timeoutMs: 3_600_000 });
    const sandboxID = info.config!.sandboxId;
    const entry: CatalogEntry = {
      sandboxID,
      state: "running",
      hostAddress: info.hostAddress,
      envdAccessToken: ACCESS_TOKEN,
      autoResume: false,
    };
    const direct = await startClientProxy({
      port: 0,
      domain: "moat.local",
      catalog: fixedCatalog(entry),
      logger: createNoopLogger(),
    });
    proxies.push(direct);
    const viaNode = await startClientProxy({
      port: 0,
      domain: "moat.local",
      catalog: fixedCatalog({
        ...entry,
        nodeID: "local",
        nodeProxyURL: `http://127.0.0.1:${orch.proxyPort}`,
      }),
      nodeToken: orch.token,
      logger: createNoopLogger(),
    });
    proxies.push(viaNode);
    const sdk = (port: number) =>
      new Sandbox({
        sandboxId: sandboxID,
        envdVersion: info.envdVersion,
        envdAccessToken: ACCESS_TOKEN,
        sandboxUrl: `http://127.0.0.1:${port}`,
        apiKey: "e2b_unused",
      });
    const a = sdk(direct.port);
    const b = sdk(viaNode.port);
    const directSamples: number[] = [];
    const hopSamples: number[] = [];
    // Interleaved, so that machine noise hits both alike.
    for (let round = 0; round < ROUNDS; round++) {
      directSamples.push(...(await sample(RUNS_PER_ROUND, () => a.commands.run("true"))));
      hopSamples.push(...(await sample(RUNS_PER_ROUND, () => b.commands.run("true"))));
    }
    return [hopFigure('client proxy → node proxy: commands.run("true")', hopSamples, directSamples)];
  } finally {
    for (const proxy of proxies) await proxy.close();
    for (const s of (await orch.client.list({}).catch(() => ({ sandboxes: [] }))).sandboxes) {
      await orch.client.delete({ sandboxId: s.config!.sandboxId }).catch(() => undefined);
    }
    await orch.stop();
    await removeDataDir(orch.dataDir);
  }
}
