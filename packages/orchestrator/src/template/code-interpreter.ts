/**
 * The `code-interpreter-v1` template (alias `code-interpreter`) every node has: the base template
 * plus Debian's IPython and R kernels and data-science packages, built by the node's own
 * template builder, with the code-interpreter server (code-interpreter.mjs in envd's read-only
 * directory) as its start command. Its build id is the hash of its definition and of the base
 * template it stacks on, so it is built once and again only when either changes; its snapshot is
 * taken with the server answering /health, i.e. with the default python kernel started.
 */
import { createHash } from "node:crypto";
import { lstat } from "node:fs/promises";
import { CODE_INTERPRETER_PORT, CODE_INTERPRETER_TEMPLATE, type Logger } from "@moat/shared";
import type { SandboxManager } from "../sandbox/manager.js";
import type { BuildLog, TemplateBuilder } from "./build/builder.js";
import type { StepInput } from "./build/steps.js";
import { BASE_BUILD_KEY, type TemplateStore } from "./store.js";

/**
 * Debian 12 packages: the Python and R kernels, the Jupyter server (for agents that start one;
 * moat's server runs the kernels itself), and what agents' data code imports. (Debian has no JavaScript, Java or bash kernel; see the README.)
 */
export const CODE_INTERPRETER_PACKAGES = [
  "python3-ipykernel",
  "r-cran-irkernel",
  "python3-jupyter-server",
  "python3-numpy",
  "python3-pandas",
  "python3-matplotlib",
  "python3-seaborn",
  "python3-scipy",
];

/** The team a built-in template's layers and snapshot belong to (no API team has this id). */
export const BUILTIN_TEAM = "moat-builtin";

export interface CodeInterpreterDefinition {
  steps: StepInput[];
  startCmd: string;
  readyCmd: string;
  vcpu: number;
  memoryMB: number;
}

export const CODE_INTERPRETER_DEFINITION: CodeInterpreterDefinition = {
  steps: [
    {
      type: "RUN",
      args: [
        "export DEBIAN_FRONTEND=noninteractive && apt-get update -q && " +
          `apt-get install -y -q --no-install-recommends ${CODE_INTERPRETER_PACKAGES.join(" ")} && ` +
          "apt-get clean && rm -rf /var/lib/apt/lists/*",
        "root",
      ],
    },
    {
      type: "RUN",
      args: [
        // Fails the build when a package is missing something the server or agents rely on.
        "python3 -c 'import ipykernel, jupyter_server, numpy, pandas, matplotlib, seaborn, scipy' && " +
          "python3 -c 'from jupyter_client.kernelspec import KernelSpecManager as M; " +
          's = M().find_kernel_specs(); print(s); assert {"python3", "ir"} <= set(s)\'',
        "root",
      ],
    },
  ],
  // The server in a loop that starts it again when it ends (envd's directory, `respawn`). Output
  // to a log file: nobody reads the start command's own output after the build.
  startCmd: "exec /bin/sh /opt/moat/envd/respawn >>/tmp/.moat-code-interpreter.log 2>&1",
  readyCmd: `curl -sf http://127.0.0.1:${CODE_INTERPRETER_PORT}/health`,
  vcpu: CODE_INTERPRETER_TEMPLATE.vcpu,
  memoryMB: CODE_INTERPRETER_TEMPLATE.memoryMB,
};

/** `code-interpreter-v1-<hash>`: the definition and the base template (its rootfs path names its hash). */
export function codeInterpreterBuildID(
  baseRootfs: string,
  definition: CodeInterpreterDefinition = CODE_INTERPRETER_DEFINITION,
): string {
  const hash = createHash("sha256")
    .update(JSON.stringify({ definition, base: baseHash(baseRootfs) }))
    .digest("hex")
    .slice(0, 16);
  return `${CODE_INTERPRETER_TEMPLATE.templateID}-${hash}`;
}

/** `<…>/templates/base/<hash>/rootfs` → `<hash>`: the same in every data dir sharing the base. */
function baseHash(baseRootfs: string): string {
  const parts = baseRootfs.split("/").filter(Boolean);
  return parts.at(-2) ?? baseRootfs;
}

export interface EnsureBuiltinOptions {
  builder: TemplateBuilder;
  store: TemplateStore;
  manager: SandboxManager;
  logger: Logger;
  onProgress?: (message: string) => void;
  signal?: AbortSignal;
}

export interface BuiltinTemplateResult {
  templateID: string;
  buildID: string;
  reused: boolean;
}

/**
 * Builds the code-interpreter template when no build of its current definition is on this node
 * (minutes: Debian packages in a build sandbox, then the snapshot), registers it so that creates
 * naming `code-interpreter-v1` get it, and removes builds of earlier definitions.
 */
export async function ensureCodeInterpreterTemplate(
  options: EnsureBuiltinOptions,
): Promise<BuiltinTemplateResult> {
  const { store, builder, manager } = options;
  const { templateID } = CODE_INTERPRETER_TEMPLATE;
  const buildID = codeInterpreterBuildID(store.baseRootfs);
  const say = options.onProgress ?? (() => undefined);
  let reused = true;
  if (!store.readBuild(buildID)) {
    reused = false;
    say(`building ${templateID} (${buildID}) from the base template; the first build takes a few minutes`);
    const def = CODE_INTERPRETER_DEFINITION;
    await builder.build(
      {
        teamID: BUILTIN_TEAM,
        templateID,
        buildID,
        vcpu: def.vcpu,
        memoryMB: def.memoryMB,
        fromBuildID: BASE_BUILD_KEY,
        startCmd: def.startCmd,
        readyCmd: def.readyCmd,
        steps: def.steps,
      },
      (log: BuildLog) => say(log.step ? `[${log.step}] ${log.message}` : log.message),
      options.signal ?? new AbortController().signal,
    );
  }
  store.registerBuiltin(templateID, buildID);
  // Builds of earlier definitions: their snapshots go now, their layers once no sandbox is on them.
  for (const old of store.manifests()) {
    if (old.templateID !== templateID || old.buildID === buildID || old.teamID !== BUILTIN_TEAM) continue;
    // Shared from another data dir (tests link the machine's cache): not this one's to remove.
    if ((await lstat(store.buildDir(old.buildID))).isSymbolicLink()) continue;
    await manager.forgetBuild(old.buildID);
    await store.deleteBuild(old.buildID);
    await builder.pruneLayers(old.layers);
    options.logger.info({ buildID: old.buildID }, "an earlier code-interpreter build was removed");
  }
  return { templateID, buildID, reused };
}
