/**
 * Envoy's ext_proc service (envoy.service.ext_proc.v3.ExternalProcessor/Process): one bidirectional
 * stream per HTTP call. Each ProcessingRequest feeds the call's SettleSession (session.ts); the stream's
 * end, cancellation or error ends the session, which settles once.
 *
 * Answers: with `observability_mode: true` (recommended) Envoy expects none and none are sent; without
 * it every message is answered at once with the empty ProcessingResponse of its kind (continue, no
 * mutation), before the message is read, so the response is never held up by settlement.
 *
 * The stream is typed structurally (what grpc-js's ServerDuplexStream offers): settlement speaks no
 * gRPC; src/authz/grpc/server.ts registers the handler with grpc-js, and src/authz/grpc/direct-process.ts
 * feeds it the streams it reads straight from HTTP/2 (server.grpc_direct_process).
 */
import { continueResponse, type ExtProcProcessingRequest } from './messages.js';
import {
  type CacheFill,
  type CountOutput,
  type ResponseBudget,
  type SessionSettler,
  SettleSession,
} from './session.js';
import type { SettleOutcomeLabel } from './settler.js';

/** The part of a server-side bidi stream the handler uses. */
export interface ProcessStream {
  on(event: 'data', listener: (req: ExtProcProcessingRequest) => void): unknown;
  on(event: 'end' | 'cancelled' | 'close', listener: () => void): unknown;
  on(event: 'error', listener: (err: Error) => void): unknown;
  write(message: Record<string, unknown>): boolean;
  /**
   * Write the empty continue answer of `kind` (continueResponse), where the transport has it ready
   * (the direct HTTP/2 path: pre-encoded frames); else `write(continueResponse(kind))` is used.
   */
  writeContinue?(kind: NonNullable<ExtProcProcessingRequest['request']>): void;
  end(): void;
}

export interface ExtProcHandlerOptions {
  settler: SessionSettler;
  count?: CountOutput;
  maxPendingBytes?: number;
  /** Response bytes all streams may hold at once (settle.max_buffered_bytes). */
  budget?: ResponseBudget;
  /** The answer cache's fill (session.ts CacheFill). */
  fill?: CacheFill;
  /** Each stream's settlement outcome (tests; undefined when the stream named no reservation). */
  onSessionEnd?: (outcome: SettleOutcomeLabel | undefined) => void;
}

/** The Process handler: feed, answer when not in observability mode, settle once at the end. */
export function extProcHandler(o: ExtProcHandlerOptions): (call: ProcessStream) => void {
  return (call) => {
    const session = new SettleSession({
      settler: o.settler,
      count: o.count,
      maxPendingBytes: o.maxPendingBytes,
      budget: o.budget,
      fill: o.fill,
    });
    let open = true;
    const finish = (endCall: boolean) => {
      if (!open) return;
      open = false;
      if (endCall) {
        try {
          call.end();
        } catch {
          // already closed
        }
      }
      session.end().then((outcome) => o.onSessionEnd?.(outcome));
    };
    call.on('data', (req) => {
      if (open && req.observability_mode !== true && req.request) {
        try {
          if (call.writeContinue) call.writeContinue(req.request);
          else call.write(continueResponse(req.request));
        } catch {
          // the stream is going away; the end settles
        }
      }
      session.feed(req);
    });
    call.on('end', () => finish(true));
    call.on('cancelled', () => finish(false));
    call.on('error', () => finish(false));
    call.on('close', () => finish(false));
  };
}
