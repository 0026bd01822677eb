/**
 * Warm pools: per template build, a few sandboxes restored from its snapshot ahead of time, envd
 * answering, /init not sent. A create that fits takes one and only sends /init; the pool refills
 * in the background, one restore at a time, after the creates in flight.
 */
import type { Logger } from "@moat/shared";
import type { TemplateSnapshot } from "../snapshot/template-snapshot.js";
import { seedUpper } from "../snapshot/template-snapshot.js";
import type { TemplateBuild, TemplateResolver } from "../template/store.js";
import type { CreateInput } from "./create-input.js";
import type { SandboxFactory } from "./factory.js";
import type { Sandbox } from "./sandbox.js";
import type { TemplateSnapshots } from "./template-snapshots.js";

/**
 * A claim's refill starts this long after it: a restore takes the CPU for a second or two, and
 * on a small node it doubled the first commands' time in the sandbox just handed out (they run
 * at once; the refill also runs at a low CPU share, runtime/cpu-priority.ts).
 */
export const POOL_REFILL_DELAY_MS = 1_000;
/** When a refill fails, the next try waits this long. */
const POOL_RETRY_MS = 5000;

export interface WarmPoolOptions {
  /** Ready entries kept per template build; 0 disables the pools. */
  size: number;
  factory: SandboxFactory;
  snapshots: TemplateSnapshots;
  templates: TemplateResolver;
  logger: Logger;
  /** Refills wait while this says creates are in flight. */
  busy: () => boolean;
  /** The disk size a create gets (its own, else its template's, else the node's). */
  diskSizeOf: (requested: number, build: Pick<TemplateBuild, "diskSizeMB">) => number;
  refillDelayMs?: number;
}

/**
 * Whether a create can take an entry restored from `snapshot`: entries are booted with the
 * snapshot's CPU and memory, internet access on (their start command ran with it: a sandbox that
 * denies anything restores from the snapshot into its own rules instead), and the build's disk size.
 */
export function fitsPool(
  input: Pick<
    CreateInput,
    "vcpu" | "memoryMB" | "allowInternetAccess" | "denyOut" | "diskSizeMB" | "volumeMounts"
  >,
  build: Pick<TemplateBuild, "diskSizeMB">,
  snapshot: Pick<TemplateSnapshot, "vcpu" | "memoryMB"> | undefined,
  diskSizeOf: WarmPoolOptions["diskSizeOf"],
): boolean {
  if (!snapshot || input.memoryMB !== snapshot.memoryMB || input.vcpu !== snapshot.vcpu) return false;
  if (!input.allowInternetAccess || (input.denyOut?.length ?? 0) > 0) return false;
  // Entries run without volumes; a mount cannot be added to a running sandbox.
  if (input.volumeMounts?.length) return false;
  return diskSizeOf(input.diskSizeMB, build) === diskSizeOf(0, build);
}

export class WarmPool {
  /** Restored sandboxes nobody has claimed yet, per build key (not in the registry). */
  private readonly pools = new Map<string, Sandbox[]>();
  private readonly filling = new Set<string>();
  /** Builds whose pool was said full at info; a refill after a claim is said at debug. */
  private readonly announced = new Set<string>();
  private closed = false;

  constructor(private readonly options: WarmPoolOptions) {}

  /** An entry for this create when one is ready and was booted the way it asks; a refill follows. */
  claim(input: CreateInput, build: TemplateBuild): Sandbox | undefined {
    const { options } = this;
    if (!fitsPool(input, build, options.snapshots.get(build.key), options.diskSizeOf)) return undefined;
    const entry = this.pools.get(build.key)?.shift();
    if (entry) this.fill(build.key, options.refillDelayMs ?? POOL_REFILL_DELAY_MS);
    return entry;
  }

  /** Ready entries of a template build ("base" for the base template). */
  count(buildKey: string): number {
    return this.pools.get(buildKey)?.length ?? 0;
  }

  /** Entries wanted over every build with a pool: the size per build times the builds. */
  target(): number {
    return this.options.size > 0 ? this.options.size * this.pools.size : 0;
  }

  /** Every entry of every build (their layers are in use). */
  entries(): Sandbox[] {
    return [...this.pools.values()].flat();
  }

  /** Refills a build's pool in the background, one sandbox at a time, creates first, after `delayMs`. */
  fill(buildKey: string, delayMs = 0): void {
    const { options } = this;
    const snapshot = options.snapshots.get(buildKey);
    if (!snapshot || options.size <= 0 || this.closed || this.filling.has(buildKey)) return;
    const build = options.templates.resolve(snapshot.templateID, buildKey === "base" ? undefined : buildKey);
    if (!build) return;
    this.filling.add(buildKey);
    const pool = this.pools.get(buildKey) ?? [];
    this.pools.set(buildKey, pool);
    void (async () => {
      try {
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        while (!this.closed && pool.length < options.size) {
          if (options.busy()) {
            await new Promise((r) => setTimeout(r, 50));
            continue;
          }
          const entry = await this.restore(build, snapshot);
          if (this.closed) await options.factory.release(entry);
          else pool.push(entry);
        }
        // Said once per change (first fill, recovered after a failure), not after every claim.
        const level = this.announced.has(buildKey) ? "debug" : "info";
        this.announced.add(buildKey);
        options.logger[level]({ templateID: build.templateID, ready: pool.length }, "warm pool full");
      } catch (err) {
        this.announced.delete(buildKey);
        options.logger.warn({ err, templateID: build.templateID }, "warm pool refill failed; retrying later");
        setTimeout(() => this.fill(buildKey), POOL_RETRY_MS).unref();
      } finally {
        this.filling.delete(buildKey);
      }
    })();
  }

  /** Empties a build's pool (the build was deleted). */
  async forget(buildKey: string): Promise<void> {
    const entries = this.pools.get(buildKey) ?? [];
    this.pools.delete(buildKey);
    this.announced.delete(buildKey);
    await Promise.allSettled(entries.map((entry) => this.options.factory.release(entry)));
  }

  /** Stops refills and releases every entry (node stop). */
  async close(): Promise<void> {
    this.closed = true;
    const entries = this.entries();
    this.pools.clear();
    await Promise.allSettled(entries.map((entry) => this.options.factory.release(entry)));
  }

  /** Restores one entry from the snapshot; /init waits until a create claims it. */
  private async restore(build: TemplateBuild, snapshot: TemplateSnapshot): Promise<Sandbox> {
    const { factory } = this.options;
    const sandbox = await factory.instance(
      { ...build, vcpu: snapshot.vcpu, memoryMB: snapshot.memoryMB },
      "pool",
    );
    try {
      await factory.boot(sandbox, { image: snapshot.image, seed: (upper) => seedUpper(snapshot, upper) });
      sandbox.record.startKind = "pool";
      return sandbox;
    } catch (err) {
      await factory.release(sandbox).catch(() => undefined);
      throw err;
    }
  }
}
