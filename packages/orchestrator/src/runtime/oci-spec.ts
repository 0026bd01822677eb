/**
 * The OCI runtime spec (config.json) of a sandbox. The first process is tini (reaping the orphans
 * an agent's commands leave) running envd's single-file bundle from the host's moat install,
 * bind-mounted read-only: nothing of envd is copied into the sandbox, and nothing else of the host
 * checkout is visible in it.
 */
export interface SandboxSpecInput {
  /** The sandbox's hostname. */
  sandboxID: string;
  /** The runsc container id, which names the container's host cgroup. */
  containerID: string;
  rootfs: string;
  /** Path of the guest network namespace (the one gVisor takes over). */
  netnsPath: string;
  vcpu: number;
  memoryMB: number;
  pidsLimit: number;
  /**
   * The host's node binary, mounted at /opt/moat/node, and the directory with envd and what it
   * loads (scripts/bundle-envd.js), mounted at /opt/moat/envd.
   */
  nodeBinary: string;
  envdDir: string;
  envdPort: number;
  /** cgroup cpu.shares: low for warm pool entries (runtime/cpu-priority.ts); default 1024. */
  cpuShares?: number;
  /** Volumes: a host directory (the volume's mount on the node) at a path inside, read-write. */
  volumeMounts?: Array<{ source: string; destination: string }>;
}

export const SANDBOX_NODE_PATH = "/opt/moat/node";

/**
 * Node flags of envd. Every page envd touches is saved in the template snapshot and restored into
 * each sandbox's memory, so an idle envd's footprint is paid once per sandbox: a 1 MB young
 * generation (V8 grows it to 16 MB under allocation; envd's large buffers live outside the heap)
 * and one malloc arena (below) take ~2 MB of the ~19 MB of anonymous memory of a warmed envd
 * (bench/envd-memory.ts). One V8 worker thread (--v8-pool-size=1) saved ~0.3 MB more but cost
 * commands.run ~5-10 % in the same bench: left out.
 */
export const ENVD_NODE_FLAGS = ["--max-semi-space-size=1"];
/** envd's own environment (its commands get theirs from envd): one malloc arena, not one per thread. */
export const ENVD_ENV = ["MALLOC_ARENA_MAX=1"];
export const SANDBOX_ENVD_PATH = "/opt/moat/envd";

/**
 * A full machine's root inside the sandbox: gVisor, not capabilities, is the boundary. Except
 * CAP_NET_ADMIN: nothing inside needs it (the network is configured from outside), and with it
 * root could add addresses and send from them (the outer namespace drops such packets as well).
 */
export const SANDBOX_CAPABILITIES = [
  "CAP_CHOWN",
  "CAP_DAC_OVERRIDE",
  "CAP_DAC_READ_SEARCH",
  "CAP_FOWNER",
  "CAP_FSETID",
  "CAP_KILL",
  "CAP_SETGID",
  "CAP_SETUID",
  "CAP_SETPCAP",
  "CAP_NET_BIND_SERVICE",
  "CAP_NET_RAW",
  "CAP_IPC_LOCK",
  "CAP_SYS_CHROOT",
  "CAP_SYS_PTRACE",
  "CAP_SYS_ADMIN",
  "CAP_SYS_NICE",
  "CAP_SYS_RESOURCE",
  "CAP_MKNOD",
  "CAP_AUDIT_WRITE",
  "CAP_SETFCAP",
];

export function sandboxSpec(input: SandboxSpecInput): Record<string, unknown> {
  const cpuPeriod = 100_000;
  return {
    ociVersion: "1.0.0",
    process: {
      terminal: false,
      user: { uid: 0, gid: 0 },
      args: [
        "/usr/bin/tini",
        "--",
        SANDBOX_NODE_PATH,
        ...ENVD_NODE_FLAGS,
        `${SANDBOX_ENVD_PATH}/envd.mjs`,
        "--port",
        String(input.envdPort),
        "--trust-loopback",
        "--set-hostname",
      ],
      env: [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME=/root",
        "LANG=C.UTF-8",
        "MOAT_LOG_LEVEL=info",
        ...ENVD_ENV,
      ],
      cwd: "/",
      capabilities: {
        bounding: SANDBOX_CAPABILITIES,
        effective: SANDBOX_CAPABILITIES,
        permitted: SANDBOX_CAPABILITIES,
      },
      rlimits: [
        { type: "RLIMIT_NOFILE", hard: 1_048_576, soft: 1_048_576 },
        { type: "RLIMIT_NPROC", hard: input.pidsLimit, soft: input.pidsLimit },
      ],
      noNewPrivileges: false,
    },
    root: { path: input.rootfs, readonly: false },
    hostname: input.sandboxID,
    mounts: [
      { destination: "/proc", type: "proc", source: "proc" },
      { destination: "/dev", type: "tmpfs", source: "tmpfs" },
      { destination: "/sys", type: "sysfs", source: "sysfs", options: ["nosuid", "noexec", "nodev", "ro"] },
      { destination: "/dev/shm", type: "tmpfs", source: "shm", options: ["nosuid", "nodev", "mode=1777"] },
      { destination: "/tmp", type: "bind", source: `${input.rootfs}/tmp`, options: ["rbind", "rw"] },
      { destination: SANDBOX_NODE_PATH, type: "bind", source: input.nodeBinary, options: ["rbind", "ro"] },
      { destination: SANDBOX_ENVD_PATH, type: "bind", source: input.envdDir, options: ["rbind", "ro"] },
      // setuid sudo cannot work under gVisor's no-new-privileges; this one goes through envd.
      {
        destination: "/usr/local/bin/sudo",
        type: "bind",
        source: `${input.envdDir}/sudo`,
        options: ["rbind", "ro"],
      },
      ...(input.volumeMounts ?? []).map((m) => ({
        destination: m.destination,
        type: "bind",
        source: m.source,
        options: ["rbind", "rw", "nosuid", "nodev"],
      })),
    ],
    linux: {
      namespaces: [
        { type: "pid" },
        { type: "network", path: input.netnsPath },
        { type: "ipc" },
        { type: "uts" },
        { type: "mount" },
      ],
      resources: {
        memory: { limit: input.memoryMB * 1024 * 1024 },
        cpu: {
          quota: input.vcpu * cpuPeriod,
          period: cpuPeriod,
          ...(input.cpuShares ? { shares: input.cpuShares } : {}),
        },
        pids: { limit: input.pidsLimit },
      },
      cgroupsPath: `/moat/${input.containerID}`,
    },
  };
}
