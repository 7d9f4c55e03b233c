#!/bin/sh
# install-deps.sh [GROUP...]: install the Debian packages kubox needs besides
# Go, by group; the one list, used by `make deps` and by .ci/run.
#
#   build  make; gcc, libc6-dev, binutils, pkgconf and libseccomp-dev for the
#          static runc (seccomp) and pause binaries; busybox-static for the
#          test images; ca-certificates for fetching Go modules
#   run    nftables: the nft tool that `kubox check` asks for (pod masquerade
#          and the nftables service proxy)
#   test   iptables, ipset: the iptables proxy-mode tests; iproute2 and
#          util-linux (ip, nsenter, setpriv): network namespaces of the
#          end-to-end tests; shellcheck and systemd (systemd-analyze): the
#          install script's tests
#   vm     qemu-system-x86 and linux-image-amd64: the IPVS test in a VM
#          (skipped without them, except in CI); debootstrap, e2fsprogs and
#          kmod: `make test-vm`
#   all    every group
#
# Without arguments: build run test (what `make`, `bin/kubox server` and
# `make test` need). Installs nothing when the packages are all present.
set -eu

build="make ca-certificates gcc libc6-dev binutils pkgconf libseccomp-dev busybox-static"
run="nftables"
test="iptables ipset iproute2 util-linux shellcheck systemd"
vm="qemu-system-x86 linux-image-amd64 debootstrap e2fsprogs kmod"

if [ $# -eq 0 ]; then
	set -- build run test
fi
pkgs=""
for g in "$@"; do
	case "$g" in
	build) pkgs="$pkgs $build" ;;
	run) pkgs="$pkgs $run" ;;
	test) pkgs="$pkgs $test" ;;
	vm) pkgs="$pkgs $vm" ;;
	all) pkgs="$pkgs $build $run $test $vm" ;;
	*)
		echo "install-deps.sh: unknown group $g (want build, run, test, vm or all)" >&2
		exit 2
		;;
	esac
done

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
