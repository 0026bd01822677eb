import { CommandError, runCommand } from "@moat/shared";

/** Runs `ip` with its arguments; batch lines go through stdin (`-batch -`). */
export async function ip(args: string[], batch?: string[]): Promise<void> {
  const argv = batch ? ["ip", ...args, "-batch", "-"] : ["ip", ...args];
  await runCommand(argv, { timeoutMs: 10_000, input: batch ? `${batch.join("\n")}\n` : undefined });
}

/** Runs a command inside a named network namespace (nsenter keeps /sys as it is, unlike ip netns exec). */
export async function inNamespace(namespace: string, argv: string[], input?: string): Promise<void> {
  await runCommand(["nsenter", `--net=/var/run/netns/${namespace}`, ...argv], { timeoutMs: 10_000, input });
}

export async function listNamespaces(): Promise<string[]> {
  const { stdout } = await runCommand(["ip", "netns", "list"]);
  return stdout
    .split("\n")
    .map((line) => line.split(" ")[0]!)
    .filter(Boolean);
}

export async function listLinks(): Promise<string[]> {
  const { stdout } = await runCommand(["ip", "-o", "link", "show"]);
  return stdout
    .split("\n")
    .map((line) => /^\d+:\s+([^:@\s]+)/.exec(line)?.[1])
    .filter((name): name is string => Boolean(name));
}

/** Deletes a namespace; one that is already gone is not an error. */
export async function deleteNamespace(name: string): Promise<void> {
  try {
    await ip(["netns", "delete", name]);
  } catch (err) {
    if (err instanceof CommandError && /No such file|does not exist/i.test(err.stderrTail)) return;
    throw err;
  }
}

/**
 * Whether `ip link delete` failed because the link is gone. "Cannot find device" when the name was
 * not found; "RTNETLINK answers: No such device" when it was, but the link went before the delete
 * reached the kernel: a veth whose peer's namespace was just deleted is destroyed asynchronously.
 */
export function linkWasGone(stderr: string): boolean {
  return /Cannot find device|does not exist|No such device/i.test(stderr);
}

/** Deletes a link in the root namespace; one that is already gone is not an error. */
export async function deleteLink(name: string): Promise<void> {
  try {
    await ip(["link", "delete", name]);
  } catch (err) {
    if (err instanceof CommandError && linkWasGone(err.stderrTail)) return;
    throw err;
  }
}
