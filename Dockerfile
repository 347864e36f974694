# syntax=docker/dockerfile:1
# Container image of imagecap-exporter.
#
#   docker build -t imagecap-exporter:0.1.0 .
#   docker run --rm -p 9754:9754 -v "$PWD/examples:/examples:ro" imagecap-exporter:0.1.0 \
#     serve --nodes-file /examples/nodes.json --config /examples/config.yaml
#
# The Helm chart (charts/imagecap-exporter) runs this image with its own arguments.

# The base images, replaceable with --build-arg. A BUILD_IMAGE that already holds
# the binary at /out/imagecap-exporter (built elsewhere) is used as it is, without
# cargo; RUNTIME_IMAGE needs what the binary needs to run (glibc, libgcc, CA
# certificates). tests/e2e/test_container.py builds and runs the image that way,
# with bases made locally.
ARG BUILD_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# --- build -------------------------------------------------------------------------
FROM ${BUILD_IMAGE} AS build
WORKDIR /src
# Only what the crate needs to build; see .dockerignore for what never enters the context.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
# build.rs generates the CRI client from proto/ (protox: no protoc needed).
COPY build.rs ./
COPY proto ./proto
# Cargo.toml declares the benchmarks, and cargo checks that their files exist.
COPY benches ./benches
# .git is not in the context: the revision for --version and imagecap_build_info
# comes from `--build-arg IMAGECAP_REVISION=$(git rev-parse --short=12 HEAD)`.
ARG IMAGECAP_REVISION=unknown
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    if [ -x /out/imagecap-exporter ]; then \
      echo "using the prebuilt /out/imagecap-exporter of the build image"; \
    else \
      cargo build --release --locked \
      && install -D -m 0755 target/release/imagecap-exporter /out/imagecap-exporter; \
    fi

# --- run ---------------------------------------------------------------------------
# distroless/cc: glibc and libgcc only, no shell; the "nonroot" tag runs as 65532.
FROM ${RUNTIME_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="imagecap-exporter" \
      org.opencontainers.image.description="Prometheus exporter for the kubelet node image-list cap (nodeStatusMaxImages)" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=build /out/imagecap-exporter /usr/local/bin/imagecap-exporter
USER 65532:65532
EXPOSE 9754
ENTRYPOINT ["/usr/local/bin/imagecap-exporter"]
CMD ["serve"]
