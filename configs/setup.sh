#!/usr/bin/env bash
# Installs, idempotently, what ssi needs on a Debian 12 machine: fuse3,
# iproute2, and CRIU >= 4.1. Debian 12's own criu (3.17) fails `criu check`
# on current kernels, and Debian 13's binary needs a newer glibc than the
# system's, so CRIU is unpacked with its own loader and libc into a private
# prefix and run through a wrapper; the system libc is never touched.
# The apt source for it is derived from the machine's own Debian source:
# no registry host is named here.
set -euo pipefail

PREFIX=${SSI_CRIU_PREFIX:-/opt/ssi/criu}
WRAPPER="$PREFIX/bin/criu"
SUITE=${SSI_CRIU_SUITE:-trixie}
export DEBIAN_FRONTEND=noninteractive

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages): sudo make setup"

# Packages from the machine's own suite. CRIU's remaining shared libraries
# come from here too (only libc and libcompel are taken from $SUITE).
PKGS=(fuse3 iproute2 util-linux procps kmod
      libnftables1 libnl-3-200 libnet1 libprotobuf-c1 libgnutls30 libbsd0 libuuid1)

missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  log "installing ${missing[*]}"
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  log "system packages present"
fi

criu_ok() {
  [ -x "$WRAPPER" ] || return 1
  local v
  v=$("$WRAPPER" --version 2>/dev/null | awk '/^Version:/ {print $2}')
  [ -n "$v" ] || return 1
  # >= 4.1
  [ "$(printf '%s\n4.1\n' "$v" | sort -V | head -1)" = "4.1" ]
}

if criu_ok; then
  log "criu $("$WRAPPER" --version | awk '/^Version:/ {print $2}') present at $WRAPPER"
  exit 0
fi

# Derive the private apt source from the first deb822 stanza whose suites
# are the machine's main Debian suites (not -security, not -updates).
src=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] && src="$src$(cat "$f")"$'\n\n'
done
[ -n "$src" ] || die "no deb822 sources in /etc/apt/sources.list.d: cannot derive a source for $SUITE"
read -r uri keyring < <(printf '%s' "$src" | awk '
  BEGIN { RS=""; FS="\n" }
  {
    uris=""; suites=""; signed="";
    for (i = 1; i <= NF; i++) {
      if ($i ~ /^URIs:/)      { sub(/^URIs:[ \t]*/, "", $i); uris=$i }
      if ($i ~ /^Suites:/)    { sub(/^Suites:[ \t]*/, "", $i); suites=$i }
      if ($i ~ /^Signed-By:/) { sub(/^Signed-By:[ \t]*/, "", $i); signed=$i }
    }
    if (uris != "" && suites !~ /security/) { split(uris, u, " "); print u[1], signed; exit }
  }')
[ -n "${uri:-}" ] || die "could not find a Debian URIs: line in /etc/apt/sources.list.d/*.sources"

work=$(mktemp -d /tmp/ssi-setup.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/etc/sources.list.d" "$work/lists/partial" "$work/debs"
{
  echo "Types: deb"
  echo "URIs: $uri"
  echo "Suites: $SUITE"
  echo "Components: main"
  [ -n "${keyring:-}" ] && echo "Signed-By: $keyring"
} > "$work/etc/sources.list.d/private.sources"
: > "$work/etc/sources.list"

APT=(-o "Dir::Etc::sourcelist=$work/etc/sources.list"
     -o "Dir::Etc::sourceparts=$work/etc/sources.list.d"
     -o "Dir::State::Lists=$work/lists"
     -o "Debug::NoLocking=1"
     -o "APT::Sandbox::User=root")
log "fetching criu from suite $SUITE into $PREFIX"
apt-get "${APT[@]}" update -qq
(cd "$work/debs" && apt-get "${APT[@]}" download criu libcompel1 libc6 >/dev/null)

rm -rf "$PREFIX.new"
mkdir -p "$PREFIX.new"
for d in "$work"/debs/*.deb; do dpkg-deb -x "$d" "$PREFIX.new/root"; done
mkdir -p "$PREFIX.new/bin"
cat > "$PREFIX.new/bin/criu" <<WRAP
#!/bin/sh
# criu from Debian $SUITE under its own loader and libc (see configs/setup.sh).
P=$PREFIX/root
exec "\$P/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "\$P/usr/lib/x86_64-linux-gnu:/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu" "\$P/usr/sbin/criu" "\$@"
WRAP
chmod 755 "$PREFIX.new/bin/criu"
rm -rf "$PREFIX"
mv "$PREFIX.new" "$PREFIX"
criu_ok || die "criu installed at $WRAPPER but '$WRAPPER --version' does not report >= 4.1"
log "criu $("$WRAPPER" --version | awk '/^Version:/ {print $2}') installed at $WRAPPER"
