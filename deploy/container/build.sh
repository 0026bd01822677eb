#!/usr/bin/env bash
# Builds moat's container image from this checkout, which must be built already (`npm ci && npm run
# build`), with podman and no registry: the Debian 12 base comes from base-image.sh (debootstrap,
# cached as localhost/moat-base:…) unless MOAT_IMAGE_BASE names another, and Node is the checkout's own.
#
#   deploy/container/build.sh [image]      # default localhost/moat:dev
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
image=${1:-localhost/moat:dev}

[ -x "$root/node_modules/.bin/node" ] || { echo "$root/node_modules has no Node: run npm ci" >&2; exit 1; }
base=${MOAT_IMAGE_BASE:-$("$here/base-image.sh")}

# --isolation=chroot: works where podman's default OCI isolation cannot (nested, hybrid cgroups).
# --no-cache: the checkout is bind-mounted into the build, which the layer cache does not see.
podman build --isolation=chroot --no-cache --layers=false \
  -f "$here/Containerfile" \
  --build-arg "BASE=$base" \
  -t "$image" "$root"
