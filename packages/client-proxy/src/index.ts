/**
 * @moat/client-proxy: the edge that routes sandbox traffic. `moat up` starts it in-process with the
 * API's catalog; see server.ts for the path of one request.
 */
export type { CatalogEntry, SandboxCatalog } from "@moat/shared";
export { RedisCatalog, type RedisCatalogOptions } from "./catalog/redis-catalog.js";
export {
  InvalidRouteError,
  PortClosedError,
  ProxyError,
  ReservedPathError,
  SandboxNotFoundError,
  SandboxTransitioningError,
  TooManyConnectionsError,
  TRAFFIC_ACCESS_TOKEN_HEADER,
} from "./errors.js";
export type { ProxyMetricsSnapshot } from "./metrics.js";
export { type NodeProxy, type NodeProxyOptions, startNodeProxy } from "./node-proxy/server.js";
export { isReservedEnvdPath, type Route, resolveRoute } from "./routing.js";
export { type ClientProxy, type ClientProxyOptions, startClientProxy } from "./server.js";
