/**
 * Starting a requested build (POST /v2/templates/{id}/builds/{buildID}, step 3 of Template.build):
 * the start request is checked (exactly one base, steps well formed, every COPY's files uploaded
 * by the team), the base resolved (`fromTemplate` to that template's build, which pins the build to
 * the node that has it), a node chosen, the build claimed (waiting → building, once) and run in the
 * background (build-runner.ts). The request answers as soon as the build runs.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import type { BuildTemplateRequestSchema, TemplateStepSchema } from "@moat/shared/gen/orchestrator";
import type { APIContext } from "../context.js";
import type { StoredBuildStart, TeamRow, TemplateBuildRow } from "../db/schema.js";
import { claimBuild, getBuild } from "../db/template-builds.js";
import { getTemplateFile, touchTemplateFile } from "../db/template-files.js";
import { CapacityError, ConflictError, InvalidRequestError } from "../errors.js";
import type { NodeClient } from "../orchestrator/node-client.js";
import { buildNodes, placeSandbox } from "../placement/placement.js";
import { checkResources } from "../quotas/check.js";
import { teamLimits } from "../quotas/limits.js";
import { takeBuildSlot } from "../quotas/reserve.js";
import { FILES_HASH } from "./files.js";
import { findOwnBuild, resolveTemplateBuild } from "./resolve.js";

export const STEP_TYPES = ["COPY", "RUN", "ENV", "WORKDIR", "USER"] as const;

export interface BuildStep {
  type: (typeof STEP_TYPES)[number];
  args: string[];
  force?: boolean;
  filesHash?: string;
}

/** Credentials of the registry `fromImage` is pulled from; other types than "registry" are refused. */
export type ImageRegistry =
  | { type: "registry"; username: string; password: string }
  | { type: "aws" }
  | { type: "gcp" };

/** The start request as the SDK sends it (null and absent alike mean not given). */
export interface BuildStart {
  fromImage?: string | null;
  fromTemplate?: string | null;
  fromImageRegistry?: ImageRegistry | null;
  force?: boolean;
  startCmd?: string | null;
  readyCmd?: string | null;
  steps?: BuildStep[];
}

interface Base {
  fromImage: string;
  /** "base" for the base template. */
  fromBuildID: string;
  registry?: { username: string; password: string };
  /** The node that has `fromBuildID`; null: any. */
  nodeID: string | null;
}

export async function startBuild(
  ctx: APIContext,
  team: TeamRow,
  templateRef: string,
  buildID: string,
  body: BuildStart,
): Promise<void> {
  const { template, build } = await findOwnBuild(ctx.db, team, templateRef, buildID);
  if (build.started_at !== null || build.status !== "waiting") throw alreadyStarted(build);
  // The limits may have been lowered since the build was requested.
  checkResources(teamLimits(ctx.config.quotas, team), build.cpu_count, build.memory_mb);

  const base = await resolveBase(ctx, team, body);
  const steps = body.steps ?? [];
  const requestSteps = await checkSteps(ctx, team, steps);
  const { node, pinned } = chooseNode(ctx, base.nodeID);
  const stored: StoredBuildStart = {
    ...(body.fromImage ? { fromImage: body.fromImage } : {}),
    ...(body.fromTemplate ? { fromTemplate: body.fromTemplate, fromBuildID: base.fromBuildID } : {}),
    ...(body.fromImageRegistry
      ? { fromImageRegistry: { type: body.fromImageRegistry.type, username: base.registry?.username } }
      : {}),
    force: body.force ?? false,
    ...(body.startCmd ? { startCmd: body.startCmd } : {}),
    ...(body.readyCmd ? { readyCmd: body.readyCmd } : {}),
    steps: steps.map((s) => ({
      type: s.type,
      args: s.args,
      force: s.force ?? false,
      ...(s.filesHash ? { filesHash: s.filesHash } : {}),
    })),
  };
  const claimed = await takeBuildSlot(ctx, team.team_id, (tx) => claimBuild(tx, buildID, stored, node.id));
  if (!claimed) throw alreadyStarted((await getBuild(ctx.db, template.template_id, buildID)) ?? build);

  const request: MessageInitShape<typeof BuildTemplateRequestSchema> = {
    teamId: team.team_id,
    templateId: template.template_id,
    buildId: buildID,
    vcpu: claimed.cpu_count,
    memoryMb: claimed.memory_mb,
    diskSizeMb: claimed.disk_size_mb,
    fromImage: base.fromImage,
    fromBuildId: base.fromBuildID,
    ...(base.registry ? { fromImageRegistry: base.registry } : {}),
    force: body.force ?? false,
    startCmd: body.startCmd ?? "",
    readyCmd: body.readyCmd ?? "",
    steps: requestSteps,
  };
  ctx.builds.run({
    templateID: template.template_id,
    buildID,
    cpuCount: claimed.cpu_count,
    memoryMB: claimed.memory_mb,
    request,
    node,
    pinned,
  });
}

function alreadyStarted(build: TemplateBuildRow): ConflictError {
  return new ConflictError(
    build.started_at === null && build.status === "error"
      ? `build '${build.build_id}' can no longer be started: ${build.reason?.message ?? "it failed"}`
      : `build '${build.build_id}' was already started (it is ${build.status})`,
  );
}

async function resolveBase(ctx: APIContext, team: TeamRow, body: BuildStart): Promise<Base> {
  const fromImage = body.fromImage ?? "";
  const fromTemplate = body.fromTemplate ?? "";
  if ((fromImage === "") === (fromTemplate === "")) {
    throw new InvalidRequestError("exactly one of fromImage and fromTemplate is required");
  }
  const registry = body.fromImageRegistry;
  if (registry && registry.type !== "registry") {
    throw new InvalidRequestError(
      `fromImageRegistry: type '${registry.type}' is not supported by this moat version (use type 'registry')`,
    );
  }
  if (fromImage !== "") {
    return {
      fromImage,
      fromBuildID: "",
      ...(registry ? { registry: { username: registry.username, password: registry.password } } : {}),
      nodeID: null,
    };
  }
  if (registry) throw new InvalidRequestError("fromImageRegistry applies to fromImage only");
  if (fromTemplate === "base" || fromTemplate === "base:default") {
    return { fromImage: "", fromBuildID: "base", nodeID: null };
  }
  const { template, build } = await resolveTemplateBuild(ctx.db, team, fromTemplate);
  if (template.snapshot) {
    throw new InvalidRequestError(
      `fromTemplate: '${fromTemplate}' is a snapshot; templates build on templates (start sandboxes from the snapshot instead)`,
    );
  }
  return { fromImage: "", fromBuildID: build.build_id, nodeID: build.node_id };
}

/**
 * Checks each step's arguments as its type needs them and that the team uploaded every COPY's
 * files; answers the steps as the node takes them, each COPY with the signed URL of its files.
 */
async function checkSteps(
  ctx: APIContext,
  team: TeamRow,
  steps: BuildStep[],
): Promise<Array<MessageInitShape<typeof TemplateStepSchema>>> {
  const out: Array<MessageInitShape<typeof TemplateStepSchema>> = [];
  for (const [index, step] of steps.entries()) {
    const where = `steps[${index}] (${step.type}${step.args.length > 0 ? ` ${preview(step.args)}` : ""})`;
    const problem = argumentProblem(step);
    if (problem) throw new InvalidRequestError(`${where}: ${problem}`);
    let filesURL = "";
    let contentHash = "";
    if (step.type === "COPY") {
      const hash = step.filesHash ?? "";
      if (!FILES_HASH.test(hash)) {
        throw new InvalidRequestError(
          `${where}: filesHash must be the 64 hex characters of the files' SHA-256`,
        );
      }
      const file = await getTemplateFile(ctx.db, team.team_id, hash);
      if (!file?.contentSHA256 || !(await ctx.templateFiles.exists(file.path))) {
        throw new InvalidRequestError(
          `${where}: the files with hash ${hash} were not uploaded (GET /templates/{templateID}/files/${hash})`,
        );
      }
      await touchTemplateFile(ctx.db, team.team_id, hash);
      filesURL = await ctx.fileURLs.downloadURL(team.team_id, hash);
      // The node caches the layer by what the API hashed of the upload, never by the client's claim.
      contentHash = file.contentSHA256;
    }
    out.push({
      type: step.type,
      args: step.args,
      force: step.force ?? false,
      filesHash: contentHash,
      filesUrl: filesURL,
    });
  }
  return out;
}

/** What is wrong with a step's arguments, by the layout E2B gives each type; undefined if nothing. */
function argumentProblem(step: BuildStep): string | undefined {
  const { args } = step;
  switch (step.type) {
    case "COPY":
      return args.length >= 2 && args[0] && args[1] ? undefined : "COPY needs a source and a destination";
    case "RUN":
      return args[0] ? undefined : "RUN needs a command";
    case "ENV":
      return args.length >= 2 && args.length % 2 === 0 && args.every((a, i) => i % 2 === 1 || a !== "")
        ? undefined
        : "ENV needs name, value pairs";
    case "WORKDIR":
      return args[0] ? undefined : "WORKDIR needs a directory";
    case "USER":
      return args[0] ? undefined : "USER needs a user";
  }
}

function preview(args: string[]): string {
  const text = args.join(" ");
  return text.length > 60 ? `${text.slice(0, 57)}...` : text;
}

/** The node that has the base build, or any node placement picks. */
function chooseNode(ctx: APIContext, nodeID: string | null): { node: NodeClient; pinned: boolean } {
  if (nodeID !== null) {
    const node = ctx.nodes.get(nodeID);
    if (!node)
      throw new CapacityError(`node '${nodeID}', which has the base template's build, is not configured`);
    return { node, pinned: true };
  }
  const node = placeSandbox(ctx.placement, buildNodes([...ctx.nodes.values()]), new Set());
  if (!node) throw new CapacityError("no node is available to build the template");
  return { node, pinned: false };
}
