/**
 * Fuzzing a real `moat up`: envd inside a gVisor sandbox through the client proxy (envd-suite.ts),
 * the proxy's routing and raw HTTP (proxy-suite.ts), then a bounded pass over the API from its
 * own OpenAPI document (api-suite.ts). One `moat up` serves the three: starting it takes longer
 * than most of the fuzzing. The bulk of the API's and the proxy's fuzzing runs in-process
 * (packages/api/test/fuzz.test.ts, packages/client-proxy/test/fuzz.test.ts).
 *
 * MOAT_FUZZ_SEED replays a run (a failure prints it); MOAT_FUZZ_RUNS scales the runs (default 100).
 */
import { after, before, describe } from "node:test";
import { type RunningMoat, startMoat } from "../helpers/moat-up.js";
import { apiFuzzSuite } from "./api-suite.js";
import { envdFuzzSuite } from "./envd-suite.js";
import { proxyFuzzSuite } from "./proxy-suite.js";

describe("fuzzing moat up", { timeout: 900_000 }, () => {
  let moat: RunningMoat | undefined;
  const up = () => {
    if (!moat) throw new Error("moat up did not start");
    return moat;
  };
  before(async () => {
    moat = await startMoat();
  });
  after(async () => {
    await moat?.cleanup();
  });

  envdFuzzSuite(up);
  proxyFuzzSuite(up);
  // Last: it kills every sandbox it finds that the others did not make.
  apiFuzzSuite(up);
});
