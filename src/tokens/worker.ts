/**
 * Token-counting worker thread (compiled to dist/src/tokens/worker.js and started by TokenPool).
 * Rank tables arrive from the parent as SharedArrayBuffers (one copy per process); counters are
 * cached per thread by encoders.ts.
 */
import { parentPort } from 'node:worker_threads';
import type { ParsedCall } from '../parse/types.js';
import { type CountOptions, countPromptTokens } from './count.js';
import { type EncodingName, installTable, isEncodingName } from './encoders.js';

export interface WorkerRequest {
  id: number;
  call: ParsedCall;
  encodingName: string;
  opts: CountOptions;
  /** The parent's shared rank table for encodingName, sent with the first job that needs it. */
  table?: SharedArrayBuffer;
}

export type WorkerResponse =
  | { id: number; ok: true; count: number }
  | { id: number; ok: false; error: string };

const port = parentPort;
if (port) {
  port.on('message', (req: WorkerRequest) => {
    let res: WorkerResponse;
    try {
      if (req.table && isEncodingName(req.encodingName))
        installTable(req.encodingName as EncodingName, req.table);
      res = { id: req.id, ok: true, count: countPromptTokens(req.call, req.encodingName, req.opts) };
    } catch (e) {
      res = { id: req.id, ok: false, error: e instanceof Error ? e.message : String(e) };
    }
    port.postMessage(res);
  });
}
