import type { OpenAPIHono } from "@hono/zod-openapi";
import type { TeamCaller } from "../auth/authenticate.js";

/** What the middleware puts on a request's context for the handlers. */
export interface AppEnv {
  Variables: {
    /** Set on every authenticated route by the auth middleware, with the team's limits. */
    caller: TeamCaller;
    /** The request's id (http/request-context.ts), in error bodies and log lines. */
    requestId: string;
  };
}

export type App = OpenAPIHono<AppEnv>;
