FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p enrichd -p apollo-sim

FROM debian:bookworm-slim
# CA certificates: HTTPS to Apollo and to callback URLs verifies against the system store.
# curl: the compose healthchecks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /src/target/release/enrichd /src/target/release/apollo-sim /usr/local/bin/
EXPOSE 8080 4010
# glibc's allocator held to the steady state (README: "Memory"): two arenas, and buffers of
# 256 KiB or more mapped apart so a burst's memory (a 20,000-person job) is given back when freed.
ENV GLIBC_TUNABLES=glibc.malloc.arena_max=2:glibc.malloc.mmap_threshold=262144:glibc.malloc.trim_threshold=262144
# The binary itself is PID 1 (exec form, no shell in between), so it receives the deploy's SIGTERM
# and drains (README: "Deploying and restarting").
ENTRYPOINT ["enrichd"]
CMD ["serve"]
