/**
 * Assembly: config + store + decider + gRPC (ext_authz, health) + HTTP (health, metrics, HTTP authz).
 * `startApp` is what `tollgate serve` and the tests run.
 */
import { type FSWatcher, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { loadConfig } from './config/load.js';
import type { Config } from './config/types.js';
import { Decider } from './decision/decide.js';
import type { Decision } from './decision/types.js';
import { HealthService } from './grpc/health.js';
import { loadGrpcPackages } from './grpc/protos.js';
import { type GrpcTlsFiles, grpcServerCredentials, grpcTlsFromEnv } from './grpc/tls.js';
import { toCheckInput, toCheckResponse } from './grpc/translate.js';
import { startHttp } from './http.js';
import { createLogger, type Logger } from './log.js';
import { Metrics } from './metrics.js';
import { MemoryStore } from './store/memory.js';
import type { Store } from './store/types.js';
import { ValkeyStore } from './store/valkey.js';
import { TokenPool } from './tokens/pool.js';

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
  httpPort: number;
  decider: Decider;
  store: Store;
  metrics: Metrics;
  health: HealthService;
  logger: Logger;
  /** Re-read configFile; keeps the old config when the new one is invalid. */
  reload(): boolean;
  /** NOT_SERVING, stop accepting, let in-flight calls finish (up to graceMs), close the store. */
  close(graceMs?: number): Promise<void>;
}

export async function startApp(opts: AppOptions): Promise<App> {
  const log = opts.logger ?? createLogger();
  const metrics = new Metrics();
  let cfg = opts.config;

  let store: Store;
  if (opts.store) store = opts.store;
  else if (opts.valkeyUrl) {
    const vs = new ValkeyStore({
      url: opts.valkeyUrl,
      timeoutMs: cfg.store.timeoutMs,
      caFile: opts.valkeyCaFile,
    });
    try {
      await vs.connect();
      log.info({ store: 'valkey' }, 'connected to Valkey; check script loaded');
    } catch (err) {
      log.warn(
        { err: (err as Error).message, policy: cfg.store.onStoreFailure },
        'Valkey not reachable at start; serving per on_store_failure until it is',
      );
    }
    store = vs;
  } else {
    store = new MemoryStore();
    log.warn('no VALKEY_URL: using the in-memory store (single replica only: limits are per process)');
  }

  const pool = opts.tokenWorkers === 0 ? undefined : new TokenPool(opts.tokenWorkers);
  const decider = new Decider(cfg, {
    store,
    pool,
    onBreakerChange: (to, from) => {
      metrics.setBreaker(to);
      const level = to === 'open' ? 'error' : 'warn';
      log[level](
        { breaker: to, from, policy: decider.config.store.onStoreFailure },
        `store circuit breaker ${to}`,
      );
    },
    onStoreCall: (s, ok) => metrics.storeCall(s, ok),
  });

  decider.warm();
  const health = new HealthService();
  const pk = loadGrpcPackages();
  const server = new grpc.Server({
    // grpc-js refuses messages over 4 MiB by default; a big prompt would become an RPC error that
    // Envoy's failure_mode_allow lets through unmetered. Accept the largest body plus headroom.
    'grpc.max_receive_message_length': cfg.server.maxBodyBytes + 1024 * 1024,
    'grpc.max_send_message_length': 4 * 1024 * 1024,
  });
  let inflight = 0;
  let drained: (() => void) | undefined;
  const observe = (d: Decision, seconds: number, requestId: string | undefined) => {
    const c = decider.config;
    metrics.observe(c, d, seconds);
    const s = d.stats;
    const line = {
      request_id: requestId,
      decision: d.kind,
      reason: d.reason,
      status: d.kind === 'deny' ? d.httpStatus : 200,
      tenant: s.tenantTag,
      model: s.model,
      chosen_model: s.chosenModel,
      prompt_tokens: s.promptTokens,
      reserved_tokens: s.reservedTokens,
      micros: s.micros,
      limit: s.limit,
      ms: Math.round(seconds * 1e6) / 1000,
    };
    if (d.kind === 'deny' || d.reason === 'rerouted' || d.reason === 'degraded' || d.reason === 'shadow')
      log.info(line, 'decision');
    else log.debug(line, 'decision');
  };

  server.addService(pk.authorization, {
    Check: (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => {
      inflight++;
      const t0 = performance.now();
      let requestId: string | undefined;
      void (async () => {
        let d: Decision;
        try {
          const input = toCheckInput(call.request);
          requestId = input.headers['x-request-id'];
          d = await decider.decide(input);
        } catch (err) {
          log.error({ err: (err as Error).message, request_id: requestId }, 'decision failed unexpectedly');
          d = internalErrorDecision(decider.config);
        }
        observe(d, (performance.now() - t0) / 1000, requestId);
        cb(null, toCheckResponse(d));
      })().finally(() => {
        inflight--;
        if (inflight === 0 && drained) drained();
      });
    },
  });
  server.addService(pk.health, health.handlers());

  const grpcPort = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      `${cfg.server.grpcHost}:${cfg.server.grpcPort}`,
      grpcServerCredentials(opts.tls === undefined ? grpcTlsFromEnv() : opts.tls || undefined),
      (err, port) => (err ? reject(err) : resolve(port)),
    ),
  );

  let closing = false;
  const http = await startHttp({
    port: cfg.server.httpPort,
    metrics,
    ready: () => !closing && health.status('') === 'SERVING',
    decider,
    observe,
  });
  health.set('', 'SERVING');
  health.set('envoy.service.auth.v3.Authorization', 'SERVING');
  log.info(
    { grpc_port: grpcPort, http_port: http.port, store: store.kind, limits: cfg.limits.length },
    'tollgate serving',
  );

  let watcher: FSWatcher | undefined;
  const reload = (): boolean => {
    if (!opts.configFile) return false;
    try {
      const next = loadConfig(opts.configFile);
      cfg = next;
      decider.setConfig(next);
      metrics.reloads.inc({ result: 'success' });
      log.info({ file: opts.configFile, limits: next.limits.length }, 'configuration reloaded');
      return true;
    } catch (err) {
      metrics.reloads.inc({ result: 'failure' });
      log.error(
        { file: opts.configFile, err: (err as Error).message },
        'configuration reload failed; keeping the running configuration',
      );
      return false;
    }
  };
  if (opts.configFile && opts.watchConfig) {
    // Watch the directory: Kubernetes ConfigMaps swap a symlink (..data) rather than writing the file.
    let timer: NodeJS.Timeout | undefined;
    const file = basename(opts.configFile);
    watcher = watch(dirname(opts.configFile), (_ev, name) => {
      if (name && name !== file && name !== '..data') return;
      clearTimeout(timer);
      timer = setTimeout(reload, 100);
    });
    watcher.unref();
  }

  return {
    grpcPort,
    httpPort: http.port,
    decider,
    store,
    metrics,
    health,
    logger: log,
    reload,
    async close(graceMs = 10_000) {
      if (closing) return;
      closing = true;
      health.set('', 'NOT_SERVING');
      health.set('envoy.service.auth.v3.Authorization', 'NOT_SERVING');
      watcher?.close();
      await new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.forceShutdown();
          resolve();
        }, graceMs);
        server.tryShutdown(() => {
          clearTimeout(timer);
          resolve();
        });
      });
      if (inflight > 0)
        await new Promise<void>((r) => {
          drained = r;
        });
      await http.close();
      await pool?.close();
      await decider.close();
      await store.close();
      health.close();
      log.flush?.();
    },
  };
}

function internalErrorDecision(cfg: Config): Decision {
  if (cfg.store.onStoreFailure === 'allow') {
    const h = { 'x-tollgate-degraded': 'internal-error' };
    return {
      kind: 'allow',
      reason: 'degraded',
      upstreamHeaders: h,
      responseHeaders: { ...h },
      removeHeaders: [],
      stats: {},
    };
  }
  return {
    kind: 'deny',
    reason: 'store-unavailable',
    httpStatus: 503,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({
      error: {
        message: 'Rate limiter internal error',
        type: 'server_error',
        code: 'internal_error',
        param: null,
      },
    }),
    stats: {},
  };
}
