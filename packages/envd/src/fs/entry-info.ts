import type { Stats } from "node:fs";
import { lstat, readlink, realpath, stat } from "node:fs/promises";
import path from "node:path";
import type { MessageInitShape } from "@bufbuild/protobuf";
import { timestampFromMs } from "@bufbuild/protobuf/wkt";
import { type EntryInfoSchema, FileType } from "@moat/shared/gen/envd/filesystem";
import type { UserDirectory } from "../auth/users.js";
import { readMetadata } from "./metadata.js";

export type EntryInfoInit = MessageInitShape<typeof EntryInfoSchema>;

/**
 * Describes a path as envd's EntryInfo: the path is lstat'ed; for a symlink the type and mode come
 * from its target (UNSPECIFIED when the target cannot be resolved), `symlinkTarget` is the resolved
 * target, and `permissions` is the link's own mode string.
 */
export async function entryInfo(target: string, users: UserDirectory): Promise<EntryInfoInit> {
  const own = await lstat(target);
  let effective: Stats | undefined = own;
  let symlinkTarget: string | undefined;
  if (own.isSymbolicLink()) {
    try {
      effective = await stat(target);
      symlinkTarget = await realpath(target);
    } catch {
      effective = undefined;
      symlinkTarget = path.resolve(path.dirname(target), await readlink(target));
    }
  }
  return {
    name: path.basename(target),
    type: effective ? fileType(effective) : FileType.UNSPECIFIED,
    path: target,
    size: BigInt(own.size),
    mode: (effective ?? own).mode & 0o777,
    permissions: permissionString(own),
    owner: users.userName(own.uid),
    group: users.groupName(own.gid),
    modifiedTime: timestampFromMs(Math.trunc(own.mtimeMs)),
    symlinkTarget,
    metadata: own.isFile() ? await readMetadata(target, own) : {},
  };
}

function fileType(stats: Stats): FileType {
  if (stats.isDirectory()) return FileType.DIRECTORY;
  if (stats.isSymbolicLink()) return FileType.SYMLINK;
  return FileType.FILE;
}

/** `ls -l` style mode string (Go's `FileMode.String()`: `L` marks a symlink, `d` a directory). */
export function permissionString(stats: Stats): string {
  let kind = "-";
  if (stats.isDirectory()) kind = "d";
  else if (stats.isSymbolicLink()) kind = "L";
  else if (stats.isFIFO()) kind = "p";
  else if (stats.isSocket()) kind = "S";
  else if (stats.isCharacterDevice()) kind = "c";
  else if (stats.isBlockDevice()) kind = "D";
  const rwx = "rwxrwxrwx";
  let bits = "";
  for (let i = 0; i < 9; i++) bits += stats.mode & (1 << (8 - i)) ? rwx[i] : "-";
  return kind + bits;
}
