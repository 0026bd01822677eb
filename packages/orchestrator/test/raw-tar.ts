/**
 * Tar archives written header by header, with whatever names and link targets a test asks for:
 * `..`, absolute paths, whiteouts of `..`, which tar tools refuse to make. For hostile layers.
 */
import * as tar from "tar";

export interface RawEntry {
  path: string;
  type?: "File" | "Directory" | "SymbolicLink" | "Link" | "FIFO" | "CharacterDevice" | "BlockDevice";
  linkpath?: string;
  data?: string | Buffer;
  mode?: number;
  uid?: number;
  gid?: number;
  devmaj?: number;
  devmin?: number;
}

export function rawTar(entries: RawEntry[]): Buffer {
  const blocks: Buffer[] = [];
  for (const entry of entries) {
    const data = Buffer.from(entry.data ?? "");
    const type = entry.type ?? "File";
    const header = new tar.Header({
      path: entry.path,
      type,
      linkpath: entry.linkpath,
      size: type === "File" ? data.length : 0,
      mode: entry.mode ?? (type === "Directory" ? 0o755 : 0o644),
      uid: entry.uid ?? 0,
      gid: entry.gid ?? 0,
      mtime: new Date(1_700_000_000_000),
      devmaj: entry.devmaj,
      devmin: entry.devmin,
    });
    const block = Buffer.alloc(512);
    header.encode(block, 0);
    blocks.push(block);
    if (type === "File" && data.length > 0) {
      blocks.push(data, Buffer.alloc((512 - (data.length % 512)) % 512));
    }
  }
  blocks.push(Buffer.alloc(1024));
  return Buffer.concat(blocks);
}
