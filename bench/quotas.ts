/**
 * Benches measure the platform, not the team quotas: the bench's team may run and pause as many
 * sandboxes, and send as many requests, as a bench needs (the defaults would refuse the 21st
 * concurrent create with a 429 and count that as the platform's failure).
 */
export const BENCH_QUOTAS: Readonly<Record<string, string>> = {
  MOAT_TEAM_MAX_SANDBOXES: "1000",
  MOAT_TEAM_MAX_PAUSED_SANDBOXES: "1000",
  MOAT_TEAM_REQUESTS_PER_SECOND: "10000",
  MOAT_TEAM_REQUEST_BURST: "10000",
};
