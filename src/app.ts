/**
 * Assembly: config + store + decider + gRPC (ext_authz, health) + HTTP (health, metrics) + the HTTP
 * authorization mode on its own listener when configured.
 * `startApp` is what `tollgate serve` and the tests run.
 */
import type { Server } from '@grpc/grpc-js';
import { checkAnswerer } from './authz/answer.js';
import { BufferBudget } from './authz/grpc/direct.js';
import { HealthService } from './authz/grpc/health.js';
import { drainGrpc, setServing, startGrpc } from './authz/grpc/server.js';
import type { GrpcTlsFiles } from './authz/grpc/tls.js';
import { startAuthzHttp } from './authz/http.js';
import type { Config } from './config/types.js';
import { Decider } from './decision/decide.js';
import { TokenPool } from './offload/pool.js';
import { startHttp } from './ops/http.js';
import { Inflight } from './ops/inflight.js';
import { createLogger, type Logger } from './ops/log.js';
import { Metrics } from './ops/metrics.js';
import { registerMemoryStoreMetrics } from './ops/metrics-memory.js';
import { decisionObserver } from './ops/observe.js';
import { OverloadMetrics } from './ops/overload-metrics.js';
import { ConfigReloader } from './ops/reload.js';
import { openStore, StoreHealth } from './ops/store-health.js';
import { settings } from './settings.js';
import { MemoryStore } from './store/memory.js';
import type { Store } from './store/types.js';

export interface AppOptions {
  config: Config;
  /** File the config came from: enables reload (SIGHUP / file watch). */
  configFile?: string;
  valkeyUrl?: string;
  valkeyCaFile?: string;
  logger?: Logger;
  /** Use this store instead of building one from valkeyUrl. */
  store?: Store;
  /** Watch configFile for changes (ConfigMap symlink swaps included). */
  watchConfig?: boolean;
  /** Token counting worker threads (0 = count inline). */
  tokenWorkers?: number;
  /** gRPC server TLS (mTLS with clientCa); undefined = from TOLLGATE_TLS_* env, false = plaintext. */
  tls?: GrpcTlsFiles | false;
}

export interface App {
  grpcPort: number;
  /** The metrics/probe port (/metrics, /healthz, /readyz). */
  httpPort: number;
  /** The HTTP authorization mode's port; undefined when it is off (server.http_authz unset). */
  authzHttpPort?: number;
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
  metrics.configLoaded(cfg);
  const { store, up } = await openStore(opts, cfg, log);
  const storeHealth = new StoreHealth(store, up);
  const pool = opts.tokenWorkers === 0 ? undefined : new TokenPool(opts.tokenWorkers);
  const decider = new Decider(cfg, {
    store,
    pool,
    onBreakerChange: (to, from) => {
      metrics.setBreaker(to);
      if (to === 'open') storeHealth.set(false);
      else if (to === 'closed') storeHealth.set(true);
      const level = to === 'open' ? 'error' : 'warn';
      log[level](
        { breaker: to, from, policy: decider.config.store.onStoreFailure },
        `store circuit breaker ${to}`,
      );
    },
    onStoreCall: (s, ok) => metrics.storeCall(s, ok),
    onOverloaded: (stage) => overloadMetrics.shed(stage),
  });
  // server.max_buffered_bytes: request bytes held across gRPC Check streams (restart to change)
  const buffered = new BufferBudget(cfg.server.maxBufferedBytes);
  const overloadMetrics = new OverloadMetrics(metrics.registry, {
    storeInflight: () => decider.gate.active,
    storeWaiting: () => decider.gate.queued,
    bufferedBytes: () => buffered.used,
    refusedStreams: () => buffered.refused,
  });
  await decider.warm(); // before SERVING: the first checks must not pay for worker start-up

  const inflight = new Inflight();
  const health = new HealthService();
  // grpc.health.v1 + /readyz: SERVING once the config is loaded (it is, by now) and the store is
  // usable or on_store_failure lets us answer without it; NOT_SERVING while draining.
  const serving = () =>
    !inflight.closing && (storeHealth.up || decider.config.store.onStoreFailure !== 'deny');
  const refreshHealth = () => setServing(health, serving());
  metrics.breakerSource = () => decider.breaker.current;
  metrics.inflightSource = () => inflight.count;
  metrics.forgivenSource = () => decider.breaker.forgiven;
  metrics.deferredSource = () => decider.pacer.deferred;
  registerMemoryStoreMetrics(metrics.registry, () => ({
    memory: store instanceof MemoryStore ? store : undefined,
    local: decider.config.store.onStoreFailure === 'local' ? decider.localStore : undefined,
  }));

  const observe = decisionObserver(metrics, log, decider);
  const { begin, end } = inflight;
  const answer = checkAnswerer(decider, observe, log);
  const tls = opts.tls;
  const grpc = await startGrpc({ config: cfg, tls, health, buffered, answer, begin, end, log });
  const reloader = new ConfigReloader({
    config: cfg,
    file: opts.configFile,
    log,
    metrics,
    apply: (next) => {
      decider.setConfig(next);
      refreshHealth();
    },
    closing: () => inflight.closing,
  });
  const http = await startHttp({
    port: cfg.server.httpPort,
    host: cfg.server.httpHost,
    metrics,
    ready: serving,
    status: () => ({
      draining: inflight.closing,
      store: { kind: store.kind, usable: storeHealth.up, breaker: decider.breaker.current },
      on_store_failure: decider.config.store.onStoreFailure,
      config: { limits: decider.config.limits.length, loaded_at: reloader.loadedAt.toISOString() },
      inflight: inflight.count,
    }),
  });
  // The HTTP authorization mode: its own listener, only when configured (server.http_authz).
  const authzHttp = cfg.server.httpAuthz
    ? await startAuthzHttp({ ...cfg.server.httpAuthz, decider, observe, begin, end })
    : undefined;
  storeHealth.onChange = refreshHealth;
  refreshHealth();
  log.info(
    {
      grpc: `${cfg.server.grpcHost}:${grpc.port}`,
      http: `${cfg.server.httpHost ?? '*'}:${http.port}`,
      http_authz: authzHttp ? `${cfg.server.httpAuthz!.host}:${authzHttp.port}` : 'off',
      store: store.kind,
      limits: cfg.limits.length,
    },
    'tollgate serving',
  );
  if (opts.configFile && opts.watchConfig) reloader.watch();

  const parts: Parts = { log, inflight, refreshHealth, health, reloader, storeHealth, grpc: grpc.server };
  const closers = [authzHttp, http, pool, decider, store];
  let closed: Promise<void> | undefined;
  return {
    grpcPort: grpc.port,
    httpPort: http.port,
    authzHttpPort: authzHttp?.port,
    decider,
    store,
    metrics,
    health,
    logger: log,
    reload: reloader.reload,
    inflight: () => inflight.count,
    serving,
    close(graceMs = 10_000) {
      closed ??= shutdown(parts, closers, graceMs);
      return closed;
    },
  };
}

interface Parts {
  log: Logger;
  inflight: Inflight;
  refreshHealth: () => void;
  health: HealthService;
  reloader: ConfigReloader;
  storeHealth: StoreHealth;
  grpc: Server;
}

/** NOT_SERVING, stop accepting, let in-flight calls finish (up to graceMs), then close in order. */
async function shutdown(
  p: Parts,
  closers: ({ close(): Promise<void> | void } | undefined)[],
  graceMs: number,
): Promise<void> {
  const { log, inflight } = p;
  const t0 = Date.now();
  inflight.closing = true;
  // 1. Tell health checkers (Envoy's, the kubelet's gRPC probe, /readyz) first, then end the Watch
  //    streams: an open stream would hold tryShutdown open for the whole grace period.
  p.refreshHealth();
  p.health.close();
  p.reloader.close();
  p.storeHealth.stop();
  log.info({ inflight: inflight.count, grace_ms: graceMs }, 'draining: NOT_SERVING, refusing new checks');
  // 2. Stop taking calls (GOAWAY; new calls get UNAVAILABLE) and let in-flight ones finish.
  await drainGrpc(p.grpc, graceMs, () =>
    log.warn({ inflight: inflight.count }, 'grace period over: cancelling the remaining calls'),
  );
  // HTTP-mode checks are counted in `inflight` too; wait for them within what is left of the grace.
  await inflight.settled(graceMs - (Date.now() - t0));
  // 3. Then the HTTP ports (/readyz said 503 and /metrics stayed scrapable during the drain), the
  //    token pool, the decider, the store.
  for (const c of closers) await c?.close();
  log.info({ ms: Date.now() - t0, inflight: inflight.count }, 'drained');
  log.flush?.();
}
