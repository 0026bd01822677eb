/**
 * Signed `/files` URLs on the shared sandbox address. With `E2B_SANDBOX_URL` set (as `moat up`
 * tells SDK users to), the SDK's `downloadUrl`/`uploadUrl` are `<E2B_SANDBOX_URL>/files?path=…&
 * signature=…[&signature_expiration=…][&username=…]`: no sandbox in the host, and whoever uses the
 * URL (curl, a browser, another service) sends no routing headers. The signature is a hash over the
 * path, the operation, the user, the expiry and one sandbox's envd access token, so it names that
 * sandbox and no other: the proxy routes the request to the sandbox whose token makes it valid,
 * unchanged, and envd checks it again.
 *
 * The proxy only verifies signatures, never makes one, and a URL that matches no sandbox learns
 * nothing about which sandboxes exist. Only exactly `/files` with GET, HEAD or POST (what envd
 * serves to signed URLs) is routed this way; anything else on the shared address names no sandbox.
 */
import { timingSafeEqual } from "node:crypto";
import { type CatalogEntry, type FileOperation, fileSignature, type SandboxCatalog } from "@moat/shared";
import { FileURLUnauthorizedError } from "./errors.js";

const OPERATIONS: Record<string, FileOperation> = { GET: "read", HEAD: "read", POST: "write" };

/** The query of a request for envd's `/files` with a method signed URLs serve; else undefined. */
export function filesQuery(
  method: string | undefined,
  target: string | undefined,
): URLSearchParams | undefined {
  if (!method || !OPERATIONS[method] || !target) return undefined;
  const cut = target.indexOf("?");
  if ((cut === -1 ? target : target.slice(0, cut)) !== "/files") return undefined;
  return new URLSearchParams(cut === -1 ? "" : target.slice(cut + 1));
}

/**
 * The sandbox a signed `/files` URL belongs to. Checks what envd checks (same parameters, same
 * hash, the expiry), so that only a URL envd would accept reaches a sandbox, and none reaches a
 * paused one's resume without a valid signature.
 * @throws FileURLUnauthorizedError (401) when the URL is unsigned, malformed, matches no sandbox, or expired.
 */
export async function findSignedSandbox(
  catalog: SandboxCatalog,
  method: string,
  query: URLSearchParams,
  now = Date.now(),
): Promise<CatalogEntry> {
  const signature = query.get("signature");
  if (!signature || !catalog.findByAccessToken) {
    throw new FileURLUnauthorizedError(
      "missing signature query parameter: a /files URL on the shared sandbox address must be signed (a sandbox created with secure: true), or name its sandbox with E2b-Sandbox-Id and E2b-Sandbox-Port",
    );
  }
  const expirationText = query.get("signature_expiration");
  let expiration: number | undefined;
  if (expirationText !== null) {
    if (!/^-?\d{1,15}$/.test(expirationText))
      throw new FileURLUnauthorizedError("invalid signature_expiration");
    expiration = Number(expirationText);
  }
  const path = query.get("path") ?? "";
  const username = query.get("username") ?? "";
  const operation = OPERATIONS[method] as FileOperation;
  const given = Buffer.from(signature);
  const entry = await catalog.findByAccessToken((token) => {
    // Every valid signature has one length, so comparing lengths first gives nothing away.
    const expected = Buffer.from(fileSignature(path, operation, username, token, expiration));
    return expected.length === given.length && timingSafeEqual(expected, given);
  });
  if (!entry) {
    throw new FileURLUnauthorizedError(
      "invalid signature: it does not match this URL (ask the SDK for a new downloadUrl/uploadUrl)",
    );
  }
  if (expiration !== undefined && expiration < Math.floor(now / 1000)) {
    throw new FileURLUnauthorizedError("signature is already expired");
  }
  return entry;
}
