/**
 * Contexts: one Jupyter kernel each (its id is the context's), with a language and a working
 * directory. One default context per language, made on first use (python's at start, so that a
 * snapshot of the sandbox holds a started kernel). Each context runs one execution at a time.
 *
 * The contexts are also written to a file beside the kernels' connection files, so a restarted
 * code-interpreter server adopts their kernels, with their state.
 */
import { randomUUID } from "node:crypto";
import { mkdir, readFile, rename, writeFile } from "node:fs/promises";
import { homedir } from "node:os";
import path from "node:path";
import { CodeInterpreterError } from "./errors.js";

/** The kernel's process ended under an execution (its state is gone). */
export class KernelDiedError extends CodeInterpreterError {
  constructor() {
    super(502, "the kernel died; it is restarted with a fresh state");
  }
}

import { type ExecuteOutcome, execute, type OutputLine } from "./execute.js";
import { findKernelSpecs, Kernel, type KernelRecord, type KernelSpec } from "./kernels.js";
import { DEFAULT_LANGUAGE, findLanguage, type Language, languageNames } from "./languages.js";

export interface ContextInfo {
  id: string;
  language: string;
  cwd: string;
}

export class Context {
  /** The sandbox's env vars (envd /envs) are exported into the kernel before its first execution. */
  envsLoaded = false;
  private tail: Promise<unknown> = Promise.resolve();

  /** Whether an execution (or moat's setup) runs now. */
  busy = false;

  constructor(
    readonly id: string,
    readonly language: Language,
    readonly cwd: string,
    readonly isDefault: boolean,
    /** Replaced when the kernel restarts; the context keeps its id. */
    public kernel: Kernel,
  ) {}

  get channel() {
    return this.kernel.channel;
  }

  info(): ContextInfo {
    return { id: this.id, language: this.language.name, cwd: this.cwd };
  }

  /** Runs `work` after every earlier execution of this context ended. */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const guarded = async () => {
      this.busy = true;
      try {
        return await work();
      } finally {
        this.busy = false;
      }
    };
    const run = this.tail.then(guarded, guarded);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Whether the kernel's process runs. */
  async alive(): Promise<boolean> {
    return this.kernel.alive();
  }

  /** moat's own snippet: no output, no history; throws with the kernel's error. */
  async silent(code: string): Promise<void> {
    const outcome = await execute(this.channel, {
      code,
      silent: true,
      emit: () => undefined,
      alive: () => this.alive(),
    });
    if (outcome.died) throw new KernelDiedError();
    if (outcome.lost)
      throw new CodeInterpreterError(502, `the kernel's connection was lost: ${outcome.lost}`);
    if (outcome.error)
      throw new CodeInterpreterError(400, `${outcome.error.name}: ${outcome.error.value}`.trim());
  }

  run(
    code: string,
    emit: (line: OutputLine) => void,
    flow: Parameters<typeof execute>[1]["flow"],
  ): Promise<ExecuteOutcome> {
    return execute(this.channel, { code, emit, flow, alive: () => this.alive() });
  }
}

export const DEFAULT_CWD = "/home/user";

interface SavedContext {
  id: string;
  language: string;
  cwd: string;
  isDefault: boolean;
  kernel: KernelRecord;
}

export class Contexts {
  private readonly contexts = new Map<string, Context>();
  private readonly defaults = new Map<string, Promise<Context>>();
  private specs?: Map<string, KernelSpec>;
  private saving: Promise<unknown> = Promise.resolve();

  /**
   * `supportDir`: where moat's kernel-side files are (moat_display.py); `runtimeDir`: the
   * kernels' connection files and sockets, and the list of contexts.
   */
  constructor(
    private readonly supportDir: string,
    private readonly runtimeDir: string,
    private readonly kernelDirs?: string[],
  ) {}

  /** Adopts the kernels a previous server process left running, then makes python's default. */
  async start(): Promise<void> {
    const saved = await readFile(this.stateFile(), "utf8")
      .then((text) => JSON.parse(text) as SavedContext[])
      .catch(() => [] as SavedContext[]);
    for (const entry of saved) {
      if (this.contexts.has(entry.id)) continue;
      const language = findLanguage(entry.language);
      const kernel = language ? await Kernel.adopt(entry.kernel) : undefined;
      if (!language || !kernel) continue;
      const context = new Context(entry.id, language, entry.cwd, entry.isDefault, kernel);
      this.contexts.set(context.id, context);
      if (context.isDefault && !this.defaults.has(language.name))
        this.defaults.set(language.name, Promise.resolve(context));
    }
    await this.save();
    await this.defaultFor(DEFAULT_LANGUAGE);
  }

  get(id: string): Context {
    const context = this.contexts.get(id);
    if (!context) throw new CodeInterpreterError(404, `Context ${id} not found`);
    return context;
  }

  list(): ContextInfo[] {
    return [...this.contexts.values()].map((c) => c.info());
  }

  /** The language's default context, made the first time it is asked for. */
  defaultFor(name: string): Promise<Context> {
    const language = this.language(name);
    let made = this.defaults.get(language.name);
    if (!made) {
      made = this.make(language, DEFAULT_CWD, true);
      this.defaults.set(language.name, made);
      made.catch(() => this.defaults.delete(language.name));
    }
    return made;
  }

  async create(name: string | undefined, cwd: string | undefined): Promise<Context> {
    const language = this.language(name ?? DEFAULT_LANGUAGE);
    const dir = cwd ?? DEFAULT_CWD;
    if (!dir.startsWith("/"))
      throw new CodeInterpreterError(400, `cwd must be an absolute path, got '${dir}'`);
    return this.make(language, dir, false);
  }

  async remove(id: string): Promise<void> {
    const context = this.get(id);
    this.contexts.delete(id);
    if (context.isDefault) this.defaults.delete(context.language.name);
    await context.kernel.kill();
    await this.save();
  }

  /** A fresh kernel for the context (same id, cwd and language; its state is gone). */
  async restart(id: string): Promise<void> {
    const context = this.get(id);
    await context.kernel.kill();
    context.kernel = await this.startKernel(context.language);
    context.envsLoaded = false;
    await this.save();
    await this.setup(context);
  }

  /** Restarts the kernels whose process ended while no execution ran (killed, or crashed). */
  async reviveDead(log: (message: string) => void): Promise<void> {
    for (const context of [...this.contexts.values()]) {
      if (context.busy || (await context.alive())) continue;
      log(`the kernel of context ${context.id} ended: starting a fresh one`);
      await context
        .exclusive(async () => {
          if (this.contexts.get(context.id) === context && !(await context.alive()))
            await this.restart(context.id);
        })
        .catch((err: unknown) => log(`restarting context ${context.id} failed: ${(err as Error).message}`));
    }
  }

  /** A new (or restarted) kernel: its cwd, and moat's display formatters. */
  private async setup(context: Context): Promise<void> {
    await context.silent(context.language.chdir(context.cwd));
    const setup = context.language.setup?.(this.supportDir);
    if (setup) await context.silent(setup);
  }

  async interrupt(context: Context): Promise<void> {
    context.kernel.interrupt();
  }

  /** A silent, empty execution on each context, one after another (after what runs there now). */
  async warm(): Promise<void> {
    for (const context of this.contexts.values()) {
      await context.exclusive(() => context.silent("")).catch(() => undefined);
    }
  }

  private language(name: string): Language {
    const language = findLanguage(name);
    if (!language) {
      throw new CodeInterpreterError(
        400,
        `unknown language '${name}': this sandbox runs ${languageNames().join(", ")}`,
      );
    }
    return language;
  }

  private async startKernel(language: Language): Promise<Kernel> {
    this.specs ??= await findKernelSpecs(this.kernelDirs);
    const spec = this.specs.get(language.kernel);
    if (!spec) {
      throw new CodeInterpreterError(
        400,
        `the ${language.name} kernel is not installed in this sandbox (installed: ${[...this.specs.keys()].join(", ")})`,
      );
    }
    return Kernel.start(spec, this.runtimeDir, homedir());
  }

  private async make(language: Language, cwd: string, isDefault: boolean): Promise<Context> {
    const kernel = await this.startKernel(language);
    const context = new Context(randomUUID(), language, cwd, isDefault, kernel);
    try {
      await this.setup(context);
    } catch (err) {
      await kernel.kill();
      if (err instanceof CodeInterpreterError && err.status === 400)
        throw new CodeInterpreterError(400, `cannot use '${cwd}' as the working directory: ${err.message}`);
      throw err;
    }
    this.contexts.set(context.id, context);
    await this.save();
    return context;
  }

  private stateFile(): string {
    return path.join(this.runtimeDir, "contexts.json");
  }

  /** The contexts and their kernels, for the next server process (written whole, then renamed). */
  private save(): Promise<void> {
    const run = this.saving.then(() => this.write());
    this.saving = run.catch(() => undefined);
    return run;
  }

  private async write(): Promise<void> {
    const entries: SavedContext[] = [...this.contexts.values()].map((c) => ({
      id: c.id,
      language: c.language.name,
      cwd: c.cwd,
      isDefault: c.isDefault,
      kernel: c.kernel.record,
    }));
    await mkdir(this.runtimeDir, { recursive: true, mode: 0o700 });
    const temp = `${this.stateFile()}.${process.pid}`;
    await writeFile(temp, JSON.stringify(entries), { mode: 0o600 });
    await rename(temp, this.stateFile());
  }
}
