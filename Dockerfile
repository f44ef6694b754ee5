# hello-streams container image (used by docker-compose.yml).
#   docker build -t hello-streams .
#   docker run --rm hello-streams --help

# ---- build -------------------------------------------------------------------
FROM rust:1-bookworm AS build
# rocksdb (bindgen needs libclang, C++ build), rdkafka (librdkafka via cmake/make,
# OpenSSL for the "ssl" feature), jemalloc (C, make; the rust image has both).
RUN apt-get update \
 && apt-get install -y --no-install-recommends libclang-dev libssl-dev pkg-config cmake \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked

# ---- runtime -----------------------------------------------------------------
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /app --shell /usr/sbin/nologin hello \
 && mkdir -p /var/lib/hello-streams \
 && chown hello /var/lib/hello-streams
WORKDIR /app
COPY --from=build /src/target/release/hello-streams /usr/local/bin/hello-streams
# config/default.toml is read relative to the working directory.
COPY config/ /app/config/
# Inside a container: listen on all interfaces, keep state on the volume. The query ports
# are then open to whoever can reach them: publish them on loopback (`-p 127.0.0.1:6380:6380`)
# or pass HELLO_STREAMS__QUERY__RESP_PASSWORD and HELLO_STREAMS__QUERY__HTTP_TOKEN
# (`docker run -e ...`); no password is baked into the image.
ENV HELLO_STREAMS__APP__STATE_DIR=/var/lib/hello-streams \
    HELLO_STREAMS__QUERY__HTTP_ADDR=0.0.0.0:8080 \
    HELLO_STREAMS__QUERY__RESP_ADDR=0.0.0.0:6380
VOLUME /var/lib/hello-streams
EXPOSE 8080 6380
USER hello
ENTRYPOINT ["hello-streams"]
CMD ["run"]
