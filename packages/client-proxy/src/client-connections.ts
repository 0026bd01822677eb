import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { Socket } from "node:net";

/** How long a connection may go without asking for anything (headers of a request) before it can be shed. */
export const SILENT_GRACE_MS = 1000;
/** At most one shedding pass per interval while connections arrive at a cap. */
const SHED_INTERVAL_MS = 250;

export interface ClientConnectionLimits {
  /** Connections the proxy holds at once; 0 means no limit. Node's own cap enforces it. */
  maxTotal: number;
  /** Connections one client address holds at once; 0 means no limit. */
  maxPerClient: number;
  /** Called for every connection closed on arrival (either cap). */
  onDrop(): void;
  /** Called after a shedding pass made room, with how many connections it closed. */
  onShed(shed: number, cap: "total" | "client"): void;
}

/**
 * The client connections of the proxy's HTTP server, and the two caps on them. At a cap, the
 * connections that ask for nothing make room first: opened and left silent, trickling their
 * headers, or idle between requests, for longer than a grace period. Requests in flight and
 * tunnels are never cut. The per-client cap keeps one address (a flood, a leaky client) from
 * filling the proxy's whole table and locking every other client out.
 */
export function limitClientConnections(server: Server, limits: ClientConnectionLimits): void {
  if (limits.maxTotal <= 0 && limits.maxPerClient <= 0) return;
  /** Sockets that ask for nothing, with since when. */
  const unasked = new Map<Socket, number>();
  /** Open sockets per client address (only with a per-client cap). */
  const perClient = new Map<string, Set<Socket>>();
  let lastShed = 0;

  const shed = (cap: "total" | "client", of?: Set<Socket>): number => {
    const now = Date.now();
    if (now - lastShed < SHED_INTERVAL_MS) return 0;
    lastShed = now;
    let count = 0;
    for (const [socket, since] of unasked) {
      if (now - since < SILENT_GRACE_MS || (of && !of.has(socket))) continue;
      socket.destroy();
      count++;
    }
    limits.onShed(count, cap);
    return count;
  };

  if (limits.maxTotal > 0) {
    server.maxConnections = limits.maxTotal;
    server.on("drop", () => {
      limits.onDrop();
      shed("total");
    });
  }
  server.on("connection", (socket: Socket) => {
    if (limits.maxPerClient > 0) {
      const address = socket.remoteAddress ?? "";
      const set = perClient.get(address) ?? new Set<Socket>();
      // Shed sockets leave the set on their close, which comes on a later tick.
      if (set.size >= limits.maxPerClient && set.size - shed("client", set) >= limits.maxPerClient) {
        limits.onDrop();
        socket.destroy();
        return;
      }
      perClient.set(address, set);
      set.add(socket);
      socket.once("close", () => {
        set.delete(socket);
        if (set.size === 0 && perClient.get(address) === set) perClient.delete(address);
      });
    }
    unasked.set(socket, Date.now());
    socket.once("close", () => unasked.delete(socket));
  });
  server.prependListener("request", (req: IncomingMessage, res: ServerResponse) => {
    unasked.delete(req.socket);
    // Answered and kept alive, it asks for nothing again until its next request.
    res.once("finish", () => {
      if (!req.socket.destroyed) unasked.set(req.socket, Date.now());
    });
  });
  server.prependListener("upgrade", (req: IncomingMessage) => unasked.delete(req.socket));
}
