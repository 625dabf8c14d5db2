/**
 * Benchmark workloads: pre-serialized Envoy CheckRequests (protobuf bytes), so the load generator
 * spends its CPU on the wire, not on building requests.
 */
import { loadGrpcPackages } from '../src/authz/grpc/protos.js';

export type WorkloadName = 'small' | 'medium' | 'mix' | 'deny' | 'rag' | 'agent' | 'settle';

/**
 * Placeholder at the start of every generated user prompt: the load generator overwrites it with a
 * per-call number (bench/streams.ts), so no two calls of a run send the same prompt and tollgate's
 * count cache (src/tokens/count-cache.ts) never serves a cycled request pool from memory.
 */
export const TAG = '#@@@@@@@@@@@@ ';

export const TENANTS = 1000;
/** Share of calls in the `mix` workload that carry a ~400 KB prompt. */
export const BIG_SHARE = 0.01;

const WORDS = (
  'the of and to in is was for on that with as by at from his her an have are were which this be or ' +
  'not but had they one their you all we can there been has more will would if about when what so ' +
  'rate limit token model request tenant budget quota window latency throughput cache valkey envoy ' +
  'prompt completion answer question system user assistant function schema json array object string ' +
  'number boolean weather forecast Berlin Paris Tokyo invoice customer order shipping refund policy ' +
  'kubernetes deployment container service replica cluster node memory cpu disk network packet'
).split(' ');
const PUNCT = ['.', ',', '?', '!', ';', ':'];

/** Deterministic PRNG (mulberry32). */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Prose-like text of about `chars` characters (words, punctuation, some numbers and code). */
export function text(chars: number, seed: number): string {
  const r = rng(seed);
  const out: string[] = [];
  let n = 0;
  while (n < chars) {
    let w = WORDS[Math.floor(r() * WORDS.length)];
    const x = r();
    if (x < 0.03) w = String(Math.floor(r() * 100000));
    else if (x < 0.05) w = `${w}_${WORDS[Math.floor(r() * WORDS.length)]}()`;
    else if (x < 0.08) w = w[0].toUpperCase() + w.slice(1);
    out.push(w);
    n += w.length + 1;
    if (r() < 0.08) {
      out.push(PUNCT[Math.floor(r() * PUNCT.length)]);
      n++;
    }
    if (r() < 0.01) {
      out.push('\n\n');
      n += 2;
    }
  }
  return out.join(' ');
}

/** A chat body; `stream`: a streamed answer with its usage chunk (stream_options.include_usage). */
export function chatBody(contentChars: number, seed: number, stream = false): string {
  const r = rng(seed * 7 + 1);
  return JSON.stringify({
    model: 'gpt-4o-mini',
    messages: [
      { role: 'system', content: 'You are a helpful assistant. Answer briefly.' },
      { role: 'user', content: TAG + text(contentChars, seed) },
    ],
    max_tokens: 64 + Math.floor(r() * 256),
    temperature: 0.2,
    ...(stream && { stream: true, stream_options: { include_usage: true } }),
  });
}

export interface BuiltRequest {
  bytes: Buffer;
  big: boolean;
}

export function encodeCheck(path: string, headers: Record<string, string>, body: Buffer): Buffer {
  const { AuthorizationClient } = loadGrpcPackages();
  const ser = (AuthorizationClient.service as any).Check.requestSerialize as (v: unknown) => Buffer;
  return ser({
    attributes: {
      request: {
        http: {
          method: 'POST',
          path,
          protocol: 'HTTP/1.1',
          headers: {
            ':method': 'POST',
            ':path': path,
            ':authority': 'api.example.com',
            'content-type': 'application/json',
            'content-length': String(body.length),
            'x-envoy-auth-partial-body': 'false',
            'x-request-id': '0b0e9c1e-1d2f-4a3b-9c8d-7e6f5a4b3c2d',
            'user-agent': 'bench/1.0',
            ...headers,
          },
          raw_body: body,
          size: body.length,
        },
      },
    },
  });
}

/**
 * The request pool of a workload: `small` ≈ 1 KB bodies, `medium` ≈ 20 KB, `rag` 10–30 KB, `mix` =
 * small plus 1% ≈ 400 KB prompts (~100k tokens), `deny` = small bodies from tenants on the `free`
 * plan (denied after their first call), `settle` = the small bodies with `stream: true` (each call is then
 * answered through ext_proc: bench/settle-stream.ts). Tenants cycle over 1,000 ids. Every prompt starts with TAG
 * (made unique per call by the load generator). `agent` has no pool: bench/streams.ts builds it.
 */
export function buildWorkload(name: WorkloadName, seed = 1): BuiltRequest[] {
  const out: BuiltRequest[] = [];
  const path = '/v1/chat/completions';
  const size = name === 'medium' || name === 'rag' ? 400 : 2000;
  for (let i = 0; i < size; i++) {
    const headers: Record<string, string> = { 'x-tenant-id': `tenant-${(i * 7919) % TENANTS}` };
    if (name === 'deny') headers['x-plan'] = 'free';
    const chars = name === 'medium' ? 20_000 : name === 'rag' ? 10_000 + ((i * 7393) % 20_000) : 850;
    out.push({
      bytes: encodeCheck(path, headers, Buffer.from(chatBody(chars, seed * 100_000 + i, name === 'settle'))),
      big: false,
    });
  }
  if (name === 'mix') {
    // 1% of the pool: distinct 400 KB prompts, spread evenly through the pool.
    const bigs = Math.round(size * BIG_SHARE);
    for (let b = 0; b < bigs; b++) {
      const headers = { 'x-tenant-id': `tenant-big-${b}` };
      const req = {
        bytes: encodeCheck(path, headers, Buffer.from(chatBody(400_000, seed * 1000 + 500 + b))),
        big: true,
      };
      out[Math.floor((b + 0.5) * (size / bigs))] = req;
    }
  }
  return out;
}

/**
 * google.rpc.Code of a serialized CheckResponse without decoding it all: field 1 (status) is a
 * google.rpc.Status whose field 1 is the code. Absent = OK (0).
 */
export function responseCode(buf: Buffer): number {
  let i = 0;
  while (i < buf.length) {
    const [tag, a] = varint(buf, i);
    i = a;
    const field = tag >>> 3;
    const wt = tag & 7;
    if (wt === 2) {
      const [len, b] = varint(buf, i);
      if (field === 1) {
        const end = b + len;
        let j = b;
        while (j < end) {
          const [t2, c] = varint(buf, j);
          if (t2 === 8) return varint(buf, c)[0];
          if ((t2 & 7) === 2) {
            const [l2, d] = varint(buf, c);
            j = d + l2;
          } else if ((t2 & 7) === 0) j = varint(buf, c)[1];
          else return -1;
        }
        return 0;
      }
      i = b + len;
    } else if (wt === 0) i = varint(buf, i)[1];
    else return -1;
  }
  return 0;
}

function varint(buf: Buffer, i: number): [number, number] {
  let v = 0;
  let shift = 0;
  for (;;) {
    const b = buf[i++];
    v += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) return [v, i];
    shift += 7;
  }
}
