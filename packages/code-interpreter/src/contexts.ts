/**
 * Contexts: one Jupyter kernel each (its id is the context's), with a language and a working
 * directory. One default context per language, made on first use (python's at start, so that a
 * snapshot of the sandbox holds a started kernel). Each context runs one execution at a time.
 *
 * A context lives in the Jupyter server as a session whose name carries its language, cwd and
 * whether it is a default, so a restarted code-interpreter server finds its contexts again with
 * their kernels' state.
 */
import { readdir, readFile } from "node:fs/promises";
import { CodeInterpreterError } from "./errors.js";

/** The kernel's process ended under an execution (its state is gone). */
export class KernelDiedError extends CodeInterpreterError {
  constructor() {
    super(502, "the kernel died; it is restarted with a fresh state");
  }
}

import { type ExecuteOutcome, execute, type OutputLine } from "./execute.js";
import { type Jupyter, JupyterError, type KernelChannel, type Session } from "./jupyter.js";
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

  constructor(
    readonly id: string,
    readonly sessionID: string,
    readonly language: Language,
    readonly cwd: string,
    readonly isDefault: boolean,
    readonly channel: KernelChannel,
  ) {}

  info(): ContextInfo {
    return { id: this.id, language: this.language.name, cwd: this.cwd };
  }

  /** Runs `work` after every earlier execution of this context ended. */
  exclusive<T>(work: () => Promise<T>): Promise<T> {
    const run = this.tail.then(work, work);
    this.tail = run.catch(() => undefined);
    return run;
  }

  /** Whether the kernel's process runs (its command line names its connection file). */
  async alive(): Promise<boolean> {
    const needle = `kernel-${this.id}.json`;
    for (const pid of await readdir("/proc").catch(() => [] as string[])) {
      if (!/^\d+$/.test(pid)) continue;
      const cmdline = await readFile(`/proc/${pid}/cmdline`, "utf8").catch(() => "");
      if (cmdline.includes(needle)) return true;
    }
    return false;
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

const SESSION_PREFIX = "moat-context:";
export const DEFAULT_CWD = "/home/user";

export class Contexts {
  private readonly contexts = new Map<string, Context>();
  private readonly defaults = new Map<string, Promise<Context>>();
  private kernels?: Set<string>;

  /** `supportDir`: where moat's kernel-side files are (moat_display.py). */
  constructor(
    private readonly jupyter: Jupyter,
    private readonly supportDir: string,
  ) {}

  /** Adopts the contexts the Jupyter server already has (a restarted server), then python's default. */
  async start(): Promise<void> {
    for (const session of await this.jupyter.sessions()) this.adopt(session);
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
    context.channel.close();
    await this.jupyter.deleteSession(context.sessionID).catch((err: unknown) => {
      if (!(err instanceof JupyterError && err.status === 404)) throw err;
    });
  }

  async restart(id: string): Promise<void> {
    const context = this.get(id);
    await this.jupyter.restartKernel(context.id);
    context.channel.close();
    context.envsLoaded = false;
    await this.setup(context);
  }

  /** A new (or restarted) kernel: its cwd, and moat's display formatters. */
  private async setup(context: Context): Promise<void> {
    await context.silent(context.language.chdir(context.cwd));
    const setup = context.language.setup?.(this.supportDir);
    if (setup) await context.silent(setup);
  }

  async interrupt(context: Context): Promise<void> {
    await this.jupyter.interruptKernel(context.id);
  }

  /** Forgets every context (the Jupyter server restarted: its kernels are gone). */
  reset(): void {
    for (const context of this.contexts.values()) context.channel.close();
    this.contexts.clear();
    this.defaults.clear();
    this.kernels = undefined;
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

  private async make(language: Language, cwd: string, isDefault: boolean): Promise<Context> {
    this.kernels ??= new Set(await this.jupyter.kernelNames());
    if (!this.kernels.has(language.kernel)) {
      throw new CodeInterpreterError(
        400,
        `the ${language.name} kernel is not installed in this sandbox (installed: ${[...this.kernels].join(", ")})`,
      );
    }
    const meta = JSON.stringify({ language: language.name, cwd, default: isDefault });
    const session = await this.jupyter.createSession(
      `${SESSION_PREFIX}${meta}`,
      `moat-${Date.now()}-${Math.random().toString(36).slice(2)}`,
      language.kernel,
    );
    const context = new Context(
      session.kernel.id,
      session.id,
      language,
      cwd,
      isDefault,
      this.jupyter.channel(session.kernel.id),
    );
    try {
      await this.setup(context);
    } catch (err) {
      context.channel.close();
      await this.jupyter.deleteSession(session.id).catch(() => undefined);
      if (err instanceof CodeInterpreterError && err.status === 400)
        throw new CodeInterpreterError(400, `cannot use '${cwd}' as the working directory: ${err.message}`);
      throw err;
    }
    this.contexts.set(context.id, context);
    return context;
  }

  private adopt(session: Session): void {
    if (!session.name.startsWith(SESSION_PREFIX)) return;
    let meta: { language?: string; cwd?: string; default?: boolean };
    try {
      meta = JSON.parse(session.name.slice(SESSION_PREFIX.length));
    } catch {
      return;
    }
    const language = findLanguage(meta.language ?? "");
    if (!language || !meta.cwd) return;
    const context = new Context(
      session.kernel.id,
      session.id,
      language,
      meta.cwd,
      meta.default === true,
      this.jupyter.channel(session.kernel.id),
    );
    this.contexts.set(context.id, context);
    if (context.isDefault && !this.defaults.has(language.name))
      this.defaults.set(language.name, Promise.resolve(context));
  }
}
