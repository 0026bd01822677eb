/**
 * Shell scripts a build runs as root inside build sandboxes. They take their inputs as positional
 * arguments, never spliced into their text.
 */

/**
 * COPY, as Docker does it: `$1` the uploaded tar (gzip or plain), `$2` the source (a path or a glob
 * inside the build context), `$3` the destination (relative ones from `$6`), `$4` the owner
 * (`user` or `user:group`), `$5` an octal mode for the copied files or empty. A directory's
 * contents go into the destination; a file goes into it when it is a directory (or ends in `/`),
 * else becomes it.
 */
export const COPY_SCRIPT = `set -eu
archive=$1 src=$2 dest=$3 owner=$4 mode=$5 base=$6
tmp=$(mktemp -d /tmp/.moat-copy.XXXXXX)
targets=$(mktemp /tmp/.moat-copy-targets.XXXXXX)
trap 'rm -rf "$tmp" "$targets" "\${archive%/*}"' EXIT
tar -xf "$archive" -C "$tmp"
case "$dest" in /*) ;; *) dest="\${base%/}/$dest" ;; esac
cd "$tmp"
if [ -e "$src" ] || [ -L "$src" ]; then set -- "$src"; else set -- $src; fi
if [ "$#" -eq 0 ] || { [ "$#" -eq 1 ] && [ ! -e "$1" ] && [ ! -L "$1" ]; }; then
  echo "COPY: no files match '$src' in the uploaded context" >&2
  exit 1
fi
into_dir=0
case "$dest" in */) into_dir=1 ;; esac
if [ "$#" -gt 1 ] || [ -d "$dest" ]; then into_dir=1; fi
for s in "$@"; do
  if [ -d "$s" ] && [ ! -L "$s" ]; then
    [ -d "$dest" ] || { mkdir -p "$dest"; printf '%s\\n' "$dest" >> "$targets"; }
    for entry in "$s"/* "$s"/.[!.]* "$s"/..?*; do
      [ -e "$entry" ] || [ -L "$entry" ] || continue
      name=\${entry##*/}
      rm -rf "\${dest%/}/$name"
      cp -a "$entry" "\${dest%/}/$name"
      printf '%s\\n' "\${dest%/}/$name" >> "$targets"
    done
  else
    if [ "$into_dir" -eq 1 ]; then
      [ -d "$dest" ] || { mkdir -p "$dest"; printf '%s\\n' "$dest" >> "$targets"; }
      target="\${dest%/}/\${s##*/}"
    else
      mkdir -p "$(dirname "$dest")"
      target=$dest
    fi
    rm -rf "$target"
    cp -a "$s" "$target"
    printf '%s\\n' "$target" >> "$targets"
  fi
done
while IFS= read -r t; do
  chown -hR "$owner" "$t"
  if [ -n "$mode" ]; then
    if [ -d "$t" ] && [ ! -L "$t" ]; then find "$t" -type f -exec chmod "$mode" {} +; else chmod "$mode" "$t"; fi
  fi
done < "$targets"
`;

/** Creates a WORKDIR that does not exist yet, owned by the build's current user (`$1` dir, `$2` user). */
export const WORKDIR_SCRIPT = `set -eu
[ -d "$1" ] || { mkdir -p "$1"; chown "$2" "$1"; }
`;

/**
 * What E2B's provision.sh and configure.sh make of any image, so that sandboxes work the same from
 * it: the `user` account with its home and passwordless sudo, /code, a writable /usr/local,
 * the sandbox's gateway as its resolver (the node's resolver answers there, and every query to port
 * 53 reaches it whatever resolv.conf says), and /etc/hosts.
 */
export const PROVISION_SCRIPT = `set -eu
if ! id -u user >/dev/null 2>&1; then
  shell=/bin/sh
  [ -x /bin/bash ] && shell=/bin/bash
  if command -v useradd >/dev/null 2>&1; then
    useradd --create-home --home-dir /home/user --shell "$shell" user
  elif command -v adduser >/dev/null 2>&1; then
    adduser -D -h /home/user -s "$shell" user
  else
    echo "user:x:1000:1000::/home/user:$shell" >> /etc/passwd
    echo "user:x:1000:" >> /etc/group
  fi
  echo "created the user 'user'"
fi
mkdir -p /home/user /code
chown user /home/user
chmod 777 /code
chmod 777 /usr/local 2>/dev/null || true
if [ -d /etc/sudoers.d ]; then
  printf 'user ALL=(ALL:ALL) NOPASSWD: ALL\\n' > /etc/sudoers.d/90-moat-user
  chmod 0440 /etc/sudoers.d/90-moat-user
fi
rm -f /etc/resolv.conf
printf 'nameserver 169.254.0.22\\n' > /etc/resolv.conf
if ! grep -qs localhost /etc/hosts; then
  printf '127.0.0.1\\tlocalhost\\n::1\\tlocalhost ip6-localhost ip6-loopback\\n' > /etc/hosts
fi
`;

/** Bump when PROVISION_SCRIPT or the host-side preparation of image layers changes. */
export const PROVISION_VERSION = 2;
