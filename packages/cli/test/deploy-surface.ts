/**
 * The configuration surface the deploy files (deploy/kubernetes, deploy/nomad, deploy/systemd) may
 * use, per command: its flags and the environment variables it reads (docs/configuration.md). The
 * deploy tests check every flag and variable in those files against this list, so a file cannot
 * pass a setting no command has (a typo there is silently ignored at run time).
 */
export type Component = "orchestrator" | "api" | "proxy" | "up";

/** The AWS SDK's own variables, for the S3 artifact store. */
const AWS = [
  "AWS_REGION",
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
  "AWS_ENDPOINT_URL",
  "AWS_ENDPOINT_URL_S3",
];

export const SURFACE: Record<Component, { flags: string[]; env: string[] }> = {
  orchestrator: {
    flags: [
      "--config",
      "--log-format",
      "--data-dir",
      "--host",
      "--port",
      "--egress-allow",
      "--node-id",
      "--name-prefix",
      "--advertise-address",
      "--proxy-port",
      "--metrics-port",
      "--api-url",
      "--labels",
      "--artifacts",
      "--artifact-cache-mb",
      "--logs-retention",
      "--logs-max-mb",
    ],
    env: [
      "MOAT_CONFIG",
      "MOAT_DATA_DIR",
      "MOAT_LOG_LEVEL",
      "MOAT_LOG_FORMAT",
      "MOAT_EGRESS_ALLOW",
      "MOAT_NODE_ID",
      "MOAT_NAME_PREFIX",
      "MOAT_NODE_ADDRESS",
      "MOAT_NODE_PROXY_PORT",
      "MOAT_NODE_METRICS_PORT",
      "MOAT_METRICS_TOKEN",
      "MOAT_API_URL",
      "MOAT_NODE_LABELS",
      "MOAT_ARTIFACTS",
      "MOAT_ARTIFACT_CACHE_MB",
      "MOAT_NODE_TOKEN",
      "MOAT_CODE_INTERPRETER",
      "MOAT_POOL_SIZE",
      "MOAT_POOL_MAX",
      "MOAT_POOL_IDLE_SECONDS",
      "MOAT_CREATE_CONCURRENCY",
      "MOAT_CREATE_QUEUE_MAX",
      "MOAT_CREATE_QUEUE_TIMEOUT_SECONDS",
      "MOAT_DISK_SIZE_MB",
      "MOAT_RUNSC",
      "MOAT_DEBIAN_MIRROR",
      "MOAT_DNS_UPSTREAM",
      "MOAT_REGISTRY_ALLOW",
      "MOAT_TEMPLATE_SNAPSHOTS",
      "MOAT_LOGS_RETENTION_HOURS",
      "MOAT_LOGS_MAX_MB",
      "MOAT_LOGS_TOTAL_MB",
      ...AWS,
    ],
  },
  api: {
    flags: [
      "--config",
      "--log-format",
      "--port",
      "--host",
      "--data-dir",
      "--database-url",
      "--redis-url",
      "--domain",
      "--public-url",
      "--node",
    ],
    env: [
      "MOAT_CONFIG",
      "MOAT_DATA_DIR",
      "MOAT_LOG_LEVEL",
      "MOAT_LOG_FORMAT",
      "DATABASE_URL",
      "MOAT_REDIS_URL",
      "MOAT_API_PUBLIC_URL",
      "MOAT_NODE_TOKEN",
      "MOAT_ADMIN_TOKEN",
      "MOAT_METRICS_TOKEN",
    ],
  },
  proxy: {
    flags: [
      "--config",
      "--log-format",
      "--port",
      "--host",
      "--redis-url",
      "--api-url",
      "--domain",
      "--max-connections",
      "--max-connections-per-client",
    ],
    env: [
      "MOAT_CONFIG",
      "MOAT_LOG_LEVEL",
      "MOAT_LOG_FORMAT",
      "MOAT_REDIS_URL",
      "MOAT_API_URL",
      "MOAT_NODE_TOKEN",
      "MOAT_PROXY_MAX_CONNECTIONS",
      "MOAT_PROXY_MAX_CONNECTIONS_PER_CLIENT",
      "MOAT_METRICS_TOKEN",
    ],
  },
  up: {
    flags: [
      "--config",
      "--log-format",
      "--data-dir",
      "--host",
      "--api-port",
      "--proxy-port",
      "--orchestrator-port",
      "--orchestrator-metrics-port",
      "--domain",
      "--pool-size",
      "--egress-allow",
      "--logs-retention",
      "--logs-max-mb",
    ],
    env: [
      "MOAT_CONFIG",
      "MOAT_DATA_DIR",
      "MOAT_LOG_LEVEL",
      "MOAT_POOL_SIZE",
      "MOAT_POOL_MAX",
      "MOAT_POOL_IDLE_SECONDS",
      "MOAT_CREATE_CONCURRENCY",
      "MOAT_CREATE_QUEUE_MAX",
      "MOAT_CREATE_QUEUE_TIMEOUT_SECONDS",
      "MOAT_CODE_INTERPRETER",
      "MOAT_LOGS_RETENTION_HOURS",
      "MOAT_LOGS_MAX_MB",
      "MOAT_LOGS_TOTAL_MB",
      "MOAT_LOG_FORMAT",
    ],
  },
};

/** Read by no command: the deploy files keep the sandbox domain in it to fill `--domain=…`. */
export const DOMAIN_VARIABLE = "MOAT_DOMAIN";

/** Secrets: in a Secret, a Nomad Variable or an EnvironmentFile, never written into a deploy file. */
export const SECRETS = [
  "MOAT_NODE_TOKEN",
  "MOAT_ADMIN_TOKEN",
  "MOAT_METRICS_TOKEN",
  "DATABASE_URL",
  "AWS_ACCESS_KEY_ID",
  "AWS_SECRET_ACCESS_KEY",
  "AWS_SESSION_TOKEN",
];

/** The problems with one command line and environment of `moat` as a deploy file gives them. */
export function surfaceProblems(where: string, args: readonly string[], env: readonly string[]): string[] {
  const [command, ...rest] = args;
  if (!(command && command in SURFACE)) return [`${where}: runs \`moat ${command}\`, not a component`];
  const surface = SURFACE[command as Component];
  const problems: string[] = [];
  for (const arg of rest) {
    const flag = /^--[a-z0-9-]+/.exec(arg)?.[0];
    if (flag && !surface.flags.includes(flag)) problems.push(`${where}: moat ${command} has no ${flag}`);
  }
  for (const name of env) {
    if (name === DOMAIN_VARIABLE) {
      if (!rest.some((a) => a.includes(name)))
        problems.push(`${where}: sets ${name} but passes no --domain from it`);
    } else if (!(surface.env.includes(name) || (command === "api" && name.startsWith("MOAT_TEAM_")))) {
      problems.push(`${where}: moat ${command} reads no ${name}`);
    }
  }
  return problems;
}
