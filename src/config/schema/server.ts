/**
 * `server`: listeners, body and decision bounds, estimates, HTTP/2 and pacing tuning.
 *
 * Listeners (where each port is bound). The authorization listeners decide whose budget a call
 * spends, so they are the ones to keep private:
 *   grpc_host / grpc_port   ext_authz gRPC + grpc.health.v1            (default 0.0.0.0:9191)
 *   http_host / http_port   /metrics, /healthz, /readyz only            (default all interfaces :8181)
 *   http_authz              the HTTP authorization mode: off unless set; { port, host } with host
 *                           127.0.0.1 unless told otherwise
 *   admin                   the admin API (usage, credits, resets; src/admin/): off unless set;
 *                           { port, host } with host 127.0.0.1 unless told otherwise; every call needs
 *                           TOLLGATE_ADMIN_TOKEN
 */
import { z } from 'zod';
import {
  checkOverload,
  defaultMaxBufferedBytes,
  OVERLOAD_BUDGET_DEADLINES,
  overloadFields,
} from '../overload.js';
import { always, bool, duration, int, mapping, num, oneOf, problem, str, whenValid } from './fields.js';

/** HTTP/2's initial flow-control window (RFC 9113; Node's default) and its maximum. */
export const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;
/** Decisions started per event-loop turn (server.checks_per_turn); see README, Envoy, "Bursts". */
export const DEFAULT_CHECKS_PER_TURN = 4;
/** The loopback address the HTTP authorization mode binds to unless told otherwise. */
export const AUTHZ_DEFAULT_HOST = '127.0.0.1';

export interface HttpAuthzListener {
  host: string;
  port: number;
}

const host = () => str('an address to bind to (e.g. 127.0.0.1, 0.0.0.0, ::)', /^[A-Za-z0-9.:%_-]{1,253}$/);
const PORT = 'expected a port from 0 to 65535';

/** `{ port, host }` (or false): an opt-in listener of its own (`what` has its own port). */
const listenerSchema = (what: string) =>
  z
    .union(
      [
        z.literal(false),
        mapping({
          port: z
            .number({
              error: (iss) => (iss.input === undefined ? `${PORT} (${what} has its own port)` : PORT),
            })
            .int({ error: PORT })
            .min(0, { error: PORT })
            .max(65535, { error: PORT }),
          host: host().default(AUTHZ_DEFAULT_HOST),
        }),
      ],
      { error: 'expected a mapping { port, host } (or false)' },
    )
    .transform((a): HttpAuthzListener | undefined => (a === false ? undefined : a));

/** `http_authz: { port, host }` (or false): the HTTP authorization mode's own listener. */
const httpAuthzSchema = listenerSchema('the HTTP authorization mode');

/** Two listeners on one fixed port would fail at start-up; say so at validation instead. */
function checkPortClash(
  s: { grpc_port: number; http_port: number; http_authz?: HttpAuthzListener; admin?: HttpAuthzListener },
  ctx: z.core.$RefinementCtx,
): void {
  const admin = s.admin?.port;
  if (admin && [s.http_port, s.grpc_port, s.http_authz?.port].includes(admin))
    problem(ctx, ['admin', 'port'], `expected a port of its own (not another listener's), got ${admin}`);
  const a = s.http_authz?.port;
  if (a && (a === s.http_port || a === s.grpc_port))
    problem(
      ctx,
      ['http_authz', 'port'],
      `expected a port of its own (not the ${a === s.http_port ? 'metrics port server.http_port' : 'gRPC port'}), got ${a}`,
    );
  if (s.http_port && s.http_port === s.grpc_port)
    problem(ctx, ['http_port'], `expected a port other than server.grpc_port, got ${s.http_port}`);
}

export const serverSchema = mapping({
  grpc_host: host().default('0.0.0.0'),
  grpc_port: int(0, 65535).default(9191),
  http_host: host().optional(),
  http_port: int(0, 65535).default(8181),
  http_authz: httpAuthzSchema.optional(),
  admin: listenerSchema('the admin API').optional(),
  max_body_bytes: int(1024, 256 * 1024 * 1024).default(8 * 1024 * 1024),
  decision_deadline: duration('50ms').prefault('50ms'),
  non_llm_paths: oneOf(['allow', 'deny']).default('allow'),
  bytes_per_token: num(0.5).default(4),
  image_tokens: int(0, 100_000).default(765),
  default_max_output_tokens: int(1, 10_000_000).default(4096),
  max_concurrent_streams: int(1, 100_000).default(128),
  http2_stream_window: int(DEFAULT_WINDOW, MAX_WINDOW).default(DEFAULT_WINDOW),
  http2_connection_window: int(DEFAULT_WINDOW, MAX_WINDOW).default(DEFAULT_WINDOW),
  checks_per_turn: int(0, 100_000).default(DEFAULT_CHECKS_PER_TURN),
  grpc_direct_check: bool().default(true),
  grpc_direct_process: bool().default(true),
  partial_body: oneOf(['costliest', 'deny']).default('costliest'),
  ...overloadFields,
})
  .superRefine(checkOverload, always)
  .superRefine(checkPortClash, whenValid)
  .transform((s) => ({
    /** Bind address of the gRPC port (server.grpc_host). */
    grpcHost: s.grpc_host,
    grpcPort: s.grpc_port,
    /** Bind address of the metrics/probe port (server.http_host); undefined = every interface. */
    httpHost: s.http_host as string | undefined,
    /** The metrics/probe port: /metrics, /healthz, /readyz only. */
    httpPort: s.http_port,
    /** The HTTP authorization mode's own listener (server.http_authz); undefined = off. */
    httpAuthz: s.http_authz as HttpAuthzListener | undefined,
    /** The admin API's own listener (server.admin; src/admin/); undefined = off. */
    admin: s.admin as HttpAuthzListener | undefined,
    /** Largest request body we accept (bytes); the gRPC receive limit is set above it. */
    maxBodyBytes: s.max_body_bytes,
    /** The whole decision answers within this many ms, even when the store hangs. */
    decisionDeadlineMs: s.decision_deadline,
    /** What to do with requests whose path is not an LLM API. */
    nonLlmPaths: s.non_llm_paths,
    /** Bytes per token used to estimate cost when the body is missing or partial. */
    bytesPerToken: s.bytes_per_token,
    /** Flat token estimate per image part. */
    imageTokens: s.image_tokens,
    /** Fallback default for max output tokens when neither request nor model config gives one. */
    defaultMaxOutputTokens: s.default_max_output_tokens,
    /**
     * HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS per gRPC connection: checks a client may have open on one
     * connection. Bounds the requests (and bodies) buffered here when checks arrive faster than they
     * are decided; the rest wait in the client.
     */
    maxConcurrentStreams: s.max_concurrent_streams,
    /**
     * At most this many decisions start per event-loop turn; later checks of a burst wait for the next
     * turns, so the answers decided so far go out meanwhile (src/decision/pacer.ts). 0 = no pacing.
     */
    checksPerTurn: s.checks_per_turn,
    /** server.grpc_direct_check: Check answered straight from HTTP/2, not through grpc-js's call layer. */
    grpcDirectCheck: s.grpc_direct_check,
    /** server.grpc_direct_process: ext_proc Process read and answered straight from HTTP/2 likewise. */
    grpcDirectProcess: s.grpc_direct_process,
    /** HTTP/2 initial stream window advertised to gRPC clients (bytes; Node's default 65535). */
    http2StreamWindow: s.http2_stream_window,
    /** HTTP/2 connection window (bytes; Node's default 65535). */
    http2ConnectionWindow: s.http2_connection_window,
    /**
     * server.partial_body: a body tollgate cannot read in full (partial, missing, too large) is charged
     * as the costliest configured model (`costliest`) or refused with 413 (`deny`).
     */
    partialBody: s.partial_body,
    /**
     * Longest a check waits for a store that is answering (our own backlog), from its arrival; then it is
     * shed with a retryable 503 `overloaded` (docs/overload.md). Keep below Envoy's ext_authz timeout.
     */
    overloadBudgetMs: s.overload_budget ?? OVERLOAD_BUDGET_DEADLINES * s.decision_deadline,
    /** Request bytes buffered at once across all direct-path gRPC streams; past it new streams are refused. */
    maxBufferedBytes:
      (s.max_buffered_bytes as number | undefined) ?? defaultMaxBufferedBytes(s.max_body_bytes),
  }));

export type ServerConfig = z.output<typeof serverSchema>;
