/**
 * A template build's steps as E2B's SDK sends them (TemplateStep: type and args), checked, and the
 * context they build up (ENV, WORKDIR, USER) and the cache key of each layer they make.
 */
import { createHash } from "node:crypto";
import path from "node:path";

export interface StepInput {
  type: string;
  args: string[];
  force?: boolean;
  filesHash?: string;
  filesURL?: string;
}

export type Step =
  | { kind: "RUN"; command: string; user?: string }
  | {
      kind: "COPY";
      src: string;
      dest: string;
      owner: string;
      mode: string;
      filesHash: string;
      filesURL: string;
    }
  | { kind: "ENV"; vars: Array<[string, string]> }
  | { kind: "WORKDIR"; dir: string }
  | { kind: "USER"; user: string };

/** What RUN and COPY steps run with; carried from step to step. */
export interface BuildContext {
  env: Record<string, string>;
  user: string;
  workdir?: string;
}

/** A build failure, with the step it belongs to ("base", "1".."n" or "finalize", as E2B numbers them). */
export class BuildStepError extends Error {
  constructor(
    message: string,
    readonly step: string,
  ) {
    super(message);
    this.name = "BuildStepError";
  }
}

const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
const USER_NAME = /^[A-Za-z0-9_][A-Za-z0-9_.-]*(:[A-Za-z0-9_][A-Za-z0-9_.-]*)?$/;
const MODE = /^[0-7]{3,4}$/;
const FILES_SHA256 = /^[0-9a-f]{64}$/;

/** E2B numbers steps from 1 (0 is the base), so its SDK can point at the line that added them. */
export function stepLabel(index: number): string {
  return String(index + 1);
}

export function parseStep(input: StepInput, index: number): Step {
  const label = stepLabel(index);
  const fail = (why: string) => new BuildStepError(`step ${label} (${input.type}): ${why}`, label);
  const args = input.args ?? [];
  switch (input.type) {
    case "RUN": {
      const [command, user] = args;
      if (!command?.trim()) throw fail("the command is empty");
      if (user !== undefined && user !== "" && !USER_NAME.test(user)) throw fail(`invalid user '${user}'`);
      return { kind: "RUN", command, user: user || undefined };
    }
    case "COPY": {
      const [src, dest, owner = "", mode = ""] = args;
      if (!src || !dest) throw fail("needs a source and a destination");
      if (path.posix.isAbsolute(src) || src.split("/").includes("..")) {
        throw fail(`the source '${src}' must be a path inside the build context`);
      }
      if (owner && !USER_NAME.test(owner)) throw fail(`invalid owner '${owner}'`);
      if (mode && !MODE.test(mode)) throw fail(`invalid mode '${mode}' (octal, e.g. 0644)`);
      if (!input.filesHash || !input.filesURL) throw fail("its files were not uploaded");
      if (!FILES_SHA256.test(input.filesHash)) {
        throw fail("its files hash must be the SHA-256 (64 hex characters) of the uploaded tar");
      }
      return { kind: "COPY", src, dest, owner, mode, filesHash: input.filesHash, filesURL: input.filesURL };
    }
    case "ENV": {
      if (args.length === 0 || args.length % 2 !== 0) throw fail("needs name and value pairs");
      const vars: Array<[string, string]> = [];
      for (let i = 0; i < args.length; i += 2) {
        const name = args[i]!;
        if (!ENV_NAME.test(name)) throw fail(`invalid variable name '${name}'`);
        vars.push([name, args[i + 1]!]);
      }
      return { kind: "ENV", vars };
    }
    case "WORKDIR": {
      const [dir] = args;
      if (!dir?.trim()) throw fail("the directory is empty");
      return { kind: "WORKDIR", dir };
    }
    case "USER": {
      const [user] = args;
      if (!user || !USER_NAME.test(user)) throw fail(`invalid user '${user ?? ""}'`);
      return { kind: "USER", user };
    }
    default:
      throw fail("unknown step type (expected COPY, RUN, ENV, WORKDIR or USER)");
  }
}

/** The context after an ENV, WORKDIR or USER step (others leave it as it is). */
export function nextContext(ctx: BuildContext, step: Step): BuildContext {
  switch (step.kind) {
    case "ENV": {
      const env = { ...ctx.env };
      for (const [name, value] of step.vars) env[name] = expandEnv(value, env);
      return { ...ctx, env };
    }
    case "WORKDIR": {
      const dir = expandEnv(step.dir, ctx.env);
      return { ...ctx, workdir: path.posix.resolve(ctx.workdir ?? "/", dir) };
    }
    case "USER":
      return { ...ctx, user: step.user };
    default:
      return ctx;
  }
}

/** `$NAME` and `${NAME}` replaced as Docker's ENV does (unknown names become empty, except PATH). */
export function expandEnv(value: string, env: Record<string, string>): string {
  return value.replace(/\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_m, braced, bare) => {
    const name = (braced ?? bare) as string;
    return env[name] ?? (name === "PATH" ? DEFAULT_PATH : "");
  });
}

export const DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/**
 * A layer's cache key: the team the build is for, the parent layer's key, the step, and the
 * context it runs in. The team keeps one team's layers (its COPY files, what its RUN steps
 * generated) from ever serving another team's build. `nonce` (a forced step's build id) makes a
 * key no earlier build can have produced.
 */
export function layerKey(team: string, parent: string, step: Step, ctx: BuildContext, nonce = ""): string {
  if (!team) throw new Error("a layer key needs the team the build is for");
  // A COPY's download URL carries an expiring signature; its files hash (the API's SHA-256 of
  // the uploaded tar) names the content.
  const stable = step.kind === "COPY" ? { ...step, filesURL: undefined } : step;
  const canonical = JSON.stringify({
    team,
    parent,
    step: stable,
    env: Object.entries(ctx.env).sort(([a], [b]) => a.localeCompare(b)),
    user: ctx.user,
    workdir: ctx.workdir ?? null,
    nonce,
  });
  return createHash("sha256").update(canonical).digest("hex").slice(0, 32);
}

/** How a step reads in build logs, as a Dockerfile line. */
export function describeStep(step: Step): string {
  switch (step.kind) {
    case "RUN":
      return `RUN ${step.command}${step.user ? ` (as ${step.user})` : ""}`;
    case "COPY":
      return `COPY ${step.src} ${step.dest}`;
    case "ENV":
      return `ENV ${step.vars.map(([k, v]) => `${k}=${v}`).join(" ")}`;
    case "WORKDIR":
      return `WORKDIR ${step.dir}`;
    case "USER":
      return `USER ${step.user}`;
  }
}

/** Quotes a string for a POSIX shell. */
export function shellQuote(value: string): string {
  if (value !== "" && /^[\w@%+=:,./-]+$/.test(value)) return value;
  return `'${value.replace(/'/g, `'"'"'`)}'`;
}
