import { Hono } from "hono";
import type { EnvdContext } from "../context.js";

export interface HTTPOptions {
  setClock: boolean;
}

/** envd's REST routes: /health, /init, /files, /envs, /metrics. */
export function createHTTPApp(ctx: EnvdContext, options: HTTPOptions): Hono {
  void ctx;
  void options;
  const app = new Hono();
  app.get("/health", (c) => c.body(null, 204));
  return app;
}
