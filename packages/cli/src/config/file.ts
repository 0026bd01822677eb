/**
 * `--config <file>` / MOAT_CONFIG on every command: a YAML (or JSON, which is YAML) file whose keys
 * are the commands' flags in camelCase (`dataDir: /srv/moat`), at the top level (for every command
 * that has the flag) or under a section named after a command (`orchestrator:`, `api:`, `proxy:`),
 * which wins over the top level. Flags win over the environment, which wins over the file, which
 * wins over the defaults. A key no command has, a section key its command does not have, and a
 * value its flag would refuse are errors naming the key and what it accepts.
 */
import { readFileSync } from "node:fs";
import { type Command, InvalidArgumentError, Option } from "commander";
import { parse as parseYAML } from "yaml";

export class ConfigFileError extends Error {
  constructor(file: string, problem: string) {
    super(`config file ${file}: ${problem}`);
    this.name = "ConfigFileError";
  }
}

/** The option every command takes. */
export function configOption(): Option {
  return new Option(
    "--config <file>",
    "YAML or JSON file of settings: keys are the flags in camelCase, at the top level or under a section named after the command; flags > environment > file > defaults",
  ).env("MOAT_CONFIG");
}

/** Reads a config file: a mapping of keys to values. */
export function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigFileError(file, `cannot be read (${(err as NodeJS.ErrnoException).code ?? String(err)})`);
  }
  let data: unknown;
  try {
    data = parseYAML(text);
  } catch (err) {
    throw new ConfigFileError(file, `is not valid YAML or JSON: ${(err as Error).message.split("\n")[0]}`);
  }
  if (data === null || data === undefined) return {};
  if (!isMapping(data)) throw new ConfigFileError(file, "must hold a mapping of keys to values");
  return data;
}

/**
 * Sets `command`'s options from the file where neither a flag nor the environment set them.
 * `commands`: every command of the program (a top-level key one of them has is not an error).
 */
export function applyConfigFile(command: Command, commands: readonly Command[], file: string): void {
  const data = readConfigFile(file);
  const sections = new Map(commands.map((c) => [c.name(), c]));
  const everyKey = new Set(commands.flatMap((c) => settable(c).map((o) => o.attributeName())));
  const own = new Map(settable(command).map((o) => [o.attributeName(), o]));
  const values: Array<{ option: Option; value: unknown; where: string }> = [];
  for (const [key, value] of Object.entries(data)) {
    if (sections.has(key)) {
      if (!isMapping(value))
        throw new ConfigFileError(file, `${key}: must be a mapping of moat ${key}'s settings`);
      continue;
    }
    if (!everyKey.has(key)) {
      throw new ConfigFileError(
        file,
        `unknown key '${key}'${sections.size ? ` (no command has a flag --${kebab(key)}; sections: ${[...sections.keys()].join(", ")})` : ""}`,
      );
    }
    const option = own.get(key);
    if (option) values.push({ option, value, where: key });
  }
  const section = data[command.name()];
  if (isMapping(section)) {
    for (const [key, value] of Object.entries(section)) {
      const option = own.get(key);
      if (!option) {
        throw new ConfigFileError(
          file,
          `unknown key '${command.name()}.${key}': moat ${command.name()} accepts ${[...own.keys()].join(", ")}`,
        );
      }
      values.push({ option, value, where: `${command.name()}.${key}` });
    }
  }
  for (const { option, value, where } of values) {
    const name = option.attributeName();
    const source = command.getOptionValueSource(name);
    if (source === "cli" || source === "env") continue;
    command.setOptionValueWithSource(name, parseValue(file, option, value, where), "config");
  }
}

/** The options a file may set: all but --config itself and --help/--version. */
function settable(command: Command): Option[] {
  return command.options.filter((o) => o.attributeName() !== "config");
}

/** A value as its flag would take it (through the flag's own parser), or an error naming the key. */
function parseValue(file: string, option: Option, value: unknown, where: string): unknown {
  const expects = option.description ? ` (${option.flags}: ${option.description})` : ` (${option.flags})`;
  const fail = (problem: string) => new ConfigFileError(file, `${where}: ${problem}${expects}`);
  if (option.isBoolean()) {
    if (typeof value !== "boolean") throw fail(`must be true or false, got ${JSON.stringify(value)}`);
    return option.negate ? !value : value;
  }
  const repeatable = Array.isArray(option.defaultValue);
  const items = repeatable && Array.isArray(value) ? value : [value];
  if (!repeatable && Array.isArray(value)) throw fail("takes one value, not a list");
  let result: unknown = repeatable ? option.defaultValue : undefined;
  for (const item of items) {
    if (typeof item !== "string" && typeof item !== "number") {
      throw fail(
        `must be a ${repeatable ? "string or a list of strings" : "string or a number"}, got ${JSON.stringify(item)}`,
      );
    }
    const text = String(item);
    if (option.argChoices && !option.argChoices.includes(text)) {
      throw fail(`must be one of ${option.argChoices.join(", ")}, got '${text}'`);
    }
    try {
      result = option.parseArg ? option.parseArg(text, result) : text;
    } catch (err) {
      if (err instanceof InvalidArgumentError || err instanceof Error)
        throw fail(`'${text}': ${err.message}`);
      throw err;
    }
  }
  return result;
}

function isMapping(value: unknown): value is Record<string, unknown> {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function kebab(key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`);
}

/**
 * Gives every command of `program` the `--config` option, applied before its action; a bad file
 * ends the command with its message.
 */
export function withConfigFiles(program: Command): Command {
  const commands = program.commands;
  for (const command of commands) {
    command.addOption(configOption());
    command.hook("preAction", (cmd) => {
      const file = cmd.opts().config as string | undefined;
      if (!file) return;
      try {
        applyConfigFile(cmd, commands, file);
      } catch (err) {
        if (err instanceof ConfigFileError) cmd.error(`moat ${cmd.name()}: ${err.message}`);
        throw err;
      }
    });
  }
  return program;
}
