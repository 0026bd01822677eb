/**
 * The languages contexts run, the Jupyter kernel behind each, and the snippets that set a
 * kernel's working directory and environment variables in that language.
 */

export interface Language {
  /** As the SDK names it (`python`, `r`, `javascript`, …). */
  name: string;
  /** The Jupyter kernelspec that runs it. */
  kernel: string;
  chdir(dir: string): string;
  /** Sets `vars` for good (the sandbox's variables, on a context's first execution). */
  setEnv(vars: Record<string, string>): string;
  /** Sets `vars` for one execution, keeping the values they replace for `restoreEnv`. */
  pushEnv(vars: Record<string, string>): string;
  restoreEnv(): string;
  /** What a new kernel runs first: moat's display formatters from `dir` (python). */
  setup?(dir: string): string;
}

const json = (value: unknown) => JSON.stringify(value);

const python: Language = {
  name: "python",
  kernel: "python3",
  chdir: (dir) => `import os as __moat_os; __moat_os.chdir(${json(dir)}); del __moat_os`,
  setEnv: (vars) => `import os as __moat_os; __moat_os.environ.update(${json(vars)}); del __moat_os`,
  pushEnv: (vars) =>
    "import os as __moat_os\n" +
    `__moat_saved_env = {k: __moat_os.environ.get(k) for k in ${json(Object.keys(vars))}}\n` +
    `__moat_os.environ.update(${json(vars)}); del __moat_os`,
  restoreEnv: () =>
    "import os as __moat_os\n" +
    'for __moat_k, __moat_v in globals().pop("__moat_saved_env", {}).items():\n' +
    "    (__moat_os.environ.pop(__moat_k, None) if __moat_v is None else __moat_os.environ.__setitem__(__moat_k, __moat_v))\n" +
    "del __moat_os",
  setup: (dir) =>
    `import sys as __moat_sys; __moat_sys.path.insert(0, ${json(dir)}); import moat_display as __moat_display; ` +
    "__moat_display.install(); __moat_sys.path.remove(__moat_sys.path[0]); del __moat_sys, __moat_display",
};

const javascript: Language = {
  name: "javascript",
  kernel: "javascript",
  chdir: (dir) => `process.chdir(${json(dir)});`,
  setEnv: (vars) => `Object.assign(process.env, ${json(vars)});`,
  pushEnv: (vars) =>
    `globalThis.__moatSavedEnv = Object.fromEntries(${json(Object.keys(vars))}.map((k) => [k, process.env[k]])); Object.assign(process.env, ${json(vars)});`,
  restoreEnv: () =>
    "for (const [k, v] of Object.entries(globalThis.__moatSavedEnv ?? {})) { if (v === undefined) delete process.env[k]; else process.env[k] = v; } delete globalThis.__moatSavedEnv;",
};

const rVector = (vars: Record<string, string>) =>
  `c(${Object.entries(vars)
    .map(([k, v]) => `${json(k)} = ${json(v)}`)
    .join(", ")})`;

const r: Language = {
  name: "r",
  kernel: "ir",
  chdir: (dir) => `invisible(setwd(${json(dir)}))`,
  setEnv: (vars) => `invisible(do.call(Sys.setenv, as.list(${rVector(vars)})))`,
  pushEnv: (vars) =>
    `.moat_saved_env <- Sys.getenv(names(${rVector(vars)}), unset = NA, names = TRUE)\n` +
    `invisible(do.call(Sys.setenv, as.list(${rVector(vars)})))`,
  restoreEnv: () =>
    'if (exists(".moat_saved_env")) { for (k in names(.moat_saved_env)) { v <- .moat_saved_env[[k]]; if (is.na(v)) Sys.unsetenv(k) else do.call(Sys.setenv, setNames(list(v), k)) }; rm(.moat_saved_env) }',
};

const LANGUAGES = new Map<string, Language>(
  [python, javascript, r].map((language) => [language.name, language]),
);
const ALIASES: Record<string, string> = { js: "javascript", ts: "javascript", typescript: "javascript" };

export const DEFAULT_LANGUAGE = "python";

/** The language a request names (trimmed, lowercased, aliases resolved), or undefined. */
export function findLanguage(name: string): Language | undefined {
  const key = name.trim().toLowerCase();
  return LANGUAGES.get(ALIASES[key] ?? key);
}

export function languageNames(): string[] {
  return [...LANGUAGES.keys()];
}

/** Environment variable names every kernel accepts. */
export const ENV_NAME = /^[A-Za-z_][A-Za-z0-9_]*$/;
