/**
 * A small worker_threads pool that counts tokens of large prompts off the event loop.
 *
 * Worker script: `new URL('./worker.js', import.meta.url)`, i.e. dist/src/offload/worker.js next to the
 * compiled pool.js. When that file does not exist — notably when the TypeScript sources are run
 * directly (vitest runs src/offload/pool.ts, and there is no src/offload/worker.js) — the pool runs in
 * `inline` mode: count() counts synchronously on the calling thread and resolves with the result.
 * A different worker script can be passed via `options.workerUrl` (tests use a compiled copy).
 *
 * Each worker handles one job at a time; excess jobs wait in a FIFO queue. A worker that crashes
 * (uncaught error or unexpected exit) rejects its in-flight job and is replaced on demand. Idle
 * workers are unref()'d so they never keep the process alive.
 */
import { existsSync } from 'node:fs';
import os from 'node:os';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { PathFacts } from '../dialects/route.js';
import type { Dialect, ParsedCall } from '../dialects/types.js';
import { type CountOptions, countPromptTokens } from '../tokens/count.js';
import { sharedTable, usesSharedTable } from '../tokens/encoders.js';
import {
  type EncodingPlan,
  type ParsedBody,
  parseAndCount,
  type WorkerJob,
  type WorkerRequest,
  type WorkerResponse,
} from './worker.js';

export function defaultPoolSize(): number {
  const cpus = typeof os.availableParallelism === 'function' ? os.availableParallelism() : os.cpus().length;
  return Math.max(1, Math.min(2, cpus - 1));
}

/**
 * The parent's Node flags (e.g. --max-old-space-size, --import loaders) minus the ones that only make
 * sense for the main entry point and make a worker fail at startup (--input-type, -e/-p and their code).
 */
export function workerExecArgv(argv: readonly string[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-e' || a === '--eval' || a === '-p' || a === '--print') {
      i++; // skip the code argument
      continue;
    }
    if (a.startsWith('--input-type') || a.startsWith('--eval=') || a.startsWith('--print=')) continue;
    out.push(a);
  }
  return out;
}

/**
 * Heap limits of a token worker. It holds one request's prompt at a time (a structured clone of the
 * parsed call, at most server.max_body_bytes of text) and builds no tables (rank tables are shared),
 * so a small young generation keeps its resident memory low; old space is generous enough for the
 * largest accepted body.
 */
export const WORKER_LIMITS = { maxYoungGenerationSizeMb: 8, maxOldGenerationSizeMb: 256 };

export interface TokenPoolOptions {
  /** Worker script to run; defaults to ./worker.js next to this module. */
  workerUrl?: URL;
}

interface Job {
  req: WorkerRequest;
  resolve: (r: number | ParsedBody) => void;
  reject: (e: Error) => void;
}

interface Slot {
  worker: Worker;
  /** Encodings whose shared rank table this worker has received. */
  tables: Set<string>;
  job?: Job;
  error?: Error;
}

export class TokenPool {
  readonly size: number;
  /** 'workers' when the worker script exists, otherwise 'inline' (synchronous counting). */
  readonly mode: 'workers' | 'inline';
  /** Number of workers that crashed / exited unexpectedly (and were replaced on demand). */
  crashes = 0;
  private readonly url: URL;
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private execArgv?: string[];
  private closed = false;

  constructor(size: number = defaultPoolSize(), options: TokenPoolOptions = {}) {
    if (!Number.isInteger(size) || size < 1)
      throw new Error(`TokenPool size must be a positive integer, got ${size}`);
    this.size = size;
    this.url = options.workerUrl ?? new URL('./worker.js', import.meta.url);
    let exists = false;
    try {
      exists = this.url.protocol === 'file:' && existsSync(fileURLToPath(this.url));
    } catch {
      exists = false;
    }
    this.mode = exists ? 'workers' : 'inline';
  }

  /**
   * Start every worker and load the given encodings in each, so the first real call pays for neither
   * (worker start-up + WASM encoder load take up to seconds on a busy machine).
   */
  async warm(encodings: Iterable<string>): Promise<void> {
    if (this.mode === 'inline') return;
    const tiny: ParsedCall = {
      dialect: 'openai.completions',
      n: 1,
      stream: false,
      tools: [],
      prompt: { kind: 'text', messages: [], texts: ['warm up'], preTokenized: 0, images: 0, toolDefs: [] },
    };
    for (const enc of encodings) {
      await Promise.all(Array.from({ length: this.size }, () => this.count(tiny, enc, { imageTokens: 0 })));
    }
  }

  /** Jobs waiting for a free worker. */
  get pending(): number {
    return this.queue.length;
  }

  count(call: ParsedCall, encodingName: string, opts: CountOptions): Promise<number> {
    if (this.closed) return Promise.reject(new Error('token pool is closed'));
    if (this.mode === 'inline') {
      try {
        return Promise.resolve(countPromptTokens(call, encodingName, opts));
      } catch (e) {
        return Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }
    return this.submit<number>({ kind: 'count', call, encodingName, opts });
  }

  /**
   * Parse a raw body and count its prompt for the encodings `encodings` names for its model, in a
   * worker: the event loop neither parses the body nor holds its strings.
   *
   * The bytes are transferred, not cloned. With `move`, a body that owns its ArrayBuffer (see
   * movable(): grpc-js's buffer for one large message) is moved as it is, so the caller's view is
   * detached (byteLength 0) from here on; any other body is copied first. If the job then fails (the
   * worker crashed or the pool closed), a moved body is gone: the caller must not parse it again.
   */
  parseAndCount(
    dialect: Dialect,
    body: Uint8Array | string,
    path: PathFacts | undefined,
    encodings: EncodingPlan,
    opts: CountOptions,
    move = false,
  ): Promise<ParsedBody> {
    if (this.closed) return Promise.reject(new Error('token pool is closed'));
    const job: WorkerJob = { kind: 'parse', dialect, body, path, encodings, opts };
    if (this.mode === 'inline') {
      try {
        return Promise.resolve(parseAndCount(job));
      } catch (e) {
        return Promise.reject(e instanceof Error ? e : new Error(String(e)));
      }
    }
    if (typeof body !== 'string')
      job.body =
        move && movable(body)
          ? new Uint8Array(body.buffer, body.byteOffset, body.byteLength) // moved: no copy
          : new Uint8Array(body); // a private copy, transferable
    return this.submit<ParsedBody>(job);
  }

  private submit<T extends number | ParsedBody>(job: WorkerJob): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      this.queue.push({
        req: { ...job, id: this.nextId++ },
        resolve: resolve as (r: number | ParsedBody) => void,
        reject,
      });
      this.dispatch();
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new Error('token pool is closed');
    for (const job of this.queue.splice(0)) job.reject(err);
    const slots = this.slots.splice(0);
    for (const s of slots) {
      s.job?.reject(err);
      s.job = undefined;
    }
    await Promise.all(slots.map((s) => s.worker.terminate().catch(() => undefined)));
  }

  private dispatch(): void {
    while (!this.closed && this.queue.length > 0) {
      let slot = this.slots.find((s) => !s.job);
      if (!slot) {
        if (this.slots.length >= this.size) return;
        slot = this.spawn();
      }
      const job = this.queue.shift()!;
      slot.job = job;
      slot.worker.ref();
      // Share this thread's rank tables (SharedArrayBuffers: shared, not copied) instead of letting
      // the worker build its own copies.
      const req = job.req;
      const needed =
        req.kind === 'count'
          ? [req.encodingName]
          : [...req.encodings.other, ...Object.values(req.encodings.byModel).flat()];
      for (const enc of needed) {
        if (slot.tables.has(enc) || !usesSharedTable(enc)) continue;
        slot.tables.add(enc);
        req.tables = [...(req.tables ?? []), [enc, sharedTable(enc)]];
      }
      const transfer =
        req.kind === 'parse' && typeof req.body !== 'string' ? [req.body.buffer as ArrayBuffer] : [];
      slot.worker.postMessage(req, transfer);
    }
  }

  /**
   * Start a worker with the parent's Node flags. Per-process V8 flags (--max-old-space-size,
   * --expose-gc, ...) are refused by worker threads with ERR_WORKER_INVALID_EXEC_ARGV, which names
   * them: they are dropped (the worker gets its own resourceLimits instead) and the start retried.
   */
  private startWorker(): Worker {
    let argv = this.execArgv ?? workerExecArgv(process.execArgv);
    for (;;) {
      try {
        const w = new Worker(this.url, { execArgv: argv, resourceLimits: WORKER_LIMITS });
        this.execArgv = argv;
        return w;
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code !== 'ERR_WORKER_INVALID_EXEC_ARGV') throw e;
        const bad = new Set(
          err.message
            .slice(err.message.indexOf(':') + 1)
            .split(',')
            .map((f) => f.trim()),
        );
        const next = argv.filter((a) => !bad.has(a));
        if (next.length === argv.length) throw e;
        argv = next;
      }
    }
  }

  private spawn(): Slot {
    const worker = this.startWorker();
    const slot: Slot = { worker, tables: new Set() };
    worker.unref();
    worker.on('message', (res: WorkerResponse) => {
      const job = slot.job;
      if (!job || job.req.id !== res.id) return;
      slot.job = undefined;
      worker.unref();
      if (res.ok) job.resolve('count' in res ? res.count : res.parsed);
      else job.reject(new Error(`token count failed: ${res.error}`));
      this.dispatch();
    });
    worker.on('error', (e: Error) => {
      slot.error = e;
      this.fail(slot, new Error(`token worker crashed: ${e.message}`));
    });
    worker.on('messageerror', (e: Error) => {
      this.fail(slot, new Error(`token worker message error: ${e.message}`));
      void worker.terminate();
    });
    worker.on('exit', (code) => {
      this.fail(
        slot,
        new Error(`token worker exited with code ${code}${slot.error ? `: ${slot.error.message}` : ''}`),
      );
    });
    this.slots.push(slot);
    return slot;
  }

  /** Reject the slot's job, drop the slot and let dispatch() spawn a replacement on demand. */
  private fail(slot: Slot, err: Error): void {
    const i = this.slots.indexOf(slot);
    if (i < 0) return; // already removed (close() or an earlier event)
    this.slots.splice(i, 1);
    this.crashes++;
    const job = slot.job;
    slot.job = undefined;
    job?.reject(err);
    this.dispatch();
  }
}

/**
 * Whether a body can be moved to a worker instead of copied: it is large (so Node never took it from
 * its shared 8 KiB Buffer pool) and its ArrayBuffer holds little else (grpc-js and src/authz/grpc/direct.ts
 * allocate one buffer per received message: the body plus the rest of the CheckRequest, which
 * tollgate has already decoded into strings). Moving saves one copy of every large prompt.
 */
export function movable(body: Uint8Array): boolean {
  return (
    body.byteLength >= MOVE_MIN_BYTES &&
    body.buffer instanceof ArrayBuffer &&
    body.buffer.byteLength - body.byteLength <= MOVE_MAX_EXTRA_BYTES
  );
}

export const MOVE_MIN_BYTES = 64 * 1024;
const MOVE_MAX_EXTRA_BYTES = 64 * 1024;
