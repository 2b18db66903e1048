# fulcrum: multi-stage build, release binary on a small non-root runtime image.
#   docker build -t fulcrum .
#   docker run -p 8080:8080 -p 9901:9901 fulcrum
# Mount your own config at /etc/fulcrum/fulcrum.toml (or set FULCRUM_CONFIG).
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# A workspace member (the fuzz harness): cargo reads its manifest.
COPY fuzz ./fuzz
RUN cargo build --release --locked --bin fulcrum && strip target/release/fulcrum

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home fulcrum
COPY --from=build /src/target/release/fulcrum /usr/local/bin/fulcrum
COPY config/container.toml /etc/fulcrum/fulcrum.toml
ENV FULCRUM_CONFIG=/etc/fulcrum/fulcrum.toml
# mimalloc returns emptied pages to the kernel at once rather than at its next free,
# so memory of closed idle connections goes back (docs/performance.md).
ENV MIMALLOC_PURGE_DELAY=0
USER 10001
# 8080: traffic; 9901: admin API (/healthz, /readyz).
EXPOSE 8080 9901
# No curl in the image: probe from the orchestrator, e.g. Kubernetes
#   livenessProbe:  httpGet { path: /healthz, port: 9901 }
#   readinessProbe: httpGet { path: /readyz,  port: 9901 }
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/fulcrum"]
