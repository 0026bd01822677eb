import path from "node:path";
import { Code, ConnectError } from "@connectrpc/connect";
import type { User } from "./users.js";

/**
 * Turns a path from a request into an absolute one: `~` and `~/x` expand to the user's home,
 * relative paths resolve against the default workdir when set, else the home.
 */
export function resolvePath(input: string, user: User, defaultWorkdir: string | undefined): string {
  if (input.includes("\0")) throw new ConnectError("path contains a NUL byte", Code.InvalidArgument);
  if (input === "~") return user.home;
  if (input.startsWith("~/")) return path.join(user.home, input.slice(2));
  if (path.isAbsolute(input)) return path.normalize(input);
  return path.resolve(defaultWorkdir ?? user.home, input);
}
