#!/bin/sh
# install-build-deps.sh: install the Debian packages that `make` needs besides
# Go: a C toolchain, pkg-config and libseccomp-dev for runc's seccomp support
# and the static pause binary, and busybox-static for the test images.
# Does nothing when they are all present.
set -eu
pkgs="gcc libc6-dev binutils pkgconf libseccomp-dev busybox-static"
missing=""
for p in $pkgs; do
	if ! dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$'; then
		missing="$missing $p"
	fi
done
if [ -z "$missing" ]; then
	exit 0
fi
sudo=""
if [ "$(id -u)" != 0 ]; then
	sudo=sudo
fi
echo "installing:$missing"
$sudo apt-get update -q
# shellcheck disable=SC2086 # word splitting of the package list is wanted
$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $missing
