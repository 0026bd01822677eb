/**
 * Kill figures through the official SDK against `moat up`: `sbx.kill()` returns, over sandboxes
 * each running a background command, beside `sbx.getInfo()` of a live sandbox measured interleaved
 * in the same run. getInfo is the same SDK → API → database round trip with no node work: the ratio
 * is what stopping the sandbox on the node adds to an API call (1.0 would be free). Right at each
 * kill's return the sandbox must be unreachable: its envd through the client proxy answers 502.
 * The node's own phases (its "sandbox stopped" log line) say where the time went, and the
 * background teardown's ("sandbox released") how long the slow part takes after the answer.
 */
import http from "node:http";
import { Sandbox } from "e2b";
import type { RunningMoat } from "../tests/integration/helpers/moat-up.js";
import { logEntries, phaseNote } from "./phases.js";
import { withMoat } from "./platform.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const KILLS = Number(process.env.MOAT_BENCH_KILLS ?? 20);
const WARMUP = 2;

/** Status of GET /health of the sandbox's envd through the client proxy (0: no answer). */
function proxyStatus(moat: RunningMoat, sandboxID: string): Promise<number> {
  const proxy = new URL(moat.env.E2B_SANDBOX_URL!);
  return new Promise((resolve) => {
    const req = http.get(
      {
        host: proxy.hostname,
        port: proxy.port,
        path: "/health",
        headers: { host: `49983-${sandboxID}.${moat.env.E2B_DOMAIN}` },
        timeout: 5000,
        agent: false,
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode ?? 0));
      },
    );
    req.on("timeout", () => req.destroy());
    req.on("error", () => resolve(0));
  });
}

export async function benchKill(): Promise<Figure[]> {
  return withMoat({ MOAT_POOL_SIZE: "0", MOAT_LOG_LEVEL: "debug" }, async (moat) => {
    // A live sandbox for the baseline, asked between the kills.
    const probe = await Sandbox.create("base");
    const kills: number[] = [];
    const infos: number[] = [];
    const reachable: string[] = [];
    let logStart = 0;
    try {
      for (let i = -WARMUP; i < KILLS; i++) {
        const sbx = await Sandbox.create("base");
        await sbx.commands.run("sleep 600", { background: true });
        if (i === 0) logStart = moat.log().length;
        let started = performance.now();
        await probe.getInfo();
        const info = performance.now() - started;
        started = performance.now();
        await sbx.kill();
        const kill = performance.now() - started;
        const status = await proxyStatus(moat, sbx.sandboxId);
        if (i < 0) continue;
        kills.push(kill);
        infos.push(info);
        if (status !== 502) reachable.push(`${sbx.sandboxId}: proxy answered ${status}`);
      }
    } finally {
      await probe.kill().catch(() => undefined);
    }
    // The background teardowns of the measured kills end within seconds.
    const deadline = Date.now() + 30_000;
    while (logEntries(moat.log(), "sandbox released", logStart).length < KILLS && Date.now() < deadline)
      await new Promise((r) => setTimeout(r, 100));
    const stopped = logEntries(moat.log(), "sandbox stopped", logStart).filter((e) => e.reason === "request");
    const released = logEntries(moat.log(), "sandbox released", logStart);
    const notes = [
      phaseNote(stopped, ["slot"])?.replace("phases,", "kill phases,"),
      released.length > 0
        ? phaseNote(released)?.replace("phases,", "background teardown after the answer,")
        : "no background teardown logged (kill waits for the whole release)",
      `unreachable right at return (proxy 502): ${KILLS - reachable.length}/${KILLS}`,
      ...reachable.map((r) => `REACHABLE after kill returned: ${r}`),
    ].filter((n): n is string => !!n);
    return [
      {
        name: `sbx.kill() returns (${KILLS} sandboxes, each running a background command)`,
        unit: "ms",
        value: summarize(kills),
        baseline: {
          name: "sbx.getInfo() of a live sandbox (API round trip, no node work)",
          value: summarize(infos),
        },
        target: { median: 100 },
        notes,
      },
    ];
  });
}
