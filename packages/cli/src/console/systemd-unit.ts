/**
 * The systemd unit for `moat up` (deploy/systemd/moat-up.service is this with the defaults), and
 * `moat up --print-systemd-unit`: the same with the data directory and the flags given.
 */
import path from "node:path";
import { UsageError } from "./errors.js";

export interface UpUnitOptions {
  /** What runs moat: `/usr/local/bin/moat`, or node and the CLI's script. */
  command: string[];
  /** Absolute. */
  dataDir: string;
  /** `moat up`'s other arguments, as given (`["--api-port", "3001"]`). */
  args: string[];
}

export function upUnit({ command, dataDir, args: given }: UpUnitOptions): string {
  if (!path.isAbsolute(dataDir))
    throw new UsageError(`--data-dir must be an absolute path for a unit, got ${dataDir}`);
  const args = [...command, "up", `--data-dir=${dataDir}`, ...given];
  // systemd makes (0700, root) a state directory directly under /var/lib; moat makes any other.
  const state = /^\/var\/lib\/[^/]+$/.test(dataDir) ? path.basename(dataDir) : undefined;
  return `# All of moat on one machine (\`moat up\`: orchestrator, API and client proxy in one process, the
# embedded database, no Redis). Optional settings in /etc/moat/moat.env (MOAT_POOL_SIZE, …).
# Made by \`moat up --print-systemd-unit\`: install it as /etc/systemd/system/moat-up.service, then
# systemctl daemon-reload && systemctl enable --now moat-up; its log: journalctl -u moat-up.
[Unit]
Description=moat (single machine: orchestrator, API and client proxy)
Documentation=https://github.com/moat-dev/moat/blob/main/docs/deploy.md
Wants=network-online.target
After=network-online.target nftables.service
Conflicts=moat-orchestrator.service moat-api.service moat-proxy.service

[Service]
Type=simple
EnvironmentFile=-/etc/moat/moat.env
ExecStart=${args.map(systemdQuote).join(" ")}
# moat up stops its sandboxes itself on SIGTERM (Ctrl-C); give it the time to.
KillSignal=SIGTERM
TimeoutStopSec=60
# The first start installs runsc and builds the templates (a few minutes).
TimeoutStartSec=infinity
Restart=on-failure
RestartSec=5
# Root, with the host's network and mounts, as the fleet's orchestrator unit: it makes network
# namespaces, nftables rules, loop mounts and gVisor sandboxes. Sandboxes hold many files and
# processes.
LimitNOFILE=1048576
LimitNPROC=infinity
${state ? `StateDirectory=${state}\nStateDirectoryMode=0700\n` : ""}
[Install]
WantedBy=multi-user.target
`;
}

/** An ExecStart word: `%` and `$` taken literally, quoted when it holds anything unusual. */
export function systemdQuote(word: string): string {
  if (/[\n\r\0]/.test(word))
    throw new UsageError(`a unit's command line cannot hold a line break: ${JSON.stringify(word)}`);
  const escaped = word.replaceAll("%", "%%");
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return escaped;
  return `"${escaped.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("$", "$$$$")}"`;
}

/**
 * `moat up`'s arguments for its unit, from its command line (`argv` after `up`): without
 * --print-systemd-unit and --data-dir (the unit has its own), a relative --config made absolute.
 */
export function unitArgs(argv: string[], cwd = process.cwd()): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === "--print-systemd-unit" || arg.startsWith("--data-dir=")) continue;
    if (arg === "--data-dir") {
      i++;
      continue;
    }
    if (arg === "--config" && i + 1 < argv.length) {
      out.push(`--config=${path.resolve(cwd, argv[++i]!)}`);
    } else if (arg.startsWith("--config=")) {
      out.push(`--config=${path.resolve(cwd, arg.slice("--config=".length))}`);
    } else out.push(arg);
  }
  return out;
}
