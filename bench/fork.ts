/**
 * Forks and snapshots through the official SDK against `moat up` (pool off): fork of an idle
 * sandbox (one, and `count: 5`) until the API answers with the forks running, and create from a
 * named snapshot → first `commands.run`; each beside a pause of an idle sandbox and the TTI from
 * the template snapshot, measured in the same run.
 */
import { createClient } from "@connectrpc/connect";
import { SandboxService } from "@moat/shared/gen/orchestrator";
import { Sandbox } from "e2b";
import { nodeTransport } from "../tests/integration/helpers/orchestrator.js";
import { kindNote, logEntries, phaseNote } from "./phases.js";
import { withMoat } from "./platform.js";
import type { Figure } from "./report.js";
import { summarize } from "./stats.js";

const FORK_ONE_CYCLES = 10;
const FORK_FIVE_CYCLES = 5;
const CREATE_CYCLES = 10;
const PAUSE_CYCLES = 10;

function progress(what: string): void {
  console.error(`  [fork] ${what}`);
}

export async function benchFork(): Promise<Figure[]> {
  return withMoat({ MOAT_POOL_SIZE: "0" }, async (moat) => {
    const node = createClient(SandboxService, nodeTransport(moat.orchestratorPort, moat.nodeToken));
    const startKind = async (id: string) =>
      (await node.get({ sandboxId: id }).catch(() => undefined))?.sandbox?.startKind ?? "?";

    // TTI from the template snapshot: the baseline of every create.
    progress("TTI from the template snapshot");
    const tti: number[] = [];
    for (let i = -1; i < CREATE_CYCLES; i++) {
      const started = performance.now();
      const sbx = await Sandbox.create("base");
      await sbx.commands.run("true");
      if (i >= 0) tti.push(performance.now() - started);
      await sbx.kill();
    }

    // Pause of an idle sandbox (resumed between, untimed).
    progress("pause of an idle sandbox");
    const pause: number[] = [];
    let paused = await Sandbox.create("base");
    for (let i = -1; i < PAUSE_CYCLES; i++) {
      const started = performance.now();
      await paused.pause();
      if (i >= 0) pause.push(performance.now() - started);
      paused = await Sandbox.connect(paused.sandboxId);
      await paused.commands.run("true");
    }
    await paused.kill();

    // Forks of an idle sandbox: the API's answer (the forks running, /init done), then their
    // first command.
    const source = await Sandbox.create("base", { timeoutMs: 1_800_000 });
    await source.commands.run("true");
    const forkRuns = async (count: number, cycles: number) => {
      const answers: number[] = [];
      const firstCommands: number[] = [];
      const kinds: string[] = [];
      const logStart = moat.log().length;
      for (let i = -1; i < cycles; i++) {
        const started = performance.now();
        const forks = await source.fork({ count, timeoutMs: 120_000 });
        const answered = performance.now() - started;
        const sandboxes = forks.map((f) => {
          if (!(f instanceof Sandbox)) throw f;
          return f;
        });
        await Promise.all(sandboxes.map((f) => f.commands.run("true")));
        if (i >= 0) {
          answers.push(answered);
          firstCommands.push(performance.now() - started);
          for (const f of sandboxes) kinds.push(await startKind(f.sandboxId));
        }
        await Promise.all(sandboxes.map((f) => f.kill()));
      }
      const log = moat.log();
      return {
        answers,
        firstCommands,
        kinds,
        snapshotPhases: phaseNote(logEntries(log, "sandbox snapshot taken", logStart), ["sizeBytes"]),
        snapshotted: phaseNote(logEntries(log, "sandbox snapshotted", logStart)),
        createPhases: phaseNote(logEntries(log, "sandbox created", logStart)),
      };
    };
    progress("fork of one");
    const one = await forkRuns(1, FORK_ONE_CYCLES);
    progress("fork of five");
    const five = await forkRuns(5, FORK_FIVE_CYCLES);

    // Creates from a named snapshot of the source.
    progress("creates from a named snapshot");
    const snapshot = await source.createSnapshot({ name: "bench-snapshot" });
    const fromSnapshot: number[] = [];
    const snapshotKinds: string[] = [];
    const logStart = moat.log().length;
    for (let i = -1; i < CREATE_CYCLES; i++) {
      const started = performance.now();
      const sbx = await Sandbox.create("bench-snapshot");
      await sbx.commands.run("true");
      if (i >= 0) {
        fromSnapshot.push(performance.now() - started);
        snapshotKinds.push(await startKind(sbx.sandboxId));
      }
      await sbx.kill();
    }
    const createPhases = phaseNote(logEntries(moat.log(), "sandbox created", logStart));
    await Sandbox.deleteSnapshot(snapshot.snapshotId);
    await source.kill();

    const pauseBaseline = {
      name: "pause of an idle sandbox through the API, same run",
      value: summarize(pause),
    };
    const ttiBaseline = {
      name: "TTI create → first commands.run from the template snapshot (pool off), same run",
      value: summarize(tti),
    };
    const ttiNote = `TTI from the template snapshot, same run: median ${summarize(tti).median.toFixed(0)} ms`;
    const pauseNote = `pause of an idle sandbox, same run: median ${summarize(pause).median.toFixed(0)} ms`;
    const notes = (...lines: (string | undefined)[]) => lines.filter((l): l is string => !!l);
    return [
      {
        name: `fork of an idle sandbox, one: sbx.fork() until the API answers with it running (${FORK_ONE_CYCLES} cycles)`,
        unit: "ms",
        value: summarize(one.answers),
        baseline: pauseBaseline,
        target: { median: 400 },
        notes: notes(
          ttiNote,
          `… to its first commands.run: median ${summarize(one.firstCommands).median.toFixed(0)} ms`,
          one.snapshotted,
          one.createPhases,
          kindNote(one.kinds),
        ),
      },
      {
        name: `fork of an idle sandbox, count 5: sbx.fork({ count: 5 }) until the API answers (${FORK_FIVE_CYCLES} cycles)`,
        unit: "ms",
        value: summarize(five.answers),
        baseline: pauseBaseline,
        target: { median: 1500 },
        notes: notes(
          ttiNote,
          `… to a first commands.run on each: median ${summarize(five.firstCommands).median.toFixed(0)} ms`,
          five.snapshotted,
          five.createPhases,
          kindNote(five.kinds),
        ),
      },
      {
        name: `create from a named snapshot → first commands.run (${CREATE_CYCLES} sequential)`,
        unit: "ms",
        value: summarize(fromSnapshot),
        baseline: ttiBaseline,
        target: { median: 400 },
        notes: notes(pauseNote, createPhases, kindNote(snapshotKinds)),
      },
    ];
  });
}
