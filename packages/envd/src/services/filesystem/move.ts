import { execFile } from "node:child_process";
import { lstat, rename } from "node:fs/promises";
import path from "node:path";
import { promisify } from "node:util";
import type { HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { MoveRequest } from "@moat/shared/gen/envd/filesystem";
import { fsError } from "../../errors.js";
import { entryInfo } from "../../fs/entry-info.js";
import { prepareMove } from "../../fs/metadata.js";
import { makeDirsAs } from "../../fs/ownership.js";
import type { FilesystemService } from "./service.js";

const execFileAsync = promisify(execFile);

/**
 * Move: rename(2) semantics (a file replaces a file, a directory may replace an empty directory),
 * creating the destination's missing parents owned by the user. A missing source is not_found.
 */
export async function move(service: FilesystemService, req: MoveRequest, hctx: HandlerContext) {
  if (!req.source || !req.destination) {
    throw new ConnectError("source and destination are required", Code.InvalidArgument);
  }
  const { user, path: source, access } = service.target(hctx.requestHeader, req.source);
  const destination = service.target(hctx.requestHeader, req.destination).path;
  try {
    await access.requireSearch(path.dirname(source));
    // Before creating any parent, so that a failed move leaves nothing behind.
    await lstat(source);
  } catch (err) {
    throw fsError(err, `source '${source}'`);
  }
  try {
    await access.requireMove(source, destination);
    await makeDirsAs(path.dirname(destination), user, access);
    const moveMetadata = await prepareMove(source, destination);
    await renameAcrossDevices(source, destination);
    await moveMetadata();
    return { entry: await entryInfo(destination, service.ctx.users) };
  } catch (err) {
    throw fsError(err, `move '${source}' to '${destination}'`);
  }
}

/**
 * rename(2), falling back to mv(1) when source and destination are on different filesystems
 * (a tmpfs /tmp and the root overlay): mv copies with owners, modes and times, then removes.
 */
async function renameAcrossDevices(source: string, destination: string): Promise<void> {
  try {
    await rename(source, destination);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== "EXDEV") throw err;
    try {
      // -T: the destination is the new name, never a directory to move into.
      await execFileAsync("mv", ["-T", "--", source, destination]);
    } catch (mvErr) {
      const stderr = (mvErr as { stderr?: string }).stderr?.trim();
      throw new ConnectError(`mv failed: ${stderr || String(mvErr)}`, Code.Internal);
    }
  }
}
