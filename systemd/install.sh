#!/bin/sh
# kubox installer: puts the kubox binary in /usr/local/bin, writes the
# kubox systemd service, and starts it.
#
#   curl --proto '=https' --tlsv1.2 -sSfL https://get.kubox.example/install.sh | sh -
#   curl --proto '=https' --tlsv1.2 -sSfL https://get.kubox.example/install.sh |
#       KUBOX_TOKEN=... sh -s - server --join https://box1:6443
#   INSTALL_KUBOX_SKIP_DOWNLOAD=true ./install.sh       # offline: ./kubox, or the installed one
#
# Arguments after `sh -s -` become the service's command line (default:
# `server`; arguments that start with a dash are given to `server`).
#
# Environment:
#   INSTALL_KUBOX_VERSION        version to install, e.g. v0.2.0 (default: the latest)
#   INSTALL_KUBOX_BASE_URL       where releases live (default https://get.kubox.example/releases):
#                                <base>/latest holds the latest version's name, and
#                                <base>/<version>/kubox-linux-<arch> and
#                                <base>/<version>/sha256sums.txt the binary and its checksum
#   INSTALL_KUBOX_SKIP_DOWNLOAD  true: download nothing; use the kubox next to this
#                                script, ./kubox, or the one already installed
#   INSTALL_KUBOX_SHA256         the sha256 the binary must have (offline or
#                                downloaded); anything else is refused
#   INSTALL_KUBOX_SKIP_ENABLE    true: do not enable the service at boot
#   INSTALL_KUBOX_SKIP_START     true: do not start (or restart) the service
#   INSTALL_KUBOX_BIN_DIR        where the binary and scripts go (default /usr/local/bin)
#   KUBOX_*, HTTP(S)_PROXY, NO_PROXY (and lower-case)
#                                copied into /etc/systemd/system/kubox.service.env (0600)
#
# A --token argument goes into that env file as KUBOX_TOKEN, never into the
# unit (which every user can read). Downloads are https only (TLS 1.2 or
# later, redirects included). When a proxy is set, NO_PROXY and no_proxy
# also get what kubox reaches directly: the pod and Service ranges, this
# box, the box it joins, localhost and the cluster's DNS names.
#
# Running it again with the same binary and arguments changes nothing and
# does not restart kubox; a new binary or new arguments restart it.
#
# Everything is in functions and the last line calls main: a download cut
# short anywhere runs nothing.
#
# INSTALL_KUBOX_TEST_ROOT is for kubox's own tests only: every path is taken
# below that directory instead of /.
set -eu

info() { echo "[kubox] $*"; }
fatal() {
	echo "[kubox] ERROR: $*" >&2
	exit 1
}
is_true() {
	case "${1:-}" in
	true | TRUE | True | yes | 1) return 0 ;;
	*) return 1 ;;
	esac
}

cleanup() {
	if [ -n "$TMP" ]; then
		rm -rf "$TMP"
	fi
}

# ------------------------------------------------------------------ checks

check_host() {
	os=$(uname -s)
	[ "$os" = Linux ] || fatal "kubox runs on Linux only; this is $os"
	case "$(uname -m)" in
	x86_64 | amd64) ARCH=amd64 ;;
	aarch64 | arm64) ARCH=arm64 ;;
	*) fatal "no kubox build for the $(uname -m) architecture (amd64 and arm64 only)" ;;
	esac
	[ "$(id -u)" = 0 ] || fatal "run this as root (e.g. curl -sfL URL | sudo sh -): it writes to $BIN_DIR and $SYSTEMD_DIR"
	# sd_booted(3): systemd is PID 1 when this directory exists.
	[ -d "$ROOT/run/systemd/system" ] || fatal "this host does not run systemd (no /run/systemd/system): \
install the binary by hand (copy kubox to $BIN_DIR) and have your init system run '$BIN_DIR/kubox server'"
	command -v systemctl >/dev/null || fatal "systemctl not found although systemd runs: is PATH complete?"
}

# ------------------------------------------------------------------ binary

# download fetches over https only, redirects included: a binary fetched
# in the clear could be anyone's.
download() { # url file
	case "$1" in
	https://*) ;;
	*) fatal "$1: not https (INSTALL_KUBOX_BASE_URL): the installer downloads over https only; or copy kubox next to it and set INSTALL_KUBOX_SKIP_DOWNLOAD=true" ;;
	esac
	if command -v curl >/dev/null; then
		curl -fsSL --proto '=https' --tlsv1.2 --retry 3 -o "$2" "$1" || fatal "download $1 failed"
	elif command -v wget >/dev/null; then
		# wget follows a redirect to plain http even with --https-only
		# (which is for recursive downloads): its headers (-S) name every
		# redirect, and a file that came through a plain one is refused.
		wget -nv -S --https-only --secure-protocol=TLSv1_2 -O "$2" "$1" 2>"$TMP/wget.log" ||
			fatal "download $1 failed: $(grep -v '^ ' "$TMP/wget.log" | tail -n 1)"
		if awk 'tolower($1) == "location:" && $2 ~ /^[A-Za-z][A-Za-z0-9+.-]*:/ && tolower($2) !~ /^https:/ { bad = 1 } END { exit !bad }' "$TMP/wget.log"; then
			rm -f "$2"
			fatal "download $1 was redirected to plain http: refused"
		fi
	else
		fatal "neither curl nor wget is installed: install one, or copy kubox next to this script and set INSTALL_KUBOX_SKIP_DOWNLOAD=true"
	fi
}

sha256() {
	if command -v sha256sum >/dev/null; then
		sha256sum "$1" | cut -d' ' -f1
	elif command -v shasum >/dev/null; then
		shasum -a 256 "$1" | cut -d' ' -f1
	else
		fatal "no sha256sum or shasum to verify the download with"
	fi
}

# check_sha256 prints the binary's sha256 and refuses it when
# INSTALL_KUBOX_SHA256 names another.
check_sha256() { # file
	got=$(sha256 "$1")
	pinned=$(printf '%s' "${INSTALL_KUBOX_SHA256:-}" | tr 'A-F' 'a-f')
	if [ -z "$pinned" ]; then
		info "sha256 $got"
		return
	fi
	[ "$got" = "$pinned" ] || fatal "sha256 mismatch: $1 has $got, INSTALL_KUBOX_SHA256 says $pinned; nothing was installed"
	info "sha256 $got matches INSTALL_KUBOX_SHA256"
}

# get_binary sets NEW_BIN to a file holding the kubox to install.
get_binary() {
	if is_true "${INSTALL_KUBOX_SKIP_DOWNLOAD:-}"; then
		here=$(dirname "$0")
		for f in "$here/kubox" ./kubox "$ROOT$BIN_DIR/kubox"; do
			if [ -f "$f" ]; then
				NEW_BIN=$f
				info "using $f (INSTALL_KUBOX_SKIP_DOWNLOAD)"
				check_sha256 "$f"
				return
			fi
		done
		fatal "INSTALL_KUBOX_SKIP_DOWNLOAD is set but there is no kubox binary next to this script, in $(pwd) or in $BIN_DIR: copy it there"
	fi
	version=${INSTALL_KUBOX_VERSION:-}
	if [ -z "$version" ]; then
		download "$BASE_URL/latest" "$TMP/latest"
		version=$(tr -d ' \t\r\n' <"$TMP/latest")
		[ -n "$version" ] || fatal "$BASE_URL/latest is empty: set INSTALL_KUBOX_VERSION"
	fi
	name=kubox-linux-$ARCH
	info "downloading kubox $version ($name) from $BASE_URL"
	download "$BASE_URL/$version/sha256sums.txt" "$TMP/sha256sums.txt"
	want=$(awk -v n="$name" '$2 == n || $2 == "*" n { print $1 }' "$TMP/sha256sums.txt")
	[ -n "$want" ] || fatal "$BASE_URL/$version/sha256sums.txt lists no $name"
	download "$BASE_URL/$version/$name" "$TMP/kubox"
	got=$(sha256 "$TMP/kubox")
	[ "$got" = "$want" ] || fatal "checksum mismatch for $name: got sha256 $got, sha256sums.txt says $want; nothing was installed (a broken download or a tampered file: try again, or check $BASE_URL)"
	info "sha256 $got verified"
	if [ -n "${INSTALL_KUBOX_SHA256:-}" ]; then
		check_sha256 "$TMP/kubox"
	fi
	NEW_BIN=$TMP/kubox
}

# install_file src dest mode: replaces dest (atomically, by rename) unless it
# already has this content and mode. Sets CHANGED when it writes.
install_file() {
	if [ -f "$2" ] && cmp -s "$1" "$2" && [ "$(stat -c %a "$2")" = "$3" ]; then
		return 0
	fi
	mkdir -p "$(dirname "$2")"
	tmp=$(dirname "$2")/.$(basename "$2").tmp.$$
	# Created 0600 before its first byte (the env file may hold the join
	# token), and given its mode only once complete.
	rm -f "$tmp"
	(umask 077 && cp "$1" "$tmp")
	chmod "$3" "$tmp"
	sync "$tmp" 2>/dev/null || true
	mv -f "$tmp" "$2"
	info "wrote $2"
	CHANGED=1
}

# ------------------------------------------------------------------ unit

# sh_quote quotes one value for a generated shell script: single quotes,
# with any single quote written as '\''.
sh_quote() {
	printf "'%s'" "$(printf '%s' "$1" | sed "s/'/'\\\\''/g")"
}

# sd_quote quotes one argument for a unit's ExecStart: double quotes, with
# backslash, quote, dollar ($$) and percent (%%) escaped.
sd_quote() {
	printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\$/$$/g' -e 's/%/%%/g')"
}

# env_quote quotes a value for an EnvironmentFile: double quotes, with
# backslash, quote, dollar and backquote escaped (the literal $ and ` are
# meant: nothing is expanded).
# shellcheck disable=SC2016
env_quote() {
	printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/\$/\\$/g' -e 's/`/\\`/g')"
}

# no_proxy_value prints NO_PROXY (and no_proxy) for a box behind a proxy:
# what the user set, then what kubox reaches directly (pods, Services, this
# box, the box it joins, localhost, cluster DNS names), each once.
no_proxy_value() {
	join=$(setting join "" "$@")
	if [ -n "$join" ]; then
		join=${join#*://}
		join=${join%%/*}
		case "$join" in
		\[*)
			join=${join#\[}
			join=${join%%]*}
			;;
		*) join=${join%:*} ;;
		esac
	fi
	printf '%s\n' "${NO_PROXY:-}" "${no_proxy:-}" \
		"$(setting cluster-cidr 10.42.0.0/16 "$@")" "$(setting service-cidr 10.43.0.0/16 "$@")" \
		"$(setting node-ip "" "$@")" "$join" localhost 127.0.0.1 .svc ".$(setting cluster-domain cluster.local "$@")" |
		tr ',' '\n' | awk '
			{ gsub(/^[ \t]+|[ \t]+$/, "") }
			$0 != "" && !seen[$0]++ { out = out (out == "" ? "" : ",") $0 }
			END { print out }'
}

# write_env_file writes KUBOX_* and the proxy variables, the --token
# argument as KUBOX_TOKEN, and NO_PROXY completed when a proxy is set.
write_env_file() {
	noproxy=
	if [ -n "${HTTP_PROXY:-}${http_proxy:-}${HTTPS_PROXY:-}${https_proxy:-}" ]; then
		noproxy=$(no_proxy_value "$@")
	fi
	names=$(env | sed -n 's/^\(KUBOX_[A-Za-z0-9_]*\)=.*/\1/p; s/^\([Hh][Tt][Tt][Pp][Ss]*_[Pp][Rr][Oo][Xx][Yy]\)=.*/\1/p; s/^\([Nn][Oo]_[Pp][Rr][Oo][Xx][Yy]\)=.*/\1/p')
	if [ -n "$TOKEN" ]; then
		names="$names KUBOX_TOKEN"
	fi
	if [ -n "$noproxy" ]; then
		names="$names NO_PROXY no_proxy"
	fi
	(umask 077 && : >"$TMP/env")
	# shellcheck disable=SC2086
	for name in $(printf '%s\n' $names | sort -u); do
		value=$(printenv "$name" || true)
		case "$name" in
		KUBOX_TOKEN) if [ -n "$TOKEN" ]; then value=$TOKEN; fi ;;
		NO_PROXY | no_proxy) if [ -n "$noproxy" ]; then value=$noproxy; fi ;;
		esac
		printf '%s=%s\n' "$name" "$(env_quote "$value")" >>"$TMP/env"
	done
	install_file "$TMP/env" "$ROOT$ENV_FILE" 600
}

# The exec line: kubox with the installer's arguments. A server keeps its
# pods running when the service stops or restarts (--stop-pods-on-exit=false):
# containerd's shims are left alone (KillMode=process) and the next kubox
# adopts them; kubox-killall.sh stops everything.
exec_start() {
	line=$BIN_DIR/kubox
	cmd=${1:-server}
	case "$cmd" in
	-*) cmd=server ;;
	*) [ $# -gt 0 ] && shift ;;
	esac
	line="$line $cmd"
	if [ "$cmd" = server ]; then
		line="$line --stop-pods-on-exit=false"
	fi
	for a in "$@"; do
		line="$line $(sd_quote "$a")"
	done
	printf '%s' "$line"
}

# restart_backoff: systemd 254 and later back off between restarts on their
# own; older ones restart every RestartSec.
restart_backoff() {
	v=$(systemctl --version 2>/dev/null | awk 'NR == 1 { print $2 + 0 }')
	if [ "${v:-0}" -ge 254 ]; then
		printf 'RestartSteps=8\nRestartMaxDelaySec=5min\n'
	fi
}

write_unit() {
	cat >"$TMP/unit" <<EOF
# Written by the kubox installer; rerun it to change this file.
[Unit]
Description=kubox: Kubernetes appliance (etcd, control plane, containerd, kubelet)
Documentation=https://github.com/kubox/kubox
Wants=network-online.target
After=network-online.target
# Never give up restarting an appliance nobody watches.
StartLimitIntervalSec=0

[Service]
# READY=1 once the apiserver serves and this node is registered.
Type=notify
NotifyAccess=main
EnvironmentFile=-$ENV_FILE
ExecStartPre=-/sbin/modprobe br_netfilter
ExecStartPre=-/sbin/modprobe overlay
ExecStart=$(exec_start "$@")
# Only kubox itself is signalled on stop and restart: containerd's shims and
# the containers below them keep running, and the next kubox adopts them.
KillMode=process
Delegate=yes
LimitNOFILE=1048576
LimitNPROC=infinity
LimitCORE=infinity
TasksMax=infinity
# A first start writes the PKI and imports images; slow disks take time.
TimeoutStartSec=15min
TimeoutStopSec=2min
Restart=always
RestartSec=5s
$(restart_backoff)
# Except on exit status 78: "kubox node remove" took this box out of its
# cluster, and no restart helps until its data dir is moved aside and it
# joins again (systemctl status kubox shows the line saying so).
RestartPreventExitStatus=78

[Install]
WantedBy=multi-user.target
EOF
	install_file "$TMP/unit" "$ROOT$UNIT" 644
}

# ------------------------------------------------------------------ tools

# setting prints one of kubox server's settings: the last --key VALUE or
# --key=VALUE argument, else key: in the config file, else the default.
setting() { # key default args...
	key=$1 val=
	def=$2
	shift 2
	val=$(sed -n "s/^$key:[[:space:]]*[\"']\{0,1\}\([^\"' #]*\).*/\1/p" "$ROOT$CONFIG_FILE" 2>/dev/null | tail -n 1)
	prev=
	for a in "$@"; do
		if [ "$prev" = "--$key" ]; then
			val=$a
		fi
		case "$a" in
		--"$key"=*) val=${a#--"$key"=} ;;
		esac
		prev=$a
	done
	printf '%s' "${val:-$def}"
}

# Where kubox keeps its state, for the killall and uninstall scripts.
state_dirs() {
	DATA_DIR=$(setting data-dir /var/lib/kubox "$@")
	RUN_DIR=$(setting run-dir /run/kubox "$@")
}

# link_tools symlinks the tools kubox answers to (as listed by its --help)
# to kubox, where those names are free on PATH.
link_tools() {
	carried=$("$ROOT$BIN_DIR/kubox" --help 2>/dev/null | awk '$1 == "kubectl" || $1 == "ctr" || $1 == "crictl" { print $1 }') ||
		fatal "the kubox binary does not run on this host"
	LINKS=
	for tool in kubectl crictl ctr; do
		case " $(echo "$carried" | tr '\n' ' ') " in
		*" $tool "*) ;;
		*)
			info "$tool: not linked: this kubox does not carry $tool (use 'kubox ctr' or 'kubectl')"
			continue
			;;
		esac
		link=$ROOT$BIN_DIR/$tool
		if [ -L "$link" ] && [ "$(readlink "$link")" = "$BIN_DIR/kubox" ]; then
			LINKS="$LINKS $tool"
			continue
		fi
		taken=
		if [ -e "$link" ] || [ -L "$link" ]; then
			taken=$BIN_DIR/$tool
		else
			old_ifs=$IFS
			IFS=:
			for d in $PATH; do
				if [ -n "$d" ] && [ -x "$ROOT$d/$tool" ]; then
					taken=$d/$tool
					break
				fi
			done
			IFS=$old_ifs
		fi
		if [ -n "$taken" ]; then
			info "$tool: not linked: $taken exists (use 'kubox $tool')"
			continue
		fi
		ln -s "$BIN_DIR/kubox" "$link"
		info "linked $BIN_DIR/$tool -> $BIN_DIR/kubox"
		LINKS="$LINKS $tool"
	done
}

write_killall() {
	cat >"$TMP/killall" <<EOF
#!/bin/sh
# Written by the kubox installer. Stops kubox, its kubelet and containerd,
# every shim and container, and unmounts what they mounted. Pods start again with
# 'systemctl start kubox'.
set -u
[ "\$(id -u)" = 0 ] || { echo "kubox-killall.sh: run as root" >&2; exit 1; }
ROOT=\${INSTALL_KUBOX_TEST_ROOT:-}
BIN=$(sh_quote "$BIN_DIR/kubox")
DATA_DIR=$(sh_quote "$DATA_DIR")
RUN_DIR=$(sh_quote "$RUN_DIR")
EOF
	cat >>"$TMP/killall" <<'EOF'

if [ -d "$ROOT/run/systemd/system" ] && command -v systemctl >/dev/null; then
	systemctl stop kubox 2>/dev/null
fi

# pids_of prints the processes whose executable is one of the given files.
pids_of() {
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		exe=${exe% (deleted)}
		for f in "$@"; do
			if [ "$exe" = "$f" ]; then
				echo "${p#/proc/}"
			fi
		done
	done
}

# The parent of every process, read once: "pid ppid" lines. A command name
# may hold spaces and parentheses, so cut after its last ")".
ptable=$(for s in /proc/[0-9]*/stat; do
	read -r st <"$s" 2>/dev/null || continue
	st=${st##*) }
	p=${s#/proc/}
	# shellcheck disable=SC2086
	set -- $st
	echo "${p%/stat} $2"
done)

# tree prints a process and all its descendants, parents before children.
tree() {
	echo "$ptable" | awk -v root="$1" '
		{ kids[$2] = kids[$2] " " $1 }
		END {
			todo[1] = root; n = 1
			for (i = 1; i <= n; i++) {
				print todo[i]
				k = split(kids[todo[i]], c, " ")
				for (j = 1; j <= k; j++) todo[++n] = c[j]
			}
		}'
}

# Containers first (deepest first), then the shims, then containerd and
# kubox, so nothing is restarted or reaped half-way. kubox's kubelet child
# (`kubox kubelet`) has kubox's executable and goes with it.
shims=$(pids_of "$ROOT$DATA_DIR/bin/containerd-shim-runc-v2")
for s in $shims; do
	# Descendants, deepest (last found) first.
	# shellcheck disable=SC2046
	kill -9 $(tree "$s" | sed '1d' | sed -n '1!G;h;$p') 2>/dev/null
	kill -9 "$s" 2>/dev/null
done
for p in $(pids_of "$ROOT$BIN" "$ROOT$DATA_DIR/bin/containerd"); do
	kill -9 "$p" 2>/dev/null
done
sleep 1

# What the killed shims leave where containerd hard-codes it, found through
# kubox's own task dirs: the shims' sockets (/run/containerd/s), libcni's
# cached results, and runc state that older kubox kept in /run/containerd/runc.
for t in "$ROOT$RUN_DIR"/containerd/io.containerd.runtime.v2.task/*/*; do
	[ -d "$t" ] || continue
	id=${t##*/}
	cat "$t/bootstrap.json" "$t/address" 2>/dev/null | grep -o 'unix://[^"]*' | sed 's#^unix://##' |
		while read -r sock; do
			rm -f "$ROOT$sock" "$ROOT$sock.debug"
		done
	rm -rf "$ROOT/run/containerd/runc/k8s.io/$id" "$ROOT/var/lib/cni/results/"*"-$id-"*
done
for d in /run/containerd/s /run/containerd/runc/k8s.io /run/containerd/runc /run/containerd; do
	rmdir "$ROOT$d" 2>/dev/null
done

# Unmount deepest first: pod volumes, container rootfs, sandbox shm and
# network namespaces, the kubelet's bind mount of its root dir.
for dir in "$ROOT$DATA_DIR" "$ROOT$RUN_DIR" "$ROOT/var/lib/kubelet"; do
	awk -v d="$dir" '$5 == d || index($5, d "/") == 1 { print $5 }' /proc/self/mountinfo |
		sort -r | while read -r m; do
		umount -l "$(printf '%b' "$m")" 2>/dev/null
	done
done

if [ -z "$ROOT" ]; then
	# The kubelet's pod cgroups, deepest first, in every hierarchy.
	for top in /sys/fs/cgroup/kubepods /sys/fs/cgroup/*/kubepods; do
		[ -d "$top" ] || continue
		find "$top" -depth -type d -exec rmdir {} + 2>/dev/null
	done
	# kubox's pod network: its bridge, VXLAN device, routes to other
	# boxes' pods (protocol 0x4b) and masquerade rules (and the CNI
	# plugin's, from kubox versions that used it). The pods' veths went
	# with their namespaces.
	ip link delete kubox0 2>/dev/null
	ip link delete kubox-vxlan 2>/dev/null
	ip route flush proto 0x4b 2>/dev/null
	nft delete table ip kubox 2>/dev/null
	nft delete table inet cni_plugins_masquerade 2>/dev/null
	if command -v iptables >/dev/null; then
		for tc in nat/POSTROUTING/KUBOX-POSTROUTING mangle/FORWARD/KUBOX-FORWARD; do
			t=${tc%%/*} c=${tc##*/} p=${tc#*/} p=${p%/*}
			iptables -w -t "$t" -S "$p" 2>/dev/null | grep -- "-j $c\$" | sed 's/^-A //' |
				while read -r rule; do
					# shellcheck disable=SC2086
					iptables -w -t "$t" -D $rule 2>/dev/null
				done
			iptables -w -t "$t" -F "$c" 2>/dev/null
			iptables -w -t "$t" -X "$c" 2>/dev/null
		done
	fi
	# The service proxy's nftables tables and IPVS interface.
	nft delete table ip kube-proxy 2>/dev/null
	nft delete table ip6 kube-proxy 2>/dev/null
	ip link delete kube-ipvs0 2>/dev/null
	# libcni's cached results for kubox's network (named kubox).
	rm -rf /var/lib/cni/networks/kubox /var/lib/cni/results/kubox-* 2>/dev/null
fi
echo "kubox-killall.sh: kubox, kubelet, containerd, shims and containers stopped"
exit 0
EOF
	install_file "$TMP/killall" "$ROOT$BIN_DIR/kubox-killall.sh" 755
}

write_uninstall() {
	cat >"$TMP/uninstall" <<EOF
#!/bin/sh
# Written by the kubox installer. Stops kubox and removes what the installer
# installed, and kubox's state, after saying what it removes.
#   kubox-uninstall.sh [--keep-data]   --keep-data keeps $DATA_DIR (etcd, PKI, snapshots) and /etc/kubox
set -eu
[ "\$(id -u)" = 0 ] || { echo "kubox-uninstall.sh: run as root" >&2; exit 1; }
ROOT=\${INSTALL_KUBOX_TEST_ROOT:-}
BIN_DIR=$(sh_quote "$BIN_DIR")
UNIT=$(sh_quote "$UNIT")
ENV_FILE=$(sh_quote "$ENV_FILE")
DATA_DIR=$(sh_quote "$DATA_DIR")
RUN_DIR=$(sh_quote "$RUN_DIR")
LINKS=$(sh_quote "$LINKS")
EOF
	cat >>"$TMP/uninstall" <<'EOF'

keep_data=
for a in "$@"; do
	case "$a" in
	--keep-data) keep_data=1 ;;
	-h | --help)
		sed -n '2,4p' "$0"
		exit 0
		;;
	*)
		echo "kubox-uninstall.sh: unknown argument $a (only --keep-data)" >&2
		exit 1
		;;
	esac
done

remove="$BIN_DIR/kubox $UNIT $ENV_FILE $RUN_DIR"
for l in $LINKS; do
	remove="$remove $BIN_DIR/$l"
done
if [ -z "$keep_data" ]; then
	remove="$remove /etc/kubox $DATA_DIR /var/lib/kubelet /var/log/pods /var/log/containers"
fi
remove="$remove $BIN_DIR/kubox-killall.sh $BIN_DIR/kubox-uninstall.sh"
echo "kubox-uninstall.sh: removing:"
for f in $remove; do
	if [ -e "$ROOT$f" ] || [ -L "$ROOT$f" ]; then
		echo "  $f"
	fi
done
if [ -n "$keep_data" ]; then
	echo "kubox-uninstall.sh: keeping $DATA_DIR and /etc/kubox (--keep-data)"
fi

systemd=
if [ -d "$ROOT/run/systemd/system" ] && command -v systemctl >/dev/null; then
	systemd=1
	systemctl disable kubox 2>/dev/null || true
fi
"$ROOT$BIN_DIR/kubox-killall.sh" >/dev/null || true

for l in $LINKS; do
	# Only our own links: a tool installed there since is left alone.
	if [ -L "$ROOT$BIN_DIR/$l" ] && [ "$(readlink "$ROOT$BIN_DIR/$l")" = "$BIN_DIR/kubox" ]; then
		rm -f "$ROOT$BIN_DIR/$l"
	fi
done
rm -f "$ROOT$BIN_DIR/kubox" "$ROOT$UNIT" "$ROOT$ENV_FILE"
rm -rf "$ROOT$UNIT.d" "$ROOT$RUN_DIR"
if [ -z "$keep_data" ]; then
	rm -rf "$ROOT/etc/kubox" "$ROOT$DATA_DIR" "$ROOT/var/lib/kubelet" "$ROOT/var/log/pods" "$ROOT/var/log/containers"
fi
# Dirs the kubelet, containerd and libcni create at their default places;
# removed only when empty, as another tool may use them too.
for d in /usr/libexec/kubernetes/kubelet-plugins/volume/exec /usr/libexec/kubernetes/kubelet-plugins/volume \
	/usr/libexec/kubernetes/kubelet-plugins /usr/libexec/kubernetes /opt/containerd/bin /opt/containerd/lib \
	/opt/containerd /var/lib/cni/networks /var/lib/cni/results /var/lib/cni; do
	rmdir "$ROOT$d" 2>/dev/null || true
done
if [ -n "$systemd" ]; then
	systemctl daemon-reload
	systemctl reset-failed kubox 2>/dev/null || true
fi
rm -f "$ROOT$BIN_DIR/kubox-killall.sh" "$ROOT$BIN_DIR/kubox-uninstall.sh"
echo "kubox-uninstall.sh: kubox is uninstalled"
EOF
	install_file "$TMP/uninstall" "$ROOT$BIN_DIR/kubox-uninstall.sh" 755
}

# ------------------------------------------------------------------ main

main() {
	ROOT=${INSTALL_KUBOX_TEST_ROOT:-}
	BASE_URL=${INSTALL_KUBOX_BASE_URL:-https://get.kubox.example/releases}
	BIN_DIR=${INSTALL_KUBOX_BIN_DIR:-/usr/local/bin}
	SYSTEMD_DIR=/etc/systemd/system
	UNIT=$SYSTEMD_DIR/kubox.service
	ENV_FILE=$SYSTEMD_DIR/kubox.service.env
	CONFIG_FILE=/etc/kubox/config.yaml
	TMP=
	trap cleanup EXIT
	trap 'exit 130' INT TERM

	# --token goes to the env file (0600) as KUBOX_TOKEN: in the unit's
	# ExecStart every user would read it (systemctl show, /proc).
	TOKEN=
	kept=
	while [ $# -gt 0 ]; do
		case "$1" in
		--token)
			[ $# -ge 2 ] || fatal "--token needs a value (or set KUBOX_TOKEN)"
			TOKEN=$2
			shift 2
			;;
		--token=*)
			TOKEN=${1#--token=}
			shift
			;;
		*)
			kept="$kept $(sh_quote "$1")"
			shift
			;;
		esac
	done
	eval "set -- $kept"

	check_host
	TMP=$(mktemp -d "${TMPDIR:-/tmp}/kubox-install.XXXXXX")
	CHANGED=
	get_binary
	install_file "$NEW_BIN" "$ROOT$BIN_DIR/kubox" 755
	state_dirs "$@"
	link_tools
	write_killall
	write_uninstall
	if [ -n "$TOKEN" ]; then
		info "--token: kept in $ENV_FILE (KUBOX_TOKEN, 0600), not in the unit"
	fi
	write_env_file "$@"
	write_unit "$@"

	if [ -n "$CHANGED" ]; then
		systemctl daemon-reload
	fi
	if ! is_true "${INSTALL_KUBOX_SKIP_ENABLE:-}"; then
		if ! systemctl is-enabled --quiet kubox 2>/dev/null; then
			systemctl enable kubox
		fi
	fi
	if is_true "${INSTALL_KUBOX_SKIP_START:-}"; then
		info "installed; not started (INSTALL_KUBOX_SKIP_START): systemctl start kubox"
	elif systemctl is-active --quiet kubox; then
		if [ -n "$CHANGED" ]; then
			info "restarting kubox (binary or configuration changed); its pods keep running"
			systemctl restart kubox
		else
			info "kubox is installed and running; nothing changed"
		fi
	else
		info "starting kubox; 'systemctl status kubox' shows its progress, it is active once the node is Ready"
		systemctl start kubox
	fi
}

# In braces: a copy cut anywhere in this line is a syntax error, not a call.
{ main "$@"; }
