/**
 * The templates sandboxes are created from. Until template builds exist, a node offers exactly the
 * base template (Debian with envd, built by `moat setup`), under id and alias `base`.
 */
import { TemplateNotFoundError } from "../errors.js";

export interface Template {
  templateID: string;
  alias: string;
  cpuCount: number;
  memoryMB: number;
  /** The writable layer is not size-limited yet; 0 says so. */
  diskSizeMB: number;
}

const BASE: Template = { templateID: "base", alias: "base", cpuCount: 2, memoryMB: 512, diskSizeMB: 0 };
const TEMPLATES = new Map<string, Template>([["base", BASE]]);

/** Resolves what a create names: an id or alias, optionally with the `default` tag (`base:default`). */
export function resolveTemplate(reference: string): Template {
  const [name, tag, ...rest] = reference.split(":");
  const template = name !== undefined && rest.length === 0 ? TEMPLATES.get(name) : undefined;
  if (!template || (tag !== undefined && tag !== "default")) throw new TemplateNotFoundError(reference);
  return template;
}
