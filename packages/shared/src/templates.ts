/**
 * The templates every moat node has besides the base template: what the API answers creates with
 * and what the node builds. Their resources are the ones the node builds and snapshots them with,
 * so that creates match the snapshot and its warm pool.
 */
export interface BuiltinTemplate {
  templateID: string;
  /** Names a create may use for it (the first is the template id). */
  aliases: string[];
  vcpu: number;
  memoryMB: number;
}

/** `@e2b/code-interpreter`'s default template: Jupyter kernels behind the server on port 49999. */
export const CODE_INTERPRETER_TEMPLATE: BuiltinTemplate = {
  templateID: "code-interpreter-v1",
  aliases: ["code-interpreter-v1", "code-interpreter"],
  vcpu: 2,
  memoryMB: 1024,
};

export const CODE_INTERPRETER_PORT = 49999;

export const BUILTIN_TEMPLATES: readonly BuiltinTemplate[] = [CODE_INTERPRETER_TEMPLATE];

/** The built-in template a create's reference names (`name` or `name:default`), if any. */
export function findBuiltinTemplate(reference: string): BuiltinTemplate | undefined {
  const name = reference
    .trim()
    .toLowerCase()
    .replace(/:default$/, "");
  return BUILTIN_TEMPLATES.find((t) => t.aliases.includes(name));
}

/**
 * The envd process tag of a template's start command: envd writes the output of a process with it
 * to its own log, which the node keeps as the sandbox's log.
 */
export const START_COMMAND_TAG = "moat-start-command";
