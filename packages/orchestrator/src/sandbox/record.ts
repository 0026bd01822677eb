import { readdir, readFile, rename } from "node:fs/promises";
import path from "node:path";
import { makePrivateDir, writePrivateFile } from "@moat/shared";
import type { CreateInput } from "./create-input.js";
import type { RecordState, SandboxKind } from "./state.js";

/**
 * What the orchestrator keeps on disk about each sandbox, so that a restarted orchestrator can
 * adopt the sandboxes still running, keep the paused ones, and release everything of the others.
 */
export interface SandboxRecord extends Omit<CreateInput, "endTime"> {
  /** Directory name under `<dataDir>/sandboxes` (the sandbox id, or a pool entry's own name). */
  dir: string;
  /** The network slot of the current run; meaningless while paused. */
  slotIndex: number;
  /** runsc container id; a new one each time the sandbox's container is (re)created. */
  lifecycleID: string;
  startTime: string;
  endTime: string;
  /**
   * "starting" until envd answered /init (released after a crash); "pausing" while a checkpoint
   * is under way (after a crash: running if the container lives, else paused); "paused" once the
   * sandbox holds nothing but its directory; "pooled" for warm pool entries nobody claimed yet;
   * "snapshotting" while it is stopped in place for a snapshot (after a crash: resumed, adopted);
   * "stopping" once a kill began (after a crash: released, whatever it was before).
   */
  state: RecordState;
  /** What the sandbox is for; absent in records of users' sandboxes made before it was written. */
  kind?: SandboxKind;
  /** Paused with a memory image (resume restores it) or files only (resume boots afresh). */
  memory?: boolean;
  /** How the current run started. */
  startKind?: StartKind;
  /** The template layers its root is mounted on, top first (resolved once, at create). */
  lowers?: string[];
  /** Its template build's key ("base" or the build id). */
  buildKey?: string;
  /** Its pauses so far, counted from 1 across every node it ran on (sandbox/relocation.ts). */
  pauseGeneration?: number;
  /** While paused: the generation of the pause published to the artifact store (any node may resume it). */
  published?: number;
}

export type StartKind = "cold" | "snapshot" | "pool" | "resume";

export function sandboxDir(dataDir: string, dirName: string): string {
  return path.join(dataDir, "sandboxes", dirName);
}

/** The sandbox's memory image while it is paused. */
export function memoryImagePath(dir: string): string {
  return path.join(dir, "memory");
}

/** The last write queued per record file: writes of one record land in the order they were made. */
const writes = new Map<string, Promise<void>>();

/**
 * Writes the record (its access token and env vars: root only) into the sandbox's directory, as
 * it is at the call. Writes of the same record are queued: two in flight at once (an end-time
 * change during a resume) shared one temporary file, and the older one could land last.
 */
export function writeRecord(dataDir: string, record: SandboxRecord): Promise<void> {
  const dir = sandboxDir(dataDir, record.dir);
  const file = path.join(dir, "sandbox.json");
  const text = `${JSON.stringify(record, null, 2)}\n`;
  const write = async () => {
    await makePrivateDir(dir);
    await writePrivateFile(`${file}.tmp`, text);
    await rename(`${file}.tmp`, file);
  };
  const queued = (writes.get(file) ?? Promise.resolve()).then(write, write);
  writes.set(file, queued);
  const forget = () => {
    if (writes.get(file) === queued) writes.delete(file);
  };
  queued.then(forget, forget);
  return queued;
}

/** Every sandbox directory with the record it holds (undefined when unreadable or missing). */
export async function readRecords(
  dataDir: string,
): Promise<Array<{ dir: string; record: SandboxRecord | undefined }>> {
  const root = path.join(dataDir, "sandboxes");
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return [];
  }
  return Promise.all(
    names.map(async (dir) => {
      try {
        const text = await readFile(path.join(root, dir, "sandbox.json"), "utf8");
        const record = JSON.parse(text) as SandboxRecord;
        record.dir ??= dir;
        return { dir, record };
      } catch {
        return { dir, record: undefined };
      }
    }),
  );
}
