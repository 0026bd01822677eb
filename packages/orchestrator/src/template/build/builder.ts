/**
 * Template builds, as E2B's template-manager does them but on gVisor and without Docker: the base
 * (the base template, another build, or an OCI image pulled from its registry and provisioned),
 * then each RUN and COPY step in a build sandbox of its own whose writable layer becomes the step's
 * layer, cached by the hash of everything that produced it; then the snapshot, with the start
 * command running and the ready command satisfied. A failed build leaves no build behind and keeps
 * the layers it finished.
 */

import { createHash, randomBytes } from "node:crypto";
import { createWriteStream, existsSync } from "node:fs";
import { copyFile, mkdir, rename, rm, writeFile } from "node:fs/promises";
import path from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { Logger } from "@moat/shared";
import { inSpan } from "@moat/shared/telemetry";
import type { SharedArtifacts } from "../../artifacts/shared.js";
import { removeTree } from "../../host/files.js";
import { type OutputLine, runInSandbox } from "../../sandbox/envd-process.js";
import type { Sandbox } from "../../sandbox/sandbox.js";
import type { OperationObserver } from "../../telemetry/prometheus.js";
import type { RegistryAllowList } from "../oci/address-policy.js";
import { applyLayers } from "../oci/layers.js";
import { parseImageReference } from "../oci/reference.js";
import { type PulledImage, RegistryClient } from "../oci/registry.js";
import { BASE_BUILD_KEY, type BuildManifest, type TemplateStore } from "../store.js";
import type { BuildHost } from "./build-host.js";
import { COPY_SCRIPT, PROVISION_SCRIPT, PROVISION_VERSION, WORKDIR_SCRIPT } from "./scripts.js";
import {
  type BuildContext,
  BuildStepError,
  describeStep,
  layerKey,
  nextContext,
  parseStep,
  type Step,
  type StepInput,
  shellQuote,
  stepLabel,
} from "./steps.js";

export interface BuildRequest {
  /** The team the build is for: its layers and snapshot are cached for that team only. */
  teamID: string;
  templateID: string;
  buildID: string;
  vcpu: number;
  memoryMB: number;
  /** Disk size of the build sandboxes and of the template's sandboxes in MiB; 0: the node's. */
  diskSizeMB?: number;
  /** An image reference, or empty when building from `fromBuildID`. */
  fromImage?: string;
  /** A build on this node ("base" for the base template). */
  fromBuildID?: string;
  registryAuth?: { username: string; password: string };
  force?: boolean;
  startCmd?: string;
  readyCmd?: string;
  steps: StepInput[];
}

export interface BuildLog {
  level: "debug" | "info" | "warn" | "error";
  message: string;
  step?: string;
}

export interface BuildOutcome {
  defaultUser: string;
  defaultWorkdir?: string;
}

export interface TemplateBuilderOptions {
  /** The node's sandboxes: build sandboxes come from its factory (the manager is one). */
  manager: BuildHost;
  store: TemplateStore;
  dataDir: string;
  logger: Logger;
  /** Registries allowed beyond public hosts, and plain-HTTP ones (MOAT_REGISTRY_ALLOW). */
  registryAllow?: RegistryAllowList;
  /** Bytes an image may download and unpack to (MOAT_IMAGE_MAX_MB; default 10 GiB). */
  imageMaxBytes?: number;
  /**
   * Shared artifacts: a finished build is published (so any node can start it) before the build
   * answers, and a build from a build this node lacks fetches that one first.
   */
  shared?: SharedArtifacts;
}

/** E2B's default base image (`Template().fromBaseImage()`): here, moat's base template. */
const BASE_IMAGES =
  /^(?:(?:docker\.io|registry-1\.docker\.io|index\.docker\.io)\/)?e2bdev\/base(?::[\w.-]+)?$/;
/** What `mount` takes as options: a page. Many layers with long paths would not fit. */
const MAX_LOWERDIR_CHARS = 3500;
const STEP_TIMEOUT_MS = 60 * 60_000;
const PULL_TIMEOUT_MS = 60 * 60_000;

/** Where a build's stack stands: its layers (bottom first) over a base rootfs, and the context. */
interface Stack {
  baseRootfs?: string;
  layers: string[];
  /** The key the next layer's key chains from. */
  top: string;
  ctx: BuildContext;
  /**
   * Whether the context's workdir is in the layers: a RUN or COPY step made it (each creates it
   * first), or the build this one starts from ran in it. Docker's WORKDIR creates the directory
   * even when no step follows it; finalize does that when this is false.
   */
  workdirMade: boolean;
}

export class TemplateBuilder {
  /** Told each build's duration (the node's Prometheus metrics, telemetry/prometheus.ts). */
  observe: OperationObserver | undefined;
  /** The layers each build under way stacks on so far (kept from pruning). */
  private readonly active = new Map<string, Set<string>>();

  constructor(private readonly options: TemplateBuilderOptions) {}

  /** Layer keys builds under way use. */
  layersInUse(): Set<string> {
    return new Set([...this.active.values()].flatMap((keys) => [...keys]));
  }

  /**
   * Removes those of a deleted build's layers (and of earlier deleted builds') that nothing uses:
   * no build, no sandbox, no build under way. Those sandboxes still use are retried later.
   */
  async pruneLayers(candidates: readonly string[] = []): Promise<string[]> {
    const { store, manager } = this.options;
    const pending = [...store.readOrphans(), ...candidates];
    if (pending.length === 0) return [];
    const inUse = this.layersInUse();
    for (const lower of manager.lowersInUse()) {
      const key = store.layerKeyOf(lower);
      if (key) inUse.add(key);
    }
    const { removed, held } = await store.pruneLayers(pending, inUse);
    await store.writeOrphans(held);
    if (removed.length > 0) this.options.logger.info({ removed }, "unused template layers removed");
    return removed;
  }

  async build(req: BuildRequest, emit: (log: BuildLog) => void, signal: AbortSignal): Promise<BuildOutcome> {
    const { store, logger } = this.options;
    const log = logger.child({ templateID: req.templateID, buildID: req.buildID });
    const started = performance.now();
    if (store.readManifest(req.buildID)) {
      throw new BuildStepError(`build ${req.buildID} already exists on this node`, "base");
    }
    if (!req.teamID) throw new BuildStepError("the build request names no team", "base");
    const steps = req.steps.map((s, i) => parseStep(s, i));
    log.info(
      { steps: steps.length, fromImage: req.fromImage, fromBuildID: req.fromBuildID },
      "template build started",
    );
    this.active.set(req.buildID, new Set());
    try {
      await store.beginBuild(req.buildID);
      if (req.fromBuildID && this.options.shared && !store.readBuild(req.fromBuildID)) {
        await this.options.shared.fetchBuild(req.fromBuildID);
      }
      let stack = await inSpan("orchestrator", "build.base", () => this.base(req, emit, signal));
      this.hold(req, ...stack.layers);
      let forced = req.force ?? false;
      for (const [index, step] of steps.entries()) {
        signal.throwIfAborted();
        const label = stepLabel(index);
        forced ||= req.steps[index]?.force ?? false;
        const from = stack;
        stack = await inSpan(
          "orchestrator",
          "build.step",
          () => this.step(req, from, step, label, forced, emit, signal),
          { attributes: { "moat.build_step": label, "moat.build_step_kind": step.kind } },
        );
      }
      signal.throwIfAborted();
      if (stack.ctx.workdir && !stack.workdirMade) stack = await this.makeWorkdir(req, stack, forced, emit);
      const built = stack;
      await inSpan("orchestrator", "build.finalize", () => this.finalize(req, built, emit));
      if (this.options.shared) {
        emit({ level: "info", message: "publishing the build to shared storage", step: "finalize" });
        await this.options.shared.publishBuild(req.buildID).catch((err: unknown) => {
          throw new BuildStepError(
            `finalize: publishing the build to shared storage failed (${(err as Error).message}); check the artifact store (moat doctor) and build again`,
            "finalize",
          );
        });
      }
      await store.finishBuild(req.buildID);
      const seconds = (performance.now() - started) / 1000;
      log.info({ seconds: Math.round(seconds * 10) / 10 }, "template build finished");
      this.observe?.("build", seconds, { outcome: "ok" });
      return { defaultUser: stack.ctx.user, defaultWorkdir: stack.ctx.workdir };
    } catch (err) {
      await store.deleteBuild(req.buildID).catch(() => undefined);
      await this.options.manager.forgetBuild(req.buildID).catch(() => undefined);
      log.warn({ err }, "template build failed");
      this.observe?.("build", (performance.now() - started) / 1000, { outcome: "failed" });
      if (signal.aborted) throw new BuildStepError("the build was cancelled", "finalize");
      throw err;
    } finally {
      this.active.delete(req.buildID);
    }
  }

  /** Keeps layers from pruning while this build stacks on them. */
  private hold(req: BuildRequest, ...keys: string[]): void {
    const held = this.active.get(req.buildID);
    for (const key of keys) held?.add(key);
  }

  /** The stack the steps start on. */
  private async base(req: BuildRequest, emit: (log: BuildLog) => void, signal: AbortSignal): Promise<Stack> {
    const { store } = this.options;
    const say = (message: string) => emit({ level: "info", message, step: "base" });
    const fromBase = !req.fromImage ? req.fromBuildID === BASE_BUILD_KEY : BASE_IMAGES.test(req.fromImage);
    if (fromBase) {
      say("FROM the base template (Debian 12 with python3, pip, git, curl, sudo)");
      return {
        baseRootfs: store.baseRootfs,
        layers: [],
        top: `base:${store.baseRootfs}`,
        ctx: { env: {}, user: "user" },
        workdirMade: true,
      };
    }
    if (!req.fromImage) {
      const manifest = req.fromBuildID ? store.readManifest(req.fromBuildID) : undefined;
      if (!manifest) {
        throw new BuildStepError(
          `the template build ${req.fromBuildID} to build from is not on this node`,
          "base",
        );
      }
      say(`FROM template ${manifest.templateID} (build ${manifest.buildID})`);
      return {
        baseRootfs: manifest.baseRootfs,
        layers: [...manifest.layers],
        top: manifest.layers.at(-1) ?? `base:${manifest.baseRootfs}`,
        ctx: { env: { ...manifest.env }, user: manifest.user ?? "user", workdir: manifest.workdir },
        // Its sandboxes start in it, so it exists.
        workdirMade: true,
      };
    }
    return this.imageBase(req, say, signal);
  }

  /** An OCI image: pulled, its layers applied into one layer, then provisioned in a sandbox. */
  private async imageBase(
    req: BuildRequest,
    say: (message: string) => void,
    signal: AbortSignal,
  ): Promise<Stack> {
    const { store, dataDir } = this.options;
    const image = req.fromImage!;
    let pulled: PulledImage;
    // A registry that trickles bytes must not hold the build forever.
    const deadline = AbortSignal.timeout(PULL_TIMEOUT_MS);
    try {
      const ref = parseImageReference(image);
      say(`FROM ${image}: pulling from ${ref.registry}`);
      const registry = new RegistryClient({
        // Per team: a cached blob is served to whoever names its digest, without asking the
        // registry, so another team's private layers must not be in reach.
        cacheDir: path.join(
          dataDir,
          "cache",
          "oci",
          "teams",
          createHash("sha256").update(req.teamID).digest("hex").slice(0, 32),
        ),
        credentials: () => req.registryAuth,
        onProgress: say,
        allow: this.options.registryAllow,
        maxImageBytes: this.options.imageMaxBytes,
        signal: AbortSignal.any([signal, deadline]),
      });
      pulled = await registry.pull(ref);
    } catch (err) {
      const why =
        deadline.aborted && !signal.aborted
          ? `it took over ${PULL_TIMEOUT_MS / 60_000} minutes`
          : (err as Error).message;
      throw new BuildStepError(`pulling ${image} failed: ${why}`, "base");
    }
    signal.throwIfAborted();
    const imageKey = layerKeyOf(req.teamID, `image:${pulled.digest}:${PROVISION_VERSION}`);
    const provisionKey = layerKeyOf(req.teamID, `provision:${imageKey}`);
    this.hold(req, imageKey, provisionKey);
    if (!store.hasLayer(imageKey)) {
      say(`applying ${pulled.layers.length} layers of ${pulled.digest}`);
      await this.makeLayer(imageKey, { image, digest: pulled.digest }, async (fs) => {
        await mkdir(fs, { recursive: true });
        // In a sandbox that can write nothing but `fs`; tini (PID 1 of every sandbox) is added
        // from the base template when the image has none.
        await applyLayers(pulled.layers, fs, {
          maxBytes: this.options.imageMaxBytes,
          tini: path.join(store.baseRootfs, "usr/bin/tini-static"),
          signal,
        }).catch((err: unknown) => {
          if (signal.aborted) throw err;
          throw new BuildStepError(
            `applying the layers of ${image} failed: ${(err as Error).message}`,
            "base",
          );
        });
      });
    } else {
      say(`CACHED image ${pulled.digest}`);
    }
    const env: Record<string, string> = {};
    for (const item of pulled.config.config?.Env ?? []) {
      const eq = item.indexOf("=");
      if (eq > 0) env[item.slice(0, eq)] = item.slice(eq + 1);
    }
    const workdir = pulled.config.config?.WorkingDir || undefined;
    const lowers = [store.layerFiles(imageKey)];
    if (!store.hasLayer(provisionKey)) {
      say("provisioning the image: the user 'user', sudo, /code, resolvers");
      await this.runLayer(req, provisionKey, lowers, { provision: image }, "base", async (sandbox) => {
        await this.exec(sandbox, { command: PROVISION_SCRIPT, user: "root", envs: env }, "base", (l) =>
          say(l.line),
        );
      });
    } else {
      say("CACHED provisioning");
    }
    return {
      layers: [imageKey, provisionKey],
      top: provisionKey,
      ctx: { env, user: "user", workdir },
      // An image's WorkingDir need not exist in it (Docker creates it when a container starts).
      workdirMade: workdir === undefined,
    };
  }

  private async step(
    req: BuildRequest,
    stack: Stack,
    step: Step,
    label: string,
    forced: boolean,
    emit: (log: BuildLog) => void,
    signal: AbortSignal,
  ): Promise<Stack> {
    const { store } = this.options;
    const say = (message: string) => emit({ level: "info", message, step: label });
    if (step.kind === "ENV" || step.kind === "WORKDIR" || step.kind === "USER") {
      say(`[${label}] ${describeStep(step)}`);
      const ctx = nextContext(stack.ctx, step);
      return { ...stack, ctx, workdirMade: stack.workdirMade && ctx.workdir === stack.ctx.workdir };
    }
    const key = layerKey(req.teamID, stack.top, step, stack.ctx, forced ? req.buildID : "");
    this.hold(req, key);
    if (!forced && store.hasLayer(key)) {
      say(`CACHED [${label}] ${describeStep(step)}`);
      return { ...stack, layers: [...stack.layers, key], top: key, workdirMade: true };
    }
    say(`[${label}] ${describeStep(step)}`);
    const lowers = [...stack.layers].reverse().map((k) => store.layerFiles(k));
    if (stack.baseRootfs) lowers.push(stack.baseRootfs);
    const { ctx } = stack;
    const stream = (line: OutputLine) => emit({ level: "info", message: line.line, step: label });
    let archive: string | undefined;
    if (step.kind === "COPY") archive = await this.download(step.filesURL, step.filesHash, label, signal);
    try {
      await this.runLayer(
        req,
        key,
        lowers,
        { step: describeStep(step), parent: stack.top },
        label,
        async (sandbox) => {
          if (ctx.workdir) {
            await this.exec(
              sandbox,
              { command: script(WORKDIR_SCRIPT, ctx.workdir, ctx.user), user: "root" },
              label,
              stream,
            );
          }
          if (step.kind === "RUN") {
            await this.exec(
              sandbox,
              { command: step.command, user: step.user ?? ctx.user, cwd: ctx.workdir, envs: ctx.env },
              label,
              stream,
            );
          } else {
            const base = ctx.workdir ?? (ctx.user === "root" ? "/root" : `/home/${ctx.user.split(":")[0]}`);
            await this.exec(
              sandbox,
              {
                command: script(
                  COPY_SCRIPT,
                  "/.moat-build/files.tar",
                  step.src,
                  step.dest,
                  step.owner || ctx.user,
                  step.mode,
                  base,
                ),
                user: "root",
              },
              label,
              stream,
            );
          }
        },
        archive ? async (upper) => placeArchive(upper, archive!) : undefined,
      );
    } finally {
      if (archive) await rm(archive, { force: true });
    }
    return { ...stack, layers: [...stack.layers, key], top: key, workdirMade: true };
  }

  /**
   * A layer holding the workdir that the last WORKDIR named and no RUN or COPY step made, owned
   * by the build's current user (as BuildKit's WORKDIR makes it): sandboxes start in it.
   */
  private async makeWorkdir(
    req: BuildRequest,
    stack: Stack,
    forced: boolean,
    emit: (log: BuildLog) => void,
  ): Promise<Stack> {
    const { store } = this.options;
    const label = "finalize";
    const workdir = stack.ctx.workdir!;
    const step: Step = { kind: "WORKDIR", dir: workdir };
    const key = layerKey(req.teamID, stack.top, step, stack.ctx, forced ? req.buildID : "");
    this.hold(req, key);
    const made = { ...stack, layers: [...stack.layers, key], top: key, workdirMade: true };
    if (!forced && store.hasLayer(key)) {
      emit({ level: "info", message: `CACHED [${label}] creating the workdir ${workdir}`, step: label });
      return made;
    }
    emit({ level: "info", message: `[${label}] creating the workdir ${workdir}`, step: label });
    const lowers = [...stack.layers].reverse().map((k) => store.layerFiles(k));
    if (stack.baseRootfs) lowers.push(stack.baseRootfs);
    const stream = (line: OutputLine) => emit({ level: "info", message: line.line, step: label });
    await this.runLayer(req, key, lowers, { step: describeStep(step), parent: stack.top }, label, (sandbox) =>
      this.exec(
        sandbox,
        { command: script(WORKDIR_SCRIPT, workdir, stack.ctx.user), user: "root" },
        label,
        stream,
      ),
    );
    return made;
  }

  /**
   * Makes layer `key` as the writable layer of a build sandbox on `lowers` running `work`; the
   * layer appears (renamed into place) only when the work succeeded.
   */
  private async runLayer(
    req: BuildRequest,
    key: string,
    lowers: string[],
    meta: Record<string, unknown>,
    label: string,
    work: (sandbox: Sandbox) => Promise<void>,
    prepareUpper?: (upper: string) => Promise<void>,
  ): Promise<void> {
    const { manager } = this.options;
    if (lowers.join(":").length > MAX_LOWERDIR_CHARS) {
      throw new BuildStepError(
        `the template has too many layers (${lowers.length}); combine RUN steps into fewer`,
        label,
      );
    }
    await this.makeLayer(key, meta, async (fs) => {
      let sandbox: Sandbox;
      try {
        sandbox = await manager.factory.startBuildSandbox(
          req.templateID,
          lowers,
          { vcpu: req.vcpu, memoryMB: req.memoryMB, diskSizeMB: req.diskSizeMB },
          prepareUpper,
        );
      } catch (err) {
        throw new BuildStepError(
          `could not start a build sandbox: ${(err as Error).message}` +
            (label === "base" ? " (images must be glibc-based: Debian, Ubuntu, python, node…)" : ""),
          label,
        );
      }
      let ok = false;
      try {
        manager.faults.at("build:sandbox");
        await work(sandbox);
        // What the step wrote reaches the host's files before the sandbox stops.
        await this.exec(sandbox, { command: "sync", user: "root" }, label, () => undefined);
        ok = true;
      } finally {
        await manager.factory.stopBuildSandbox(sandbox, ok ? fs : undefined);
      }
    });
  }

  /** Creates layer `key` in a temp dir through `fill(fsDir)`, then renames it into place. */
  private async makeLayer(
    key: string,
    meta: Record<string, unknown>,
    fill: (fs: string) => Promise<void>,
  ): Promise<void> {
    const { store } = this.options;
    const final = store.layerDir(key);
    const temp = path.join(store.layersDir(), `.tmp-${key}-${process.pid}-${randomBytes(3).toString("hex")}`);
    await mkdir(temp, { recursive: true });
    try {
      await fill(path.join(temp, "fs"));
      await writeFile(
        path.join(temp, "layer.json"),
        `${JSON.stringify({ key, ...meta, createdAt: new Date().toISOString() }, null, 2)}\n`,
      );
      if (store.hasLayer(key)) return; // another build made it meanwhile
      this.options.manager.faults.at("build:layer");
      if (existsSync(final)) await removeTree(final);
      await rename(temp, final);
    } finally {
      if (existsSync(temp)) await removeTree(temp).catch(() => undefined);
    }
  }

  /** Runs a command of a step; a failure carries its exit code and last output lines. */
  private async exec(
    sandbox: Sandbox,
    spec: { command: string; user: string; cwd?: string; envs?: Record<string, string> },
    label: string,
    onLine: (line: OutputLine) => void,
  ): Promise<void> {
    const exit = await runInSandbox(
      sandbox.hostAddress,
      spec,
      onLine,
      AbortSignal.timeout(STEP_TIMEOUT_MS),
    ).catch((err: unknown) => {
      throw new BuildStepError(`step ${label}: ${(err as Error).message}`, label);
    });
    if (exit.exitCode !== 0) {
      const output = exit.tail.join("\n").trim();
      throw new BuildStepError(
        `step ${label} failed: the command exited with code ${exit.exitCode}` +
          (exit.error ? ` (${exit.error})` : "") +
          (output ? `:\n${output}` : ""),
        label,
      );
    }
  }

  /**
   * Downloads a COPY step's uploaded files from the API, refusing bytes whose SHA-256 is not
   * `hash` (what the API hashed when they were uploaded, and what the layer is cached by).
   */
  private async download(url: string, hash: string, label: string, signal: AbortSignal): Promise<string> {
    const dir = path.join(this.options.dataDir, "templates", "downloads");
    await mkdir(dir, { recursive: true });
    const file = path.join(
      dir,
      `${hash.replace(/[^A-Za-z0-9]/g, "").slice(0, 64)}-${randomBytes(4).toString("hex")}`,
    );
    try {
      const res = await fetch(url, { signal });
      if (!res.ok || !res.body) throw new Error(`the API answered ${res.status}`);
      const digest = createHash("sha256");
      const body = Readable.fromWeb(res.body as import("node:stream/web").ReadableStream);
      body.on("data", (chunk: Buffer) => digest.update(chunk));
      await pipeline(body, createWriteStream(file));
      const actual = digest.digest("hex");
      if (actual !== hash) {
        throw new Error(
          `their SHA-256 is ${actual}, not ${hash} as uploaded (the file changed since); upload the files again`,
        );
      }
      return file;
    } catch (err) {
      await rm(file, { force: true });
      throw new BuildStepError(
        `step ${label}: downloading the uploaded files failed: ${(err as Error).message}`,
        label,
      );
    }
  }

  /** The build's snapshot: the start command running, the ready command satisfied. */
  private async finalize(req: BuildRequest, stack: Stack, emit: (log: BuildLog) => void): Promise<void> {
    const { store, manager } = this.options;
    const say = (message: string) => emit({ level: "info", message, step: "finalize" });
    const manifest: BuildManifest = {
      teamID: req.teamID,
      templateID: req.templateID,
      buildID: req.buildID,
      baseRootfs: stack.baseRootfs,
      layers: stack.layers,
      vcpu: req.vcpu,
      memoryMB: req.memoryMB,
      diskSizeMB: req.diskSizeMB || undefined,
      env: stack.ctx.env,
      user: stack.ctx.user,
      workdir: stack.ctx.workdir,
      startCmd: req.startCmd || undefined,
      readyCmd: req.readyCmd || undefined,
      createdAt: new Date().toISOString(),
    };
    // Builds of one team that end alike (same layers, settings and commands) start alike: a
    // snapshot one of them made serves the others, so a rebuild with every step cached costs no
    // boot. The team is in the key (as in every layer's): what a start command generated in
    // memory never reaches another team's sandboxes.
    manifest.finalKey = createHash("sha256")
      .update(JSON.stringify({ ...manifest, templateID: "", buildID: "", createdAt: "" }))
      .digest("hex")
      .slice(0, 32);
    await store.commitBuild(manifest);
    manager.faults.at("build:committed");
    const twin = store.findFinished(manifest.finalKey, req.buildID, req.teamID);
    const built = store.readBuild(req.buildID);
    if (twin && built && (await manager.snapshots.reuse(twin, built))) {
      say(`CACHED snapshot of build ${twin.key}`);
      say("template ready");
      return;
    }
    if (req.startCmd) say(`starting: ${req.startCmd}`);
    if (req.startCmd || req.readyCmd) say(`waiting for: ${req.readyCmd || "sleep 20"}`);
    say("taking the snapshot sandboxes start from");
    try {
      await manager.prepareTemplate(req.templateID, {
        buildID: req.buildID,
        pool: false,
        onOutput: (line) => emit({ level: "info", message: line.line, step: "finalize" }),
      });
    } catch (err) {
      throw new BuildStepError(`finalize: ${(err as Error).message}`, "finalize");
    }
    say("template ready");
  }
}

function layerKeyOf(team: string, text: string): string {
  return layerKey(team, text, { kind: "WORKDIR", dir: "/" }, { env: {}, user: "" });
}

/** `sh -c '<script>' sh 'arg1' …`: the script's inputs as positional arguments. */
function script(body: string, ...args: string[]): string {
  return ["sh", "-c", shellQuote(body), "sh", ...args.map(shellQuote)].join(" ");
}

/** Puts a COPY's archive into the build sandbox's writable layer before it boots. */
async function placeArchive(upper: string, archive: string): Promise<void> {
  const dir = path.join(upper, ".moat-build");
  await mkdir(dir, { recursive: true });
  await copyFile(archive, path.join(dir, "files.tar"));
}
