/**
 * Large bodies (≥ OFFLOAD_BYTES) are parsed and counted in a token worker, not on the event loop.
 * These tests run the real CLI (dist/, where the worker script exists) and prove the answers equal
 * what the event loop would compute: exact token counts per encoding (read back from the remaining
 * token budget), 400s for bad bodies, fallback candidates costed with their own encoding.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { OFFLOAD_BYTES } from '../src/decision/decide.js';
import { parseBody } from '../src/dialects/body.js';
import { isParseError, type ParsedCall } from '../src/dialects/types.js';
import { countPromptTokens } from '../src/tokens/count.js';
import { chat, EnvoyClient } from './helpers/envoy.js';
import { spawnTollgate, type TollgateProc } from './helpers/proc.js';

const LIMIT = 100_000_000;
const YAML = `
identity:
  tenant:
    - header: x-tenant-id
models:
  premium:
    encoding: o200k_base
    default_max_output_tokens: 100
  legacy:
    encoding: cl100k_base
    default_max_output_tokens: 100
  "*":
    encoding: o200k_base
    default_max_output_tokens: 100
limits:
  - name: tenant-tokens
    per: tenant
    tokens: ${LIMIT}
    every: 1h
  - name: premium-tokens
    per: tenant
    models: [premium]
    tokens: 50
    every: 1h
server:
  decision_deadline: 10s
`;

function prose(chars: number, seed: number): string {
  const words = ['token', 'Budget', "isn't", 'naïve', '東京', 'x=1;', '\n\n', '😀', 'rate-limit', '12345'];
  const out: string[] = [];
  let n = 0;
  let s = seed;
  while (n < chars) {
    s = (s * 1103515245 + 12345) >>> 0;
    const w = words[s % words.length];
    out.push(w);
    n += w.length + 1;
  }
  return out.join(' ');
}

function expected(body: unknown, encoding: string, path = '/v1/chat/completions'): number {
  const dialect = path.includes('messages')
    ? 'anthropic.messages'
    : path.includes('embeddings')
      ? 'openai.embeddings'
      : 'openai.chat';
  const p = parseBody(dialect, JSON.stringify(body));
  if (isParseError(p)) throw new Error(p.error);
  return countPromptTokens(p as ParsedCall, encoding, { imageTokens: 765 });
}

let app: TollgateProc;
let envoy: EnvoyClient;
let tenant = 0;

beforeAll(async () => {
  app = await spawnTollgate({ yaml: YAML });
  envoy = new EnvoyClient(app.grpcPort);
}, 30_000);

afterAll(async () => {
  envoy?.close();
  await app?.stop();
});

async function spent(body: unknown, path = '/v1/chat/completions'): Promise<number> {
  const t = `t-${++tenant}`;
  const a = await envoy.check({ path, body, headers: { 'x-tenant-id': t } });
  expect(a.allowed, a.body).toBe(true);
  return LIMIT - Number(a.headers['x-ratelimit-remaining-tokens']);
}

describe('large bodies are parsed and counted off the event loop, with the same answers', () => {
  it('chat, Anthropic and embeddings bodies above OFFLOAD_BYTES: exact counts', async () => {
    const bodies: Array<[unknown, string, number]> = [
      [chat('gpt-4o', prose(200_000, 1)), '/v1/chat/completions', 100],
      [
        {
          model: 'claude-x',
          max_tokens: 7,
          system: prose(40_000, 2),
          messages: [{ role: 'user', content: [{ type: 'text', text: prose(60_000, 3) }] }],
        },
        '/v1/messages',
        7,
      ],
      [{ model: 'emb', input: [prose(50_000, 4), prose(30_000, 5)] }, '/v1/embeddings', 0],
    ];
    for (const [body, path, output] of bodies) {
      expect(Buffer.byteLength(JSON.stringify(body))).toBeGreaterThanOrEqual(OFFLOAD_BYTES);
      expect(await spent(body, path)).toBe(expected(body, 'o200k_base', path) + output);
    }
    // Bodies of 64 KiB and more are moved to the worker (grpc-js's own buffer); between OFFLOAD_BYTES
    // and that they are copied: both paths, same numbers.
    const copied = chat('gpt-4o', prose(36_000, 7));
    const copiedBytes = Buffer.byteLength(JSON.stringify(copied));
    expect(copiedBytes).toBeGreaterThanOrEqual(OFFLOAD_BYTES);
    expect(copiedBytes).toBeLessThan(64 * 1024);
    expect(await spent(copied)).toBe(expected(copied, 'o200k_base') + 100);
    // A body just below the threshold takes the event-loop path: same rule, same numbers.
    const small = chat('gpt-4o', prose(OFFLOAD_BYTES / 2, 6));
    expect(await spent(small)).toBe(expected(small, 'o200k_base') + 100);
  });

  it('a large Gemini body: counted in the worker with the path’s model and streaming, marked estimated', async () => {
    const body = {
      systemInstruction: { parts: [{ text: prose(20_000, 6) }] },
      contents: [{ role: 'user', parts: [{ text: prose(80_000, 7) }] }],
      generationConfig: { maxOutputTokens: 9, candidateCount: 2 },
    };
    expect(Buffer.byteLength(JSON.stringify(body))).toBeGreaterThanOrEqual(OFFLOAD_BYTES);
    const p = parseBody('gemini.generateContent', JSON.stringify(body), {
      pathModel: 'legacy',
      stream: true,
    });
    if (isParseError(p)) throw new Error(p.error);
    const path = '/v1beta/models/legacy:streamGenerateContent?alt=sse';
    const a = await envoy.check({ path, body, headers: { 'x-tenant-id': `t-${++tenant}` } });
    expect(a.allowed, a.body).toBe(true);
    expect(a.headers['x-tollgate-estimated']).toBe('true');
    const used = LIMIT - Number(a.headers['x-ratelimit-remaining-tokens']);
    expect(used).toBe(countPromptTokens(p, 'cl100k_base', { imageTokens: 765 }) + 18); // legacy's encoding
  });

  it('a large call rerouted to its fallback is costed with the fallback encoding', async () => {
    const yaml = YAML.replace(
      '    encoding: o200k_base\n    default_max_output_tokens: 100\n  legacy',
      '    encoding: o200k_base\n    default_max_output_tokens: 100\n    fallback: legacy\n  legacy',
    );
    const other = await spawnTollgate({ yaml });
    const c = new EnvoyClient(other.grpcPort);
    try {
      const body = chat('premium', prose(100_000, 7));
      const a = await c.check({ body, headers: { 'x-tenant-id': 'r1' } });
      expect(a.allowed).toBe(true);
      expect(a.upstream['x-tollgate-model']).toBe('legacy');
      const cl = expected(body, 'cl100k_base');
      expect(cl).not.toBe(expected(body, 'o200k_base'));
      expect(LIMIT - Number(a.headers['x-ratelimit-remaining-tokens'])).toBe(cl + 100);
    } finally {
      c.close();
      await other.stop();
    }
  }, 30_000);

  it('bad large bodies get the same 400 answers as small ones', async () => {
    const pad = 'x'.repeat(OFFLOAD_BYTES);
    const cases: Array<[string, RegExp]> = [
      [`{"model":"gpt-4o","messages":[{"role":"user","content":"${pad}"}]`, /not valid JSON/],
      [JSON.stringify({ messages: [{ role: 'user', content: pad }] }), /model is required/],
      [JSON.stringify({ model: 'gpt-4o', messages: pad }), /messages/],
      [
        `${'['.repeat(200_000)}${']'.repeat(200_000)}`,
        /nests too deeply|not valid JSON|must be an object|object/,
      ],
    ];
    for (const [body, msg] of cases) {
      const a = await envoy.check({ body, headers: { 'x-tenant-id': 'bad' } });
      expect(a.allowed).toBe(false);
      expect(a.httpStatus).toBe(400);
      expect(a.json.error.message).toMatch(msg);
    }
    // The process is still healthy and counting.
    expect(await spent(chat('gpt-4o', prose(OFFLOAD_BYTES, 8)))).toBeGreaterThan(100);
  });
});
