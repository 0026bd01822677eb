import { execFileSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { fileURLToPath } from "node:url";

/** `moat 0.1.0 (git 1a2b3c4d5e6f)`: the CLI package's version, and the commit when run from a git checkout. */
export function versionText(): string {
  const pkg = JSON.parse(readFileSync(new URL("../../package.json", import.meta.url), "utf8")) as {
    version: string;
  };
  const commit = gitCommit(fileURLToPath(new URL("../../../../", import.meta.url)));
  return `moat ${pkg.version}${commit ? ` (git ${commit})` : ""}`;
}

/** The checkout's commit (with `-dirty` when files changed), or undefined outside one or without git. */
export function gitCommit(root: string): string | undefined {
  if (!existsSync(`${root}/.git`)) return undefined;
  try {
    return (
      execFileSync("git", ["-C", root, "describe", "--always", "--dirty", "--abbrev=12", "--exclude=*"], {
        encoding: "utf8",
        stdio: ["ignore", "pipe", "ignore"],
        timeout: 2_000,
      }).trim() || undefined
    );
  } catch {
    return undefined;
  }
}
