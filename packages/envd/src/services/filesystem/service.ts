import type { ServiceImpl } from "@connectrpc/connect";
import type { Filesystem } from "@moat/shared/gen/envd/filesystem";
import type { EnvdContext } from "../../context.js";

/** filesystem.Filesystem: stat, list, make, move, remove and watch paths as the request's user. */
export class FilesystemService {
  constructor(private readonly ctx: EnvdContext) {}

  implementation(): Partial<ServiceImpl<typeof Filesystem>> {
    void this.ctx;
    return {};
  }

  /** Stops every watcher. */
  async close(): Promise<void> {}
}
