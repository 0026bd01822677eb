#!/usr/bin/env bash
# Makes the Debian 12 base image moat's Containerfile builds on, without any container registry:
# debootstrap (minbase) from a Debian mirror, with the packages the orchestrator runs (so the image
# build itself needs no network), imported with `podman import`. Prints the image name. Quick when
# an image of the same definition already exists (the tag is a hash of the definition).
#
#   deploy/container/base-image.sh            # localhost/moat-base:bookworm-<hash>
#   MOAT_DEBIAN_MIRROR=http://mirror/debian deploy/container/base-image.sh
#
# With a registry at hand this is not needed: build with --build-arg BASE=docker.io/library/debian:bookworm-slim
# and the Containerfile installs the same packages with apt-get.
set -euo pipefail

if [ "$(id -u)" != 0 ]; then
  echo "base-image.sh runs debootstrap: run it as root" >&2
  exit 1
fi

suite=bookworm
mirror=${MOAT_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Keep in step with RUNTIME_PACKAGES in the Containerfile.
packages=ca-certificates,debootstrap,debian-archive-keyring,nftables,iproute2,e2fsprogs,zstd,bubblewrap,procps,util-linux,libstdc++6
hash=$(printf '%s\n' "$suite" "$packages" | sha256sum | cut -c1-12)
image=localhost/moat-base:$suite-$hash

if podman image exists "$image"; then
  echo "$image"
  exit 0
fi

work=$(mktemp -d /var/tmp/moat-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
echo "debootstrap $suite from $mirror (about a minute)" >&2
debootstrap --variant=minbase --include="$packages" "$suite" "$work/rootfs" "$mirror" >"$work/debootstrap.log" 2>&1 || {
  tail -20 "$work/debootstrap.log" >&2
  echo "debootstrap failed: check that $mirror is reachable, or set MOAT_DEBIAN_MIRROR" >&2
  exit 1
}
# What debootstrap leaves behind that an image does not need.
rm -rf "$work/rootfs/var/cache/apt/archives/"*.deb "$work/rootfs/var/lib/apt/lists/"* "$work/rootfs/debootstrap"
tar -C "$work/rootfs" --numeric-owner -cf "$work/rootfs.tar" .
podman import --quiet --change 'CMD ["/bin/bash"]' --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  "$work/rootfs.tar" "$image" >/dev/null
# Bases of older definitions are no longer used by anything this script makes.
podman images --format '{{.Repository}}:{{.Tag}}' | grep "^localhost/moat-base:$suite-" | grep -vx "$image" |
  xargs -r podman rmi >/dev/null 2>&1 || true
echo "$image"
