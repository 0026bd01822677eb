/**
 * Who may use a volume's content routes: exactly the holder of that volume's token
 * (`Authorization: Bearer`, as the SDK's `Volume` sends it; tokens.ts), never an API key and never
 * another volume's token. Each request also takes from a rate bucket per volume at the team's
 * request rate.
 */
import type { APIContext } from "../context.js";
import type { VolumeRow } from "../db/schema.js";
import { getTeam } from "../db/teams.js";
import { getVolume } from "../db/volumes.js";
import { RateLimitedError, UnauthenticatedError, VolumeNotFoundError } from "../errors.js";
import { teamLimits } from "../quotas/limits.js";
import type { RateLimiter } from "../quotas/rate-limit.js";

export async function authorizeVolume(
  ctx: APIContext,
  limiter: RateLimiter,
  volumeID: string,
  authorization: string | undefined,
): Promise<VolumeRow> {
  const token = /^Bearer\s+(\S+)\s*$/i.exec(authorization ?? "")?.[1];
  if (!token) {
    throw new UnauthenticatedError(
      "the volume content routes need the volume's token: send 'Authorization: Bearer <token>' (Volume.token, from Volume.create or Volume.connect)",
    );
  }
  if (!(await ctx.volumeTokens.verify(volumeID, token))) {
    throw new UnauthenticatedError(
      `this token does not open volume '${volumeID}'; use that volume's own token`,
    );
  }
  const volume = await getVolume(ctx.db, volumeID);
  // A valid token of a volume that is gone (or still being made or deleted).
  if (volume?.state !== "ready") throw new VolumeNotFoundError(`volume '${volumeID}' not found`);
  const team = await getTeam(ctx.db, volume.team_id);
  if (!team) throw new VolumeNotFoundError(`volume '${volumeID}' not found`);
  const limits = teamLimits(ctx.config.quotas, team);
  const wait = limiter.take(`volume:${volumeID}`, limits.requestsPerSecond, limits.requestBurst);
  if (wait > 0) {
    throw new RateLimitedError(
      `too many requests to this volume: the team's limit is ${limits.requestsPerSecond} per second (bursts of ${limits.requestBurst}); retry in ${wait} s`,
      wait,
    );
  }
  return volume;
}
