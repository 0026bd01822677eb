/**
 * The TemplateService half of the fake orchestrator: Build streams a scripted log (a debug and an
 * info entry for the base, one info entry per step, one for finalize) and then exactly one result,
 * as the real node does. COPY steps download their files from the step's `files_url` (through
 * `fetchFile`, which tests point at the API in-process), so a build proves the signed URL works.
 * Tests steer it with `failNext` (a step fails with a message), `failNextCall` (the call fails
 * before any event), `holdNext` (the build stops after its base until released or cancelled) and
 * read `requests`, `downloads`, `deleted` and `cancelled`.
 */
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromDate } from "@bufbuild/protobuf/wkt";
import { type Code, ConnectError, type ServiceImpl } from "@connectrpc/connect";
import type {
  BuildTemplateEventSchema,
  BuildTemplateRequest,
  TemplateService,
} from "@moat/shared/gen/orchestrator";

type Event = MessageInitShape<typeof BuildTemplateEventSchema>;

/** "base", "finalize" or a step's 0-based index in the request (the node names it index + 1). */
export type FakeStep = "base" | "finalize" | number;

export interface BuildHold {
  /** Resolves with the build id once the build reached the hold. */
  reached: Promise<string>;
  release(): void;
}

export class FakeTemplateService {
  /** Every Build request as received. */
  readonly requests: BuildTemplateRequest[] = [];
  /** Builds that ended ready (sandboxes can start from them). */
  readonly ready = new Set<string>();
  /** The files COPY steps downloaded, by hash. */
  readonly downloads = new Map<string, Buffer>();
  /** DeleteBuild calls, by build id. */
  readonly deleted: string[] = [];
  /** Builds whose caller cancelled the stream. */
  readonly cancelled: string[] = [];
  /** While set, DeleteBuild fails with it (a node that cannot drop builds now). */
  deleteFailure: ConnectError | undefined;
  envdVersion = "0.6.13";
  /** How COPY steps fetch their files_url; tests without a listening API route it in-process. */
  fetchFile: (url: string) => Promise<Response> = (url) => fetch(url);
  private failure: { step: FakeStep; message: string } | undefined;
  private callFailure: ConnectError | undefined;
  private hold: { reach(buildID: string): void; released: Promise<void> } | undefined;

  /** The next build fails at `step` with `message` (logged as an error entry first). */
  failNext(step: FakeStep, message: string): void {
    this.failure = { step, message };
  }

  /** The next Build call fails with `code` before it streams anything. */
  failNextCall(code: Code, message = "injected"): void {
    this.callFailure = new ConnectError(message, code);
  }

  /** The next build waits after its base until released (or its caller cancels). */
  holdNext(): BuildHold {
    let reach!: (buildID: string) => void;
    let release!: () => void;
    const reached = new Promise<string>((resolve) => {
      reach = resolve;
    });
    const released = new Promise<void>((resolve) => {
      release = resolve;
    });
    this.hold = { reach, released };
    return { reached, release };
  }

  service(): ServiceImpl<typeof TemplateService> {
    return {
      build: (req, ctx) => this.build(req, ctx.signal),
      deleteBuild: (req) => {
        if (this.deleteFailure) throw this.deleteFailure;
        this.deleted.push(req.buildId);
        this.ready.delete(req.buildId);
        return {};
      },
    };
  }

  private async *build(req: BuildTemplateRequest, signal: AbortSignal): AsyncGenerator<Event> {
    this.requests.push(req);
    const callFailure = this.callFailure;
    this.callFailure = undefined;
    if (callFailure) throw callFailure;
    const failure = this.failure;
    this.failure = undefined;
    const hold = this.hold;
    this.hold = undefined;
    signal.addEventListener("abort", () => this.cancelled.push(req.buildId), { once: true });

    const from = req.fromImage || `build ${req.fromBuildId}`;
    yield log("base", `resolving ${from}`, "debug");
    yield log("base", `FROM ${from}`);
    if (failure?.step === "base") return yield* fail("base", failure.message);
    if (hold) {
      hold.reach(req.buildId);
      await Promise.race([hold.released, aborted(signal)]);
    }
    let workdir = "/home/user";
    for (const [index, step] of req.steps.entries()) {
      yield log(index, `${step.type} ${step.args.join(" ")}`.trim());
      if (step.type === "WORKDIR") workdir = step.args[0] ?? workdir;
      if (step.type === "COPY") {
        const res = await this.fetchFile(step.filesUrl);
        if (!res.ok) return yield* fail(index, `downloading the files failed: ${res.status}`);
        this.downloads.set(step.filesHash, Buffer.from(await res.arrayBuffer()));
      }
      if (failure?.step === index) return yield* fail(index, failure.message);
    }
    if (failure?.step === "finalize") return yield* fail("finalize", failure.message);
    yield log("finalize", "snapshot taken");
    this.ready.add(req.buildId);
    yield {
      event: {
        case: "result",
        value: {
          ok: true,
          envdVersion: this.envdVersion,
          defaultUser: "user",
          defaultWorkdir: workdir,
        },
      },
    };
  }
}

/** How the node names a step: "base", "finalize", or the step's number (1 is the first). */
function label(step: FakeStep): string {
  return typeof step === "number" ? String(step + 1) : step;
}

function log(step: FakeStep, message: string, level = "info"): Event {
  return {
    event: {
      case: "log",
      value: { time: timestampFromDate(new Date()), level, message, step: label(step) },
    },
  };
}

function* fail(step: FakeStep, message: string): Generator<Event> {
  yield log(step, message, "error");
  yield { event: { case: "result", value: { ok: false, message, step: label(step) } } };
}

function aborted(signal: AbortSignal): Promise<void> {
  return new Promise((_, reject) => {
    if (signal.aborted) reject(signal.reason);
    signal.addEventListener("abort", () => reject(signal.reason), { once: true });
  });
}
