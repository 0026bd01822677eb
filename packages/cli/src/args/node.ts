import { checkNamePrefix, checkNodeID } from "@moat/orchestrator";
import { InvalidArgumentError } from "commander";

/** `--node-id`: the node's name in the fleet. */
export function parseNodeID(value: string): string {
  try {
    return checkNodeID(value, "the node id");
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** `--name-prefix`: the prefix of the node's host-global names. */
export function parseNamePrefix(value: string): string {
  try {
    return checkNamePrefix(value, "the name prefix");
  } catch (err) {
    throw new InvalidArgumentError((err as Error).message);
  }
}

/** One `--node <id>=<url>` of `moat api`: a node the API places sandboxes on. */
export interface StaticNode {
  id: string;
  url: string;
}

/** `--node <id>=<url>`, repeatable: each adds a node to the list (ids unique). */
export function parseStaticNode(value: string, previous: StaticNode[] = []): StaticNode[] {
  const eq = value.indexOf("=");
  if (eq <= 0) throw new InvalidArgumentError("expected <id>=<url>, e.g. node-1=http://10.0.0.5:5008");
  const id = parseNodeID(value.slice(0, eq));
  const url = value.slice(eq + 1);
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new InvalidArgumentError(`'${url}' is not a URL (expected http://<address>:<port>)`);
  }
  if (parsed.protocol !== "http:" && parsed.protocol !== "https:")
    throw new InvalidArgumentError(`'${url}' must be an http:// or https:// URL`);
  if (previous.some((n) => n.id === id)) throw new InvalidArgumentError(`node '${id}' is given twice`);
  return [...previous, { id, url: url.replace(/\/+$/, "") }];
}
