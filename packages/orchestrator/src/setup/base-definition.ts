import { createHash } from "node:crypto";

/**
 * What the base template is: Debian 12 from debootstrap plus what agents expect of an E2B sandbox.
 * Everything here feeds the definition hash, so any change rebuilds the template (once) on the next
 * `moat setup`. Bump SETUP_SCRIPT_VERSION to force a rebuild when nothing here changed (e.g. to pick
 * up the mirror's newer packages).
 */
export interface BaseDefinition {
  suite: string;
  variant: string;
  components: string[];
  packages: string[];
  setupScriptVersion: number;
  /** Runs as root inside the new root filesystem (chroot) after debootstrap. */
  setupScript: string;
}

export const BASE_SUITE = "bookworm";

export const BASE_PACKAGES = [
  // What agents expect of a Linux machine.
  "bash",
  "coreutils",
  "procps",
  "python3",
  "python3-pip",
  // `python` as well as `python3`, as in E2B's images: agents type both.
  "python-is-python3",
  "ca-certificates",
  "curl",
  "git",
  "sudo",
  "unzip",
  // PID 1 in every sandbox (/usr/bin/tini): reaps the orphans agents' commands leave.
  "tini",
  "iproute2",
  // /usr/share/zoneinfo, so Etc/UTC and zone-aware programs work.
  "tzdata",
];

export const SETUP_SCRIPT_VERSION = 1;

// The script below names 8.8.8.8 and 8.8.4.4 in /etc/resolv.conf. Sandboxes never reach them: every
// DNS query a sandbox sends goes to the node's resolver (network/egress-rules.ts), so they resolve
// through moat all the same. Naming the gateway (169.254.0.22) instead, as image templates do
// (template/build/scripts.ts), changes the definition's hash and so rebuilds the base template:
// left for the next change that rebuilds it anyway.

/**
 * The post-debootstrap setup, after E2B's provision.sh and configure.sh. It reads MOAT_MIRROR and
 * MOAT_SECURITY_MIRROR (may be empty) from its environment for the template's own apt sources:
 * the host's mirror, which is not part of the definition (the same packages come from any mirror).
 */
export const SETUP_SCRIPT = `set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

echo "creating the default user 'user' (uid 1000, sudo without a password)"
if ! id -u user >/dev/null 2>&1; then
  useradd --uid 1000 --user-group --create-home --home-dir /home/user --shell /bin/bash --groups sudo user
fi
passwd -d user >/dev/null
passwd -d root >/dev/null
printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\\n' > /etc/sudoers.d/90-moat-user
chmod 0440 /etc/sudoers.d/90-moat-user
visudo -cq -f /etc/sudoers.d/90-moat-user
chown -R user:user /home/user

echo "setting locale C.UTF-8 and time zone Etc/UTC"
# C.UTF-8 is built into glibc: no locales package needed.
printf 'LANG=C.UTF-8\\n' > /etc/default/locale
printf 'export LANG="\${LANG:-C.UTF-8}"\\n' > /etc/profile.d/00-moat-locale.sh
ln -sf /usr/share/zoneinfo/Etc/UTC /etc/localtime
printf 'Etc/UTC\\n' > /etc/timezone

echo "sparing login shells a process: bash knows its uid"
# Every SDK command runs as \`bash -l -c\`, and an exec costs tens of milliseconds under gVisor:
# /etc/profile would run id(1) on each command only to learn the uid bash already has in $EUID.
sed -i 's/"$(id -u)"/"\${EUID:-$(id -u)}"/g' /etc/profile
# And root's ~/.profile would run mesg(1) on each command as root, for a terminal most have not.
sed -i 's#^mesg n 2> /dev/null || true$#if [ -t 0 ]; then mesg n 2> /dev/null || true; fi#' /root/.profile

echo "writing /etc/hostname, /etc/hosts and /etc/resolv.conf"
# e2b.local is an E2B sandbox's hostname; listing it in /etc/hosts keeps sudo from stalling on DNS.
printf 'e2b.local\\n' > /etc/hostname
cat > /etc/hosts <<'HOSTS'
127.0.0.1	localhost
127.0.1.1	e2b.local
::1	localhost ip6-localhost ip6-loopback
ff02::1	ip6-allnodes
ff02::2	ip6-allrouters
HOSTS
# Public resolvers, reached through the sandbox's NAT: the host's resolv.conf may name a resolver
# on the host's loopback (systemd-resolved), which a sandbox cannot reach.
rm -f /etc/resolv.conf
printf 'nameserver 8.8.8.8\\nnameserver 8.8.4.4\\n' > /etc/resolv.conf

echo "pointing apt at the host's mirror"
rm -f /etc/apt/sources.list
{
  printf 'Types: deb\\nURIs: %s\\nSuites: bookworm bookworm-updates\\nComponents: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' "$MOAT_MIRROR"
  if [ -n "\${MOAT_SECURITY_MIRROR:-}" ]; then
    printf '\\nTypes: deb\\nURIs: %s\\nSuites: bookworm-security\\nComponents: main\\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\\n' "$MOAT_SECURITY_MIRROR"
  fi
} > /etc/apt/sources.list.d/debian.sources

echo "letting pip install outside a venv, as agents expect"
# Debian marks its Python externally managed (PEP 668), which makes a plain \`pip install\` fail.
rm -f /usr/lib/python3*/EXTERNALLY-MANAGED

echo "creating /opt/moat, /code and a writable /usr/local"
# /opt/moat is where envd and node are bind-mounted read-only when a sandbox runs.
mkdir -p /opt/moat /code
chmod 755 /opt/moat
chmod 777 /code
chmod -R 777 /usr/local

echo "removing package caches"
apt-get clean
rm -rf /var/lib/apt/lists/*
`;

export const BASE_DEFINITION: BaseDefinition = {
  suite: BASE_SUITE,
  variant: "minbase",
  components: ["main"],
  packages: BASE_PACKAGES,
  setupScriptVersion: SETUP_SCRIPT_VERSION,
  setupScript: SETUP_SCRIPT,
};

/**
 * A short hash naming a definition's build. Package order does not matter; the script's text does,
 * so an edit to it can never reuse a template built by the old one.
 */
export function definitionHash(definition: BaseDefinition): string {
  const canonical = JSON.stringify({
    suite: definition.suite,
    variant: definition.variant,
    components: [...definition.components].sort(),
    packages: [...new Set(definition.packages)].sort(),
    setupScriptVersion: definition.setupScriptVersion,
    setupScript: definition.setupScript,
  });
  return createHash("sha256").update(canonical).digest("hex").slice(0, 16);
}
