import path from "node:path";
import type { HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { StatRequest } from "@moat/shared/gen/envd/filesystem";
import { fsError } from "../../errors.js";
import { entryInfo } from "../../fs/entry-info.js";
import type { FilesystemService } from "./service.js";

/** Stat: the entry at a path (a symlink itself, described with its target's type); not_found when missing. */
export async function stat(service: FilesystemService, req: StatRequest, hctx: HandlerContext) {
  const { path: target, access } = service.target(hctx.requestHeader, req.path);
  try {
    await access.requireSearch(path.dirname(target));
    return { entry: await entryInfo(target, service.ctx.users) };
  } catch (err) {
    // Below a file nothing exists (`test -e` is false), so `exists()` answers false, not an error.
    if ((err as NodeJS.ErrnoException).code === "ENOTDIR") {
      throw new ConnectError(`path '${target}': no such file or directory`, Code.NotFound);
    }
    throw fsError(err, `path '${target}'`);
  }
}
