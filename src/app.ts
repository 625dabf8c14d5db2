/**
 * Assembly: config + store + decider + gRPC (ext_authz, health) + HTTP (health, metrics) + the HTTP
 * authorization mode on its own listener when configured.
 * `startApp` is what `tollgate serve` and the tests run.
 */
import { createHash } from 'node:crypto';
import { type FSWatcher, readFileSync, watch } from 'node:fs';
import { basename, dirname } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { BufferBudget, type DirectAnswer, serveCheckDirectly } from './authz/grpc/direct.js';
import { tuneFlowControl } from './authz/grpc/flow-control.js';
import { HealthService } from './authz/grpc/health.js';
import { loadGrpcPackages } from './authz/grpc/protos.js';
import { type GrpcTlsFiles, grpcServerCredentials, grpcTlsFromEnv } from './authz/grpc/tls.js';
import { decodeCheckInput, encodeCheckResponse, leanAuthorization } from './authz/grpc/wire.js';
import { startAuthzHttp } from './authz/http.js';
import { loadConfig } from './config/load.js';
import { receiveLimit } from './config/overload.js';
import type { Config } from './config/types.js';
import { Decider } from './decision/decide.js';
import type { CheckInput, Decision } from './decision/types.js';
import { TokenPool } from './offload/pool.js';
import { startHttp } from './ops/http.js';
import { createLogger, type Logger } from './ops/log.js';
import { Metrics, outcomeOf } from './ops/metrics.js';
import { registerMemoryStoreMetrics } from './ops/metrics-memory.js';
import { OverloadMetrics } from './ops/overload-metrics.js';
import { settings } from './settings.js';
import { createValkeyStore } from './store/connect.js';
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

/** How often an unusable store is pinged to find out when it is back (health only). */
const STORE_PROBE_MS = 1000;
const AUTHZ_SERVICE = 'envoy.service.auth.v3.Authorization';

export async function startApp(opts: AppOptions): Promise<App> {
  const log = opts.logger ?? createLogger();
  const metrics = new Metrics({ tenantLabel: settings().metricsTenantLabel });
  let cfg = opts.config;
  metrics.configLoaded(cfg);
  /** Last known store reachability: start-up connect, breaker transitions, probes while down. */
  let storeUp = true;

  let store: Store;
  if (opts.store) store = opts.store;
  else if (opts.valkeyUrl) {
    const vs = createValkeyStore(cfg.store.client, {
      url: opts.valkeyUrl,
      timeoutMs: cfg.store.timeoutMs,
      caFile: opts.valkeyCaFile,
    });
    try {
      await vs.connect();
      log.info({ store: 'valkey', client: cfg.store.client }, 'connected to Valkey; check script loaded');
    } catch (err) {
      storeUp = false;
      log.warn(
        { err: (err as Error).message, policy: cfg.store.onStoreFailure },
        'Valkey not reachable at start; serving per on_store_failure until it is',
      );
    }
    store = vs;
  } else {
    store = new MemoryStore(Date.now, 1, cfg.store.memoryMaxKeys);
    log.warn('no VALKEY_URL: using the in-memory store (single replica only: limits are per process)');
  }

  const pool = opts.tokenWorkers === 0 ? undefined : new TokenPool(opts.tokenWorkers);
  const decider = new Decider(cfg, {
    store,
    pool,
    onBreakerChange: (to, from) => {
      metrics.setBreaker(to);
      if (to === 'open') setStoreUp(false);
      else if (to === 'closed') setStoreUp(true);
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
  const health = new HealthService();
  const pk = loadGrpcPackages();
  const maxReceive = receiveLimit(cfg.server.maxBodyBytes);
  const server = new grpc.Server({
    // grpc-js refuses messages over 4 MiB by default; a big prompt would become an RPC error that
    // Envoy's failure_mode_allow lets through unmetered. Accept the largest body plus headroom.
    // Bodies above max_body_bytes (and below this) are answered with an estimate from their size.
    'grpc.max_receive_message_length': maxReceive,
    'grpc.max_send_message_length': 4 * 1024 * 1024,
    // Overload bound: without it a client sending faster than checks are decided keeps opening
    // streams, and every received body waits here (medium bench at 1.4x capacity: RSS 110 -> 310 MB
    // in 14 s, all of it request buffers). With it, excess checks wait in the client (Envoy: its
    // pool and circuit breakers, under its ext_authz timeout).
    'grpc.max_concurrent_streams': cfg.server.maxConcurrentStreams,
    // Not 'grpc.enable_channelz': 0 — it would save a little per call, but grpc-js (1.14) then stops
    // tracking sessions for forceShutdown, so the shutdown grace period could not cancel stuck calls
    // (test/ops-lifecycle.test.ts catches it).
  });
  let inflight = 0;
  let drained: (() => void) | undefined;
  let closing = false;
  const begin = (): boolean => {
    if (closing) return false;
    inflight++;
    return true;
  };
  const end = () => {
    inflight--;
    if (inflight === 0 && drained) drained();
  };

  // grpc.health.v1 + /readyz: SERVING once the config is loaded (it is, by now) and the store is
  // usable or on_store_failure lets us answer without it; NOT_SERVING while draining.
  const serving = () => !closing && (storeUp || decider.config.store.onStoreFailure !== 'deny');
  const refreshHealth = () => {
    const st = serving() ? 'SERVING' : 'NOT_SERVING';
    health.set('', st);
    health.set(AUTHZ_SERVICE, st);
  };
  let probe: NodeJS.Timeout | undefined;
  function setStoreUp(up: boolean): void {
    if (storeUp === up) return;
    storeUp = up;
    if (started) refreshHealth();
    if (!up && !probe && store.kind === 'valkey') {
      probe = setInterval(() => {
        store.ping().then(
          () => setStoreUp(true),
          () => {},
        );
      }, STORE_PROBE_MS);
      probe.unref();
    } else if (up && probe) {
      clearInterval(probe);
      probe = undefined;
    }
  }
  metrics.breakerSource = () => decider.breaker.current;
  metrics.inflightSource = () => inflight;
  metrics.forgivenSource = () => decider.breaker.forgiven;
  metrics.deferredSource = () => decider.pacer.deferred;
  registerMemoryStoreMetrics(metrics.registry, () => ({
    memory: store instanceof MemoryStore ? store : undefined,
    local: decider.config.store.onStoreFailure === 'local' ? decider.localStore : undefined,
  }));
  let started = false;
  if (!storeUp) {
    storeUp = true;
    setStoreUp(false);
  }
  const observe = (d: Decision, seconds: number, requestId: string | undefined) => {
    const c = decider.config;
    metrics.observe(c, d, seconds);
    const s = d.stats;
    // One info line per call that did not simply pass: denied, rerouted, degraded, queued, shadow-denied.
    // Plain allows only at debug (and the line is not even built unless debug is on: hot path).
    const important = outcomeOf(d) !== 'allow' || d.reason === 'shadow';
    if (!important && !log.isLevelEnabled('debug')) return;
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
    // Never the body, prompt text, headers or the raw tenant id.
    if (important) log.info(line, 'decision');
    else log.debug(line, 'decision');
  };

  /**
   * One decided Check: CheckInput → CheckResponse bytes (`framed`: as a gRPC message frame, for the
   * direct path). Never rejects; call between begin() and end().
   */
  const answerCheck = async (input: CheckInput, t0: number, framed: boolean): Promise<Buffer> => {
    const requestId = input.headers['x-request-id'];
    let d: Decision;
    try {
      d = await decider.decide(input);
    } catch (err) {
      log.error({ err: (err as Error).message, request_id: requestId }, 'decision failed unexpectedly');
      d = internalErrorDecision(decider.config);
    }
    try {
      observe(d, (performance.now() - t0) / 1000, requestId);
      return encodeCheckResponse(d, framed);
    } catch (err) {
      log.error({ err: (err as Error).message, request_id: requestId }, 'answering failed unexpectedly');
      return encodeCheckResponse(internalErrorDecision(decider.config), framed);
    }
  };

  // Lean codec on Check (src/authz/grpc/wire.ts): bytes → CheckInput, Decision → bytes. grpc-js serves it
  // when server.grpc_direct_check is off, and the calls the direct path hands back (compressed ones).
  server.addService(leanAuthorization(pk.authorization), {
    Check: (call: grpc.ServerUnaryCall<CheckInput, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      if (!begin()) return cb({ code: grpc.status.UNAVAILABLE, details: 'tollgate is shutting down' });
      answerCheck(call.request, performance.now(), false)
        .then((response) => cb(null, response))
        .finally(end);
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
  if (!tuneFlowControl(server, cfg.server.http2StreamWindow, cfg.server.http2ConnectionWindow))
    log.warn('could not set the HTTP/2 flow-control windows (grpc-js internals changed): using 64 KiB');
  // Check straight from HTTP/2 (src/authz/grpc/direct.ts): same answers, without grpc-js's per-call layer.
  if (
    cfg.server.grpcDirectCheck &&
    !serveCheckDirectly(
      server,
      async (message: Buffer): Promise<DirectAnswer> => {
        const t0 = performance.now();
        let input: CheckInput;
        try {
          input = decodeCheckInput(message);
        } catch {
          return { ok: false, code: grpc.status.INTERNAL, details: 'Error deserializing request' }; // as grpc-js
        }
        if (!begin())
          return { ok: false, code: grpc.status.UNAVAILABLE, details: 'tollgate is shutting down' };
        try {
          return { ok: true, frame: await answerCheck(input, t0, true) };
        } finally {
          end();
        }
      },
      maxReceive,
      buffered,
    )
  )
    log.warn('could not serve Check directly (grpc-js internals changed): grpc-js serves it');

  let loadedAt = new Date();
  let closed: Promise<void> | undefined;
  const http = await startHttp({
    port: cfg.server.httpPort,
    host: cfg.server.httpHost,
    metrics,
    ready: serving,
    status: () => ({
      draining: closing,
      store: { kind: store.kind, usable: storeUp, breaker: decider.breaker.current },
      on_store_failure: decider.config.store.onStoreFailure,
      config: { limits: decider.config.limits.length, loaded_at: loadedAt.toISOString() },
      inflight,
    }),
  });
  // The HTTP authorization mode: its own listener, only when configured (server.http_authz).
  const authzHttp = cfg.server.httpAuthz
    ? await startAuthzHttp({ ...cfg.server.httpAuthz, decider, observe, begin, end })
    : undefined;
  started = true;
  refreshHealth();
  log.info(
    {
      grpc: `${cfg.server.grpcHost}:${grpcPort}`,
      http: `${cfg.server.httpHost ?? '*'}:${http.port}`,
      http_authz: authzHttp ? `${cfg.server.httpAuthz!.host}:${authzHttp.port}` : 'off',
      store: store.kind,
      limits: cfg.limits.length,
    },
    'tollgate serving',
  );

  let watcher: FSWatcher | undefined;
  const digest = (file: string): string | undefined => {
    try {
      return createHash('sha256').update(readFileSync(file)).digest('hex');
    } catch {
      return undefined;
    }
  };
  // The config file plus its key map (identity.key_map): a change to either reloads.
  const digestAll = (): string => `${digest(opts.configFile!)}:${cfg.keyMap ? digest(cfg.keyMap.file) : ''}`;
  let loadedDigest = opts.configFile ? digestAll() : undefined;
  /**
   * Validate the file completely, then swap it in with one assignment (Decider.setConfig): a check
   * in flight keeps the config it started with, the next one sees the new one; never a mix. Limit
   * state lives in the store under the limit names, so it carries over.
   */
  const reload = (): boolean => {
    if (!opts.configFile || closing) return false;
    try {
      const next = loadConfig(opts.configFile);
      const restartOnly = restartRequired(cfg, next);
      cfg = next;
      decider.setConfig(next);
      loadedDigest = digestAll();
      loadedAt = new Date();
      metrics.reloaded(true, next);
      log.info({ file: opts.configFile, limits: next.limits.length }, 'configuration reloaded');
      if (restartOnly.length)
        log.warn({ fields: restartOnly }, 'configuration fields changed that only apply after a restart');
      refreshHealth();
      return true;
    } catch (err) {
      metrics.reloaded(false);
      log.error(
        { file: opts.configFile, err: (err as Error).message },
        'configuration reload failed; keeping the running configuration',
      );
      return false;
    }
  };
  if (opts.configFile && opts.watchConfig) {
    // Watch the directory, not the file: editors replace the file (rename) and Kubernetes ConfigMap
    // volumes swap the `..data` symlink atomically; both break a watch on the file itself.
    // Events are debounced (a swap or a save is several events) and a reload only happens when the
    // bytes changed; SIGHUP always reloads.
    let timer: NodeJS.Timeout | undefined;
    const file = basename(opts.configFile);
    const configFile = opts.configFile;
    watcher = watch(dirname(configFile), (_ev, name) => {
      const keyMap =
        cfg.keyMap && dirname(cfg.keyMap.file) === dirname(configFile) ? basename(cfg.keyMap.file) : '';
      if (name && name !== file && name !== '..data' && name !== keyMap) return;
      clearTimeout(timer);
      timer = setTimeout(() => {
        if (digestAll() !== loadedDigest) reload();
      }, 100);
      timer.unref();
    });
    watcher.on('error', (err) => log.warn({ err: err.message }, 'config watch failed; SIGHUP still reloads'));
    watcher.unref();
  }

  return {
    grpcPort,
    httpPort: http.port,
    authzHttpPort: authzHttp?.port,
    decider,
    store,
    metrics,
    health,
    logger: log,
    reload,
    inflight: () => inflight,
    serving,
    close(graceMs = 10_000) {
      closed ??= shutdown(graceMs);
      return closed;
    },
  };

  async function shutdown(graceMs: number): Promise<void> {
    const t0 = Date.now();
    closing = true;
    // 1. Tell health checkers (Envoy's, the kubelet's gRPC probe, /readyz) first, then end the Watch
    //    streams: an open stream would hold tryShutdown open for the whole grace period.
    refreshHealth();
    health.close();
    watcher?.close();
    if (probe) clearInterval(probe);
    log.info({ inflight, grace_ms: graceMs }, 'draining: NOT_SERVING, refusing new checks');
    // 2. Stop taking calls (GOAWAY; new calls get UNAVAILABLE) and let in-flight ones finish.
    //    tryShutdown waits for every open HTTP/2 stream; forceShutdown cancels them at the deadline.
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        log.warn({ inflight }, 'grace period over: cancelling the remaining calls');
        server.forceShutdown();
        resolve();
      }, graceMs);
      server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    // HTTP-mode checks are counted in `inflight` too; wait for them within what is left of the grace.
    if (inflight > 0)
      await new Promise<void>((r) => {
        drained = r;
        setTimeout(r, Math.max(0, graceMs - (Date.now() - t0))).unref();
      });
    // 3. Then the HTTP ports (/readyz said 503 and /metrics stayed scrapable during the drain).
    await authzHttp?.close();
    await http.close();
    await pool?.close();
    await decider.close();
    await store.close();
    log.info({ ms: Date.now() - t0, inflight }, 'drained');
    log.flush?.();
  }
}

/** Fields a reload cannot apply to a running server (ports, gRPC message size). */
function restartRequired(a: Config, b: Config): string[] {
  const out: string[] = [];
  if (a.server.grpcPort !== b.server.grpcPort || a.server.grpcHost !== b.server.grpcHost)
    out.push('server.grpc_port');
  if (a.server.httpPort !== b.server.httpPort || a.server.httpHost !== b.server.httpHost)
    out.push('server.http_port / http_host');
  if (JSON.stringify(a.server.httpAuthz) !== JSON.stringify(b.server.httpAuthz))
    out.push('server.http_authz');
  if (a.server.maxBodyBytes !== b.server.maxBodyBytes) out.push('server.max_body_bytes (gRPC receive limit)');
  if (a.server.maxConcurrentStreams !== b.server.maxConcurrentStreams)
    out.push('server.max_concurrent_streams');
  if (
    a.server.http2StreamWindow !== b.server.http2StreamWindow ||
    a.server.http2ConnectionWindow !== b.server.http2ConnectionWindow
  )
    out.push('server.http2_stream_window / http2_connection_window');
  if (a.server.grpcDirectCheck !== b.server.grpcDirectCheck) out.push('server.grpc_direct_check');
  if (a.store.client !== b.store.client) out.push('store.client');
  if (a.server.maxBufferedBytes !== b.server.maxBufferedBytes) out.push('server.max_buffered_bytes');
  return out;
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
