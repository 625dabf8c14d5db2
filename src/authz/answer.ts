import type { Config } from '../config/types.js';
import type { Decider } from '../decision/decide.js';
import type { CheckInput, Decision } from '../decision/types.js';
import type { Logger } from '../ops/log.js';
import type { Observe } from '../ops/observe.js';
import { encodeCheckResponse } from './grpc/wire.js';

/** CheckInput → CheckResponse bytes (`framed`: as a gRPC message frame, for the direct path). */
export type AnswerCheck = (input: CheckInput, t0: number, framed: boolean) => Promise<Buffer>;

/**
 * One decided Check, observed (metrics, log line) and encoded. Never rejects: an unexpected error
 * becomes the internal-error decision. Call between Inflight.begin() and end().
 */
export function checkAnswerer(decider: Decider, observe: Observe, log: Logger): AnswerCheck {
  return async (input, t0, framed) => {
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
}

export function internalErrorDecision(cfg: Config): Decision {
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
