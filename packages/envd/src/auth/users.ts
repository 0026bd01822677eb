import { readFileSync, statSync } from "node:fs";
import { Code, ConnectError } from "@connectrpc/connect";

/** A local account, as /etc/passwd describes it. */
export interface User {
  name: string;
  uid: number;
  gid: number;
  home: string;
  shell: string;
}

/**
 * Reads accounts from a passwd file, re-reading only when its mtime changes so that users created
 * inside a running sandbox (`useradd`) are found without a restart.
 */
export class UserDirectory {
  private cache: { mtimeMs: number; users: Map<string, User>; byUID: Map<number, User> } | undefined;
  private groupCache: { mtimeMs: number; byGID: Map<number, string> } | undefined;

  constructor(
    private readonly passwdPath = "/etc/passwd",
    private readonly groupPath = "/etc/group",
  ) {}

  lookup(name: string): User | undefined {
    return this.load().users.get(name);
  }

  /** Name of the account with this uid, or the uid as text when there is none (like `ls -l`). */
  userName(uid: number): string {
    return this.load().byUID.get(uid)?.name ?? String(uid);
  }

  /** Name of the group with this gid, or the gid as text when there is none. */
  groupName(gid: number): string {
    let mtimeMs = 0;
    try {
      mtimeMs = statSync(this.groupPath).mtimeMs;
    } catch {
      return String(gid);
    }
    if (this.groupCache?.mtimeMs !== mtimeMs) {
      const byGID = new Map<number, string>();
      for (const line of readFileSync(this.groupPath, "utf8").split("\n")) {
        const [name, , gidText] = line.split(":");
        if (name && gidText) byGID.set(Number(gidText), name);
      }
      this.groupCache = { mtimeMs, byGID };
    }
    return this.groupCache.byGID.get(gid) ?? String(gid);
  }

  private load() {
    const mtimeMs = statSync(this.passwdPath).mtimeMs;
    if (this.cache?.mtimeMs === mtimeMs) return this.cache;
    const users = new Map<string, User>();
    const byUID = new Map<number, User>();
    for (const line of readFileSync(this.passwdPath, "utf8").split("\n")) {
      const fields = line.split(":");
      if (fields.length < 7) continue;
      const [name, , uid, gid, , home, shell] = fields as [
        string,
        string,
        string,
        string,
        string,
        string,
        string,
      ];
      const user = { name, uid: Number(uid), gid: Number(gid), home: home || "/", shell: shell || "/bin/sh" };
      users.set(name, user);
      if (!byUID.has(user.uid)) byUID.set(user.uid, user);
    }
    this.cache = { mtimeMs, users, byUID };
    return this.cache;
  }
}

/**
 * The user a request acts as: `Authorization: Basic base64("<name>:")` when present, else the
 * default user from `/init`. An unknown user is `unauthenticated`, as envd answers.
 */
export function resolveUser(
  users: UserDirectory,
  authorization: string | null | undefined,
  defaultUser: string,
): User {
  const name = authorization ? parseBasicUser(authorization) : defaultUser;
  return requireUser(users, name);
}

/** Looks up `name`, failing with `unauthenticated` when no such account exists. */
export function requireUser(users: UserDirectory, name: string): User {
  const user = users.lookup(name);
  if (!user) throw new ConnectError(`invalid username: '${name}'`, Code.Unauthenticated);
  return user;
}

function parseBasicUser(header: string): string {
  const match = /^Basic\s+(\S+)$/i.exec(header.trim());
  if (!match) throw new ConnectError("invalid Authorization header: expected Basic", Code.Unauthenticated);
  const decoded = Buffer.from(match[1]!, "base64").toString("utf8");
  const colon = decoded.indexOf(":");
  return colon === -1 ? decoded : decoded.slice(0, colon);
}
