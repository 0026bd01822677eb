import { lstat, stat } from "node:fs/promises";
import type { HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { MakeDirRequest } from "@moat/shared/gen/envd/filesystem";
import { fsError } from "../../errors.js";
import { entryInfo } from "../../fs/entry-info.js";
import { makeDirsAs } from "../../fs/ownership.js";
import type { FilesystemService } from "./service.js";

/**
 * MakeDir: `mkdir -p` as the request's user, every directory it creates owned by them. An existing
 * directory is already_exists (the SDK's makeDir then returns false); anything else already at
 * the path is invalid_argument.
 */
export async function makeDir(service: FilesystemService, req: MakeDirRequest, hctx: HandlerContext) {
  const { user, path: dir, access } = service.target(hctx.requestHeader, req.path);
  try {
    if (await exists(dir)) {
      // Follow a symlink: a link to a directory is a directory for mkdir -p.
      const isDir = await stat(dir).then(
        (st) => st.isDirectory(),
        () => false,
      );
      if (isDir) throw new ConnectError(`directory '${dir}' already exists`, Code.AlreadyExists);
      throw new ConnectError(`path '${dir}' already exists and is not a directory`, Code.InvalidArgument);
    }
    await access.requireCreate(dir);
    const created = await makeDirsAs(dir, user, access);
    // Someone else created it between the check and the mkdir.
    if (created === undefined)
      throw new ConnectError(`directory '${dir}' already exists`, Code.AlreadyExists);
    return { entry: await entryInfo(dir, service.ctx.users) };
  } catch (err) {
    throw fsError(err, `make directory '${dir}'`);
  }
}

async function exists(target: string): Promise<boolean> {
  try {
    await lstat(target);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return false;
    throw err;
  }
}
