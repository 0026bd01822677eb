import type { User } from "../auth/users.js";
import type { Access } from "../services/filesystem/access.js";
import { holdDir } from "./held-dir.js";

/**
 * `mkdir -p` on behalf of a user, with their permissions, through held directories (see holdDir):
 * every directory this call creates is owned by the user, the directories that already existed keep
 * their owners, and no symlink swapped in meanwhile can make envd create or chown elsewhere.
 * Returns the first directory created, if any.
 */
export async function makeDirsAs(dir: string, user: User, access: Access): Promise<string | undefined> {
  const held = await holdDir(dir, access, user);
  await held.close();
  return held.firstCreated;
}
