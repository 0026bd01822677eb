/**
 * Platform figures through the official SDK against `moat up`: create → first `commands.run`
 * returns (TTI) over sequential creates and over concurrent ones, and the command round trip
 * through the client proxy; beside the bare runtime's start and the direct envd round trip,
 * measured in the same run.
 */
import { Sandbox } from "e2b";
import { startMoat, useMoat } from "../tests/integration/helpers/moat-up.js";
import { bareRuntimeStarts } from "./orchestrator.js";
import type { Figure } from "./report.js";
import { sample, summarize } from "./stats.js";

const SEQUENTIAL = 20;
const CONCURRENT = 20;

async function tti(): Promise<{ ms: number; sandbox: Sandbox }> {
  const started = performance.now();
  const sandbox = await Sandbox.create("base");
  await sandbox.commands.run("true");
  return { ms: performance.now() - started, sandbox };
}

export async function benchPlatform(): Promise<Figure[]> {
  const bare = summarize(await bareRuntimeStarts(10));
  const moat = await startMoat();
  try {
    useMoat(moat);
    const sequential: number[] = [];
    for (let i = 0; i < SEQUENTIAL; i++) {
      const { ms, sandbox } = await tti();
      sequential.push(ms);
      await sandbox.kill();
    }

    const concurrent = await Promise.all(Array.from({ length: CONCURRENT }, () => tti()));
    await Promise.all(concurrent.map((c) => c.sandbox.kill()));

    const sbx = await Sandbox.create("base");
    const proxied = await sample(100, () => sbx.commands.run("true"));
    // The same sandbox straight at its host address, from the API's routing catalog.
    const res = await fetch(`${moat.env.E2B_API_URL}/internal/catalog/${sbx.sandboxId}`, {
      headers: { "x-admin-token": moat.env.MOAT_ADMIN_TOKEN! },
    });
    const entry = (await res.json()) as { hostAddress: string; envdAccessToken?: string };
    const direct = new Sandbox({
      sandboxId: sbx.sandboxId,
      envdVersion: "0.6.13",
      envdAccessToken: entry.envdAccessToken,
      sandboxUrl: `http://${entry.hostAddress}:49983`,
      apiKey: moat.env.E2B_API_KEY,
    });
    const directRT = await sample(100, () => direct.commands.run("true"));
    await sbx.kill();

    return [
      {
        name: `TTI: create → first commands.run, ${SEQUENTIAL} sequential (cold start, no snapshot or pool yet)`,
        unit: "ms",
        value: summarize(sequential),
        baseline: { name: "bare runsc start of a Node HTTP server", value: bare },
        target: { median: 400 },
      },
      {
        name: `TTI: ${CONCURRENT} concurrent creates`,
        unit: "ms",
        value: summarize(concurrent.map((c) => c.ms)),
        baseline: { name: "bare runsc start of a Node HTTP server", value: bare },
        target: { p99: 1500 },
      },
      {
        name: 'commands.run("true") round trip through the client proxy',
        unit: "ms",
        value: summarize(proxied),
        baseline: { name: "same, straight to the sandbox's envd", value: summarize(directRT) },
        target: { median: 15 },
      },
    ];
  } finally {
    await moat.cleanup();
  }
}
