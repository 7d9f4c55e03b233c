#!/bin/sh
# check-static.sh FILE...: fail unless every FILE is a statically linked ELF
# executable. kubox copies these binaries onto hosts and into images that have
# no libc of the right version, so a dynamic one would only fail there, later.
# Uses readelf (binutils, which gcc needs anyway) rather than file(1), which a
# minimal Debian does not have.
set -eu
status=0
for f in "$@"; do
	if ! headers=$(readelf -lW "$f" 2>/dev/null); then
		echo "check-static: $f is not an ELF file" >&2
		status=1
	elif printf '%s\n' "$headers" | grep -q 'Requesting program interpreter'; then
		echo "check-static: $f is dynamically linked" >&2
		status=1
	fi
done
exit $status
