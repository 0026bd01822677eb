#!/usr/bin/env bash
# What the tests need on a fresh Debian 12 machine, installed and started if missing (as root):
# Debian packages, and PostgreSQL with the test role and database the API's tests use. `npm test`
# and CI (.ci/run) run it; it is quick when everything is already there.
set -euo pipefail

log() { printf '== %s\n' "$*" >&2; }

if [ "$(id -u)" != 0 ]; then
  echo "scripts/prerequisites.sh installs Debian packages and starts PostgreSQL: run it as root" >&2
  exit 1
fi

# A toolchain for node-pty's native build, procps (pgrep/ps used by tests), iproute2 (network
# namespaces), util-linux (setpriv, flock), passwd (useradd for the test account), debootstrap and
# debian-archive-keyring (the base template), nftables (sandbox NAT and egress rules), postgresql
# (the API's tests run against PostgreSQL as well as the embedded PGlite), zstd (image layers),
# bubblewrap (the sandbox image layers are applied in), e2fsprogs (mkfs.ext4: each sandbox's disk is
# an ext4 image), docker-registry (a real OCI registry on loopback for the image-pull tests) and
# python3-zmq (libzmq as the peer of the code interpreter's ZMTP client in its unit tests),
# redis-server (the fleet's routing catalog in the fleet tests), podman and runc (the container
# image is built and run in a test), systemd (systemd-analyze checks the units in deploy/systemd) and
# prometheus (a real Prometheus server scrapes moat up's /metrics in a test).
# chromium (the dashboard's browser test drives it with playwright-core).
packages=(python3 make g++ procps iproute2 util-linux passwd ca-certificates debootstrap debian-archive-keyring
  nftables postgresql zstd bubblewrap e2fsprogs docker-registry python3-zmq redis-server podman runc systemd
  prometheus chromium)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  log "apt-get install ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# Debian's PostgreSQL: the cluster apt created, started, with the role and database that
# scripts/test.js points the tests at (MOAT_TEST_POSTGRES_URL).
cluster=$(pg_lsclusters --no-header | awk 'NR==1 {print $1" "$2}')
if [ -z "$cluster" ]; then
  echo "PostgreSQL is installed but has no cluster: create one with pg_createcluster 15 main" >&2
  exit 1
fi
# shellcheck disable=SC2086
if ! pg_lsclusters --no-header | awk 'NR==1 {print $4}' | grep -q online; then
  log "starting PostgreSQL $cluster"
  pg_ctlcluster $cluster start
fi
psql_admin() { su postgres -c "psql -qtAc \"$1\""; }
if [ "$(psql_admin "SELECT 1 FROM pg_roles WHERE rolname='moat_test'")" != 1 ]; then
  psql_admin "CREATE ROLE moat_test LOGIN SUPERUSER PASSWORD 'moat_test'"
fi
if [ "$(psql_admin "SELECT 1 FROM pg_database WHERE datname='moat_test'")" != 1 ]; then
  su postgres -c "createdb -O moat_test moat_test"
fi
