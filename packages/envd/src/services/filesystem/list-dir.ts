import { readdir, realpath, stat } from "node:fs/promises";
import path from "node:path";
import type { HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import { FileType, type ListDirRequest } from "@moat/shared/gen/envd/filesystem";
import { fsError } from "../../errors.js";
import { type EntryInfoInit, entryInfo } from "../../fs/entry-info.js";
import { READ, SEARCH } from "./access.js";
import { mapLimit } from "./concurrency.js";
import type { FilesystemService } from "./service.js";

/** entryInfo calls in flight while listing one directory. */
const STAT_CONCURRENCY = 32;

/**
 * ListDir: the entries below a directory down to `depth` levels (0 or 1: direct children), in
 * lexical pre-order like envd's filepath.WalkDir. The path may be a symlink to a directory; entry
 * paths stay under the path as requested. Symlinked directories inside are listed, never entered,
 * so links cannot loop; subdirectories the user cannot read are listed without their contents.
 */
export async function listDir(service: FilesystemService, req: ListDirRequest, hctx: HandlerContext) {
  const { path: dir, access } = service.target(hctx.requestHeader, req.path);
  const depth = Math.max(req.depth, 1);
  let real: string;
  try {
    await access.requireSearch(path.dirname(dir));
    real = await realpath(dir);
    if (!(await stat(real)).isDirectory()) {
      throw new ConnectError(`path '${dir}' is not a directory`, Code.InvalidArgument);
    }
    await access.requireDir(real, READ | SEARCH);
  } catch (err) {
    throw fsError(err, `directory '${dir}'`);
  }

  const entries: EntryInfoInit[] = [];
  const walk = async (realDir: string, shownDir: string, level: number): Promise<void> => {
    let names: string[];
    try {
      names = await readdir(realDir);
    } catch (err) {
      // The top directory must be readable; a subdirectory that vanished or is closed is skipped.
      if (level === 1) throw err;
      return;
    }
    names.sort();
    const infos = await mapLimit(names, STAT_CONCURRENCY, async (name) => {
      try {
        return await entryInfo(path.join(shownDir, name), service.ctx.users);
      } catch (err) {
        // Removed since readdir.
        if ((err as NodeJS.ErrnoException).code === "ENOENT") return undefined;
        throw err;
      }
    });
    for (const [i, info] of infos.entries()) {
      if (!info) continue;
      entries.push(info);
      const isRealDir = info.type === FileType.DIRECTORY && info.symlinkTarget === undefined;
      if (level < depth && isRealDir) {
        const child = path.join(realDir, names[i]!);
        if (await access.mayList(child)) await walk(child, path.join(shownDir, names[i]!), level + 1);
      }
    }
  };
  try {
    await walk(real, dir, 1);
  } catch (err) {
    throw fsError(err, `list '${dir}'`);
  }
  return { entries };
}
