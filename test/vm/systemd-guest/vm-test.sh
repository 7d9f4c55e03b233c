#!/bin/sh
# Runs inside the systemd test VM (test/vm), as a oneshot unit after boot:
# the offline install, the service's life, a restart that keeps the pods'
# containers, and the uninstall. Every line it prints starts with
# "VMTEST "; "VMTEST CHECK name ok|FAIL detail" lines are what the Go test
# asserts, "VMTEST DONE" ends the run. Then it powers the VM off.
# The sh -c checks expand inside the child shell, on purpose.
# shellcheck disable=SC2016
set -u
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
DIST=/root/kubox-dist
begin=$(date +%s)

say() { echo "VMTEST $(($(date +%s) - begin))s $*"; }
check() { # name condition-command... ; prints ok or FAIL
	name=$1
	shift
	if "$@" >/tmp/check.out 2>&1; then
		echo "VMTEST CHECK $name ok"
	else
		echo "VMTEST CHECK $name FAIL $(tr '\n' ' ' </tmp/check.out | cut -c1-400)"
	fi
}
wait_for() { # seconds command...
	n=$1
	shift
	while [ "$n" -gt 0 ]; do
		if "$@" >/dev/null 2>&1; then return 0; fi
		sleep 2
		n=$((n - 2))
	done
	"$@"
}
node_ready() {
	kubectl get node -o jsonpath='{.items[0].status.conditions[?(@.type=="Ready")].status}' | grep -qx True
}
pod_running() {
	kubectl get pod web -o jsonpath='{.status.phase}' | grep -qx Running
}
show() { systemctl show -p "$1" --value kubox; }

say "kernel $(uname -r), systemd $(systemctl --version | head -1), $(nproc) cpus, $(free -m | awk '/Mem:/{print $2}') MiB"
export HOME=/root
# Every path on the root file system before the install, to compare with
# what is left after the uninstall.
files() {
	find / /run -xdev \( -path /proc -o -path /sys -o -path /var/log/journal -o -path /tmp -o -path /var/tmp \
		-o -path /run/systemd -o -path /root/.kube -o -path /var/lib/systemd \) -prune -o -print | sort
}
files >/tmp/files-before

# ---- offline install, as the README says
cd "$DIST" || exit 1
# Under TCG emulation on a busy host a first start takes about 5 minutes,
# kubox's default limit; the unit allows 15.
mkdir -p /etc/kubox
echo "start-timeout: 14m" >/etc/kubox/config.yaml
# What systemd shows while kubox starts (its STATUS= lines), every 10 s.
(
	while sleep 10; do
		say "progress: $(systemctl show -p ActiveState -p SubState -p StatusText kubox 2>/dev/null | tr '\n' ' ')"
	done
) &
progress=$!
t0=$(date +%s)
INSTALL_KUBOX_SKIP_DOWNLOAD=true ./install.sh 2>&1 | sed 's/^/VMTEST install: /'
say "install.sh returned after $(($(date +%s) - t0))s"
kill "$progress"
check active systemctl is-active kubox
if ! systemctl is-active --quiet kubox; then
	journalctl -u kubox --no-pager -o cat | tail -n 80 | sed 's/^/VMTEST journal: /'
fi
# Type=notify: systemctl start returned only after READY=1, which kubox
# sends once the node is registered; so the Node exists right now, with no
# waiting (the kubelet's own early READY=1 would fail this).
check node-registered-at-ready kubectl get node "$(hostname)"
check status-text sh -c "systemctl show -p StatusText --value kubox | grep 'kubox is ready'"
say "status: $(show StatusText)"
check node-ready wait_for 300 node_ready
check kubectl-symlink sh -c '[ "$(readlink /usr/local/bin/kubectl)" = /usr/local/bin/kubox ]'
check ctr-symlink sh -c '[ "$(readlink /usr/local/bin/ctr)" = /usr/local/bin/kubox ]'
check env-file-mode sh -c '[ "$(stat -c %a /etc/systemd/system/kubox.service.env)" = 600 ]'

# ---- idempotent: same binary and args, no restart
pid1=$(show MainPID)
INSTALL_KUBOX_SKIP_DOWNLOAD=true ./install.sh 2>&1 | sed 's/^/VMTEST reinstall: /'
check reinstall-no-restart sh -c "[ $pid1 = \$(systemctl show -p MainPID --value kubox) ]"

# ---- a pod, from an image imported from an OCI archive
check import ctr -n k8s.io images import /root/busybox.tar
cat >/tmp/pod.yaml <<'EOF'
apiVersion: v1
kind: Pod
metadata: {name: web}
spec:
  containers:
  - name: web
    image: localhost/kubox-test/busybox:1
    imagePullPolicy: Never
EOF
check pod-apply kubectl apply -f /tmp/pod.yaml
check pod-running wait_for 300 pod_running
cid1=$(kubectl get pod web -o jsonpath='{.status.containerStatuses[0].containerID}')
cpid=$(ctr -n k8s.io tasks ls | awk -v id="${cid1#containerd://}" '$1 == id { print $2 }')
cstart=$(cut -d' ' -f22 "/proc/$cpid/stat" 2>/dev/null)
say "pod container $cid1 pid $cpid"

# ---- restart the service: the containers keep running and are adopted.
# With a watchdog too, which kubox must keep fed.
mkdir -p /etc/systemd/system/kubox.service.d
printf '[Service]\nWatchdogSec=30s\n' >/etc/systemd/system/kubox.service.d/watchdog.conf
systemctl daemon-reload
t0=$(date +%s)
check restart systemctl restart kubox
say "restart took $(($(date +%s) - t0))s"
check restart-new-main-pid sh -c "[ $pid1 != \$(systemctl show -p MainPID --value kubox) ]"
check container-survived sh -c "[ -n '$cpid' ] && [ \"\$(cut -d' ' -f22 /proc/$cpid/stat)\" = '$cstart' ]"
check node-ready-after-restart wait_for 300 node_ready
check pod-running-after-restart wait_for 120 pod_running
# Give the kubelet a few sync loops to notice anything it disliked.
sleep 40
check same-container sh -c "[ \"\$(kubectl get pod web -o jsonpath='{.status.containerStatuses[0].containerID}')\" = '$cid1' ]"
check no-container-restart sh -c "[ \"\$(kubectl get pod web -o jsonpath='{.status.containerStatuses[0].restartCount}')\" = 0 ]"
check container-still-there sh -c "[ \"\$(cut -d' ' -f22 /proc/$cpid/stat)\" = '$cstart' ]"
check watchdog-fed sh -c "[ \$(systemctl show -p NRestarts --value kubox) = 0 ] && systemctl is-active kubox && [ \$(systemctl show -p WatchdogUSec --value kubox) = 30s ]"
say "after restart: $(systemctl show -p MainPID -p NRestarts -p WatchdogTimestamp -p StatusText kubox | tr '\n' ' ')"
journalctl -u kubox --no-pager -o cat | grep -i "watchdog\|notify" | tail -5 | sed 's/^/VMTEST journal: /'

# ---- uninstall: nothing of kubox is left
/usr/local/bin/kubox-uninstall.sh 2>&1 | sed 's/^/VMTEST uninstall: /'
sleep 2
leftover_procs() {
	for p in /proc/[0-9]*; do
		exe=$(readlink "$p/exe" 2>/dev/null) || continue
		case "$exe" in
		*kubox* | */containerd* | */runc* | */pause | */busybox) echo "${p#/proc/} $exe" ;;
		esac
	done
}
leftover_procs >/tmp/leftover-procs
sed 's/^/VMTEST leftover process: /' /tmp/leftover-procs
check no-process test ! -s /tmp/leftover-procs
check no-unit sh -c '! systemctl cat kubox'
check unit-inactive sh -c '! systemctl is-active kubox'
files >/tmp/files-after
comm -13 /tmp/files-before /tmp/files-after >/tmp/new-files
sed 's/^/VMTEST left after uninstall: /' /tmp/new-files
check nothing-left test ! -s /tmp/new-files
check no-mount sh -c '! grep -e kubox -e kubelet /proc/self/mountinfo'
check no-bridge sh -c '! ip link show kubox0'
say "total $(($(date +%s) - begin))s"
echo "VMTEST DONE"
