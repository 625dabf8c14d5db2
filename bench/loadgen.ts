/**
 * Load generator (its own process): a grpc-js client speaking Envoy's CheckRequest to one server.
 *   closed loop: `concurrency` callers, each sends its next call when the previous answers;
 *   open loop:   calls scheduled at a fixed `rate` (during the first half of the warm-up the rate ramps
 *                up from 10%); latency is measured from each call's scheduled send time (no
 *                coordinated omission: a stalled server is charged for the calls it delays).
 * Requests are pre-serialized (bench/workloads.ts); answers are not decoded beyond the status code.
 * `settle`: each allowed Check is followed by its ext_proc Process stream as Envoy sends it in
 * observability mode (bench/settle-stream.ts), on a connection of its own (Envoy's tollgate_response
 * cluster); the call is done when the server ends that stream, after the generator's half-close.
 * Usage: node dist/bench/loadgen.js '<json LoadSpec>'  → prints one JSON LoadResult line.
 */
import * as grpc from '@grpc/grpc-js';
import { headersMessage, PROCESS_PATH, reservationId, settleMessages } from './settle-stream.js';
import { requestStream } from './streams.js';
import { responseCode, type WorkloadName } from './workloads.js';

export interface LoadSpec {
  port: number;
  workload: WorkloadName;
  mode: 'closed' | 'open';
  durationMs: number;
  /** Not measured. Open loop: its first half ramps the rate from 10% to 100%. */
  warmupMs: number;
  concurrency?: number;
  rate?: number;
  /** Open loop: give up on a call after this long (counted as an error). */
  deadlineMs?: number;
  /** Closed loop: the measured window starts no earlier than this many answered calls (agent: every
   * conversation's first, cold call falls in the warm-up). */
  warmupCalls?: number;
}

export interface LatencySummary {
  n: number;
  p50: number;
  p99: number;
  p999: number;
  max: number;
  mean: number;
}

export interface LoadResult {
  spec: LoadSpec;
  seconds: number;
  calls: number;
  perSecond: number;
  ok: number;
  denied: number;
  /** Answers marked x-tollgate-degraded (decided without the store). */
  degraded: number;
  errors: number;
  firstError?: string;
  /** ms, all calls */
  latency: LatencySummary;
  /** ms, calls with small bodies only (mix workload) */
  smallLatency: LatencySummary;
  /** ms, 400 KB calls only (mix workload) */
  bigLatency?: LatencySummary;
  /**
   * Open loop: measured calls this generator sent more than 5 ms after their scheduled time (its own
   * GC pauses, or no CPU for it). Still charged to the server from the scheduled time; 3-12% of the
   * calls at 1,100-1,900/s on the bench machine, against the null server too.
   */
  lateSends?: number;
  /** Calls answered during the whole run, warm-up included (what the server's CPU time was spent on). */
  answered: number;
  /** settle: allowed Checks whose answer named no reservation (their stream was sent with a dummy id). */
  noReservation?: number;
  /** settle: ext_proc streams the server ended with OK during the whole run, warm-up included. */
  streams?: number;
}

const METHOD = '/envoy.service.auth.v3.Authorization/Check';
/** Allowed without consulting the store (breaker open / store down): counted, so a run that did not
 * measure the store is visible. */
const DEGRADED_HEADER = Buffer.from('x-tollgate-degraded');
const DEGRADED = -2;

export function summarize(xs: Float64Array | number[]): LatencySummary {
  const a = Float64Array.from(xs).sort();
  const n = a.length;
  const q = (p: number) => (n === 0 ? 0 : a[Math.min(n - 1, Math.floor(p * n))]);
  let sum = 0;
  for (const x of a) sum += x;
  const r = (x: number) => Math.round(x * 1000) / 1000;
  return {
    n,
    p50: r(q(0.5)),
    p99: r(q(0.99)),
    p999: r(q(0.999)),
    max: r(n ? a[n - 1] : 0),
    mean: r(n ? sum / n : 0),
  };
}

class Recorder {
  all: number[] = [];
  small: number[] = [];
  big: number[] = [];
  ok = 0;
  denied = 0;
  degraded = 0;
  errors = 0;
  firstError?: string;
  record(ms: number, big: boolean, err: Error | null, code: number) {
    this.all.push(ms);
    (big ? this.big : this.small).push(ms);
    if (err) {
      this.errors++;
      this.firstError ??= err.message;
    } else if (code === DEGRADED) {
      this.ok++;
      this.degraded++;
    } else if (code === 0) this.ok++;
    else this.denied++;
  }
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2]) as LoadSpec;
  const stream = requestStream(spec.workload);
  const client = new grpc.Client(`127.0.0.1:${spec.port}`, grpc.credentials.createInsecure(), {
    'grpc.max_send_message_length': 64 * 1024 * 1024,
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
  });
  await new Promise<void>((res, rej) =>
    client.waitForReady(Date.now() + 10_000, (e) => (e ? rej(e) : res())),
  );
  const ident = (b: Buffer) => b;
  const deadlineMs = spec.deadlineMs ?? 10_000;
  let answered = 0;
  const settle = spec.workload === 'settle' ? settleSender(spec.port, deadlineMs) : undefined;
  const send = (cb: (err: Error | null, code: number, big: boolean) => void) => {
    const req = stream.next();
    client.makeUnaryRequest<Buffer, Buffer>(
      METHOD,
      ident,
      ident,
      req.bytes,
      { deadline: Date.now() + deadlineMs },
      (err, res) => {
        const code = err || !res ? -1 : res.includes(DEGRADED_HEADER) ? DEGRADED : responseCode(res);
        if (settle && !err && res && (code === 0 || code === DEGRADED))
          return settle.send(res, (e) => {
            if (!e) answered++;
            cb(e, code, req.big);
          });
        if (!err) answered++;
        cb(err, code, req.big);
      },
    );
  };

  let rec = new Recorder();
  let measuring = false;
  const t0 = performance.now();
  const measureFrom = t0 + spec.warmupMs;
  let end = measureFrom + spec.durationMs;
  // Tells bench/run.ts to start reading the server's CPU time (the line before the result ends it).
  const startMeasuring = () => process.stdout.write('measuring\n');
  let lateSends = 0;

  if (spec.mode === 'closed') {
    const c = spec.concurrency ?? 64;
    await new Promise<void>((resolve) => {
      let live = c;
      const loop = () => {
        const now = performance.now();
        if (measuring && now >= end) {
          if (--live === 0) resolve();
          return;
        }
        // (a server too slow to answer warmupCalls in a minute is measured from then on)
        const warm = answered >= (spec.warmupCalls ?? 0) || now >= measureFrom + 60_000;
        if (!measuring && now >= measureFrom && warm) {
          measuring = true;
          rec = new Recorder();
          end = now + spec.durationMs;
          startMeasuring();
        }
        const started = now;
        const r = rec;
        send((err, code, big) => {
          r.record(performance.now() - started, big, err, code);
          loop();
        });
      };
      for (let i = 0; i < c; i++) loop();
    });
  } else {
    const rate = spec.rate ?? 1000;
    const interval = 1000 / rate;
    // The first half of the warm-up ramps the rate linearly from 10% to 100%; the second half and
    // the measured window run at the full rate. Starting at the full rate instead, this process's own
    // cold start (JIT, first GCs, sharing the two cores) held up a tollgate round's first calls for
    // 0.5-1.3 s at 1,400-1,860/s, and that backlog was still draining when the measured window began
    // (README, Performance).
    const ramp = spec.warmupMs / 2;
    /** Gap after a call scheduled at t during the ramp (t0 <= t < t0 + ramp). */
    const rampGap = (t: number) => interval / (0.1 + (0.9 * (t - t0)) / ramp);
    let at = t0;
    let inflight = 0;
    let allSent = false;
    await new Promise<void>((resolve) => {
      const tick = () => {
        const now = performance.now();
        // Send every call whose scheduled time has come (a generator that woke late still charges
        // the server from the scheduled time, as a real client population would).
        while (at <= now && at < end) {
          const scheduled = at;
          // A ramp step never jumps past the ramp's end (a warm-up shorter than one step would
          // otherwise start the measured window late).
          at = at < t0 + ramp ? Math.min(at + rampGap(at), t0 + ramp) : at + interval;
          const inWindow = scheduled >= measureFrom;
          const r = rec;
          if (inWindow && !measuring) {
            measuring = true;
            rec = new Recorder();
            lateSends = 0;
            startMeasuring();
          }
          if (now - scheduled > 5) lateSends++;
          const target = inWindow ? rec : r;
          inflight++;
          send((err, code, big) => {
            target.record(performance.now() - scheduled, big, err, code);
            if (--inflight === 0 && allSent) resolve();
          });
        }
        if (at >= end) {
          allSent = true;
          if (inflight === 0) resolve();
          return;
        }
        setTimeout(tick, Math.max(0, Math.min(1, at - performance.now())));
      };
      tick();
    });
  }
  const seconds = spec.durationMs / 1000;
  const out: LoadResult = {
    spec,
    seconds,
    calls: rec.all.length,
    perSecond: Math.round(rec.all.length / seconds),
    ok: rec.ok,
    denied: rec.denied,
    degraded: rec.degraded,
    errors: rec.errors,
    firstError: rec.firstError,
    latency: summarize(rec.all),
    smallLatency: summarize(rec.small),
    bigLatency: rec.big.length ? summarize(rec.big) : undefined,
    lateSends: spec.mode === 'open' ? lateSends : undefined,
    answered,
    noReservation: settle?.noReservation(),
    streams: settle?.streams(),
  };
  process.stdout.write(`${JSON.stringify(out)}\n`);
  client.close();
  process.exit(0);
}

/**
 * The response phase of `settle` calls: one Process stream per allowed Check, on its own connection.
 * Messages are written one after another (each once the previous one is handed to the transport), then
 * the stream is half-closed: in observability mode Envoy waits for no answer. `done` runs when the
 * server has ended the stream (its status), so a closed loop's concurrency bounds the open streams.
 */
function settleSender(port: number, deadlineMs: number) {
  const msgs = settleMessages();
  const ext = new grpc.Client(`127.0.0.1:${port}`, grpc.credentials.createInsecure(), {
    'grpc.use_local_subchannel_pool': 1, // a connection of its own, as Envoy's second cluster
  });
  const ident = (b: Buffer) => b;
  let missing = 0;
  let streams = 0;
  return {
    noReservation: () => missing,
    streams: () => streams,
    send(checkResponse: Buffer, done: (err: Error | null) => void) {
      let id = reservationId(checkResponse);
      if (id === undefined) {
        missing++; // the null server's answers name none
        id = 'bench.0000000000000000000000';
      }
      const call = ext.makeBidiStreamRequest<Buffer, Buffer>(
        PROCESS_PATH,
        ident,
        ident,
        new grpc.Metadata(),
        {
          deadline: Date.now() + deadlineMs,
        },
      );
      call.on('data', () => {});
      let ended = false;
      const finish = (err: Error | null) => {
        if (ended) return;
        ended = true;
        if (!err) streams++;
        done(err);
      };
      call.on('status', (st: grpc.StatusObject) => finish(st.code === 0 ? null : new Error(st.details)));
      call.on('error', (e: Error) => finish(e));
      let k = -1;
      const next = () => {
        if (ended) return;
        if (k === msgs.body.length) return void call.end();
        const m = k < 0 ? headersMessage(id) : msgs.body[k];
        k++;
        call.write(m, next);
      };
      next();
    },
  };
}

if (process.argv[1]?.endsWith('loadgen.js')) void main();
