import { mkdir, readdir, readFile, rename, writeFile } from "node:fs/promises";
import path from "node:path";
import type { CreateInput } from "./manager.js";

/**
 * What the orchestrator keeps on disk about each sandbox, so that a restarted orchestrator can
 * adopt the sandboxes still running and release everything of the others.
 */
export interface SandboxRecord extends Omit<CreateInput, "endTime"> {
  slotIndex: number;
  /** runsc container id; a new one each time the sandbox's container is (re)created. */
  lifecycleID: string;
  startTime: string;
  endTime: string;
  /** "starting" until envd answered /init; a record still starting after a crash is released. */
  state: "starting" | "running";
}

export function sandboxDir(dataDir: string, sandboxID: string): string {
  return path.join(dataDir, "sandboxes", sandboxID);
}

export async function writeRecord(dataDir: string, record: SandboxRecord): Promise<void> {
  const dir = sandboxDir(dataDir, record.sandboxID);
  await mkdir(dir, { recursive: true });
  const file = path.join(dir, "sandbox.json");
  await writeFile(`${file}.tmp`, `${JSON.stringify(record, null, 2)}\n`);
  await rename(`${file}.tmp`, file);
}

/** Every sandbox directory with the record it holds (undefined when unreadable or missing). */
export async function readRecords(
  dataDir: string,
): Promise<Array<{ sandboxID: string; record: SandboxRecord | undefined }>> {
  const root = path.join(dataDir, "sandboxes");
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return [];
  }
  return Promise.all(
    names.map(async (sandboxID) => {
      try {
        const text = await readFile(path.join(root, sandboxID, "sandbox.json"), "utf8");
        return { sandboxID, record: JSON.parse(text) as SandboxRecord };
      } catch {
        return { sandboxID, record: undefined };
      }
    }),
  );
}
