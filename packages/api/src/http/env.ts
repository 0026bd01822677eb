import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Caller } from "../auth/authenticate.js";

/** What the middleware puts on a request's context for the handlers. */
export interface AppEnv {
  Variables: {
    /** Set on every authenticated route by the auth middleware. */
    caller: Caller;
  };
}

export type App = OpenAPIHono<AppEnv>;
