import { type ArtifactStore, openArtifactStore } from "@moat/orchestrator";

export const ARTIFACTS_HELP =
  "shared storage for templates and snapshots, so any node can start them: a directory (a shared mount) or s3://bucket/prefix (endpoint and credentials from AWS_ENDPOINT_URL_S3, AWS_REGION, AWS_ACCESS_KEY_ID, …) (default: MOAT_ARTIFACTS, else none)";
export const ARTIFACT_CACHE_HELP =
  "MiB of fetched templates and snapshots the node keeps, least recently used evicted first (default: MOAT_ARTIFACT_CACHE_MB, else 20480)";

/** The store `--artifacts` names (undefined: the node reads MOAT_ARTIFACTS itself); exits with the reason when it cannot be opened. */
export async function artifactsOrExit(location: string | undefined): Promise<ArtifactStore | undefined> {
  if (!location) return undefined;
  try {
    return await openArtifactStore(location);
  } catch (err) {
    process.stderr.write(`moat: --artifacts: ${(err as Error).message}\n`);
    process.exit(2);
  }
}
