# syntax=docker/dockerfile:1
# One image for every apisix-mesh role (see docs/operations.md, "The image"):
#   webhook:         args `webhook ...`            (the Deployment in manifests/, uid 10001)
#   init container:  args `iptables ...`           (injected; root with NET_ADMIN/NET_RAW only)
#   mesh agent:      args `agent ...`              (injected; uid 1337, the proxy uid)
# APISIX itself runs from the official apache/apisix image.
ARG NODE_VERSION=22

# --- build: compile the TypeScript with the dev dependencies -------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY cli ./cli
COPY webhook ./webhook
COPY iptables-init ./iptables-init
COPY agent ./agent
RUN npm run build

# --- runtime dependencies only --------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim AS runtime-deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force

# --- the image -------------------------------------------------------------------------------------
FROM node:${NODE_VERSION}-bookworm-slim
# iptables for the init role: Debian's package brings iptables-restore in both backends
# (iptables-nft, the default, and iptables-legacy); `apisix-mesh iptables` picks per node.
# iproute2: the init role puts ::6 (the IPv6 inbound forwarding source) on lo, as istio-iptables does.
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables iproute2 \
 && rm -rf /var/lib/apt/lists/*
# A dedicated non-root user that is NOT the proxy uid 1337: traffic of uid 1337 bypasses the
# capture rules, so nothing should run as it by accident. The injected agent sets 1337 explicitly.
RUN groupadd --system --gid 10001 apisix-mesh \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin apisix-mesh
WORKDIR /app
COPY --from=runtime-deps /app/node_modules ./node_modules
COPY --from=build /src/dist ./dist
COPY package.json ./
ENV NODE_ENV=production
USER 10001:10001
ENTRYPOINT ["node", "/app/dist/cli/main.js"]
CMD ["--help"]
