/**
 * The node's template snapshots: for each template build, a sandbox booted with its start command
 * running and envd warm, checkpointed (snapshot/template-snapshot.ts has the files). Creates and
 * warm pool entries restore from them instead of booting. They are keyed by what makes a restore
 * possible (runsc, node and envd binaries, limits): a snapshot of another key is never restored.
 */
import { mkdir, rename, rm } from "node:fs/promises";
import path from "node:path";
import { type Logger, runCommand } from "@moat/shared";
import { commitImage } from "../snapshot/image.js";
import {
  findSnapshot,
  pruneSnapshots,
  saveUpper,
  snapshotDir,
  snapshotPaths,
  type TemplateSnapshot,
} from "../snapshot/template-snapshot.js";
import type { TemplateBuild, TemplateResolver } from "../template/store.js";
import { resolveBuild } from "./create-input.js";
import { warmEnvd } from "./envd-client.js";
import type { OutputLine } from "./envd-process.js";
import { type SandboxFactory, writableLayer } from "./factory.js";
import type { Faults } from "./faults.js";
import { phaseTimer } from "./phase-timer.js";

export interface TemplateSnapshotsOptions {
  /** Key of this node's snapshots; unset: snapshots are off and every create boots cold. */
  key?: string;
  factory: SandboxFactory;
  templates: TemplateResolver;
  faults: Faults;
  logger: Logger;
  /** Told of each snapshot this node made for a template build (not the base template). */
  onMade?: (build: TemplateBuild) => void;
}

export class TemplateSnapshots {
  private readonly known = new Map<string, TemplateSnapshot>();
  /** Builds whose snapshot is being re-made in the background. */
  private readonly remaking = new Set<string>();

  constructor(private readonly options: TemplateSnapshotsOptions) {}

  get enabled(): boolean {
    return this.options.key !== undefined;
  }

  /** The snapshot prepared for a build, if any (a warm pool restores only from these). */
  get(buildKey: string): TemplateSnapshot | undefined {
    return this.known.get(buildKey);
  }

  /**
   * The snapshot a create restores from: the one prepared, else one on disk made by an earlier run
   * of this node (a custom build's, made when it was built). A build whose snapshot is missing
   * boots cold, and one made by another runtime (moat was upgraded) is re-made in the background.
   */
  async forCreate(build: TemplateBuild): Promise<TemplateSnapshot | undefined> {
    const known = this.known.get(build.key);
    const { key } = this.options;
    if (known || !key || build.key === "base") return known;
    const found = await findSnapshot(build.templateID, snapshotDir(build.dir, key), build);
    if (found) this.known.set(build.key, found);
    else if (!this.remaking.has(build.key)) {
      this.remaking.add(build.key);
      this.prepare(build.templateID, { buildID: build.key })
        .catch((err: unknown) =>
          this.options.logger.warn(
            { err, templateID: build.templateID },
            "re-making a build's snapshot failed",
          ),
        )
        .finally(() => this.remaking.delete(build.key));
    }
    return found;
  }

  /** A snapshot that failed to restore: cold starts until the template is prepared again. */
  drop(buildKey: string): void {
    this.known.delete(buildKey);
  }

  /** Forgets a deleted build's snapshot. */
  forget(buildKey: string): void {
    this.known.delete(buildKey);
  }

  /** Finds or makes the snapshot of a template build, and removes older ones of it. */
  async prepare(
    templateID: string,
    opts: { buildID?: string; onOutput?: (line: OutputLine) => void } = {},
  ): Promise<{ build: TemplateBuild; snapshot: TemplateSnapshot } | undefined> {
    const { options } = this;
    if (!options.key) return undefined;
    const build = resolveBuild(options.templates, templateID, opts.buildID);
    const dir = snapshotDir(build.dir, options.key);
    const snapshot =
      (await findSnapshot(templateID, dir, build)) ?? (await this.make(build, dir, opts.onOutput));
    this.known.set(build.key, snapshot);
    const pruned = await pruneSnapshots(dir);
    if (pruned.length > 0) options.logger.debug({ templateID, pruned }, "old template snapshots removed");
    return { build, snapshot };
  }

  /**
   * Gives `to` the snapshot `from` has (hard links: neither is ever written), when `from` has one
   * of this runtime. The builds must start the same sandboxes (same layers, settings, commands).
   */
  async reuse(from: TemplateBuild, to: TemplateBuild): Promise<boolean> {
    const { key } = this.options;
    if (!key) return false;
    const source = snapshotDir(from.dir, key);
    if (!(await findSnapshot(from.templateID, source, from))) return false;
    const target = snapshotDir(to.dir, key);
    await mkdir(path.dirname(target), { recursive: true });
    await rm(`${target}.partial`, { recursive: true, force: true });
    await runCommand(["cp", "-al", source, `${target}.partial`]);
    await rename(`${target}.partial`, target);
    const snapshot = await findSnapshot(to.templateID, target, to);
    if (snapshot) this.known.set(to.key, snapshot);
    return snapshot !== undefined;
  }

  /**
   * Boots a sandbox from the template build with envd ready, starts its start command and waits
   * for its ready command, then checkpoints it into `dir`.
   */
  private async make(
    build: TemplateBuild,
    dir: string,
    onOutput?: (line: OutputLine) => void,
  ): Promise<TemplateSnapshot> {
    const { factory, faults, logger } = this.options;
    const templateID = build.templateID;
    const sandbox = await factory.instance(build, "snapshot");
    const timer = phaseTimer();
    try {
      await factory.boot(sandbox, { lap: timer.lap });
      if (build.startCmd || build.readyCmd) {
        await factory.startAndWaitReady(sandbox, build, onOutput);
        timer.lap("ready");
      }
      await warmEnvd(sandbox.hostAddress);
      timer.lap("warm");
      await factory.freeze(sandbox);
      const { image } = snapshotPaths(dir);
      await mkdir(dir, { recursive: true });
      await factory.checkpoint(sandbox, image);
      faults.at("snapshot:checkpointed");
      await saveUpper(writableLayer(sandbox).upper, dir);
      await commitImage(image);
      timer.lap("checkpoint");
      // "template prepared" follows: the build's timings are detail.
      logger.debug({ templateID, dir, ...timer.done() }, "template snapshot built");
      if (build.key !== "base") this.options.onMade?.(build);
      return (await findSnapshot(templateID, dir, build))!;
    } finally {
      await factory
        .release(sandbox)
        .catch((err: unknown) => logger.error({ err }, "releasing the snapshot sandbox"));
      await factory.settled();
    }
  }
}
