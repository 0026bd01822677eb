/**
 * Shared artifact storage: what one node makes and another may need (template layers and builds,
 * template and named snapshots, paused sandboxes' memory and disk, volumes). A node works on local
 * files; this is where they are published and fetched. Objects are immutable once put: a key is
 * written whole or not at all, and readers never see a partial object.
 *
 * Backends: a directory (a shared mount such as NFS; a plain directory in tests) and S3-compatible
 * object storage.
 */
export interface ArtifactStore {
  /** "directory" or "s3", for logs and `moat doctor`. */
  readonly kind: string;
  /** Publishes the local file `file` as `key` (written beside and committed, so never seen half-made). */
  putFile(key: string, file: string): Promise<void>;
  /**
   * Fetches `key` into the local file `file` (written beside, then renamed); false when there is
   * no such object. The download is checked against the checksum put with it: a mismatch throws
   * ArtifactChecksumError and leaves no file.
   */
  getFile(key: string, file: string): Promise<boolean>;
  /** Whether `key` exists. */
  has(key: string): Promise<boolean>;
  /** Removes `key`; no error when it is absent. */
  delete(key: string): Promise<void>;
  /** Every key under `prefix` (which ends with "/"). */
  list(prefix: string): Promise<string[]>;
}

/** The suffix of the checksum kept beside an object (artifacts/checksum.ts); no key ends with it. */
export const SEAL_SUFFIX = ".sha256";

/** Keys are relative paths of `[A-Za-z0-9._-]` segments: no "..", no absolute paths, no empty segment. */
export function checkKey(key: string): string {
  const segments = key.split("/");
  if (
    key.length === 0 ||
    key.length > 512 ||
    segments.some((s) => s === "" || s === "." || s === ".." || !/^[A-Za-z0-9._-]+$/.test(s))
  ) {
    throw new RangeError(`invalid artifact key ${JSON.stringify(key)}`);
  }
  return key;
}
