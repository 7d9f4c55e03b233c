#!/bin/sh
# Builds the base root file system of the systemd test VM with debootstrap,
# from the Debian mirror apt already uses on this host, into DIR (default
# hack/out/vm/rootfs). Reruns with a complete DIR do nothing.
set -eu

dir=${1:-hack/out/vm/rootfs}
mirror=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=${DEBIAN_SUITE:-bookworm}

if [ -f "$dir/.complete" ]; then
	exit 0
fi
command -v debootstrap >/dev/null || { echo "mkrootfs: debootstrap is missing: apt-get install debootstrap" >&2; exit 1; }
rm -rf "$dir.tmp"
mkdir -p "$(dirname "$dir")"
echo "mkrootfs: debootstrap $suite from $mirror into $dir (a few minutes)"
debootstrap --variant=minbase \
	--include=systemd,systemd-sysv,dbus,kmod,iproute2,iptables,nftables,procps,util-linux,ca-certificates \
	"$suite" "$dir.tmp" "$mirror"
# Keep the image small: no apt lists, docs or package caches.
rm -rf "$dir.tmp/var/cache/apt/archives/"*.deb "$dir.tmp/var/lib/apt/lists/"* \
	"$dir.tmp/usr/share/doc" "$dir.tmp/usr/share/man" "$dir.tmp/usr/share/locale"
rm -rf "$dir"
mv "$dir.tmp" "$dir"
touch "$dir/.complete"
echo "mkrootfs: done: $(du -sh "$dir" | cut -f1)"
