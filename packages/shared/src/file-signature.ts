/**
 * The signature E2B puts on envd's `/files` URLs of secured sandboxes (the SDK's `downloadUrl` and
 * `uploadUrl`): envd checks it, and the client proxy uses it to tell which sandbox a signed URL on
 * the shared sandbox address belongs to.
 */
import { createHash } from "node:crypto";

export type FileOperation = "read" | "write";

/** `v1_` + unpadded base64 of sha256("<path>:<operation>:<username>:<token>[:<expiration>]"). */
export function fileSignature(
  path: string,
  operation: FileOperation,
  username: string,
  accessToken: string,
  expiration?: number,
): string {
  let payload = `${path}:${operation}:${username}:${accessToken}`;
  if (expiration !== undefined) payload += `:${expiration}`;
  return `v1_${createHash("sha256").update(payload).digest("base64").replace(/=+$/, "")}`;
}
