/**
 * Forks: a running sandbox is snapshotted once in place (it carries on), and each fork is a create
 * from that snapshot with the source's settings and its own id, token and end time. Forks restore
 * side by side, a few at a time; each succeeds or fails on its own. The snapshot is ephemeral:
 * removed once every fork started or failed, and at the next start after a crash.
 */
import { randomBytes } from "node:crypto";
import type { SandboxSnapshot } from "../snapshot/sandbox-snapshot.js";
import type { CreateInput } from "./create-input.js";
import { InvalidSandboxConfigError } from "./errors.js";
import type { Sandbox } from "./sandbox.js";

export interface ForkTarget {
  sandboxID: string;
  /** The fork's own token ("" for none); the source's does not open it. */
  envdAccessToken: string;
  endTime: Date;
}

export type ForkOutcome = { sandbox: Sandbox; error?: undefined } | { sandbox?: undefined; error: Error };

/** What a fork needs of the sandbox manager. */
export interface ForkHost {
  snapshot(sandboxID: string, snapshotID: string, options: { ephemeral: boolean }): Promise<SandboxSnapshot>;
  create(input: CreateInput): Promise<Sandbox>;
  deleteSnapshot(snapshotID: string): Promise<boolean>;
}

/** Forks of one request at most: each is a sandbox of the node. */
export const MAX_FORKS = 100;

export async function forkSandbox(
  host: ForkHost,
  sandboxID: string,
  targets: readonly ForkTarget[],
  concurrency: number,
): Promise<ForkOutcome[]> {
  if (targets.length < 1 || targets.length > MAX_FORKS) {
    throw new InvalidSandboxConfigError(`a fork makes 1 to ${MAX_FORKS} sandboxes, got ${targets.length}`);
  }
  if (new Set(targets.map((t) => t.sandboxID)).size !== targets.length) {
    throw new InvalidSandboxConfigError("each fork needs a sandbox id of its own");
  }
  const snapshotID = `fork-${randomBytes(8).toString("hex")}`;
  const snapshot = await host.snapshot(sandboxID, snapshotID, { ephemeral: true });
  try {
    return await mapLimited(targets, Math.max(1, concurrency), (target) =>
      host.create(forkInput(snapshot, target)).then(
        (sandbox): ForkOutcome => ({ sandbox }),
        (err: unknown): ForkOutcome => ({ error: err instanceof Error ? err : new Error(String(err)) }),
      ),
    );
  } finally {
    await host.deleteSnapshot(snapshotID);
  }
}

/** A fork's create: the source's settings as the snapshot kept them, with the fork's own ids. */
export function forkInput(snapshot: SandboxSnapshot, target: ForkTarget): CreateInput {
  return {
    ...snapshot.config,
    sandboxID: target.sandboxID,
    envdAccessToken: target.envdAccessToken,
    endTime: target.endTime,
    snapshotID: snapshot.snapshotID,
  };
}

/** `fn` over `items`, at most `limit` at once, results in the order of `items`. */
async function mapLimited<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
