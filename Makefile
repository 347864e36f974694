.PHONY: run test check build clean

# Runs the exporter: against the cluster in KUBECONFIG / ~/.kube/config / in-cluster
# when there is one, else on the shipped example data (examples/).
run:
	scripts/run.sh

# Runs every test, installing what is missing (apt-get, ./.venv).
test:
	scripts/test.sh

build:
	cargo build --release

clean:
	cargo clean
	rm -rf .venv
