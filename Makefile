# kubox build.
#
#   make                 bin/kubox, with its runtime assets embedded
#   make assets          containerd, runc, containerd-shim-runc-v2, CNI plugins, pause image
#   make test-images     OCI image archives the end-to-end tests import
#   make test-s3-server  MinIO (a real S3 server) for the object-store snapshot tests
#   make test            test-unit, then test-e2e
#   make test-netpol     every upstream network-policy e2e spec against a node
#   make bench           end-to-end benchmarks
#   make test-vm         install.sh and the service on a real systemd, in a qemu VM (slow: TCG)
#   make deps            the Debian packages to build, run and test kubox (DEPS=all adds the VM tests')
#   make vet | fmt | clean
#
# Needs Go, plus (for runc's seccomp support and the pause binary) gcc,
# pkg-config, libseccomp-dev and, for the test images, busybox-static:
# hack/install-deps.sh installs them, and what running and testing need, on Debian.
#
# Intermediate outputs go to hack/out/; nothing is fetched except Go modules.

GO ?= go
# make's built-in default for CC is cc; prefer gcc unless CC was set.
ifeq ($(origin CC),default)
CC := gcc
endif
PKG     := github.com/kubox/kubox

# Packages linked into bin/kubox.
KUBOX_PKGS ?= ./cmd

# Versions of what kubox carries. containerd and Kubernetes come from go.mod,
# so the daemon and the shim always match the containerd client linked into
# kubox. Without the -X below, containerd would call itself "2.3.7+unknown".
RUNC_VERSION  ?= v1.5.2
CNI_VERSION   ?= v1.9.1
PAUSE_VERSION ?= 3.10
CONTAINERD_VERSION := $(shell $(GO) list -m -f '{{.Version}}' github.com/containerd/containerd/v2 2>/dev/null)
KUBE_VERSION       := $(shell $(GO) list -m -f '{{.Version}}' k8s.io/kubernetes 2>/dev/null)
KUBOX_VERSION      ?= $(shell git describe --always --dirty 2>/dev/null || echo dev)

# Must match PauseImage in embedded/assets (its tests check the version).
PAUSE_IMAGE   := localhost/kubox/pause:$(PAUSE_VERSION)
BUSYBOX_IMAGE := localhost/kubox-test/busybox:1

KUBE_MAJOR := $(patsubst v%,%,$(word 1,$(subst ., ,$(KUBE_VERSION))))
KUBE_MINOR := $(word 2,$(subst ., ,$(KUBE_VERSION)))
VERSION_LDFLAGS := \
	-X k8s.io/component-base/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/component-base/version.gitMajor=$(KUBE_MAJOR) \
	-X k8s.io/component-base/version.gitMinor=$(KUBE_MINOR) \
	-X k8s.io/client-go/pkg/version.gitVersion=$(KUBE_VERSION) \
	-X k8s.io/client-go/pkg/version.gitMajor=$(KUBE_MAJOR) \
	-X k8s.io/client-go/pkg/version.gitMinor=$(KUBE_MINOR) \
	-X github.com/containerd/containerd/v2/version.Version=$(CONTAINERD_VERSION) \
	-X main.version=$(KUBOX_VERSION)

# -buildvcs=false: the version is stamped explicitly above, and VCS stamping
# fails in checkouts git considers unsafe (e.g. owned by another user).
GO_BUILD_FLAGS := -trimpath -buildvcs=false

OUT        := hack/out
STAMPS     := $(OUT)/stamps
ASSETS_DIR := embedded/assets/files
IMAGES_OUT := test/images/out

# Build tools run with `go run`: Go caches the executables, and make tracks
# their sources below.
ASSETPACK      := $(GO) run ./hack/assetpack
MKIMAGE        := $(GO) run ./hack/mkimage
ASSETPACK_SRCS := $(filter-out %_test.go,$(wildcard hack/assetpack/*.go embedded/assets/manifest/*.go))
MKIMAGE_SRCS   := $(filter-out %_test.go,$(wildcard hack/mkimage/*.go))

# Build commands are recorded in stamp files that change only when the command
# does, so a changed version or flag rebuilds exactly what it affects and an
# unchanged one rebuilds nothing.
$(shell mkdir -p $(STAMPS))
#
# Both sides are stripped: GNU make 4.3's $(file <) sometimes leaves the
# trailing newline on (it depends on make's internal buffer), which made equal
# commands compare different and rewrote their stamps on every run.
define stamp
ifneq ($$(strip $$(file <$(STAMPS)/$(1))),$$(strip $$($(2))))
$$(file >$(STAMPS)/$(1),$$($(2)))
endif
endef

.DEFAULT_GOAL := bin/kubox
.DELETE_ON_ERROR:
.PHONY: all assets test-images test-s3-server test test-unit test-e2e test-netpol test-vm bench vet fmt clean deps FORCE

all: bin/kubox

# ---------------------------------------------------------------- dead code

# The linker keeps every exported method of every reachable type once one
# reachable function looks methods up by a name it cannot see: text/template
# (kubectl's and ctr's help, containerd's) and go-cmp (etcd) do. hack/deadcode
# writes an -overlay and a -modfile that patch those two calls in copies of
# their sources; kubox and containerd build through them (runc would not
# shrink: criu's code looks methods up too). bin/kubox 170.46 -> 149.84 MiB,
# containerd 37.54 -> 31.83 MB. A Go upgrade rewrites them (the stamp holds the
# Go version). hack/deadcode tests the patch; TestEmbeddedToolsHelp the result.
DEADCODE := $(OUT)/deadcode/overlay.json
DEADCODE_SRCS := $(filter-out %_test.go,$(wildcard hack/deadcode/*.go))
DEADCODE_CMD := $(GO) run ./hack/deadcode -o $(OUT)/deadcode
DEADCODE_KEY := $(DEADCODE_CMD) $(shell $(GO) env GOVERSION 2>/dev/null)
DEADCODE_FLAGS := -overlay $(abspath $(DEADCODE)) -modfile $(abspath $(OUT)/deadcode/go.mod)
$(eval $(call stamp,deadcode,DEADCODE_KEY))
$(DEADCODE): $(DEADCODE_SRCS) go.mod go.sum $(wildcard embedded/containerd/*.go) $(STAMPS)/deadcode
	$(DEADCODE_CMD)

# ---------------------------------------------------------------- kubox

bin/kubox: assets $(DEADCODE) FORCE
	@test -n "$(KUBE_VERSION)" || { echo "cannot read the k8s.io/kubernetes version from go.mod" >&2; exit 1; }
	CGO_ENABLED=0 $(GO) build $(GO_BUILD_FLAGS) $(DEADCODE_FLAGS) -ldflags '-s -w $(VERSION_LDFLAGS)' -o $@ $(KUBOX_PKGS)

# ---------------------------------------------------------------- assets

CNI_PLUGINS := bridge host-local loopback portmap
BINARY_ASSETS := containerd runc containerd-shim-runc-v2 $(CNI_PLUGINS)
ASSET_FILES := $(foreach a,$(BINARY_ASSETS) pause.tar,$(ASSETS_DIR)/$(a).json $(ASSETS_DIR)/$(a).zst)

assets: $(ASSET_FILES)

# runc: cgo (libseccomp) linked statically; built outside our module with its
# own go.mod, so it does not touch ours.
RUNC_BIN := $(OUT)/runc/runc
RUNC_CMD := CGO_ENABLED=1 GOBIN=$(abspath $(OUT)/runc) $(GO) install -trimpath \
	-tags 'seccomp netgo osusergo urfave_cli_no_docs' -ldflags '-s -w -extldflags -static' \
	github.com/opencontainers/runc@$(RUNC_VERSION)
$(eval $(call stamp,runc,RUNC_CMD))
$(RUNC_BIN): $(STAMPS)/runc
	@command -v $(CC) >/dev/null && command -v pkg-config >/dev/null && pkg-config --exists libseccomp || \
		{ echo "runc needs gcc, pkg-config and libseccomp-dev: run make deps" >&2; exit 1; }
	@mkdir -p $(@D)
	$(RUNC_CMD)
	@hack/check-static.sh $@
	$@ --version

# containerd's daemon: a binary of its own rather than a mode of kubox, so the
# child process does not carry (and initialise) all of Kubernetes: that cost
# about 50 MB of PSS (measured). Same module and version as kubox's client;
# upstream's command and plugins, plus the trim of its idle pages
# (embedded/containerd/daemon). Without what kubox never configures
# (devmapper and zfs snapshotters, OpenTelemetry tracing, gRPC's x/net/trace
# pages): 38.96 -> 37.54 MB.
CONTAINERD_TAGS := no_devmapper no_zfs no_tracing grpcnotrace
CONTAINERD_BIN := $(OUT)/containerd/containerd
CONTAINERD_CMD := CGO_ENABLED=0 $(GO) build $(GO_BUILD_FLAGS) $(DEADCODE_FLAGS) -tags '$(CONTAINERD_TAGS)' \
	-ldflags '-s -w -X github.com/containerd/containerd/v2/version.Version=$(CONTAINERD_VERSION)' \
	-o $(CONTAINERD_BIN) ./embedded/containerd/daemon
$(eval $(call stamp,containerd,CONTAINERD_CMD))
$(CONTAINERD_BIN): $(STAMPS)/containerd $(DEADCODE) go.mod go.sum embedded/containerd/daemon/main.go internal/memtrim/memtrim.go
	@test -n "$(CONTAINERD_VERSION)" || { echo "cannot read the containerd version from go.mod" >&2; exit 1; }
	@mkdir -p $(@D)
	$(CONTAINERD_CMD)
	@hack/check-static.sh $@
	$@ --version

# The shim comes from our own module (a `tool` in go.mod), so it is the same
# containerd version, with the same dependencies, as the daemon.
# grpcnotrace drops x/net/trace, whose html/template kept the linker from
# dropping unused methods: 14.65 -> 10.48 MB.
SHIM_BIN := $(OUT)/shim/containerd-shim-runc-v2
SHIM_CMD := CGO_ENABLED=0 $(GO) build $(GO_BUILD_FLAGS) -tags grpcnotrace \
	-ldflags '-s -w -X github.com/containerd/containerd/v2/version.Version=$(CONTAINERD_VERSION)' \
	-o $(SHIM_BIN) github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2
$(eval $(call stamp,shim,SHIM_CMD))
$(SHIM_BIN): $(STAMPS)/shim go.mod go.sum
	@test -n "$(CONTAINERD_VERSION)" || { echo "cannot read the containerd version from go.mod" >&2; exit 1; }
	@mkdir -p $(@D)
	$(SHIM_CMD)
	@hack/check-static.sh $@
	$@ -v

CNI_MODULE := github.com/containernetworking/plugins
CNI_PKG_bridge     := plugins/main/bridge
CNI_PKG_host-local := plugins/ipam/host-local
CNI_PKG_loopback   := plugins/main/loopback
CNI_PKG_portmap    := plugins/meta/portmap
CNI_BINS := $(addprefix $(OUT)/cni/,$(CNI_PLUGINS))
CNI_CMD := CGO_ENABLED=0 GOBIN=$(abspath $(OUT)/cni) $(GO) install -trimpath \
	-ldflags '-s -w -X $(CNI_MODULE)/pkg/utils/buildversion.BuildVersion=$(CNI_VERSION)' \
	$(foreach p,$(CNI_PLUGINS),$(CNI_MODULE)/$(CNI_PKG_$(p))@$(CNI_VERSION))
$(eval $(call stamp,cni,CNI_CMD))
$(CNI_BINS) &: $(STAMPS)/cni
	@mkdir -p $(OUT)/cni
	$(CNI_CMD)
	@hack/check-static.sh $(CNI_BINS)
	@touch $(CNI_BINS)

# pause: our own, in C, linked statically so the image needs no libc.
PAUSE_BIN := $(OUT)/pause/pause
PAUSE_CMD := $(CC) -Os -Wall -Wextra -Werror -static -DVERSION='"$(PAUSE_VERSION)"' -o $(PAUSE_BIN) hack/pause/pause.c
$(eval $(call stamp,pause,PAUSE_CMD))
$(PAUSE_BIN): hack/pause/pause.c $(STAMPS)/pause
	@mkdir -p $(@D)
	$(PAUSE_CMD)
	strip $@
	@hack/check-static.sh $@

# Same user and entrypoint as the upstream pause image.
PAUSE_TAR := $(OUT)/pause/pause.tar
PAUSE_IMAGE_CMD := $(MKIMAGE) -o $(PAUSE_TAR) -name $(PAUSE_IMAGE) \
	-file /pause=$(PAUSE_BIN) -entrypoint '["/pause"]' -user 65535:65535
$(eval $(call stamp,pause-image,PAUSE_IMAGE_CMD))
$(PAUSE_TAR): $(PAUSE_BIN) $(MKIMAGE_SRCS) $(STAMPS)/pause-image
	$(PAUSE_IMAGE_CMD)

# One packing rule per asset: NAME.zst and NAME.json come from one command.
# $(1) asset name, $(2) input file, $(3) component, $(4) version, $(5) kind,
# $(6) optional: the asset whose content is the raw zstd dictionary $(1) is
# compressed against. The Go binaries share their runtime and many libraries,
# so compressed against the shim they shrink to a third or less (all assets:
# 27.0 -> 18.2 MB); kubox decodes the shim once to install them.
ASSET_SRC_containerd-shim-runc-v2 := $(SHIM_BIN)
define pack_rule
PACK_CMD_$(1) := $$(ASSETPACK) -o $$(ASSETS_DIR) -name $(1) -component $(3) -version $(4) -kind $(5) $(if $(6),-dict $(6)=$$(ASSET_SRC_$(6))) $(2)
$$(eval $$(call stamp,pack-$(1),PACK_CMD_$(1)))
$$(ASSETS_DIR)/$(1).zst $$(ASSETS_DIR)/$(1).json &: $(2) $(if $(6),$$(ASSET_SRC_$(6))) $$(ASSETPACK_SRCS) $$(STAMPS)/pack-$(1)
	$$(PACK_CMD_$(1))
endef
DICT := containerd-shim-runc-v2
$(eval $(call pack_rule,runc,$(RUNC_BIN),runc,$(RUNC_VERSION),binary,$(DICT)))
$(eval $(call pack_rule,containerd,$(CONTAINERD_BIN),containerd,$(CONTAINERD_VERSION),binary,$(DICT)))
$(eval $(call pack_rule,containerd-shim-runc-v2,$(SHIM_BIN),containerd-shim-runc-v2,$(CONTAINERD_VERSION),binary))
$(foreach p,$(CNI_PLUGINS),$(eval $(call pack_rule,$(p),$(OUT)/cni/$(p),cni-plugins,$(CNI_VERSION),binary,$(DICT))))
$(eval $(call pack_rule,pause.tar,$(PAUSE_TAR),pause,$(PAUSE_VERSION),image))

# ---------------------------------------------------------------- test images

# busybox-static's binary; the dynamically linked busybox would not run in an
# image without libc.
BUSYBOX ?= $(firstword $(wildcard /bin/busybox /usr/bin/busybox))
BUSYBOX_APPLETS := sh httpd wget nslookup sleep cat ls ip hostname \
	echo env true false id ps kill grep mkdir rm touch date uname head tail test nc ping
BUSYBOX_TAR := $(IMAGES_OUT)/busybox.tar
BUSYBOX_FILES := -file /bin/busybox=$(BUSYBOX) \
	$(foreach a,$(BUSYBOX_APPLETS),-symlink /bin/$(a)=busybox) \
	-file /www/index.html=test/images/busybox/index.html \
	-file /etc/passwd=test/images/busybox/passwd \
	-file /etc/group=test/images/busybox/group \
	-dir /tmp=1777
BUSYBOX_IMAGE_CMD := $(MKIMAGE) -o $(BUSYBOX_TAR) -name $(BUSYBOX_IMAGE) $(BUSYBOX_FILES) \
	-cmd '["/bin/busybox","httpd","-f","-p","8080","-h","/www"]'
$(eval $(call stamp,busybox-image,BUSYBOX_IMAGE_CMD))

# The air-gap tests' second image: the same layer as busybox (so a bundle of
# both holds it once), serving on port 8081.
AIRGAP_TEST_IMAGE := localhost/kubox-test/airgap:1
AIRGAP_TAR := $(IMAGES_OUT)/airgap.tar
AIRGAP_IMAGE_CMD := $(MKIMAGE) -o $(AIRGAP_TAR) -name $(AIRGAP_TEST_IMAGE) $(BUSYBOX_FILES) \
	-cmd '["/bin/busybox","httpd","-f","-p","8081","-h","/www"]'
$(eval $(call stamp,airgap-image,AIRGAP_IMAGE_CMD))

# agnhost, the upstream e2e specs' test image (the network-policy specs run
# only /agnhost porter and /agnhost connect), built from the k8s.io/kubernetes
# module in go.mod (a `tool` there, so its dependencies are pinned with ours)
# and named exactly as k8s.io/kubernetes/test/utils/image names it, so pods
# with imagePullPolicy IfNotPresent use the imported image. Its Dockerfile's
# files that need no distribution: porter's TLS pair, /uploads, the user and
# group of the SupplementalGroups spec; no shell or network tools.
KUBE_TEST_DIR   := $(shell $(GO) list -m -f '{{.Dir}}' k8s.io/kubernetes 2>/dev/null)/test
AGNHOST_VERSION := $(shell cat $(KUBE_TEST_DIR)/images/agnhost/VERSION 2>/dev/null)
AGNHOST_IMAGE   := registry.k8s.io/e2e-test-images/agnhost:$(AGNHOST_VERSION)
AGNHOST_BIN     := $(OUT)/agnhost/agnhost
AGNHOST_CMD     := CGO_ENABLED=0 $(GO) build $(GO_BUILD_FLAGS) -ldflags '-s -w' -o $(AGNHOST_BIN) k8s.io/kubernetes/test/images/agnhost
$(eval $(call stamp,agnhost,AGNHOST_CMD))
$(AGNHOST_BIN): $(STAMPS)/agnhost go.mod go.sum
	@mkdir -p $(@D)
	$(AGNHOST_CMD)
	@hack/check-static.sh $@

AGNHOST_TAR := $(IMAGES_OUT)/agnhost.tar
AGNHOST_IMAGE_CMD := $(MKIMAGE) -o $(AGNHOST_TAR) -name $(AGNHOST_IMAGE) \
	-file /agnhost=$(AGNHOST_BIN) -symlink /agnhost-2=agnhost \
	-file /localhost.crt=$(KUBE_TEST_DIR)/images/agnhost/porter/localhost.crt \
	-file /localhost.key=$(KUBE_TEST_DIR)/images/agnhost/porter/localhost.key \
	-file /etc/passwd=test/images/agnhost/passwd -file /etc/group=test/images/agnhost/group \
	-dir /uploads -dir /tmp=1777 -workdir / -entrypoint '["/agnhost"]' -cmd '["pause"]'
$(eval $(call stamp,agnhost-image,AGNHOST_IMAGE_CMD))
$(AGNHOST_TAR): $(AGNHOST_BIN) $(wildcard test/images/agnhost/*) $(MKIMAGE_SRCS) $(STAMPS)/agnhost-image
	@test -n "$(AGNHOST_VERSION)" || { echo "cannot read agnhost's VERSION from the k8s.io/kubernetes module" >&2; exit 1; }
	$(AGNHOST_IMAGE_CMD)

test-images: $(BUSYBOX_TAR) $(AIRGAP_TAR) $(AGNHOST_TAR)

$(BUSYBOX_TAR): $(BUSYBOX) $(wildcard test/images/busybox/*) $(MKIMAGE_SRCS) $(STAMPS)/busybox-image
	@test -n "$(BUSYBOX)" || { echo "no busybox found: install busybox-static" >&2; exit 1; }
	@hack/check-static.sh $(BUSYBOX) || { echo "install busybox-static" >&2; exit 1; }
	$(BUSYBOX_IMAGE_CMD)

$(AIRGAP_TAR): $(BUSYBOX) $(wildcard test/images/busybox/*) $(MKIMAGE_SRCS) $(STAMPS)/airgap-image
	@hack/check-static.sh $(BUSYBOX) || { echo "install busybox-static" >&2; exit 1; }
	$(AIRGAP_IMAGE_CMD)

# ---------------------------------------------------------------- tests

# A real S3 server for the object-store snapshot tests: MinIO, built from
# the Go module proxy outside our module (GOFLAGS=-mod=mod: its own go.mod),
# into hack/out. A test tool only: never linked into kubox nor shipped
# (MinIO is AGPL). Big: about 7 minutes cold on 2 cores, once.
MINIO_VERSION ?= v0.0.0-20260212201848-7aac2a2c5b7c
MINIO_BIN := $(OUT)/minio/minio
MINIO_CMD := CGO_ENABLED=0 GOFLAGS=-mod=mod GOBIN=$(abspath $(OUT)/minio) $(GO) install -trimpath -ldflags '-s -w' \
	github.com/minio/minio@$(MINIO_VERSION)
$(eval $(call stamp,minio,MINIO_CMD))
$(MINIO_BIN): $(STAMPS)/minio
	@mkdir -p $(@D)
	$(MINIO_CMD)

test-s3-server: $(MINIO_BIN)

E2E_ENV := KUBOX_BIN=$(abspath bin/kubox) KUBOX_TEST_IMAGES=$(abspath $(IMAGES_OUT)) KUBOX_TEST_S3_SERVER=$(abspath $(MINIO_BIN))

test: test-unit test-e2e

# Unit tests need the assets: embedded/assets tests the real ones.
test-unit: assets $(MINIO_BIN)
	pkgs=$$($(GO) list ./...) && KUBOX_TEST_S3_SERVER=$(abspath $(MINIO_BIN)) $(GO) test $$(printf '%s\n' $$pkgs | grep -v '^$(PKG)/test/')

test-e2e: bin/kubox test-images $(MINIO_BIN)
	$(E2E_ENV) $(GO) test -count=1 -timeout 70m ./test/...

# The whole set of Kubernetes' network-policy specs (test-e2e runs a subset:
# see test/conformance/netpol).
test-netpol: bin/kubox test-images
	KUBOX_NETPOL_FOCUS=all $(E2E_ENV) $(GO) test -count=1 -v -timeout 60m -run TestUpstreamNetworkPolicy ./test/conformance/netpol/

# Boots Debian with systemd in qemu (no KVM: TCG), installs bin/kubox with
# systemd/install.sh and checks the service; the debootstrapped root is
# cached in hack/out/vm.
test-vm: bin/kubox test-images
	KUBOX_TEST_VM=1 $(E2E_ENV) $(GO) test -count=1 -v -timeout 60m -run TestSystemdInstall ./test/vm/...

bench: bin/kubox test-images $(MINIO_BIN)
	$(E2E_ENV) $(GO) test -run '^$$' -bench . -benchtime 1x -timeout 60m ./test/bench/...

# ---------------------------------------------------------------- housekeeping

vet:
	$(GO) vet ./...

fmt:
	$(GO) fmt ./...

# Groups of hack/install-deps.sh: build, run, test, vm or all.
DEPS ?= build run test
deps:
	hack/install-deps.sh $(DEPS)

clean:
	rm -rf bin $(OUT) $(IMAGES_OUT)
	find $(ASSETS_DIR) -mindepth 1 ! -name README -delete

FORCE:
