import { rm } from "node:fs/promises";
import type { HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type { RemoveRequest } from "@moat/shared/gen/envd/filesystem";
import { fsError } from "../../errors.js";
import { forgetRemoved } from "../../fs/metadata.js";
import type { FilesystemService } from "./service.js";

/**
 * Remove: `rm -rf` (a symlink itself, never its target). A path that does not exist is success,
 * as envd's RemoveAll answers and the SDK's tests expect.
 */
export async function remove(service: FilesystemService, req: RemoveRequest, hctx: HandlerContext) {
  // An empty path would resolve to the home directory: never remove that by accident.
  if (!req.path) throw new ConnectError("path is required", Code.InvalidArgument);
  const { path: target, access } = service.target(hctx.requestHeader, req.path);
  if (target === "/") throw new ConnectError("refusing to remove '/'", Code.InvalidArgument);
  try {
    await access.requireRemoveTree(target);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT" || code === "ENOTDIR") return {};
    throw fsError(err, `remove '${target}'`);
  }
  try {
    await rm(target, { recursive: true, force: true });
    await forgetRemoved(target);
    return {};
  } catch (err) {
    // Below a file nothing exists: already removed.
    if ((err as NodeJS.ErrnoException).code === "ENOTDIR") return {};
    throw fsError(err, `remove '${target}'`);
  }
}
