#!/usr/bin/env bash
# Installs, idempotently, what ssi needs on a Debian 12 machine: fuse3,
# iproute2, and CRIU >= 4.2. Debian 12's own criu (3.17) fails `criu check`
# on current kernels, and CRIU 4.1 cannot checkpoint a process holding a TCP
# or UDP socket on Linux >= 6.16 (the kernel refuses getsockopt(SO_PASSCRED)
# on inet sockets; fixed in CRIU 4.2). Debian's 4.2 binary needs a newer
# glibc than the system's, so CRIU is unpacked with its own loader and libc
# into a private prefix and run through a wrapper; the system libc is never
# touched. The apt source for it is derived from the machine's own Debian
# source: no registry host is named here.
set -euo pipefail

PREFIX=${SSI_CRIU_PREFIX:-/opt/ssi/criu}
WRAPPER="$PREFIX/bin/criu"
SUITE=${SSI_CRIU_SUITE:-forky}
MIN_CRIU=4.2
export DEBIAN_FRONTEND=noninteractive

log() { printf 'setup: %s\n' "$*" >&2; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "run as root (it installs packages): sudo make setup"

# Packages from the machine's own suite. CRIU's shared libraries come from
# here too, except those listed in CRIU_DEBS.
PKGS=(fuse3 iproute2 util-linux procps kmod
      libnftables1 libprotobuf-c1 libgnutls30 libbsd0 libuuid1)

# Packages taken from $SUITE: criu itself, and exactly the libraries of its
# binary that Debian 12 cannot satisfy (checked below with the loader in
# --list mode, binding every symbol): libc6 (criu needs glibc >= 2.38, the
# system has 2.36), libnet9 (Debian 12 has only libnet.so.1) and libnl-3-200
# (criu asks for the symbol versions libnl_3 and libnl_3_2_27; Debian 12's
# libnl 3.7 has no version information). Debian 12's libgnutls30 provides
# every GNUTLS_3_4 symbol criu uses, so the rest come from the system.
CRIU_DEBS=(criu libc6 libnet9 libnl-3-200)
SYSLIBS=/lib/x86_64-linux-gnu:/usr/lib/x86_64-linux-gnu

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

# criu_version W: the version the wrapper W reports, or nothing.
criu_version() {
  [ -x "$1" ] || return 0
  "$1" --version 2>/dev/null | awk '/^Version:/ {print $2}'
}

# criu_ok W: W runs a criu >= $MIN_CRIU.
criu_ok() {
  local v
  v=$(criu_version "$1")
  [ -n "$v" ] || return 1
  [ "$(printf '%s\n%s\n' "$v" "$MIN_CRIU" | sort -V | head -1)" = "$MIN_CRIU" ]
}

if criu_ok "$WRAPPER"; then
  log "criu $(criu_version "$WRAPPER") present at $WRAPPER"
  exit 0
fi

# One install at a time: another run may be building $PREFIX.new, or may
# just have finished.
mkdir -p /run/lock
exec 9>/run/lock/ssi-setup-criu.lock
flock 9
if criu_ok "$WRAPPER"; then
  log "criu $(criu_version "$WRAPPER") present at $WRAPPER"
  exit 0
fi
old=$(criu_version "$WRAPPER")

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
# $PREFIX.new is never the live prefix (after the swap it holds the old one).
trap 'rm -rf "$work" "$PREFIX.new"' EXIT
mkdir -p "$work/etc/sources.list.d" "$work/lists/partial" "$work/debs"
{
  echo "Types: deb"
  echo "URIs: $uri"
  echo "Suites: $SUITE"
  echo "Components: main"
  if [ -n "${keyring:-}" ]; then echo "Signed-By: $keyring"; fi
} > "$work/etc/sources.list.d/private.sources"
: > "$work/etc/sources.list"

APT=(-o "Dir::Etc::sourcelist=$work/etc/sources.list"
     -o "Dir::Etc::sourceparts=$work/etc/sources.list.d"
     -o "Dir::State::Lists=$work/lists"
     -o "Debug::NoLocking=1"
     -o "APT::Sandbox::User=root")
log "fetching ${CRIU_DEBS[*]} from suite $SUITE into $PREFIX${old:+ (replacing criu $old)}"
apt-get "${APT[@]}" update -qq
(cd "$work/debs" && apt-get "${APT[@]}" download "${CRIU_DEBS[@]}" >/dev/null)

rm -rf "$PREFIX.new"
mkdir -p "$PREFIX.new"
for d in "$work"/debs/*.deb; do
  log "  $(dpkg-deb -f "$d" Package) $(dpkg-deb -f "$d" Version)"
  dpkg-deb -x "$d" "$PREFIX.new/root"
done
mkdir -p "$PREFIX.new/bin"
# The wrapper finds its prefix from its own path, so it runs the same in
# $PREFIX.new (checked below) as in $PREFIX.
cat > "$PREFIX.new/bin/criu" <<WRAP
#!/bin/sh
# criu from Debian $SUITE under its own loader and libc (see configs/setup.sh).
P=\$(readlink -f "\$0") || exit 127
P=\${P%/bin/*}/root
L=\$P/usr/lib/x86_64-linux-gnu
exec "\$L/ld-linux-x86-64.so.2" --library-path "\$L:$SYSLIBS" "\$P/usr/sbin/criu" "\$@"
WRAP
chmod 755 "$PREFIX.new/bin/criu"

# Check the new prefix before it replaces the old one: every library, symbol
# and symbol version resolves (the loader warns about any that does not),
# the wrapper reports >= $MIN_CRIU, and `criu check` passes.
L="$PREFIX.new/root/usr/lib/x86_64-linux-gnu"
libs=$(LD_BIND_NOW=1 LD_WARN=1 "$L/ld-linux-x86-64.so.2" --library-path "$L:$SYSLIBS" \
         --list "$PREFIX.new/root/usr/sbin/criu" 2>&1) \
  || die "the loader cannot run criu from $SUITE:"$'\n'"$libs"
if grep -E 'not found|undefined symbol|no version information' <<<"$libs" >&2; then
  die "criu from $SUITE needs libraries that neither Debian 12 nor CRIU_DEBS provide (above)"
fi
criu_ok "$PREFIX.new/bin/criu" \
  || die "'$PREFIX.new/bin/criu --version' does not report >= $MIN_CRIU (got '$(criu_version "$PREFIX.new/bin/criu")')"
check=$("$PREFIX.new/bin/criu" check 2>&1) || die "'criu check' fails with criu from $SUITE:"$'\n'"$check"
log "criu $(criu_version "$PREFIX.new/bin/criu") from $SUITE: criu check: $(tail -1 <<<"$check")"

# Swap $PREFIX.new into place in one step, renameat2(RENAME_EXCHANGE)
# (syscall 316 on x86_64, reached through perl, which Debian always has), so
# that $WRAPPER is never missing, even while others run criu. Where that
# fails, two renames leave it missing for an instant. A criu already running
# keeps its files open; the old tree is removed after the swap.
if [ -e "$PREFIX" ]; then
  if perl -e 'exit(syscall(316, -100, $ARGV[0], -100, $ARGV[1], 2) == 0 ? 0 : 1)' \
       "$PREFIX.new" "$PREFIX"; then
    rm -rf "$PREFIX.new"
  else
    rm -rf "$PREFIX.old"
    mv "$PREFIX" "$PREFIX.old"
    mv "$PREFIX.new" "$PREFIX" || { mv "$PREFIX.old" "$PREFIX"; die "could not move $PREFIX.new to $PREFIX"; }
    rm -rf "$PREFIX.old"
  fi
else
  mv "$PREFIX.new" "$PREFIX"
fi
criu_ok "$WRAPPER" || die "criu installed at $WRAPPER but '$WRAPPER --version' does not report >= $MIN_CRIU"
log "criu $(criu_version "$WRAPPER") installed at $WRAPPER"
