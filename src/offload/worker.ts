/**
 * Token worker thread (compiled to dist/src/offload/worker.js and started by TokenPool). Two jobs:
 *  - count: the prompt tokens of an already parsed call;
 *  - parse: parse a large raw body and count its prompt for the encodings its model needs, so the
 *    event loop neither parses nor holds the big strings (it gets back the call without its texts).
 * Rank tables arrive from the parent as SharedArrayBuffers (one copy per process); counters are
 * cached per thread by encoders.ts.
 */
import { parentPort } from 'node:worker_threads';
import { parseBody } from '../dialects/body.js';
import { modelKeyProblem } from '../dialects/model-key.js';
import type { PathFacts } from '../dialects/route.js';
import { type Dialect, isParseError, type ParsedCall } from '../dialects/types.js';
import { resolveKey } from '../policy/model-name.js';
import { type CountOptions, countPromptTokens } from '../tokens/count.js';
import { type EncodingName, installTable, isEncodingName } from '../tokens/encoders.js';

/** Encodings to count a parsed call with: those of its model's fallback chain. */
export interface EncodingPlan {
  /**
   * Lower-case configured model name or alias → encodings of its candidates (preferred model first);
   * a request's model is looked up with the same matching rules as the decision (policy/models.ts).
   */
  byModel: Record<string, string[]>;
  /** Encodings for a model not in byModel (the "*" default). */
  other: string[];
}

export type WorkerJob =
  | { kind: 'count'; call: ParsedCall; encodingName: string; opts: CountOptions }
  | {
      kind: 'parse';
      dialect: Dialect;
      body: Uint8Array | string;
      /** What the route's path says: the model it names (Azure, Gemini), Gemini's streaming. */
      path?: PathFacts;
      encodings: EncodingPlan;
      opts: CountOptions;
    };

export type WorkerRequest = WorkerJob & {
  id: number;
  /** The parent's shared rank tables this worker has not received yet. */
  tables?: Array<[string, SharedArrayBuffer]>;
};

/** What a parse job yields: a 400 reason, or the call (prompt texts dropped) with its token counts. */
export type ParsedBody = { error: string } | { call: ParsedCall; tokens: Record<string, number> };

export type WorkerResponse =
  | { id: number; ok: true; count: number }
  | { id: number; ok: true; parsed: ParsedBody }
  | { id: number; ok: false; error: string };

/** Parse a body and count its prompt for every encoding its model's chain uses. */
export function parseAndCount(job: Extract<WorkerJob, { kind: 'parse' }>): ParsedBody {
  const parsed = parseBody(job.dialect, job.body, job.path);
  if (isParseError(parsed)) return parsed;
  const { byModel, other } = job.encodings;
  const key =
    parsed.model === undefined ? undefined : resolveKey(parsed.model, (k) => Object.hasOwn(byModel, k));
  const encodings = key === undefined ? other : byModel[key];
  const tokens: Record<string, number> = {};
  for (const e of encodings) tokens[e] ??= countPromptTokens(parsed, e, job.opts);
  const prompt = { kind: 'text' as const, messages: [], texts: [], preTokenized: 0, images: 0, toolDefs: [] };
  // the bytes may have been moved here: whether a reroute could trust the body is decided now
  const modelKey = job.path?.pathModel === undefined ? modelKeyProblem(job.body) : undefined;
  return { call: { ...parsed, prompt, ...(modelKey ? { modelKey } : {}) }, tokens };
}

const port = parentPort;
if (port) {
  port.on('message', (req: WorkerRequest) => {
    let res: WorkerResponse;
    try {
      for (const [name, table] of req.tables ?? [])
        if (isEncodingName(name)) installTable(name as EncodingName, table);
      res =
        req.kind === 'count'
          ? { id: req.id, ok: true, count: countPromptTokens(req.call, req.encodingName, req.opts) }
          : { id: req.id, ok: true, parsed: parseAndCount(req) };
    } catch (e) {
      res = { id: req.id, ok: false, error: e instanceof Error ? e.message : String(e) };
    }
    port.postMessage(res);
  });
}
