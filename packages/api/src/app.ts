/**
 * The HTTP application: middleware (metrics, CORS, body limit, auth), the routes, and the single
 * error edge. Routes are defined with @hono/zod-openapi, so the schemas that validate requests
 * are the ones GET /openapi.json documents.
 */
import { OpenAPIHono } from "@hono/zod-openapi";
import { cors } from "hono/cors";
import type { APIContext } from "./context.js";
import { registerAccessTokens } from "./handlers/access-tokens.js";
import { registerAdminNodes } from "./handlers/admin-nodes.js";
import { registerAdminOperations } from "./handlers/admin-operations.js";
import { registerAdminTeamsCreate } from "./handlers/admin-teams-create.js";
import { registerAdminTeamsLimits } from "./handlers/admin-teams-limits.js";
import { registerAPIKeys } from "./handlers/api-keys.js";
import { registerHealth } from "./handlers/health.js";
import { registerInternalCatalog } from "./handlers/internal-catalog.js";
import { registerInternalNodes } from "./handlers/internal-nodes.js";
import { registerInternalSandboxResume } from "./handlers/internal-sandbox-resume.js";
import { registerSandboxConnect } from "./handlers/sandbox-connect.js";
import { registerSandboxCreate } from "./handlers/sandbox-create.js";
import { registerSandboxFork } from "./handlers/sandbox-fork.js";
import { registerSandboxGet } from "./handlers/sandbox-get.js";
import { registerSandboxKill } from "./handlers/sandbox-kill.js";
import { registerSandboxLogs } from "./handlers/sandbox-logs.js";
import { registerSandboxMetrics } from "./handlers/sandbox-metrics.js";
import { registerSandboxNetwork } from "./handlers/sandbox-network.js";
import { registerSandboxPause } from "./handlers/sandbox-pause.js";
import { registerSandboxRefresh } from "./handlers/sandbox-refresh.js";
import { registerSandboxResume } from "./handlers/sandbox-resume.js";
import { registerSandboxTimeout } from "./handlers/sandbox-timeout.js";
import { registerSandboxesList } from "./handlers/sandboxes-list.js";
import { registerSandboxesListV1 } from "./handlers/sandboxes-list-v1.js";
import { registerSnapshotCreate } from "./handlers/snapshot-create.js";
import { registerSnapshotsList } from "./handlers/snapshots-list.js";
import { registerTeamMetrics } from "./handlers/team-metrics.js";
import { registerTeamsList } from "./handlers/teams-list.js";
import { registerTemplateAlias } from "./handlers/template-alias.js";
import { registerTemplateBuildLogs } from "./handlers/template-build-logs.js";
import { registerTemplateBuildStart } from "./handlers/template-build-start.js";
import { registerTemplateBuildStatus } from "./handlers/template-build-status.js";
import { registerTemplateDelete } from "./handlers/template-delete.js";
import { registerTemplateFilesDownload } from "./handlers/template-files-download.js";
import { registerTemplateFilesLink } from "./handlers/template-files-link.js";
import { isTemplateFileUpload, registerTemplateFilesUpload } from "./handlers/template-files-upload.js";
import { registerTemplateGet } from "./handlers/template-get.js";
import { registerTemplateRequestBuild } from "./handlers/template-request-build.js";
import { registerTemplateTagsAssign } from "./handlers/template-tags-assign.js";
import { registerTemplateTagsDelete } from "./handlers/template-tags-delete.js";
import { registerTemplateTagsList } from "./handlers/template-tags-list.js";
import { registerTemplateUpdate } from "./handlers/template-update.js";
import { registerTemplatesList } from "./handlers/templates-list.js";
import { registerTemplatesListV1 } from "./handlers/templates-list-v1.js";
import { isVolumeFileUpload, registerVolumeContentFiles } from "./handlers/volume-content-files.js";
import { registerVolumeContentPaths } from "./handlers/volume-content-paths.js";
import { registerVolumeCreate } from "./handlers/volume-create.js";
import { registerVolumeDelete } from "./handlers/volume-delete.js";
import { registerVolumeGet } from "./handlers/volume-get.js";
import { registerVolumesList } from "./handlers/volumes-list.js";
import { requireMetricsToken } from "./http/admin.js";
import { requireTeam } from "./http/auth.js";
import { bodyLimit } from "./http/body-limit.js";
import { loadDashboard, registerDashboard } from "./http/dashboard.js";
import type { App, AppEnv } from "./http/env.js";
import { errorResponse, onError, validationMessage } from "./http/errors.js";
import type { APIMetrics } from "./http/metrics.js";
import { refuseNUL } from "./http/no-nul.js";
import { rateLimit } from "./http/rate-limit.js";
import { requestContext } from "./http/request-context.js";
import { RateLimiter } from "./quotas/rate-limit.js";

/**
 * Paths whose routes belong to a team: everything but health, metrics, docs, internal, the signed
 * template file URLs and the volume content routes (which carry their own authorisation).
 */
const TEAM_ROUTES = [
  "/sandboxes",
  "/sandboxes/*",
  "/v2/*",
  "/v3/*",
  "/teams",
  "/teams/*",
  "/templates",
  "/templates/*",
  "/snapshots",
  "/volumes",
  "/volumes/*",
  "/api-keys",
  "/api-keys/*",
  "/access-tokens",
  "/access-tokens/*",
];

export function createApp(ctx: APIContext, metrics: APIMetrics): App {
  const { logger } = ctx;
  const app = new OpenAPIHono<AppEnv>({
    defaultHook: (result, c) => {
      if (!result.success) return errorResponse(c, 400, validationMessage(result.error, result.target));
    },
  });

  app.use(requestContext());
  app.use(metrics.middleware());
  app.use(async (c, next) => {
    const started = performance.now();
    await next();
    logger.debug(
      {
        method: c.req.method,
        path: c.req.path,
        status: c.res.status,
        ms: Math.round(performance.now() - started),
      },
      "request",
    );
  });
  // Browsers may call the API directly with the SDK (as E2B's API allows).
  app.use(
    cors({
      origin: "*",
      allowHeaders: [
        "Content-Type",
        "X-API-Key",
        "Authorization",
        "X-Team-ID",
        "X-Request-Id",
        "traceparent",
        "tracestate",
      ],
      exposeHeaders: ["X-Next-Token", "X-Total-Running", "X-Request-Id"],
    }),
  );
  // Template file uploads stream to disk under their own cap (maxUploadBytes), volume file uploads
  // to their volume (its size).
  const streamed = (method: string, path: string) =>
    isTemplateFileUpload(method, path) || isVolumeFileUpload(method, path);
  const jsonBodyLimit = bodyLimit(ctx.config.maxBodyBytes);
  app.use((c, next) => (streamed(c.req.method, c.req.path) ? next() : jsonBodyLimit(c, next)));
  app.use(refuseNUL({ readBody: (c) => !streamed(c.req.method, c.req.path) }));
  const authenticated = requireTeam(ctx.db, ctx.config.quotas);
  const rateLimited = rateLimit(new RateLimiter());
  for (const path of TEAM_ROUTES) {
    app.use(path, authenticated);
    app.use(path, rateLimited);
  }

  registerHealth(app, ctx);
  // The web dashboard's static files; it calls the team routes with the user's own key.
  registerDashboard(app, loadDashboard());
  // The operator's (Prometheus): Authorization: Bearer with the metrics or the admin token.
  app.get("/metrics", async (c) => {
    requireMetricsToken(c, ctx.config);
    return c.text(await metrics.registry.metrics(), 200, { "Content-Type": metrics.registry.contentType });
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "ApiKeyAuth", {
    type: "apiKey",
    in: "header",
    name: "X-API-Key",
  });
  app.openAPIRegistry.registerComponent("securitySchemes", "AccessTokenAuth", {
    type: "http",
    scheme: "bearer",
    description: "An access token, sk_e2b_…",
  });
  app.doc("/openapi.json", {
    openapi: "3.0.3",
    info: {
      title: "moat API",
      version: "0.1.0",
      description: "E2B-compatible control plane of moat: sandboxes, templates, teams and their keys",
    },
  });

  registerSandboxCreate(app, ctx);
  registerSandboxesList(app, ctx);
  registerSandboxesListV1(app, ctx);
  // GET /sandboxes/metrics before GET /sandboxes/{sandboxID}, which would match it too.
  registerSandboxMetrics(app, ctx);
  registerSandboxGet(app, ctx);
  registerSandboxKill(app, ctx);
  registerSandboxTimeout(app, ctx);
  registerSandboxNetwork(app, ctx);
  registerSandboxRefresh(app, ctx);
  registerSandboxConnect(app, ctx);
  registerSandboxPause(app, ctx);
  registerSandboxResume(app, ctx);
  registerSandboxLogs(app, ctx);
  registerSandboxFork(app, ctx);
  registerSnapshotCreate(app, ctx);
  registerSnapshotsList(app, ctx);
  registerTeamsList(app, ctx);
  registerAPIKeys(app, ctx);
  registerAccessTokens(app, ctx);
  registerTeamMetrics(app, ctx);
  registerTemplateRequestBuild(app, ctx);
  registerTemplateFilesLink(app, ctx);
  registerTemplateFilesUpload(app, ctx);
  registerTemplateFilesDownload(app, ctx);
  registerTemplateBuildStart(app, ctx);
  registerTemplateBuildStatus(app, ctx);
  registerTemplateBuildLogs(app, ctx);
  registerTemplateAlias(app, ctx);
  registerTemplatesListV1(app, ctx);
  registerTemplatesList(app, ctx);
  // The tag routes before /templates/{templateID}, which would match /templates/tags too.
  registerTemplateTagsAssign(app, ctx);
  registerTemplateTagsDelete(app, ctx);
  registerTemplateTagsList(app, ctx);
  registerTemplateGet(app, ctx);
  registerTemplateUpdate(app, ctx);
  registerTemplateDelete(app, ctx);
  registerInternalCatalog(app, ctx);
  registerInternalSandboxResume(app, ctx);
  registerInternalNodes(app, ctx);
  registerVolumeCreate(app, ctx);
  registerVolumesList(app, ctx);
  registerVolumeGet(app, ctx);
  registerVolumeDelete(app, ctx);
  const volumeContentRate = new RateLimiter();
  registerVolumeContentPaths(app, ctx, volumeContentRate);
  registerVolumeContentFiles(app, ctx, volumeContentRate);
  registerAdminTeamsCreate(app, ctx);
  registerAdminTeamsLimits(app, ctx);
  registerAdminNodes(app, ctx);
  registerAdminOperations(app, ctx);

  app.notFound((c) => errorResponse(c, 404, `no route for ${c.req.method} ${c.req.path}`));
  app.onError(onError(logger));
  return app;
}
