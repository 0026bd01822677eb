/**
 * orchestrator.TemplateService: template builds over RPC. A build's log entries stream as they
 * happen; the stream ends with one result. Cancelling the call cancels the build.
 */

import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import { Channel, ENVD_VERSION, logContext } from "@moat/shared";
import type { BuildTemplateEventSchema, TemplateService } from "@moat/shared/gen/orchestrator";
import { activeTraceId, extractTraceContext, inSpan, SpanKind } from "@moat/shared/telemetry";
import type { SharedArtifacts } from "../artifacts/shared.js";
import type { SandboxManager } from "../sandbox/manager.js";
import { MAX_DISK_SIZE_MB, MIN_DISK_SIZE_MB } from "../storage/disk.js";
import type { BuildLog, BuildRequest, TemplateBuilder } from "../template/build/builder.js";
import { BuildStepError } from "../template/build/steps.js";
import type { TemplateStore } from "../template/store.js";
import { callLogFields } from "./request-context.js";

type Event = MessageInitShape<typeof BuildTemplateEventSchema>;

export function templateService(
  builder: TemplateBuilder,
  store: TemplateStore,
  manager: SandboxManager,
  shared?: SharedArtifacts,
): ServiceImpl<typeof TemplateService> {
  return {
    async *build(req, ctx) {
      if (!req.templateId || !req.buildId || !req.teamId) {
        throw new ConnectError("team_id, template_id and build_id are required", Code.InvalidArgument);
      }
      if (Boolean(req.fromImage) === Boolean(req.fromBuildId)) {
        throw new ConnectError(
          "exactly one of from_image and from_build_id is required",
          Code.InvalidArgument,
        );
      }
      const disk = req.diskSizeMb;
      if (disk !== 0 && (disk < MIN_DISK_SIZE_MB || disk > MAX_DISK_SIZE_MB)) {
        throw new ConnectError(
          `disk_size_mb must be 0 (the node's default) or from ${MIN_DISK_SIZE_MB} to ${MAX_DISK_SIZE_MB}`,
          Code.InvalidArgument,
        );
      }
      // Log entries queue here until the stream takes them (unbounded: a build's log is modest).
      const queue = new Channel<Event>();
      const push = (event: Event) => queue.push(event);
      const emit = (log: BuildLog) =>
        push({
          event: {
            case: "log",
            value: {
              time: timestampFromDate(new Date()),
              level: log.level,
              message: log.message,
              step: log.step ?? "",
            },
          },
        });
      // A stream runs after the interceptors' call: its trace and log fields are set here.
      const parent = extractTraceContext((name) => ctx.requestHeader.get(name));
      const fields = callLogFields(ctx.requestHeader);
      const build = (request: BuildRequest) =>
        inSpan(
          "orchestrator",
          "template.build",
          () =>
            logContext.run({ ...fields, ...traceField() }, () => builder.build(request, emit, ctx.signal)),
          {
            kind: SpanKind.SERVER,
            parent,
            attributes: { "moat.template_id": req.templateId, "moat.build_id": req.buildId },
          },
        );
      const work = build({
        teamID: req.teamId,
        templateID: req.templateId,
        buildID: req.buildId,
        vcpu: req.vcpu || 2,
        memoryMB: req.memoryMb || 1024,
        diskSizeMB: req.diskSizeMb,
        fromImage: req.fromImage || undefined,
        fromBuildID: req.fromBuildId || undefined,
        registryAuth: req.fromImageRegistry?.username ? req.fromImageRegistry : undefined,
        force: req.force,
        startCmd: req.startCmd || undefined,
        readyCmd: req.readyCmd || undefined,
        steps: req.steps.map((s) => ({
          type: s.type,
          args: s.args,
          force: s.force,
          filesHash: s.filesHash || undefined,
          filesURL: s.filesUrl || undefined,
        })),
      })
        .then(
          (outcome) =>
            push({
              event: {
                case: "result",
                value: {
                  ok: true,
                  envdVersion: ENVD_VERSION,
                  defaultUser: outcome.defaultUser,
                  defaultWorkdir: outcome.defaultWorkdir ?? "",
                },
              },
            }),
          (err: unknown) => {
            const step = err instanceof BuildStepError ? err.step : "finalize";
            const message = err instanceof Error ? err.message : String(err);
            emit({ level: "error", message, step });
            push({
              event: { case: "result", value: { ok: false, message, step, envdVersion: ENVD_VERSION } },
            });
          },
        )
        .finally(() => queue.close());
      try {
        // A caller that goes away cancels the queue; the build, cancelled by the signal, is awaited.
        yield* queue;
      } finally {
        await work;
      }
    },
    async deleteBuild(req) {
      const layers = store.readManifest(req.buildId)?.layers ?? [];
      await manager.forgetBuild(req.buildId);
      await store.deleteBuild(req.buildId);
      await builder.pruneLayers(layers);
      // Its layers stay in shared storage: other builds of the team may stand on them.
      await shared?.deleteBuild(req.buildId);
      return {};
    },
  };
}

/** The active span's trace id as a log field (the build's own span, once it runs). */
function traceField(): Record<string, string> {
  const traceId = activeTraceId();
  return traceId ? { traceId } : {};
}
