import type { Handler } from "hono";
import type { EnvdContext } from "../context.js";
import type { HTTPEnv } from "./bindings.js";

/** GET /envs: the sandbox-wide env vars (what `/init` set plus envd's own E2B_* ones). */
export function envs(ctx: EnvdContext): Handler<HTTPEnv> {
  return (c) => c.json(Object.fromEntries(ctx.state.envVars));
}
