# KernelCI in Rust: one image with the API server, the pipeline services and `kci`.
#   docker build -t kernelci-rs .
# (Not built on the project's CI machines, which have no Docker engine able to build images.)
FROM rust:1.95-bookworm AS build
RUN apt-get update && apt-get install -y --no-install-recommends pkg-config libssl-dev zlib1g-dev \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release -p kernelci-server -p kernelci-bins \
    && mkdir /out \
    && cp target/release/kernelci-server target/release/kci target/release/kci-* /out/ \
    && rm -f /out/*.d

FROM debian:bookworm-slim
# git: the tarball service's work trees; make/gcc/...: kernel builds on the shell runtime.
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates git \
        make gcc flex bison bc libelf-dev libssl-dev python3 \
    && rm -rf /var/lib/apt/lists/* \
    && useradd -m -u 1000 kernelci
COPY --from=build /out/ /usr/local/bin/
COPY config /etc/kernelci/config
USER kernelci
WORKDIR /home/kernelci
ENV KCI_BIN=/usr/local/bin/kci
EXPOSE 8001
CMD ["kernelci-server", "--listen", "0.0.0.0:8001"]
