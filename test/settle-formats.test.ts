/**
 * Every response format settles to the usage it reports, whatever the chunking Envoy streams it in
 * (whole, small pieces cutting lines and UTF-8 characters, gzip-encoded and cut): OpenAI chat JSON and
 * SSE (with the final usage chunk, and without: output counted from the deltas, 'estimated'),
 * Responses API JSON and SSE (response.completed), Anthropic JSON and SSE (message_start +
 * message_delta), Gemini JSON and SSE (usageMetadata). Real gRPC on the memory store and Valkey.
 */
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { countText, getCounter } from '../src/tokens/encoders.js';
import type { EnvoyClient } from './helpers/envoy.js';
import {
  anthropicJson,
  anthropicSse,
  chatJson,
  chatSse,
  geminiJson,
  geminiSse,
  responsesJson,
  responsesSse,
} from './helpers/provider-bodies.js';
import { type SettleApp, startSettleApp } from './helpers/settle.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

const CONFIG = `
identity:
  tenant:
    - header: x-tenant-id
models:
  "*":
    encoding: o200k_base
    default_max_output_tokens: 1000
    price_usd_per_1m: { input: 1, output: 4, cached_input: 0.5, cache_write: 1.25 }
limits:
  - { name: tok, per: tenant, tokens: 10000000, reset: daily }
`;

const PIECES = ['Héllo', ' wörld ', '😀 naïve ', 'façade — ', 'done.'];
const TEXT = PIECES.join('');
const SSE = 'text/event-stream; charset=utf-8';
const JSONT = 'application/json';

interface Case {
  name: string;
  path: string;
  body: unknown;
  contentType: string;
  response: string;
  outcome: 'settled' | 'estimated';
  tokens: { prompt?: number; cachedPrompt?: number; cacheWrite?: number; output: number; reasoning?: number };
}

const chatReq = { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi there' }], max_tokens: 1000 };
const counted = () => countText(getCounter('o200k_base'), TEXT);

const CASES: Case[] = [
  {
    name: 'OpenAI chat JSON',
    path: '/v1/chat/completions',
    body: chatReq,
    contentType: JSONT,
    response: chatJson(120, 33, 64),
    outcome: 'settled',
    tokens: { prompt: 120, cachedPrompt: 64, output: 33 },
  },
  {
    name: 'OpenAI chat SSE with the final usage chunk',
    path: '/v1/chat/completions',
    body: { ...chatReq, stream: true, stream_options: { include_usage: true } },
    contentType: SSE,
    response: chatSse(PIECES, { prompt: 40, output: 21, cached: 8 }),
    outcome: 'settled',
    tokens: { prompt: 40, cachedPrompt: 8, output: 21 },
  },
  {
    name: 'OpenAI chat SSE without usage (counted from the deltas)',
    path: '/v1/chat/completions',
    body: { ...chatReq, stream: true },
    contentType: SSE,
    response: chatSse(PIECES),
    outcome: 'estimated',
    tokens: { output: -1 }, // counted() at run time
  },
  {
    name: 'Responses API JSON',
    path: '/v1/responses',
    body: { model: 'gpt-4o', input: 'hi there', max_output_tokens: 1000 },
    contentType: JSONT,
    response: responsesJson(50, 70, 10, 30),
    outcome: 'settled',
    tokens: { prompt: 50, cachedPrompt: 10, output: 70, reasoning: 30 },
  },
  {
    name: 'Responses API SSE response.completed',
    path: '/v1/responses',
    body: { model: 'gpt-4o', input: 'hi there', max_output_tokens: 1000, stream: true },
    contentType: SSE,
    response: responsesSse(PIECES, 51, 19),
    outcome: 'settled',
    tokens: { prompt: 51, output: 19 },
  },
  {
    name: 'Anthropic JSON (cache reads and writes are part of the prompt)',
    path: '/v1/messages',
    body: { model: 'claude-sonnet-4', max_tokens: 1000, messages: [{ role: 'user', content: 'hi there' }] },
    contentType: JSONT,
    response: anthropicJson(30, 44, 100, 20),
    outcome: 'settled',
    tokens: { prompt: 150, cachedPrompt: 100, cacheWrite: 20, output: 44 },
  },
  {
    name: 'Anthropic SSE message_start + message_delta',
    path: '/v1/messages',
    body: {
      model: 'claude-sonnet-4',
      max_tokens: 1000,
      stream: true,
      messages: [{ role: 'user', content: 'hi there' }],
    },
    contentType: SSE,
    response: anthropicSse(PIECES, 25, 17, 5),
    outcome: 'settled',
    tokens: { prompt: 30, cachedPrompt: 5, output: 17 },
  },
  {
    name: 'Gemini generateContent JSON',
    path: '/v1beta/models/gemini-2.5-flash:generateContent',
    body: {
      contents: [{ role: 'user', parts: [{ text: 'hi there' }] }],
      generationConfig: { maxOutputTokens: 1000 },
    },
    contentType: JSONT,
    response: geminiJson(12, 34, 4),
    outcome: 'settled',
    tokens: { prompt: 12, cachedPrompt: 4, output: 34 },
  },
  {
    name: 'Gemini streamGenerateContent SSE usageMetadata',
    path: '/v1beta/models/gemini-2.5-flash:streamGenerateContent?alt=sse',
    body: {
      contents: [{ role: 'user', parts: [{ text: 'hi there' }] }],
      generationConfig: { maxOutputTokens: 1000 },
    },
    contentType: SSE,
    response: geminiSse(PIECES, 13, 29),
    outcome: 'settled',
    tokens: { prompt: 13, output: 29 },
  },
];

/** The ways Envoy may stream a body: whole; 7-byte pieces (cutting lines and UTF-8); gzip, cut. */
function chunkings(body: string): { label: string; chunks: Buffer[]; encoding?: string }[] {
  const b = Buffer.from(body, 'utf8');
  const pieces = (buf: Buffer, size: number) => {
    const out: Buffer[] = [];
    for (let i = 0; i < buf.length; i += size) out.push(buf.subarray(i, i + size));
    return out;
  };
  const gz = gzipSync(b);
  return [
    { label: 'whole', chunks: [b] },
    { label: '7-byte pieces', chunks: pieces(b, 7) },
    { label: 'gzip in 5-byte pieces', chunks: pieces(gz, 5), encoding: 'gzip' },
  ];
}

let n = 0;
const tenant = () => `f${Date.now()}-${++n}`;
let vk: TestValkey | undefined;
beforeAll(async () => {
  vk = await startValkey();
});
afterAll(async () => {
  await vk?.close();
});

describe.each([
  ['memory', () => undefined],
  ['valkey', () => vk!.url],
] as [string, () => string | undefined][])('settlement of every format (%s store)', (_n, url) => {
  let s: SettleApp;
  beforeAll(async () => {
    s = await startSettleApp(CONFIG, { valkeyUrl: url() });
  });
  afterAll(async () => {
    await s.close();
  });

  for (const c of CASES)
    it(c.name, async () => {
      for (const way of chunkings(c.response)) {
        const t = tenant();
        const envoy: EnvoyClient = s.envoy;
        const a = await envoy.check({ path: c.path, headers: { 'x-tenant-id': t }, body: c.body });
        expect(a.allowed, way.label).toBe(true);
        const cap = Number(a.headers['x-ratelimit-limit-tokens']);
        const reserved = cap - Number(a.headers['x-ratelimit-remaining-tokens']);
        const ev = await s.settle({
          id: a.reservation,
          headers: {
            'content-type': c.contentType,
            ...(way.encoding && { 'content-encoding': way.encoding }),
          },
          chunks: way.chunks,
        });
        expect(ev?.outcome, way.label).toBe(c.outcome);
        const want = { ...c.tokens, output: c.tokens.output < 0 ? counted() : c.tokens.output };
        expect(ev?.settlement?.tokens, way.label).toMatchObject(want);
        const t2 = ev!.settlement!.tokens;
        const b = await envoy.check({ path: c.path, headers: { 'x-tenant-id': t }, body: c.body });
        expect(Number(b.headers['x-ratelimit-remaining-tokens']), way.label).toBe(
          cap - (t2.prompt + t2.output) - reserved,
        );
      }
    });
});
