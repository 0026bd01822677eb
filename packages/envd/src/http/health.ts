import type { Handler } from "hono";
import type { HTTPEnv } from "./bindings.js";

/** GET /health: liveness, always 204 and never behind the access token. */
export function health(): Handler<HTTPEnv> {
  return (c) => c.body(null, 204);
}
