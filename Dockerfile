# embedding-server container image.
#   podman build --format docker --isolation chroot -t embedding-server .   (or docker build)
#   podman --runtime runc run --rm -p 8080:8080 embedding-server
# Build stage: compilers and -dev packages. Runtime stage: only the shared
# libraries, a non-root user, the built-in default table and /data.
FROM debian:bookworm-slim AS build
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      build-essential cmake pkg-config libmicrohttpd-dev libcjson-dev libuv1-dev libnats-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY core core
COPY proto proto
COPY config config
COPY server server
# NATIVE=OFF: the image must run on any x86-64 host, not only the build machine's CPU.
RUN cmake -S . -B /build -DCMAKE_BUILD_TYPE=Release -DBUILD_TESTING=OFF -DBUILD_BENCH=OFF -DNATIVE=OFF \
 && cmake --build /build -j "$(nproc)" \
 && strip /build/embedding-server

FROM debian:bookworm-slim
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
      libmicrohttpd12 libcjson1 libuv1 libnats3.4 \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/cache/debconf/*-old /usr/share/doc /usr/share/man \
 && useradd --system --uid 999 --user-group --home-dir /data --shell /usr/sbin/nologin embedding \
 && mkdir -p /data /etc/embedding-server \
 && chown embedding /data
COPY --from=build /build/embedding-server /usr/local/bin/embedding-server
COPY config/default/ /usr/local/share/embedding-server/
# Inside a container the server must be reachable from outside its network
# namespace; the default stays 127.0.0.1 everywhere else.
ENV EMBEDDING_SERVER_HOST=0.0.0.0 \
    EMBEDDING_SERVER_PORT=8080 \
    EMBEDDING_SERVER_DATA_DIR=/data
USER embedding
WORKDIR /data
VOLUME ["/data"]
EXPOSE 8080
# bash's /dev/tcp needs nothing the image lacks (no curl, no wget).
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/${EMBEDDING_SERVER_PORT:-8080} && printf 'GET /healthz HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/embedding-server"]
