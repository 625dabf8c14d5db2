/**
 * Token-counting worker thread (compiled to dist/src/tokens/worker.js and started by TokenPool).
 * Encoders are cached per thread by encoders.ts, so each worker builds each encoding at most once.
 */
import { parentPort } from 'node:worker_threads';
import type { ParsedCall } from '../parse/types.js';
import { type CountOptions, countPromptTokens } from './count.js';

export interface WorkerRequest {
  id: number;
  call: ParsedCall;
  encodingName: string;
  opts: CountOptions;
}

export type WorkerResponse =
  | { id: number; ok: true; count: number }
  | { id: number; ok: false; error: string };

const port = parentPort;
if (port) {
  port.on('message', (req: WorkerRequest) => {
    let res: WorkerResponse;
    try {
      res = { id: req.id, ok: true, count: countPromptTokens(req.call, req.encodingName, req.opts) };
    } catch (e) {
      res = { id: req.id, ok: false, error: e instanceof Error ? e.message : String(e) };
    }
    port.postMessage(res);
  });
}
