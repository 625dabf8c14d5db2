/**
 * The composition root: config + store + decider + gRPC (ext_authz, health) + HTTP (health, metrics) +
 * the HTTP authorization mode on its own listener when configured. The parts are built elsewhere
 * (src/authz/grpc/server.ts, src/ops/); this file wires them. `startApp` is what `tollgate serve` and
 * the tests run.
 */
import { adminToken, startAdmin } from './admin/http.js';
import { checkAnswerer } from './authz/answer.js';
import { BufferBudget } from './authz/grpc/direct.js';
import { HealthService } from './authz/grpc/health.js';
import { drainGrpc, setServing, startGrpc } from './authz/grpc/server.js';
import type { GrpcTlsFiles } from './authz/grpc/tls.js';
import { startAuthzHttp } from './authz/http.js';
import { cacheFill, openCache } from './cache/open.js';
import type { Config } from './config/types.js';
import { Decider } from './decision/decide.js';
import { TokenPool } from './offload/pool.js';
import { deciderEvents } from './ops/decider-events.js';
import { drain } from './ops/drain.js';
import { startHttp } from './ops/http.js';
import { Inflight } from './ops/inflight.js';
import { createLogger, type Logger } from './ops/log.js';
import { Metrics } from './ops/metrics.js';
import { attachMetricSources } from './ops/metrics-sources.js';
import { decisionObserver } from './ops/observe.js';
import { ConfigReloader } from './ops/reload.js';
import { settleObserver } from './ops/settle-observe.js';
import { openStore, StoreHealth } from './ops/store-health.js';
import { settings } from './settings.js';
import { extProcHandler } from './settle/ext-proc.js';
import { outputCounter, ResponseBudget } from './settle/session.js';
import { type SettledEvent, Settler } from './settle/settler.js';
import type { SentinelTarget } from './store/connect.js';
import type { Store } from './store/types.js';

export interface AppOptions {
  config: Config;
  /** File the config came from: enables reload (SIGHUP / file watch). */
  configFile?: string;
  valkeyUrl?: string;
  valkeyCaFile?: string;
  /** store.topology: sentinel: where the sentinels are (VALKEY_SENTINELS, …). */
  valkeySentinel?: SentinelTarget;
  logger?: Logger;
  /** Use this store instead of building one from valkeyUrl. */
  store?: Store;
  /** Watch configFile for changes (ConfigMap symlink swaps included). */
  watchConfig?: boolean;
  /** Token counting worker threads (0 = count inline). */
  tokenWorkers?: number;
  /** gRPC server TLS (mTLS with clientCa); undefined = from TOLLGATE_TLS_* env, false = plaintext. */
  tls?: GrpcTlsFiles | false;
  /** Called with every settlement (after the log line's hook; e.g. metrics, tests). */
  onSettled?: (e: SettledEvent) => void;
  /** The admin API's bearer token; undefined = TOLLGATE_ADMIN_TOKEN (needed when server.admin is set). */
  adminToken?: string;
}

export interface App {
  grpcPort: number;
  /** The metrics/probe port (/metrics, /healthz, /readyz). */
  httpPort: number;
  /** The HTTP authorization mode's port; undefined when it is off (server.http_authz unset). */
  authzHttpPort?: number;
  /** The admin API's port; undefined when it is off (server.admin unset). */
  adminPort?: number;
  decider: Decider;
  store: Store;
  metrics: Metrics;
  health: HealthService;
  logger: Logger;
  /** Re-read configFile; keeps the old config when the new one is invalid. */
  reload(): boolean;
  /** NOT_SERVING, stop accepting, let in-flight calls finish (up to graceMs), close the store. */
  close(graceMs?: number): Promise<void>;
  /** Checks being decided right now (gRPC + HTTP). */
  inflight(): number;
  /** Whether grpc.health.v1 reports SERVING (config loaded, store usable or policy serves, not draining). */
  serving(): boolean;
}

export async function startApp(opts: AppOptions): Promise<App> {
  const log = opts.logger ?? createLogger();
  const metrics = new Metrics({ tenantLabel: settings().metricsTenantLabel });
  const cfg = opts.config;
  // an admin listener without its token refuses to start, before anything else does
  const adminSecret = cfg.server.admin ? adminToken(opts.adminToken ?? settings().adminToken) : '';
  metrics.configLoaded(cfg);
  const { store, up } = await openStore(opts, cfg, log);
  const storeHealth = new StoreHealth(store, up);
  const pool = opts.tokenWorkers === 0 ? undefined : new TokenPool(opts.tokenWorkers);
  const config = () => decider.config;
  const shed = (stage: 'queued' | 'sent') => overload.shed(stage);
  const events = deciderEvents({ metrics, log, storeHealth, config, shed });
  const valkey =
    opts.store || !opts.valkeyUrl
      ? undefined
      : { url: opts.valkeyUrl, caFile: opts.valkeyCaFile, cluster: cfg.store.topology === 'cluster' };
  const cache = openCache(cfg, valkey, metrics.cache);
  const decider = new Decider(cfg, { store, pool, cache, ...events });
  // server.max_buffered_bytes: request bytes held across gRPC Check streams (restart to change)
  const buffered = new BufferBudget(cfg.server.maxBufferedBytes);
  const inflight = new Inflight();
  const overload = attachMetricSources(metrics, { decider, store, inflight, buffered });
  await decider.warm(); // before SERVING: the first checks must not pay for worker start-up

  const health = new HealthService();
  // grpc.health.v1 + /readyz: SERVING once the config is loaded (it is, by now) and the store is
  // usable or on_store_failure lets us answer without it; NOT_SERVING while draining.
  const serving = () =>
    !inflight.closing && (storeHealth.up || decider.config.store.onStoreFailure !== 'deny');
  const refreshHealth = () => setServing(health, serving());
  const observe = decisionObserver(metrics, log, decider);
  const { begin, end } = inflight;
  const answer = checkAnswerer(decider, observe, log);
  // The response phase (ext_proc): settle each reservation to the usage the provider reports.
  const fill = cache && cacheFill(cache, config);
  const purgeCache = cache && ((scope: string) => cache.store.purge(scope));
  const { process, budget } = responsePhase({ decider, metrics, log, pool, onSettled: opts.onSettled, fill });
  const grpc = await startGrpc({
    ...{ config: cfg, tls: opts.tls, health, buffered, answer, begin, end, log },
    process,
  });
  const apply = (next: Config) => {
    decider.setConfig(next);
    budget.max = next.settle.maxBufferedBytes;
    refreshHealth();
  };
  const closing = () => inflight.closing;
  const reloader = new ConfigReloader({ config: cfg, file: opts.configFile, log, metrics, apply, closing });
  const http = await startOpsHttp(cfg, { metrics, serving, inflight, storeHealth, store, decider, reloader });
  const { authzHttp, admin } = await optionalListeners(
    cfg,
    { decider, observe, begin, end, config, store, log, purgeCache },
    adminSecret,
  );
  storeHealth.onChange = refreshHealth;
  refreshHealth();
  logServing(log, cfg, { grpc: grpc.port, http: http.port, authz: authzHttp?.port, store: store.kind });
  if (admin) log.info({ admin: `${cfg.server.admin!.host}:${admin.port}` }, 'admin API listening');
  if (opts.configFile && opts.watchConfig) reloader.watch();

  const stopCalls = (graceMs: number, onForce: () => void) => drainGrpc(grpc.server, graceMs, onForce);
  const announce = [refreshHealth, () => health.close(), () => reloader.close(), () => storeHealth.stop()];
  const closers = [admin, authzHttp, http, pool, decider, store, cache];
  let closed: Promise<void> | undefined;
  return {
    grpcPort: grpc.port,
    httpPort: http.port,
    authzHttpPort: authzHttp?.port,
    adminPort: admin?.port,
    decider,
    store,
    metrics,
    health,
    logger: log,
    reload: reloader.reload,
    inflight: () => inflight.count,
    serving,
    close(graceMs = 10_000) {
      closed ??= drain({ log, inflight, announce, stopCalls, closers }, graceMs);
      return closed;
    },
  };
}

/** The metrics and probe listener, with the status /readyz reports. */
function startOpsHttp(
  cfg: Config,
  o: {
    metrics: Metrics;
    serving: () => boolean;
    inflight: Inflight;
    storeHealth: StoreHealth;
    store: Store;
    decider: Decider;
    reloader: ConfigReloader;
  },
) {
  const { inflight, decider } = o;
  const status = () => ({
    draining: inflight.closing,
    store: { kind: o.store.kind, usable: o.storeHealth.up, breaker: decider.breaker.current },
    on_store_failure: decider.config.store.onStoreFailure,
    config: { limits: decider.config.limits.length, loaded_at: o.reloader.loadedAt.toISOString() },
    inflight: inflight.count,
  });
  const { httpPort: port, httpHost: host } = cfg.server;
  return startHttp({ port, host, metrics: o.metrics, ready: o.serving, status });
}

/** The response phase: a Settler over the decider's stores, and the ext_proc handler feeding it. */
function responsePhase(o: {
  decider: Decider;
  metrics: Metrics;
  log: Logger;
  pool?: TokenPool;
  onSettled?: (e: SettledEvent) => void;
  /** The answer cache's fill from answered calls (when cache: is configured). */
  fill?: Parameters<typeof extProcHandler>[0]['fill'];
}) {
  const { decider } = o;
  const settler = new Settler({
    store: () => decider.guard.store,
    local: () => decider.guard.local,
    config: () => decider.config,
    forget: (keys) => decider.denyCache.forget(keys),
    onSettled: withHook(settleObserver(o.metrics, o.log, decider), o.onSettled),
  });
  // settle.max_buffered_bytes: response bytes held across ext_proc streams (reload applies it)
  const budget = new ResponseBudget(decider.config.settle.maxBufferedBytes);
  const process = extProcHandler({ settler, count: outputCounter(o.pool), budget, fill: o.fill });
  return { process, budget };
}

/** The HTTP authorization mode and the admin API: each its own listener, only when configured. */
async function optionalListeners(
  cfg: Config,
  d: Omit<Parameters<typeof startAuthzHttp>[0], 'port' | 'host'> &
    Omit<Parameters<typeof startAdmin>[0], 'token' | 'port' | 'host'>,
  adminSecret: string,
) {
  const authzHttp = cfg.server.httpAuthz
    ? await startAuthzHttp({ ...cfg.server.httpAuthz, ...d })
    : undefined;
  const admin = cfg.server.admin
    ? await startAdmin({ ...cfg.server.admin, ...d, token: adminSecret })
    : undefined;
  return { authzHttp, admin };
}

/** The one start-up line: where each listener is, which store, how many limits. */
function logServing(
  log: Logger,
  cfg: Config,
  at: { grpc: number; http: number; authz?: number; store: string },
) {
  log.info(
    {
      grpc: `${cfg.server.grpcHost}:${at.grpc}`,
      http: `${cfg.server.httpHost ?? '*'}:${at.http}`,
      http_authz: at.authz !== undefined ? `${cfg.server.httpAuthz!.host}:${at.authz}` : 'off',
      store: at.store,
      limits: cfg.limits.length,
    },
    'tollgate serving',
  );
}

/** An observer followed by an optional extra hook (tests). */
function withHook<T>(first: (e: T) => void, then?: (e: T) => void): (e: T) => void {
  return then
    ? (e) => {
        first(e);
        then(e);
      }
    : first;
}
