# sellsy-webhooks: `docker build -t sellsy-webhooks .`, or `docker compose up` with docker-compose.yml.

# Node 24: LTS (supported until April 2028). Bump here for a later LTS.
ARG NODE_IMAGE=node:24-bookworm-slim

# ---- build: every dependency, then tsc into dist/ -----------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# `npm ci` would run `prepare` (tsc) before the sources are here: skip it, build explicitly below.
# Keeping the install in its own layer means a source change does not reinstall dependencies.
RUN npm ci --ignore-scripts
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# ---- runtime: production dependencies and dist/ only ------------------------
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    SPOOL_DIR=/var/lib/sellsy-webhooks/spool
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: `prepare` needs TypeScript, a devDependency. The only other install script
# (msgpackr-extract, optional) has its prebuilt binary in a platform package, found at run time.
RUN npm ci --omit=dev --ignore-scripts && npm cache clean --force
COPY --from=build /app/dist ./dist
# Created and chowned before VOLUME, so a new named volume starts out owned by `node`.
# The code in /app stays root-owned: the service cannot rewrite itself.
RUN mkdir -p "$SPOOL_DIR" && chown node:node "$SPOOL_DIR"
VOLUME ["/var/lib/sellsy-webhooks/spool"]
USER node
EXPOSE 3000
# Liveness only (/healthz); readiness (/readyz, Redis reachable) is the Compose healthcheck.
# No curl in slim images: Node's own fetch. PORT is honoured if it is overridden.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# node as PID 1, no npm/shell wrapper: SIGTERM reaches the process, which shuts down gracefully
# (close-with-grace, SHUTDOWN_TIMEOUT_MS, 10 s by default).
CMD ["node", "dist/src/cli.js", "start"]
