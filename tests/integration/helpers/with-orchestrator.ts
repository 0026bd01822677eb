/**
 * A suite's orchestrator in one call at the top of a describe: a fresh data directory
 * (moat-test-*), startOrchestrator on it in before(), and in after() the teardown every suite
 * needs, which also runs when a before() failed halfway.
 */
import { after, before } from "node:test";
import { assertNoSandboxOutlives, type ForeignResources, foreignResources } from "./host-state.js";
import {
  makeDataDir,
  type RunningOrchestrator,
  removeDataDir,
  type StartOrchestratorOptions,
  startOrchestrator,
} from "./orchestrator.js";

/** startOrchestrator's options, passed through as they are, and the suite's own teardown. */
export interface WithOrchestratorOptions extends StartOrchestratorOptions {
  /** Runs first in after(), the orchestrator still up: what the suite runs on top of it (an API, a proxy). */
  beforeTeardown?: () => unknown;
  /** Runs last in after(), once the data directory is gone, whatever failed before it. */
  afterTeardown?: () => unknown;
}

/**
 * Registers before() and after() in the calling describe; answers the running orchestrator, usable
 * from the suite's own before() hooks (registered after this call, so they run after the start)
 * and its tests. Its stop and restart work as startOrchestrator's: restart stays on the data
 * directory and port.
 *
 * after(): beforeTeardown; every sandbox left is deleted (an orchestrator a failed test left down
 * is started once more first, so that it adopts them); the orchestrator stops; no runsc process
 * or container, cgroup, namespace, veth, mount or loop device may outlive it; the data directory
 * is removed; afterTeardown. A failing step does not skip the later ones; its error fails the
 * hook at the end.
 */
export function withOrchestrator(options: WithOrchestratorOptions = {}): RunningOrchestrator {
  const { beforeTeardown, afterTeardown, ...startOptions } = options;
  let dataDir: string | undefined;
  let foreign: ForeignResources | undefined;
  let running: RunningOrchestrator | undefined;

  const current = (): RunningOrchestrator => {
    if (!running) throw new Error("no orchestrator: withOrchestrator's before() did not run or failed");
    return running;
  };

  before(async () => {
    foreign = await foreignResources();
    dataDir = await makeDataDir();
    running = await startOrchestrator(dataDir, startOptions);
  });

  after(async () => {
    const errors: unknown[] = [];
    const step = async (fn: () => unknown) => {
      try {
        await fn();
      } catch (err) {
        errors.push(err);
      }
    };
    if (beforeTeardown) await step(beforeTeardown);
    const orch = running;
    if (orch) {
      await step(async () => {
        // Down after a failed test: only a running orchestrator can adopt and delete its sandboxes.
        if (orch.child.exitCode !== null || orch.child.signalCode !== null) await orch.restart();
        for (const s of (await orch.client.list({})).sandboxes) {
          await orch.client.delete({ sandboxId: s.config!.sandboxId }).catch(() => undefined);
        }
      });
      await step(() => orch.stop());
      // After the stop: sandboxes outlive their orchestrator by design, so only what the deletes
      // missed is left.
      const seen = foreign;
      if (seen) await step(() => assertNoSandboxOutlives(orch.dataDir, seen));
    }
    const dir = dataDir;
    if (dir) await step(() => removeDataDir(dir));
    if (afterTeardown) await step(afterTeardown);
    if (errors.length === 1) throw errors[0];
    if (errors.length > 1) throw new AggregateError(errors, "the orchestrator's teardown failed");
  });

  // The suite holds this object from the start; each property reads the orchestrator once it runs.
  return {
    get dataDir() {
      return current().dataDir;
    },
    get port() {
      return current().port;
    },
    get proxyPort() {
      return current().proxyPort;
    },
    get token() {
      return current().token;
    },
    get client() {
      return current().client;
    },
    get child() {
      return current().child;
    },
    set child(child) {
      current().child = child;
    },
    log: () => current().log(),
    stop: (signal) => current().stop(signal),
    restart: (env) => current().restart(env),
  };
}
