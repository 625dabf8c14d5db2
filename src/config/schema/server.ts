/** `server`: listeners, body and decision bounds, estimates, HTTP/2 and pacing tuning. */
import type { z } from 'zod';
import { bool, duration, int, mapping, num, oneOf, str } from './fields.js';

/** HTTP/2's initial flow-control window (RFC 9113; Node's default) and its maximum. */
export const DEFAULT_WINDOW = 65_535;
const MAX_WINDOW = 2 ** 31 - 1;
/** Decisions started per event-loop turn (server.checks_per_turn); see README, Envoy, "Bursts". */
export const DEFAULT_CHECKS_PER_TURN = 4;

export const serverSchema = mapping({
  grpc_host: str().default('0.0.0.0'),
  grpc_port: int(0, 65535).default(9191),
  http_port: int(0, 65535).default(8181),
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
}).transform((s) => ({
  grpcHost: s.grpc_host,
  grpcPort: s.grpc_port,
  httpPort: s.http_port,
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
  /** HTTP/2 initial stream window advertised to gRPC clients (bytes; Node's default 65535). */
  http2StreamWindow: s.http2_stream_window,
  /** HTTP/2 connection window (bytes; Node's default 65535). */
  http2ConnectionWindow: s.http2_connection_window,
}));

export type ServerConfig = z.output<typeof serverSchema>;
