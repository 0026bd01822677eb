import { HTTPError } from "./errors.js";

const HEADER_PREFIX = "x-metadata-";
/** The xattr namespace metadata lives in (see fs/metadata.ts); it counts against the limits. */
const XATTR_PREFIX = "user.e2b.";
/** Linux caps an xattr name at 255 bytes, prefix included. */
export const MAX_METADATA_KEY_BYTES = 255 - XATTR_PREFIX.length;
/** What one inode's xattr block can hold, keys (with prefix) plus values. */
export const MAX_METADATA_TOTAL_BYTES = 4096;

const PRINTABLE_ASCII = /^[\x20-\x7e]*$/;

/**
 * The file metadata an upload carries as `X-Metadata-<key>: <value>` headers: keys lower-cased,
 * the first value of a repeated header wins, an empty key is dropped. Invalid metadata is 400.
 */
export function metadataFromHeaders(headers: Record<string, string[] | undefined>): Record<string, string> {
  const metadata: Record<string, string> = {};
  for (const [name, values] of Object.entries(headers)) {
    if (!name.toLowerCase().startsWith(HEADER_PREFIX) || !values?.length) continue;
    const key = name.slice(HEADER_PREFIX.length).toLowerCase();
    if (key === "" || Object.hasOwn(metadata, key)) continue;
    metadata[key] = values[0]!;
  }
  validateMetadata(metadata);
  return metadata;
}

export function validateMetadata(metadata: Record<string, string>): void {
  let total = 0;
  for (const [key, value] of Object.entries(metadata)) {
    if (!PRINTABLE_ASCII.test(key) || !PRINTABLE_ASCII.test(value)) {
      throw new HTTPError(400, `invalid metadata: key '${key}' or its value is not printable ASCII`);
    }
    if (key.length > MAX_METADATA_KEY_BYTES) {
      throw new HTTPError(
        400,
        `invalid metadata: key '${key}' is longer than ${MAX_METADATA_KEY_BYTES} bytes`,
      );
    }
    total += XATTR_PREFIX.length + key.length + value.length;
  }
  if (total > MAX_METADATA_TOTAL_BYTES) {
    throw new HTTPError(
      400,
      `invalid metadata: ${total} bytes in total, the limit is ${MAX_METADATA_TOTAL_BYTES}`,
    );
  }
}
