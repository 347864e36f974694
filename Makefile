.PHONY: run test check build clean mixin

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

clean:
	cargo clean
	rm -rf .venv
