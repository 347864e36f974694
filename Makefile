.PHONY: run test check build install clean mixin

PREFIX ?= /usr/local
BINDIR ?= $(PREFIX)/bin

# Runs the exporter: against the cluster in KUBECONFIG / ~/.kube/config / in-cluster
# when there is one, else on the shipped example data (examples/).
run:
	scripts/run.sh

# Runs every test, installing what is missing (apt-get, ./.venv).
test:
	scripts/test.sh

# Regenerates alerts/imagecap.rules.yaml and dashboards/imagecap.json from mixin/.
mixin:
	mixin/generate.sh

build:
	cargo build --release

# Installs the exporter, and the same binary as the kubectl plugin `kubectl imagecap`.
install: build
	install -D -m 0755 target/release/imagecap-exporter $(DESTDIR)$(BINDIR)/imagecap-exporter
	ln -sf imagecap-exporter $(DESTDIR)$(BINDIR)/kubectl-imagecap

clean:
	cargo clean
	rm -rf .venv
