/**
 * POST /v2/sandboxes (SDK ≥2.51) and POST /sandboxes (SDK ≤2.50, CLI 2.19): create a sandbox.
 * The two differ in defaults only: v2 is always secured and lives 300 s unless told otherwise;
 * v1 is secured when `secure` is true and lives 15 s by default.
 */
import { createRoute, type z } from "@hono/zod-openapi";
import type { APIContext } from "../context.js";
import type { TeamRow } from "../db/schema.js";
import { InvalidRequestError, NotSupportedError } from "../errors.js";
import type { App } from "../http/env.js";
import {
  errorJSON,
  errorResponses,
  jsonBody,
  jsonResponse,
  NewSandboxSchema,
  NewSandboxV2Schema,
  SandboxSchema,
} from "../http/schemas.js";
import { sandboxView } from "../http/views.js";
import type { TeamLimits } from "../quotas/limits.js";
import { type CreateSandboxInput, createSandbox } from "../sandbox/create.js";
import { createNetworkSettings } from "../sandbox/network.js";
import { checkTimeout, SECURITY } from "./shared.js";

const responses = {
  201: jsonResponse(SandboxSchema, "The sandbox, running"),
  ...errorResponses,
  404: errorJSON("No such template"),
  501: errorJSON("A requested feature is not supported yet"),
  503: errorJSON("No node can take the sandbox now; retry"),
};

const createV2 = createRoute({
  method: "post",
  path: "/v2/sandboxes",
  summary: "Create a sandbox",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { body: jsonBody(NewSandboxV2Schema) },
  responses,
});

const createV1 = createRoute({
  method: "post",
  path: "/sandboxes",
  summary: "Create a sandbox (SDK ≤2.50)",
  tags: ["sandboxes"],
  security: SECURITY,
  request: { body: jsonBody(NewSandboxSchema) },
  responses,
});

export const V2_DEFAULT_TIMEOUT_SECONDS = 300;
export const V1_DEFAULT_TIMEOUT_SECONDS = 15;

export function registerSandboxCreate(app: App, ctx: APIContext): void {
  app.openapi(createV2, async (c) => {
    const input = createInput(
      c.req.valid("json"),
      { secure: true, defaultTimeout: V2_DEFAULT_TIMEOUT_SECONDS },
      c.get("caller"),
    );
    const row = await createSandbox(ctx, input);
    return c.json(sandboxView(row, ctx.config.domain), 201);
  });
  app.openapi(createV1, async (c) => {
    const body = c.req.valid("json");
    const input = createInput(
      body,
      { secure: body.secure === true, defaultTimeout: V1_DEFAULT_TIMEOUT_SECONDS },
      c.get("caller"),
    );
    const row = await createSandbox(ctx, input);
    return c.json(sandboxView(row, ctx.config.domain), 201);
  });
}

type NewSandboxBody = z.infer<typeof NewSandboxV2Schema>;

export const MCP_UNAVAILABLE =
  "Failed to start MCP gateway: this moat has no MCP gateway (E2B's mcp-gateway template); create the sandbox without mcp and start your MCP server in it with commands.run";

/** Checks the rules between fields (§1.3) and what this version supports; builds the create. */
export function createInput(
  body: NewSandboxBody,
  options: { secure: boolean; defaultTimeout: number },
  caller: { team: TeamRow; limits: TeamLimits },
): CreateSandboxInput {
  const { team } = caller;
  const timeoutSeconds = body.timeout ?? options.defaultTimeout;
  checkTimeout(timeoutSeconds, caller.limits, "timeout");
  if (body.autoPauseMemory === false && body.autoPause !== true) {
    throw new InvalidRequestError("autoPauseMemory: false requires autoPause: true");
  }
  if (body.autoPauseMemory === false && body.autoResume?.enabled) {
    throw new InvalidRequestError("autoPauseMemory: false cannot be combined with autoResume");
  }
  if (body.network?.allowPublicTraffic === false && !options.secure) {
    throw new InvalidRequestError(
      "network.allowPublicTraffic: false requires a secured sandbox (secure: true)",
    );
  }
  for (const [name, value] of Object.entries(body.envVars ?? {})) {
    if (name === "" || name.includes("=") || name.includes("\0") || value.includes("\0")) {
      throw new InvalidRequestError(`envVars: '${name}' is not a valid environment variable`);
    }
  }

  // The SDK starts E2B's MCP gateway itself after the create; moat has none, so the create is
  // refused before any sandbox exists, in the words the SDK uses when the gateway fails to start.
  if (body.mcp) throw new InvalidRequestError(MCP_UNAVAILABLE);
  if (body.iam?.tokens && Object.keys(body.iam.tokens).length > 0) {
    throw new NotSupportedError("iam tokens are not supported yet by this moat version");
  }
  const { allowInternetAccess, network } = createNetworkSettings(body);
  return {
    team,
    limits: caller.limits,
    template: body.templateID,
    timeoutSeconds,
    metadata: body.metadata ?? {},
    envVars: body.envVars ?? {},
    allowInternetAccess,
    secure: options.secure,
    network,
    autoPause: body.autoPause ?? false,
    autoPauseMemory: body.autoPauseMemory ?? true,
    autoResume: body.autoResume?.enabled ?? false,
    volumeMounts: body.volumeMounts ?? [],
  };
}
