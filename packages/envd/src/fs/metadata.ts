/** File metadata lives in extended attributes under this prefix, as in E2B's envd. */
const PREFIX = "user.e2b.";

/** The native xattr binding, loaded on first use to keep it off envd's startup path. */
let binding: Promise<typeof import("@napi-rs/xattr")> | undefined;
function xattr() {
  binding ??= import("@napi-rs/xattr");
  return binding;
}

/** The metadata of a file (`user.e2b.*` xattrs); empty when it has none or the filesystem has no xattrs. */
export async function readMetadata(path: string): Promise<Record<string, string>> {
  const { getAttribute, listAttributes } = await xattr();
  let names: string[];
  try {
    names = await listAttributes(path);
  } catch {
    return {};
  }
  const out: Record<string, string> = {};
  for (const name of names) {
    if (!name.startsWith(PREFIX)) continue;
    try {
      const value = await getAttribute(path, name);
      if (value) out[name.slice(PREFIX.length)] = Buffer.from(value).toString("utf8");
    } catch {
      // removed between list and get
    }
  }
  return out;
}

/** Replaces all metadata of a file with `metadata`. */
export async function writeMetadata(path: string, metadata: Record<string, string>): Promise<void> {
  const { listAttributes, removeAttribute, setAttribute } = await xattr();
  for (const name of await listAttributes(path).catch(() => [] as string[])) {
    if (name.startsWith(PREFIX)) await removeAttribute(path, name);
  }
  for (const [key, value] of Object.entries(metadata)) {
    await setAttribute(path, PREFIX + key, Buffer.from(value, "utf8"));
  }
}
