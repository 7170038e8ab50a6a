FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release -p enrichd -p apollo-sim

FROM debian:bookworm-slim
COPY --from=build /src/target/release/enrichd /src/target/release/apollo-sim /usr/local/bin/
EXPOSE 8080 4010
CMD ["enrichd", "serve"]
