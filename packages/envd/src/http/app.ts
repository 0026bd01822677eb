import { Hono } from "hono";
import { cors } from "hono/cors";
import type { EnvdContext } from "../context.js";
import { accessTokenMiddleware } from "./auth.js";
import type { HTTPEnv } from "./bindings.js";
import { envs } from "./envs.js";
import { errorResponse, toHTTPError } from "./errors.js";
import { composeFiles } from "./files-compose.js";
import { downloadFile } from "./files-download.js";
import { uploadFiles } from "./files-upload.js";
import { health } from "./health.js";
import { init } from "./init.js";
import { metrics } from "./metrics.js";

export interface HTTPOptions {
  setClock: boolean;
  setHostname: boolean;
}

/** envd's REST routes: /health, /init, /files, /files/compose, /envs, /metrics. */
export function createHTTPApp(ctx: EnvdContext, options: HTTPOptions): Hono<HTTPEnv> {
  const app = new Hono<HTTPEnv>();
  // Fully open CORS, as envd: browsers call sandboxes directly with the SDK.
  app.use(
    cors({
      origin: "*",
      allowMethods: ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"],
      exposeHeaders: [
        "Content-Disposition",
        "Content-Encoding",
        "Content-Length",
        "Content-Range",
        "Accept-Ranges",
        "ETag",
        "Last-Modified",
        "X-Envd-Version",
      ],
    }),
  );
  app.use(accessTokenMiddleware(ctx));

  app.get("/health", health());
  app.post("/init", init(ctx, options));
  app.get("/envs", envs(ctx));
  app.get("/metrics", metrics());
  app.get("/files", downloadFile(ctx));
  app.post("/files", uploadFiles(ctx));
  app.post("/files/compose", composeFiles(ctx));

  app.notFound((c) => errorResponse(c, 404, `no route for ${c.req.method} ${c.req.path}`));
  app.onError((err, c) => {
    const httpErr = toHTTPError(err);
    const log = { err, method: c.req.method, path: c.req.path, status: httpErr.status };
    if (httpErr.status >= 500) ctx.logger.error(log, httpErr.message);
    else ctx.logger.debug(log, httpErr.message);
    return errorResponse(c, httpErr.status, httpErr.message);
  });
  return app;
}
