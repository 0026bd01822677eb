import { ConnectError, type HandlerContext } from "@connectrpc/connect";
import { Channel } from "@moat/shared";
import type { WatchDirRequest } from "@moat/shared/gen/envd/filesystem";
import { keepaliveIntervalMs } from "../../context.js";
import type { FilesystemEventInit } from "./dir-watcher.js";
import type { FilesystemService } from "./service.js";

/**
 * WatchDir: start{} once the watch is in place, then filesystem events, with keepalives while
 * nothing happens. The watch ends when the client goes away (the SDK's handle.stop() aborts the
 * request), when the deadline passes, when envd shuts down, or after the REMOVE of the watched
 * directory itself (named ".").
 */
export async function* watchDir(service: FilesystemService, req: WatchDirRequest, hctx: HandlerContext) {
  const channel = new Channel<FilesystemEventInit>();
  let failure: ConnectError | undefined;
  const watcher = await service.openWatcher(hctx.requestHeader, req, {
    onEvent: (event) => channel.push(event),
    onEnd: (err) => {
      failure = err;
      channel.close();
    },
  });
  const untrack = service.trackStream(() => {
    watcher.close();
    channel.close();
  });
  const idleMs = keepaliveIntervalMs(hctx.requestHeader);
  try {
    yield { event: { case: "start" as const, value: {} } };
    for (;;) {
      // An aborted call ends the stream with its reason as the error.
      const next = await channel.pull(hctx.signal, idleMs).catch((err: unknown) => {
        throw ConnectError.from(err);
      });
      if (next.kind === "done") break;
      yield next.kind === "idle"
        ? { event: { case: "keepalive" as const, value: {} } }
        : { event: { case: "filesystem" as const, value: next.value } };
    }
  } finally {
    untrack();
    watcher.close();
  }
  if (failure) throw failure;
}
