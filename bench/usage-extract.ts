/**
 * CPU of the response phase per streamed answer, in-process (node dist/bench/usage-extract.js
 * [old-dist-dir] [rounds]): the `settle` workload's body (bench/settle-stream.ts: 20 OpenAI chat SSE
 * chunks, then the usage chunk and `data: [DONE]`, one response_body message each) fed
 *   extract  through the usage extractor (createUsageExtractor → push × 21 → end → resolveUsage),
 *   no-usage the same without the usage chunk (the output text is collected and counted: t.length),
 *   session  through a SettleSession (the decoded ext_proc messages as the gRPC layer hands them over,
 *            a fake Settler whose open and finish resolve at once; no store, no gRPC), the body fed
 *            once the reservation is open,
 *   held     the same, the body fed while the reservation opens (held, then drained),
 * CPU µs per stream (process.cpuUsage: every thread, GC included; less disturbed than wall time by
 * other processes on the machine), best and median of `rounds` passes. With `old-dist-dir` (a copy of an earlier
 * dist/, e.g. `cp -r dist scratch/old` before a change) the same is run on its modules, the passes of
 * old and new interleaved, so that both see the same machine load.
 */
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import type * as UsageMod from '../src/dialects/usage/index.js';
import type { ExtProcProcessingRequest } from '../src/settle/messages.js';
import type * as SessionMod from '../src/settle/session.js';
import type { SessionSettler } from '../src/settle/session.js';
import type { OpenReservation } from '../src/settle/settler.js';
import { SETTLE_RESPONSE_HEADERS, settleSseBodies } from './settle-stream.js';

interface Impl {
  name: string;
  usage: typeof UsageMod;
  session: typeof SessionMod;
}

const CONTENT_TYPE = SETTLE_RESPONSE_HEADERS['content-type'];
const STREAMS_PER_PASS = 2000;

async function load(name: string, root: string): Promise<Impl> {
  const url = (p: string) => pathToFileURL(resolve(root, p)).href;
  return {
    name,
    usage: await import(url('src/dialects/usage/index.js')),
    session: await import(url('src/settle/session.js')),
  };
}

function extractOnce(impl: Impl, bodies: Buffer[]): UsageMod.Usage {
  const x = impl.usage.createUsageExtractor('openai.chat', CONTENT_TYPE);
  for (const b of bodies) x.push(b);
  return impl.usage.resolveUsage(x.end(), (t) => t.length);
}

const OPEN = {
  id: 'r',
  key: 'k',
  store: undefined as never,
  reservation: { entries: [] } as never,
  record: { m: 'gpt-4o-mini', d: 'openai.chat', enc: 'o200k_base', p: 230, o: 100, $: [0, 0, -1, -1], w: 1 },
} as unknown as OpenReservation;

const settler: SessionSettler = {
  open: () => Promise.resolve(OPEN),
  finish: (_r, res) => Promise.resolve(res.usage?.source === 'reported' ? 'settled' : 'kept'),
};

/** The messages of one stream, decoded (as the gRPC layer hands them to the session). */
function messages(bodies: Buffer[]): ExtProcProcessingRequest[] {
  const headers: ExtProcProcessingRequest = {
    request: 'response_headers',
    response_headers: {
      headers: {
        headers: Object.entries(SETTLE_RESPONSE_HEADERS).map(([key, v]) => ({
          key,
          value: '',
          raw_value: Buffer.from(v),
        })),
      },
      end_of_stream: false,
    },
    metadata_context: {
      filter_metadata: {
        'envoy.filters.http.ext_authz': { fields: { tollgate_reservation: { stringValue: 'r' } } },
      },
    },
    observability_mode: true,
  };
  const body = bodies.map(
    (b, i): ExtProcProcessingRequest => ({
      request: 'response_body',
      response_body: { body: b, end_of_stream: i === bodies.length - 1 },
      observability_mode: true,
    }),
  );
  return [headers, ...body];
}

/**
 * One stream through a session. `held`: the body arrives while the reservation is being opened (it is
 * held, then drained: the bench's load generator sends it all at once); else once it is open (a
 * store read is shorter than a model's generation).
 */
async function sessionOnce(impl: Impl, msgs: ExtProcProcessingRequest[], held: boolean): Promise<unknown> {
  const s = new impl.session.SettleSession({ settler, count: async (t) => t.length });
  s.feed(msgs[0]);
  if (!held) for (let i = 0; i < 4; i++) await Promise.resolve(); // open() and its then()
  for (let i = 1; i < msgs.length; i++) s.feed(msgs[i]);
  return s.done;
}

/** CPU µs (user + system, every thread: GC included) per stream of one pass. */
async function pass(f: () => unknown): Promise<number> {
  const t = process.cpuUsage();
  for (let i = 0; i < STREAMS_PER_PASS; i++) await f();
  const d = process.cpuUsage(t);
  return (d.user + d.system) / STREAMS_PER_PASS;
}

const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return `best ${s[0].toFixed(2)} µs  median ${s[s.length >> 1].toFixed(2)} µs`;
};

async function main(): Promise<void> {
  const [oldRoot, roundsArg] = process.argv.slice(2);
  const rounds = Number(roundsArg ?? 15);
  const here = resolve(new URL('.', import.meta.url).pathname, '..');
  const impls = [await load('new', here)];
  if (oldRoot) impls.unshift(await load('old', oldRoot));
  const bodies = settleSseBodies();
  // The same answer without the usage chunk (stream_options.include_usage unset): the text is counted.
  const noUsage = [...bodies.slice(0, -1), Buffer.from('data: [DONE]\n\n')];
  const msgs = messages(bodies);
  for (const impl of impls) {
    const scan = JSON.stringify(extractOnce(impl, bodies));
    console.log(impl.name, scan, await sessionOnce(impl, msgs, false), await sessionOnce(impl, msgs, true));
  }
  const times = new Map<string, number[]>();
  const add = (k: string, t: number) => times.set(k, [...(times.get(k) ?? []), t]);
  for (let r = 0; r < rounds; r++) {
    for (const impl of impls) {
      add(`${impl.name} extract`, await pass(() => extractOnce(impl, bodies)));
      add(`${impl.name} no-usage`, await pass(() => extractOnce(impl, noUsage)));
      add(`${impl.name} session`, await pass(() => sessionOnce(impl, msgs, false)));
      add(`${impl.name} held`, await pass(() => sessionOnce(impl, msgs, true)));
    }
  }
  for (const [k, v] of times) console.log(`${k.padEnd(14)} ${stats(v)} per stream`);
}

await main();
