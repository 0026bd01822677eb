/**
 * Warm pools: per template build, a few sandboxes restored from its snapshot ahead of time, envd
 * answering, /init not sent. A create that fits takes one and only sends /init; the pool refills
 * in the background, a few restores at a time (the node's cores), after the creates in flight.
 * A pool grows with demand: to the most creates of its build seen at once (up to `maxSize`, the
 * growth of all pools together bounded by `maxSize - size`), so that the next burst like it is
 * served from the pool; after `idleMs` without such a burst it shrinks back to `size`.
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
/** A pool grown by a burst goes back to its size after this long without one (MOAT_POOL_IDLE_SECONDS). */
export const POOL_IDLE_MS = 5 * 60_000;

export interface WarmPoolOptions {
  /** Ready entries kept per template build; 0 disables the pools. */
  size: number;
  /** The most a pool grows to under bursts of creates (default: `size`, no growth). */
  maxSize?: number;
  /** A grown pool shrinks back to `size` after this long without a burst (default POOL_IDLE_MS). */
  idleMs?: number;
  /** Restores of one refill at once (default 1). */
  concurrency?: number;
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

/** What a build's pool is asked for: creates of it under way, and the size they call for. */
interface Demand {
  inFlight: number;
  /** Entries wanted: `size`, or more after a burst. */
  target: number;
  /** When creates under way last outnumbered `size` (the end of the last burst). */
  lastBurstAt: number;
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
  /** Refills under way: a close waits for their restores in flight, which it then releases. */
  private readonly refills = new Set<Promise<void>>();
  /** Builds whose pool was said full at info; a refill after a claim is said at debug. */
  private readonly announced = new Set<string>();
  private readonly demands = new Map<string, Demand>();
  private readonly shrinker: NodeJS.Timeout;
  private closed = false;

  constructor(private readonly options: WarmPoolOptions) {
    const idleMs = options.idleMs ?? POOL_IDLE_MS;
    this.shrinker = setInterval(() => this.shrinkIdle(), Math.max(100, Math.min(idleMs / 4, 10_000)));
    this.shrinker.unref();
  }

  /**
   * Counts a create of `build` that could take a pool entry while it runs (a claim or not): the
   * pool grows to the most at once. Returns the function that ends it (call it once).
   */
  demand(input: CreateInput, build: TemplateBuild): () => void {
    const { options } = this;
    const max = Math.max(options.size, options.maxSize ?? options.size);
    if (options.size <= 0 || !fitsPool(input, build, options.snapshots.get(build.key), options.diskSizeOf)) {
      return () => undefined;
    }
    let demand = this.demands.get(build.key);
    if (!demand) {
      demand = { inFlight: 0, target: options.size, lastBurstAt: 0 };
      this.demands.set(build.key, demand);
    }
    const d = demand;
    d.inFlight++;
    if (d.inFlight > options.size) {
      d.lastBurstAt = Date.now();
      // Growth beyond `size` is one budget for the node, not one per template: a team bursting
      // on template after template cannot make the node hold maxSize entries of each.
      let grownElsewhere = 0;
      for (const other of this.demands.values())
        if (other !== d) grownElsewhere += other.target - options.size;
      const cap = max - grownElsewhere;
      if (d.inFlight > d.target && d.target < cap) {
        d.target = Math.min(cap, d.inFlight);
        options.logger.debug({ templateID: build.templateID, target: d.target }, "warm pool grows");
        this.fill(build.key, options.refillDelayMs ?? POOL_REFILL_DELAY_MS);
      }
    }
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      // The burst lasts until its creates are done: idle time counts from its end.
      if (d.inFlight > options.size) d.lastBurstAt = Date.now();
      d.inFlight--;
    };
  }

  /** Entries a build's pool is filled to now: its size, or more after a burst. */
  sizeOf(buildKey: string): number {
    return this.demands.get(buildKey)?.target ?? this.options.size;
  }

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

  /** Entries wanted over every build with a pool (each its size, or more after a burst). */
  target(): number {
    if (this.options.size <= 0) return 0;
    let sum = 0;
    for (const key of this.pools.keys()) sum += this.sizeOf(key);
    return sum;
  }

  /** Every entry of every build (their layers are in use). */
  entries(): Sandbox[] {
    return [...this.pools.values()].flat();
  }

  /**
   * Refills a build's pool in the background, `concurrency` restores at a time, creates first,
   * after `delayMs`.
   */
  fill(buildKey: string, delayMs = 0): void {
    const { options } = this;
    const snapshot = options.snapshots.get(buildKey);
    if (!snapshot || options.size <= 0 || this.closed || this.filling.has(buildKey)) return;
    const build = options.templates.resolve(snapshot.templateID, buildKey === "base" ? undefined : buildKey);
    if (!build) return;
    this.filling.add(buildKey);
    const pool = this.pools.get(buildKey) ?? [];
    this.pools.set(buildKey, pool);
    const refill = (async () => {
      try {
        if (delayMs > 0) await new Promise((r) => setTimeout(r, delayMs));
        let restoring = 0;
        const worker = async () => {
          while (!this.closed && pool.length + restoring < this.sizeOf(buildKey)) {
            if (options.busy()) {
              await new Promise((r) => setTimeout(r, 50));
              continue;
            }
            restoring++;
            try {
              const entry = await this.restore(build, snapshot);
              // Closed, forgotten or shrunk back meanwhile: not wanted any more.
              const unwanted = this.closed || this.pools.get(buildKey) !== pool;
              if (unwanted || pool.length >= this.sizeOf(buildKey)) await options.factory.release(entry);
              else pool.push(entry);
            } finally {
              restoring--;
            }
          }
        };
        const workers = Array.from({ length: Math.max(1, options.concurrency ?? 1) }, worker);
        const failed = (await Promise.allSettled(workers)).find((r) => r.status === "rejected");
        if (failed) throw failed.reason;
        // Said once per change (first fill, recovered after a failure, grown), not after every claim.
        const level = this.announced.has(buildKey) && pool.length <= options.size ? "debug" : "info";
        this.announced.add(buildKey);
        options.logger[level]({ templateID: build.templateID, ready: pool.length }, "warm pool full");
      } catch (err) {
        this.announced.delete(buildKey);
        options.logger.warn({ err, templateID: build.templateID }, "warm pool refill failed; retrying later");
        setTimeout(() => this.fill(buildKey), POOL_RETRY_MS).unref();
      } finally {
        this.filling.delete(buildKey);
      }
    })().finally(() => this.refills.delete(refill));
    this.refills.add(refill);
  }

  /** Empties a build's pool (the build was deleted). */
  async forget(buildKey: string): Promise<void> {
    const entries = this.pools.get(buildKey) ?? [];
    this.pools.delete(buildKey);
    this.announced.delete(buildKey);
    // Its growth no longer holds the node's budget (creates of it still in flight count nothing).
    this.demands.delete(buildKey);
    await Promise.allSettled(entries.map((entry) => this.options.factory.release(entry)));
  }

  /** Stops refills and releases every entry (node stop). */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.shrinker);
    const entries = this.entries();
    this.pools.clear();
    await Promise.allSettled(entries.map((entry) => this.options.factory.release(entry)));
    // A restore in flight ends in a release (the pool is closed): nothing of it stays mounted.
    await Promise.allSettled([...this.refills]);
  }

  /**
   * Pools grown by a burst go back to their size once no burst came for `idleMs`: the entries
   * beyond it are released (the newest first; a claim takes the oldest).
   */
  private shrinkIdle(): void {
    const { options } = this;
    const idleMs = options.idleMs ?? POOL_IDLE_MS;
    const now = Date.now();
    for (const [buildKey, d] of this.demands) {
      // At rest: nothing to remember (sizeOf answers `size`), so the map holds only live builds.
      if (d.target <= options.size && d.inFlight === 0) {
        this.demands.delete(buildKey);
        continue;
      }
      if (d.target <= options.size || d.inFlight > options.size || now - d.lastBurstAt < idleMs) continue;
      d.target = options.size;
      const pool = this.pools.get(buildKey) ?? [];
      const extra = pool.splice(options.size);
      options.logger.info({ buildKey, released: extra.length, ready: pool.length }, "warm pool shrinks back");
      for (const entry of extra) {
        void options.factory
          .release(entry)
          .catch((err: unknown) => options.logger.error({ err, buildKey }, "releasing a pool entry"));
      }
    }
  }

  /** Restores one entry from the snapshot; /init waits until a create claims it. */
  private async restore(build: TemplateBuild, snapshot: TemplateSnapshot): Promise<Sandbox> {
    const { factory } = this.options;
    const sandbox = await factory.instance(
      { ...build, vcpu: snapshot.vcpu, memoryMB: snapshot.memoryMB },
      "pool",
    );
    try {
      await factory.boot(sandbox, {
        image: snapshot.image,
        seed: (upper) => seedUpper(snapshot, upper),
        warm: true,
      });
      sandbox.record.startKind = "pool";
      return sandbox;
    } catch (err) {
      await factory.release(sandbox).catch(() => undefined);
      throw err;
    }
  }
}
