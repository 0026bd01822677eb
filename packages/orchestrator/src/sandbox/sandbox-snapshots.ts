/**
 * Snapshots of users' sandboxes (snapshot/sandbox-snapshot.ts has the files): taken from a running
 * sandbox in place (it carries on), and started from by creates that name one, each new sandbox
 * with a copy of the snapshot's files and its memory restored. A fork is an ephemeral one of
 * these and a create per fork (sandbox/fork.ts).
 */
import type { Logger } from "@moat/shared";
import { type SharedArtifacts, snapshotKey } from "../artifacts/shared.js";
import { commitImage } from "../snapshot/image.js";
import {
  beginSnapshot,
  commitSnapshot,
  diskUsage,
  loadSnapshots,
  removeSnapshotFiles,
  type SandboxSnapshot,
  SNAPSHOT_ID,
  snapshotConfigOf,
  snapshotParts,
  snapshotPath,
} from "../snapshot/sandbox-snapshot.js";
import { seedWritableLayer } from "../storage/layer-copy.js";
import type { TemplateBuild } from "../template/store.js";
import type { CreateInput } from "./create-input.js";
import { InvalidSandboxConfigError, SnapshotExistsError, SnapshotNotFoundError } from "./errors.js";
import type { SandboxFactory } from "./factory.js";
import type { Faults } from "./faults.js";
import type { Sandbox } from "./sandbox.js";

export interface SandboxSnapshotsOptions {
  dataDir: string;
  factory: SandboxFactory;
  faults: Faults;
  logger: Logger;
  /** Key of this node's runtime (snapshot/template-snapshot.ts); a memory image of another is not restored. */
  runtimeKey?: string;
  /** Shared artifacts: named snapshots are published when taken and deleted there with the node's copy. */
  shared?: SharedArtifacts;
}

/** What a create from a snapshot starts from. */
export interface SnapshotSource {
  snapshot: SandboxSnapshot;
  /** The snapshot as the template build the create's record is made from (layers, env, defaults). */
  build: TemplateBuild;
}

export class SandboxSnapshots {
  private readonly known = new Map<string, SandboxSnapshot>();

  constructor(private readonly options: SandboxSnapshotsOptions) {}

  /** At start: the whole snapshots are known again; partial and ephemeral ones go. */
  async load(): Promise<void> {
    const { kept, removed } = await loadSnapshots(this.options.dataDir);
    for (const snapshot of kept) this.known.set(snapshot.snapshotID, snapshot);
    if (removed.length > 0) this.options.logger.info({ removed }, "unfinished and fork snapshots removed");
  }

  get(snapshotID: string): SandboxSnapshot | undefined {
    return this.known.get(snapshotID);
  }

  list(): SandboxSnapshot[] {
    return [...this.known.values()];
  }

  /** The template layers snapshots stand on (kept while any snapshot needs them). */
  lowers(): string[] {
    return this.list().flatMap((s) => s.config.lowers ?? []);
  }

  /** Throws unless `snapshotID` is a valid id no snapshot has. */
  checkNew(snapshotID: string): void {
    if (!SNAPSHOT_ID.test(snapshotID)) {
      throw new InvalidSandboxConfigError(`snapshot id '${snapshotID}' must match ${SNAPSHOT_ID}`);
    }
    if (this.known.has(snapshotID)) throw new SnapshotExistsError(snapshotID);
  }

  /**
   * Saves the running sandbox's memory, processes and files as snapshot `snapshotID`; the
   * sandbox carries on (the caller moved it to snapshotting). Nothing of a failed one is left.
   */
  async take(sandbox: Sandbox, snapshotID: string, ephemeral: boolean): Promise<SandboxSnapshot> {
    const { dataDir, factory, faults, logger } = this.options;
    this.checkNew(snapshotID);
    const r = sandbox.record;
    const partial = await beginSnapshot(dataDir, snapshotID);
    const parts = snapshotParts(partial);
    try {
      await factory.snapshotInPlace(sandbox, { image: parts.image, files: parts.files }, () =>
        faults.at("sandbox-snapshot:stopped"),
      );
      faults.at("sandbox-snapshot:taken");
      await commitImage(parts.image);
      const snapshot: SandboxSnapshot = {
        snapshotID,
        sourceSandboxID: r.sandboxID,
        teamID: r.teamID,
        config: snapshotConfigOf(r),
        accessToken: r.envdAccessToken,
        ...(this.options.runtimeKey ? { runtimeKey: this.options.runtimeKey } : {}),
        ephemeral,
        createdAt: new Date().toISOString(),
        sizeBytes: await diskUsage(partial),
      };
      await commitSnapshot(dataDir, partial, snapshot);
      // Before the snapshot is known: a create elsewhere may name it as soon as this answers.
      if (!ephemeral) await this.options.shared?.publishSnapshot(snapshot);
      this.known.set(snapshotID, snapshot);
      logger.info(
        { snapshotID, sandboxID: r.sandboxID, sizeBytes: snapshot.sizeBytes, ephemeral },
        "sandbox snapshot taken",
      );
      return snapshot;
    } catch (err) {
      await removeSnapshotFiles(dataDir, snapshotID).catch((e: unknown) =>
        logger.error({ err: e, snapshotID }, "removing a failed snapshot"),
      );
      throw err;
    }
  }

  /**
   * Removes a snapshot here and, with shared artifacts, from shared storage (true when either had
   * it); `localOnly`: this node's copy only (the cache evicting it).
   */
  async remove(snapshotID: string, opts: { localOnly?: boolean } = {}): Promise<boolean> {
    let known = this.known.delete(snapshotID);
    if (!SNAPSHOT_ID.test(snapshotID)) return known;
    await removeSnapshotFiles(this.options.dataDir, snapshotID);
    const { shared } = this.options;
    if (shared && !opts.localOnly) {
      known = (await shared.store.has(snapshotKey(snapshotID))) || known;
      await shared.deleteSnapshot(snapshotID);
    }
    return known;
  }

  /** A snapshot fetched from shared storage (artifacts/shared.ts), now on this node's disk. */
  adopt(snapshot: SandboxSnapshot): void {
    this.known.set(snapshot.snapshotID, snapshot);
  }

  /**
   * What a create naming a snapshot starts from. Another team's snapshot is as missing as an
   * unknown one; the create's size must be the snapshot's (the memory image and disk are).
   */
  forCreate(input: CreateInput): SnapshotSource {
    const snapshot = input.snapshotID ? this.known.get(input.snapshotID) : undefined;
    if (!snapshot || snapshot.teamID !== input.teamID)
      throw new SnapshotNotFoundError(input.snapshotID ?? "");
    const { config } = snapshot;
    if (input.memoryMB !== config.memoryMB) {
      throw new InvalidSandboxConfigError(
        `memory_mb must be the snapshot's (${config.memoryMB}), got ${input.memoryMB}`,
      );
    }
    if (input.diskSizeMB !== 0 && input.diskSizeMB !== config.diskSizeMB) {
      throw new InvalidSandboxConfigError(
        `disk_size_mb must be 0 or the snapshot's (${config.diskSizeMB}), got ${input.diskSizeMB}`,
      );
    }
    // The restored envd holds the source's token: a sandbox without one could never be opened.
    if (snapshot.accessToken && !input.envdAccessToken) {
      throw new InvalidSandboxConfigError(
        "a sandbox started from a secured snapshot needs an envd access token",
      );
    }
    return {
      snapshot,
      build: {
        key: `snapshot-${snapshot.snapshotID}`,
        templateID: config.templateID,
        lowers: config.lowers ?? [],
        dir: snapshotPath(this.options.dataDir, snapshot.snapshotID),
        vcpu: config.vcpu,
        memoryMB: config.memoryMB,
        diskSizeMB: config.diskSizeMB,
        env: config.envVars,
        user: config.defaultUser || undefined,
        workdir: config.defaultWorkdir || undefined,
      },
    };
  }

  /**
   * Boots a new sandbox (its record written, its directory made) from the snapshot: a copy of
   * its writable layer, then its memory restored. A memory image another runtime made (moat was
   * upgraded since) cannot be restored: the sandbox boots afresh from the files instead.
   */
  async boot(sandbox: Sandbox, snapshot: SandboxSnapshot, lap: (phase: string) => void): Promise<void> {
    const { factory, faults, logger, runtimeKey } = this.options;
    const dir = snapshotPath(this.options.dataDir, snapshot.snapshotID);
    await seedWritableLayer(dir, sandbox.dir, sandbox.record.diskSizeMB > 0);
    lap("seed");
    const restore = !snapshot.runtimeKey || !runtimeKey || snapshot.runtimeKey === runtimeKey;
    if (!restore) {
      logger.warn(
        { snapshotID: snapshot.snapshotID, sandboxID: sandbox.id },
        "the snapshot's memory was saved by another runtime; booting from its files",
      );
    }
    await factory.boot(sandbox, { image: restore ? snapshotParts(dir).image : undefined, lap });
    faults.at("sandbox-snapshot:restored");
    sandbox.record.startKind = restore ? "snapshot" : "cold";
  }
}
