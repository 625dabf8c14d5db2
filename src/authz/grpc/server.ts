/**
 * The gRPC server: ext_authz Check (the lean codec through grpc-js, and the direct Check path on
 * HTTP/2 when server.grpc_direct_check), ext_proc Process (the response phase, src/settle/ext-proc.ts;
 * through grpc-js, and the direct path on HTTP/2 when server.grpc_direct_process), grpc.health.v1, TLS,
 * flow-control windows, the receive limit and the buffer budget. The direct paths hand every other
 * call to grpc-js.
 */
import * as grpc from '@grpc/grpc-js';
import { receiveLimit } from '../../config/overload.js';
import type { Config } from '../../config/types.js';
import type { CheckInput } from '../../decision/types.js';
import type { Logger } from '../../ops/log.js';
import type { ProcessStream } from '../../settle/ext-proc.js';
import type { AnswerCheck } from '../answer.js';
import { type BufferBudget, type DirectAnswer, type DirectRoutes, serveDirectly } from './direct.js';
import { serveProcess } from './direct-process.js';
import { EXT_PROC_SERVICE, loadExtProcPackages } from './ext-proc-protos.js';
import { tuneFlowControl } from './flow-control.js';
import type { HealthService } from './health.js';
import { loadGrpcPackages } from './protos.js';
import { type GrpcTlsFiles, grpcServerCredentials, grpcTlsFromEnv } from './tls.js';
import { decodeCheckInput, leanAuthorization } from './wire.js';

const AUTHZ_SERVICE = 'envoy.service.auth.v3.Authorization';

export interface GrpcServerOptions {
  config: Config;
  /** undefined = from TOLLGATE_TLS_* env, false = plaintext. */
  tls: GrpcTlsFiles | false | undefined;
  health: HealthService;
  /** server.max_buffered_bytes: request bytes held across Check streams. */
  buffered: BufferBudget;
  answer: AnswerCheck;
  begin: () => boolean;
  end: () => void;
  log: Logger;
  /** The ext_proc Process handler (src/settle/ext-proc.ts); the service is not offered without it. */
  process?: (call: ProcessStream) => void;
}

/** Report SERVING / NOT_SERVING for the server as a whole and for the Authorization service. */
export function setServing(health: HealthService, serving: boolean): void {
  const st = serving ? 'SERVING' : 'NOT_SERVING';
  health.set('', st);
  health.set(AUTHZ_SERVICE, st);
  health.set(EXT_PROC_SERVICE, st);
}

export async function startGrpc(o: GrpcServerOptions): Promise<{ server: grpc.Server; port: number }> {
  const cfg = o.config.server;
  const maxReceive = receiveLimit(cfg.maxBodyBytes);
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
    'grpc.max_concurrent_streams': cfg.maxConcurrentStreams,
    // Not 'grpc.enable_channelz': 0 — it would save a little per call, but grpc-js (1.14) then stops
    // tracking sessions for forceShutdown, so the shutdown grace period could not cancel stuck calls
    // (test/ops-lifecycle.test.ts catches it).
  });
  addServices(server, o);
  const port = await new Promise<number>((resolve, reject) =>
    server.bindAsync(
      `${cfg.grpcHost}:${cfg.grpcPort}`,
      grpcServerCredentials(o.tls === undefined ? grpcTlsFromEnv() : o.tls || undefined),
      (err, port) => (err ? reject(err) : resolve(port)),
    ),
  );
  if (!tuneFlowControl(server, cfg.http2StreamWindow, cfg.http2ConnectionWindow))
    o.log.warn('could not set the HTTP/2 flow-control windows (grpc-js internals changed): using 64 KiB');
  // Check and Process straight from HTTP/2 (direct.ts, direct-process.ts): same answers, without
  // grpc-js's per-call (and per-message) layer.
  const process = o.process;
  const routes: DirectRoutes = {
    check: cfg.grpcDirectCheck ? { handle: directHandler(o), budget: o.buffered } : undefined,
    process:
      cfg.grpcDirectProcess && process ? (stream) => serveProcess(stream, process, maxReceive) : undefined,
  };
  if ((routes.check || routes.process) && !serveDirectly(server, routes, maxReceive))
    o.log.warn('could not serve Check and Process directly (grpc-js internals changed): grpc-js serves them');
  return { server, port };
}

/**
 * Lean codec on Check (wire.ts): bytes → CheckInput, Decision → bytes. grpc-js serves it when
 * server.grpc_direct_check is off, and the calls the direct path hands back (compressed ones).
 */
function addServices(server: grpc.Server, o: GrpcServerOptions): void {
  const pk = loadGrpcPackages();
  const { answer, begin, end } = o;
  server.addService(leanAuthorization(pk.authorization), {
    Check: (call: grpc.ServerUnaryCall<CheckInput, Buffer>, cb: grpc.sendUnaryData<Buffer>) => {
      if (!begin()) return cb({ code: grpc.status.UNAVAILABLE, details: 'tollgate is shutting down' });
      answer(call.request, performance.now(), false)
        .then((response) => cb(null, response))
        .finally(end);
    },
  });
  const process = o.process;
  if (process)
    server.addService(loadExtProcPackages().externalProcessor, {
      Process: (call: grpc.ServerDuplexStream<unknown, unknown>) => process(call as unknown as ProcessStream),
    });
  server.addService(pk.health, o.health.handlers());
}

function directHandler(o: GrpcServerOptions): (message: Buffer) => Promise<DirectAnswer> {
  const { answer, begin, end } = o;
  return async (message: Buffer): Promise<DirectAnswer> => {
    const t0 = performance.now();
    let input: CheckInput;
    try {
      input = decodeCheckInput(message);
    } catch {
      return { ok: false, code: grpc.status.INTERNAL, details: 'Error deserializing request' }; // as grpc-js
    }
    if (!begin()) return { ok: false, code: grpc.status.UNAVAILABLE, details: 'tollgate is shutting down' };
    try {
      return { ok: true, frame: await answer(input, t0, true) };
    } finally {
      end();
    }
  };
}

/**
 * Stop taking calls (GOAWAY; new calls get UNAVAILABLE) and let in-flight ones finish: tryShutdown
 * waits for every open HTTP/2 stream; forceShutdown cancels them at the deadline (`onForce` first).
 */
export function drainGrpc(server: grpc.Server, graceMs: number, onForce: () => void): Promise<void> {
  return new Promise<void>((resolve) => {
    const timer = setTimeout(() => {
      onForce();
      server.forceShutdown();
      resolve();
    }, graceMs);
    server.tryShutdown(() => {
      clearTimeout(timer);
      resolve();
    });
  });
}
