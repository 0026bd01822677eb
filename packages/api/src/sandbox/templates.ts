/**
 * The templates sandboxes are created from: the base template every node has (Debian with envd,
 * built by `moat setup`, id and name `base`), the built-in templates every node builds from it
 * (`code-interpreter-v1`, alias `code-interpreter`), and the builds of the teams' own templates
 * (template/), which start on the node that built them.
 */
import { findBuiltinTemplate } from "@moat/shared";
import type { DB } from "../db/database.js";
import type { TeamRow } from "../db/schema.js";
import { resolveTemplateBuild } from "../template/resolve.js";

export interface Template {
  templateID: string;
  /** The template's name (the Sandbox's `alias`). */
  alias: string;
  cpuCount: number;
  memoryMB: number;
  /** The most the writable layer may hold, in MiB (the node enforces it); 0: no limit. */
  diskSizeMB: number;
  /** The build sandboxes start from; "" for the base template. */
  buildID: string;
  /** The node that has the build; null: any node (the base template). */
  nodeID: string | null;
  /** What the build recorded for envd requests that name no user or workdir ("": the node's). */
  defaultUser: string;
  defaultWorkdir: string;
  /** A snapshot of a sandbox: `buildID` names the snapshot on its node (memory, processes, files). */
  snapshot: boolean;
}

const BASE: Omit<Template, "diskSizeMB"> = {
  templateID: "base",
  alias: "base",
  cpuCount: 2,
  memoryMB: 512,
  buildID: "",
  nodeID: null,
  defaultUser: "",
  defaultWorkdir: "",
  snapshot: false,
};

/**
 * Resolves what a create names: `base` (optionally `base:default`), a built-in template, or a team's template by id,
 * name, `name:tag` or `team/name` (template/resolve.ts): its resources are those of the build.
 * `diskSizeMB`: the deployment's, for the base template and builds made before disk sizes.
 */
export async function resolveTemplate(
  db: DB,
  team: TeamRow,
  reference: string,
  diskSizeMB: number,
): Promise<Template> {
  if (reference === "base" || reference === "base:default") return { ...BASE, diskSizeMB };
  // Built on every node (`code-interpreter-v1`); the node picks its current build.
  const builtin = findBuiltinTemplate(reference);
  if (builtin) {
    return {
      ...BASE,
      templateID: builtin.templateID,
      alias: builtin.templateID,
      cpuCount: builtin.vcpu,
      memoryMB: builtin.memoryMB,
      diskSizeMB,
    };
  }
  const { template, build } = await resolveTemplateBuild(db, team, reference);
  return {
    templateID: template.template_id,
    alias: template.name,
    cpuCount: build.cpu_count,
    memoryMB: build.memory_mb,
    diskSizeMB: build.disk_size_mb || diskSizeMB,
    buildID: build.build_id,
    nodeID: build.node_id,
    defaultUser: build.default_user ?? "",
    defaultWorkdir: build.default_workdir ?? "",
    snapshot: template.snapshot,
  };
}
