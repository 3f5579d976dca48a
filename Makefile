# Ambit build. `make` builds every binary into bin/; `make test` is what CI runs.
GO            ?= go
BIN           ?= bin
PROTOC_GEN_GO_VERSION      := v1.36.12
PROTOC_GEN_GO_GRPC_VERSION := v1.5.1
TOOLS         := $(CURDIR)/.tools

.PHONY: all build demo test check-generate generate tools clean

all: build

build:
	CGO_ENABLED=0 $(GO) build -o $(BIN)/ ./cmd/...

# The demo mesh (root on Linux).
demo: build
	$(BIN)/ambit up -f examples/quickstart

# Unit, integration (root, network namespaces) and end-to-end tests, after
# checking that the committed generated code matches api/*.proto.
test: check-generate
	$(GO) vet ./...
	$(GO) test -count=1 -timeout 40m ./...

check-generate: generate
	@git diff --exit-code --stat -- api/ || { echo "generated code in api/ is stale: run 'make generate' and commit"; exit 1; }

tools:
	GOBIN=$(TOOLS) $(GO) install google.golang.org/protobuf/cmd/protoc-gen-go@$(PROTOC_GEN_GO_VERSION)
	GOBIN=$(TOOLS) $(GO) install google.golang.org/grpc/cmd/protoc-gen-go-grpc@$(PROTOC_GEN_GO_GRPC_VERSION)

# Regenerates the committed Go code from api/*.proto (protoc from Debian's protobuf-compiler).
generate: tools
	PATH=$(TOOLS):$$PATH protoc -I api --go_out=api --go_opt=paths=source_relative \
		--go-grpc_out=api --go-grpc_opt=paths=source_relative \
		api/mesh/v1/*.proto api/echo/v1/*.proto

clean:
	rm -rf $(BIN) $(TOOLS)

# Container image without a container engine: static binaries in one layer,
# written as an OCI archive (push with `crane push bin/ambit-image.tar REF`).
IMAGE ?= ghcr.io/ambit-mesh/ambit:latest
.PHONY: image kube-test
image:
	rm -rf $(BIN)/image && mkdir -p $(BIN)/image
	CGO_ENABLED=0 $(GO) build -trimpath -ldflags='-s -w' -o $(BIN)/image/ ./cmd/ambit ./cmd/ztunnel ./cmd/waypoint ./cmd/ambit-cni
	$(GO) run ./internal/install/mkimage -bin $(BIN)/image -o $(BIN)/ambit-image.tar -tag $(IMAGE)

# The Kubernetes tests alone (a real kube-apiserver, built once and cached, and etcd).
kube-test:
	$(GO) test -count=1 ./internal/kube/... ./internal/ca/... ./internal/waypointctl/... ./internal/nodeagent/... ./internal/install/... ./internal/cni/... ./test/kube/...
	$(GO) test -count=1 -run 'ControlPlaneKube|InstallDryRun|OnKubernetes' ./cmd/ambit/
