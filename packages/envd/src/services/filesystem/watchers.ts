/**
 * The polling flavour of WatchDir: CreateWatcher starts a watcher and returns its id,
 * GetWatcherEvents drains what it queued since the last call, RemoveWatcher stops it.
 */
import { randomBytes } from "node:crypto";
import type { HandlerContext } from "@connectrpc/connect";
import { Code, ConnectError } from "@connectrpc/connect";
import type {
  CreateWatcherRequest,
  GetWatcherEventsRequest,
  RemoveWatcherRequest,
} from "@moat/shared/gen/envd/filesystem";
import type { DirWatcher, FilesystemEventInit } from "./dir-watcher.js";
import type { FilesystemService } from "./service.js";

/** Events a watcher holds for a client that stopped polling, before it gives up. */
const MAX_QUEUED_EVENTS = 100_000;

export class PollingWatcher {
  private events: FilesystemEventInit[] = [];
  private failure: ConnectError | undefined;
  private watcher: DirWatcher | undefined;

  constructor(readonly id: string) {}

  attach(watcher: DirWatcher): void {
    this.watcher = watcher;
  }

  push(event: FilesystemEventInit): void {
    if (this.events.length >= MAX_QUEUED_EVENTS) {
      this.fail(
        new ConnectError(
          `watcher '${this.id}' queued ${MAX_QUEUED_EVENTS} events without being read; create a new one`,
          Code.ResourceExhausted,
        ),
      );
      return;
    }
    this.events.push(event);
  }

  /** Stops watching; the events queued so far can still be drained, then the error is reported. */
  fail(err: ConnectError): void {
    this.failure ??= err;
    this.close();
  }

  drain(): FilesystemEventInit[] {
    if (this.events.length === 0 && this.failure) throw this.failure;
    const events = this.events;
    this.events = [];
    return events;
  }

  close(): void {
    this.watcher?.close();
  }
}

/** CreateWatcher: the same checks and events as WatchDir, queued for GetWatcherEvents. */
export async function createWatcher(
  service: FilesystemService,
  req: CreateWatcherRequest,
  hctx: HandlerContext,
) {
  const polling = new PollingWatcher(`w${randomBytes(12).toString("hex")}`);
  const watcher = await service.openWatcher(hctx.requestHeader, req, {
    onEvent: (event) => polling.push(event),
    onEnd: (err) => (err ? polling.fail(err) : polling.close()),
  });
  polling.attach(watcher);
  service.addPollingWatcher(polling);
  return { watcherId: polling.id };
}

/** GetWatcherEvents: every event since the last call; not_found for an unknown id. */
export function getWatcherEvents(service: FilesystemService, req: GetWatcherEventsRequest) {
  return { events: service.pollingWatcher(req.watcherId).drain() };
}

/** RemoveWatcher: stops a watcher and forgets it; not_found for an unknown id. */
export function removeWatcher(service: FilesystemService, req: RemoveWatcherRequest) {
  service.pollingWatcher(req.watcherId);
  service.deletePollingWatcher(req.watcherId);
  return {};
}
