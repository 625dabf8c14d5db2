import {
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import fc from 'fast-check';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseCall } from '../src/dialects/parse.js';
import { isParseError, type ParsedCall } from '../src/dialects/types.js';
import { defaultPoolSize, TokenPool, workerExecArgv } from '../src/offload/pool.js';
import { countPromptTokens } from '../src/tokens/count.js';
import { CHUNK_CHARS, countText, ENCODINGS, getEncoder, MAX_RUN } from '../src/tokens/encoders.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const OPTS = { imageTokens: 85 };

function parse(dialect: Parameters<typeof parseCall>[0], body: unknown): ParsedCall {
  const r = parseCall(dialect, body);
  if (isParseError(r)) throw new Error(r.error);
  return r;
}

// ---------------------------------------------------------------------------------------------
// Cookbook: https://github.com/openai/openai-cookbook/blob/main/examples/How_to_count_tokens_with_tiktoken.ipynb
// ---------------------------------------------------------------------------------------------

const COOKBOOK_MESSAGES = [
  {
    role: 'system',
    content:
      'You are a helpful, pattern-following assistant that translates corporate jargon into plain English.',
  },
  { role: 'system', name: 'example_user', content: 'New synergies will help drive top-line growth.' },
  {
    role: 'system',
    name: 'example_assistant',
    content: 'Things working well together will increase revenue.',
  },
  {
    role: 'system',
    name: 'example_user',
    content:
      "Let's circle back when we have more bandwidth to touch base on opportunities for increased leverage.",
  },
  {
    role: 'system',
    name: 'example_assistant',
    content: "Let's talk later when we're less busy about how to do better.",
  },
  {
    role: 'user',
    content: "This late pivot means we don't have time to boil the ocean for the client deliverable.",
  },
];

const COOKBOOK_TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_current_weather',
      description: 'Get the current weather in a given location',
      parameters: {
        type: 'object',
        properties: {
          location: { type: 'string', description: 'The city and state, e.g. San Francisco, CA' },
          unit: {
            type: 'string',
            description: 'The unit of temperature to return',
            enum: ['celsius', 'fahrenheit'],
          },
        },
        required: ['location'],
      },
    },
  },
];

const COOKBOOK_TOOL_MESSAGES = [
  { role: 'system', content: 'You are a helpful assistant that can answer to questions about the weather.' },
  { role: 'user', content: "What's the weather like in San Francisco?" },
];

describe('OpenAI cookbook numbers', () => {
  const call = parse('openai.chat', { model: 'gpt-4o', messages: COOKBOOK_MESSAGES });

  it('example messages: 129 tokens for gpt-3.5-turbo / gpt-4 (cl100k_base)', () => {
    expect(countPromptTokens(call, 'cl100k_base', OPTS)).toBe(129);
  });

  it('example messages: 124 tokens for gpt-4o / gpt-4o-mini (o200k_base)', () => {
    expect(countPromptTokens(call, 'o200k_base', OPTS)).toBe(124);
  });

  it('per-message overhead is exactly 3 + 1 per name + 3 priming', () => {
    const enc = getEncoder('o200k_base');
    let raw = 0;
    for (const m of COOKBOOK_MESSAGES) for (const v of Object.values(m)) raw += enc.encode(v).length;
    expect(countPromptTokens(call, 'o200k_base', OPTS)).toBe(raw + 3 * 6 + 4 * 1 + 3);
  });

  const toolCall = parse('openai.chat', {
    model: 'gpt-4o',
    messages: COOKBOOK_TOOL_MESSAGES,
    tools: COOKBOOK_TOOLS,
  });

  it('tools example: 101 tokens for gpt-4o / gpt-4o-mini (o200k_base)', () => {
    expect(countPromptTokens(toolCall, 'o200k_base', OPTS)).toBe(101);
  });

  it('tools example: 105 tokens for gpt-3.5-turbo / gpt-4 (cl100k_base)', () => {
    expect(countPromptTokens(toolCall, 'cl100k_base', OPTS)).toBe(105);
  });

  it('legacy `functions` are counted like tools', () => {
    const legacy = parse('openai.chat', {
      messages: COOKBOOK_TOOL_MESSAGES,
      functions: COOKBOOK_TOOLS.map((t) => t.function),
    });
    expect(countPromptTokens(legacy, 'o200k_base', OPTS)).toBe(101);
  });

  it('nested schema keys the cookbook ignores are still counted (no free tokens)', () => {
    const big = structuredClone(COOKBOOK_TOOLS);
    (big[0].function.parameters.properties as any).location.items = { description: 'x '.repeat(500) };
    const c = parse('openai.chat', { messages: COOKBOOK_TOOL_MESSAGES, tools: big });
    expect(countPromptTokens(c, 'o200k_base', OPTS)).toBeGreaterThan(101 + 400);
  });
});

describe('countPromptTokens other dialects', () => {
  it('images cost opts.imageTokens each', () => {
    const c = parse('openai.chat', {
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: 'hi' },
            { type: 'image_url', image_url: { url: 'data:...' } },
            { type: 'image_url', image_url: { url: 'https://x' } },
          ],
        },
      ],
    });
    expect(
      countPromptTokens(c, 'o200k_base', { imageTokens: 100 }) -
        countPromptTokens(c, 'o200k_base', { imageTokens: 0 }),
    ).toBe(200);
  });

  it('embeddings: sum over inputs, token arrays count their length, no chat overhead', () => {
    const enc = getEncoder('cl100k_base');
    const c = parse('openai.embeddings', { input: ['hello world', 'the quick brown fox'] });
    expect(countPromptTokens(c, 'cl100k_base', OPTS)).toBe(
      enc.encode('hello world').length + enc.encode('the quick brown fox').length,
    );
    const t = parse('openai.embeddings', {
      input: [
        [1, 2, 3],
        [4, 5],
      ],
    });
    expect(countPromptTokens(t, 'cl100k_base', OPTS)).toBe(5);
  });

  it('completions: prompt text tokens only', () => {
    const enc = getEncoder('p50k_base');
    const c = parse('openai.completions', { prompt: 'Say this is a test', max_tokens: 7 });
    expect(countPromptTokens(c, 'p50k_base', OPTS)).toBe(enc.encode('Say this is a test').length);
  });

  it('anthropic: same chat formula (estimate)', () => {
    const a = parse('anthropic.messages', {
      max_tokens: 10,
      system:
        'You are a helpful, pattern-following assistant that translates corporate jargon into plain English.',
      messages: [{ role: 'user', content: 'hello' }],
    });
    const o = parse('openai.chat', {
      messages: [
        {
          role: 'system',
          content:
            'You are a helpful, pattern-following assistant that translates corporate jargon into plain English.',
        },
        { role: 'user', content: 'hello' },
      ],
    });
    expect(countPromptTokens(a, 'o200k_base', OPTS)).toBe(countPromptTokens(o, 'o200k_base', OPTS));
  });

  it('special-token strings are counted as text, not rejected', () => {
    const c = parse('openai.chat', {
      messages: [{ role: 'user', content: 'a <|endoftext|> b <|im_start|>' }],
    });
    expect(countPromptTokens(c, 'cl100k_base', OPTS)).toBeGreaterThan(7);
  });

  it('unknown encoding is an error', () => {
    const c = parse('openai.chat', { messages: [] });
    expect(() => countPromptTokens(c, 'nope', OPTS)).toThrow(/unknown token encoding/);
  });
});

// ---------------------------------------------------------------------------------------------
// countText vs raw tiktoken
// ---------------------------------------------------------------------------------------------

function rng(seed: number) {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const WORDS =
  'the of and to in is that for it as was with be by on not he this are or his from at which but have an they you were her she there been one all we their has would when if so no will can more other about into some could them than then its two these time may only like over such also new any after first'.split(
    ' ',
  );

function prose(chars: number, seed = 1): string {
  const r = rng(seed);
  const out: string[] = [];
  let n = 0;
  let sentence = 0;
  while (n < chars) {
    let w = WORDS[Math.floor(r() * WORDS.length)];
    if (sentence === 0) w = w[0].toUpperCase() + w.slice(1);
    sentence++;
    let sep = ' ';
    if (sentence > 8 && r() < 0.2) {
      w += r() < 0.5 ? '.' : ',';
      if (w.endsWith('.')) {
        sentence = 0;
        sep = r() < 0.2 ? '\n\n' : ' ';
      }
    }
    out.push(w, sep);
    n += w.length + sep.length;
  }
  return out.join('');
}

function code(chars: number): string {
  const lines: string[] = [];
  let n = 0;
  for (let i = 0; n < chars; i++) {
    const block = `export function handler${i}(req: Request, opts: { limit?: number } = {}): Promise<Response> {
  const limit = opts.limit ?? ${i * 7};
  if (req.headers.get('x-api-key') !== process.env.KEY_${i}) {
    return Promise.reject(new Error(\`unauthorized: \${req.url}\`));
  }
  for (let j = 0; j < limit; j++) {
    // TODO(${i}): batch these calls -- see issue #${1000 + i}
    items.push({ id: j, value: Math.sqrt(j) * 3.14159, tags: ['a', 'b'] });
  }
  return fetch(req);
}
`;
    lines.push(block);
    n += block.length;
  }
  return lines.join('\n');
}

function json(chars: number): string {
  const items: unknown[] = [];
  let s = '';
  for (let i = 0; s.length < chars; i++) {
    items.push({ id: i, name: `item-${i}`, price: i * 1.25, ok: i % 2 === 0, tags: ['x', 'y', String(i)] });
    if (i % 20 === 0) s = JSON.stringify(items, null, 2);
  }
  return JSON.stringify(items, null, 2);
}

const CJK = '東京は日本の首都であり、世界で最も人口の多い都市圏の一つです。お誕生日おめでとう。';
const EMOJI = '👋🏽🎉👨‍👩‍👧‍👦🚀✨';

describe('countText', () => {
  const shortCorpus = [
    '',
    'hello world',
    prose(3000, 7),
    code(3000),
    json(3000),
    CJK.repeat(20),
    EMOJI.repeat(50),
    'a'.repeat(8000),
    'x'.repeat(CHUNK_CHARS),
    '   \n\n\t  leading and trailing whitespace  \n',
    '<|endoftext|> <|fim_prefix|> special-looking text',
  ];

  for (const name of ENCODINGS) {
    it(`equals encode_ordinary for texts ≤ ${CHUNK_CHARS} chars (${name})`, () => {
      const enc = getEncoder(name);
      for (const t of shortCorpus) {
        expect(t.length).toBeLessThanOrEqual(CHUNK_CHARS);
        expect(countText(enc, t)).toBe(enc.encode_ordinary(t).length);
      }
    });
  }

  it('matches enc.encode() where encode() accepts the text', () => {
    const enc = getEncoder('o200k_base');
    for (const t of shortCorpus.slice(0, 10)) expect(countText(enc, t)).toBe(enc.encode(t).length);
  });

  const longNormal: Array<[string, string]> = [
    ['prose', prose(60_000, 3)],
    ['code', code(50_000)],
    ['pretty JSON', json(40_000)],
    [
      'mixed prose + CJK sentences',
      Array.from({ length: 400 }, (_, i) => `${prose(80, i)} ${CJK} ${EMOJI}`).join('\n'),
    ],
  ];

  for (const name of ['o200k_base', 'cl100k_base'] as const) {
    for (const [label, text] of longNormal) {
      it(`chunked == whole for long ${label} (${name}, ${text.length} chars)`, () => {
        expect(text.length).toBeGreaterThan(2 * CHUNK_CHARS);
        const enc = getEncoder(name);
        expect(countText(enc, text)).toBe(enc.encode_ordinary(text).length);
      });
    }
  }

  it('chunked == whole for random long texts split at spaces (property)', () => {
    const enc = getEncoder('o200k_base');
    const enc2 = getEncoder('cl100k_base');
    const piece = fc.constantFrom(
      'word',
      'Word',
      "it's",
      '12345',
      '3.14',
      '.',
      ',\n',
      '.\n\n',
      '!!',
      '/',
      '//',
      '\t',
      '  ',
      '\n',
      '\r\n',
      '東京',
      '👋🏽',
      'naïve',
      '(x)',
      '{"a":1}',
      '--',
      '   \n  ',
      'ÄÖÜ',
      '\u00a0',
    );
    fc.assert(
      fc.property(
        fc.array(fc.tuple(piece, fc.constantFrom(' ', ' ', '', '\n')), { minLength: 200, maxLength: 400 }),
        (parts) => {
          let unit = parts.map(([p, s]) => p + s).join('');
          while (unit.length < 3 * CHUNK_CHARS) unit += ` ${unit}`;
          expect(countText(enc, unit)).toBe(enc.encode_ordinary(unit).length);
          expect(countText(enc2, unit)).toBe(enc2.encode_ordinary(unit).length);
        },
      ),
      { numRuns: 25, seed: 42 },
    );
  });

  // Sizes stay moderate because the whole-text reference encode is super-linear on these inputs
  // (that is the reason for chunking: 'a'.repeat(100_000) takes ~15 s to encode in one piece).
  const pathological: Array<[string, string]> = [
    ['whitespace-free ascii run', 'abcdefghij'.repeat(2_500)],
    [
      'base64-like run',
      Buffer.from(Array.from({ length: 60_000 }, (_, i) => (i * 37) & 255)).toString('base64'),
    ],
    ['CJK without spaces', CJK.repeat(1000)],
    ['emoji run (surrogate pairs)', EMOJI.repeat(700)],
    ['newline-only whitespace', 'line\n'.repeat(10_000)],
    ['one char', 'a'.repeat(20_000)],
  ];

  for (const [label, text] of pathological) {
    it(`near-equal for pathological ${label}`, () => {
      for (const name of ['o200k_base', 'cl100k_base'] as const) {
        const enc = getEncoder(name);
        const whole = enc.encode_ordinary(text).length;
        const chunked = countText(enc, text);
        const cuts = Math.ceil(text.length / MAX_RUN);
        expect(Math.abs(chunked - whole)).toBeLessThanOrEqual(2 * cuts);
        expect(Math.abs(chunked - whole) / whole).toBeLessThan(0.05);
        expect(chunked).toBeGreaterThan(0);
      }
    }, 30_000);
  }

  it('is fast on a 1 MB whitespace-free run', () => {
    const enc = getEncoder('o200k_base');
    const t0 = performance.now();
    const n = countText(enc, 'Qz9'.repeat(350_000));
    expect(n).toBeGreaterThan(1000);
    expect(performance.now() - t0).toBeLessThan(5000);
  });

  it('bounds BPE cost of long single-class runs (8 KB CJK without punctuation would take ~0.7 s whole)', () => {
    for (const name of ['o200k_base', 'cl100k_base'] as const) {
      const enc = getEncoder(name);
      for (const unit of ['東京は日本の首都であり', '\ud83d', 'สวัสดี', '\u200d']) {
        const t = unit.repeat(Math.ceil(200_000 / unit.length));
        const t0 = performance.now();
        expect(countText(enc, t)).toBeGreaterThan(0);
        expect(performance.now() - t0).toBeLessThan(3000);
      }
    }
  }, 30_000);

  it('getEncoder returns the same instance every time', () => {
    for (const name of ENCODINGS) expect(getEncoder(name)).toBe(getEncoder(name));
  });
});

// ---------------------------------------------------------------------------------------------
// Pool
// ---------------------------------------------------------------------------------------------

/** Compile the worker and its imports with the TypeScript transpiler into a temp dir (plain JS). */
function buildWorker(dir: string): URL {
  // The worker and everything it imports (tokens/*, dialects/*, settings), transpiled as vitest would.
  const files = ['src/tokens', 'src/dialects', 'src/offload']
    .flatMap((d) =>
      readdirSync(path.join(ROOT, d))
        .filter((f) => f.endsWith('.ts'))
        .map((f) => `${d}/${f}`),
    )
    .concat(['src/settings.ts', 'src/errors.ts', 'src/policy/model-name.ts']);
  for (const f of files) {
    const src = readFileSync(path.join(ROOT, f), 'utf8');
    const out = ts.transpileModule(src, {
      compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
    }).outputText;
    const dest = path.join(dir, f.replace(/\.ts$/, '.js'));
    mkdirSync(path.dirname(dest), { recursive: true });
    writeFileSync(dest, out);
  }
  writeFileSync(path.join(dir, 'package.json'), '{"type":"module"}');
  symlinkSync(path.join(ROOT, 'node_modules'), path.join(dir, 'node_modules'), 'dir');
  return pathToFileURL(path.join(dir, 'src/offload/worker.js'));
}

describe('TokenPool', () => {
  let dir: string;
  let workerUrl: URL;
  const fake = pathToFileURL(path.join(ROOT, 'test/fixtures/tokens/fake-worker.mjs'));

  beforeAll(() => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'tollgate-worker-'));
    workerUrl = buildWorker(dir);
  });
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  const calls: ParsedCall[] = [
    parse('openai.chat', { messages: COOKBOOK_MESSAGES }),
    parse('openai.chat', { messages: COOKBOOK_TOOL_MESSAGES, tools: COOKBOOK_TOOLS }),
    parse('openai.chat', { messages: [{ role: 'user', content: code(40_000) }] }),
    parse('openai.embeddings', { input: [prose(30_000, 9), 'x'.repeat(20_000), [1, 2, 3]] }),
    parse('anthropic.messages', {
      system: [{ type: 'text', text: prose(20_000, 5) }],
      messages: [
        {
          role: 'user',
          content: [
            { type: 'image', source: {} },
            { type: 'text', text: 'hi' },
          ],
        },
      ],
    }),
  ];

  it('workers inherit Node flags except entry-point-only ones', () => {
    expect(
      workerExecArgv([
        '--input-type=module',
        '--max-old-space-size=200',
        '-e',
        'code()',
        '--import',
        'tsx',
        '-p',
        'x',
      ]),
    ).toEqual(['--max-old-space-size=200', '--import', 'tsx']);
  });

  it('per-process V8 flags of the parent (refused by worker threads) do not stop the pool', async () => {
    const saved = process.execArgv.slice();
    process.execArgv.push('--max-old-space-size=300', '--expose-gc');
    const pool = new TokenPool(1, { workerUrl });
    try {
      await expect(pool.count(calls[0], 'o200k_base', OPTS)).resolves.toBe(
        countPromptTokens(calls[0], 'o200k_base', OPTS),
      );
      expect(pool.crashes).toBe(0);
    } finally {
      process.execArgv.splice(0, process.execArgv.length, ...saved);
      await pool.close();
    }
  });

  it('default size is max(1, min(2, cpus - 1))', () => {
    expect(defaultPoolSize()).toBe(Math.max(1, Math.min(2, os.availableParallelism() - 1)));
  });

  it('worker count equals inline count (o200k, cl100k), with queueing beyond pool size', async () => {
    const pool = new TokenPool(2, { workerUrl });
    expect(pool.mode).toBe('workers');
    try {
      const jobs: Array<Promise<[number, number]>> = [];
      for (let rep = 0; rep < 3; rep++) {
        for (const c of calls) {
          for (const name of ['o200k_base', 'cl100k_base']) {
            jobs.push(pool.count(c, name, OPTS).then((n) => [n, countPromptTokens(c, name, OPTS)]));
          }
        }
      }
      expect(pool.pending).toBeGreaterThan(0);
      for (const [viaPool, inline] of await Promise.all(jobs)) expect(viaPool).toBe(inline);
      expect(pool.crashes).toBe(0);
    } finally {
      await pool.close();
    }
  });

  it('worker-side errors reject the job without killing the worker', async () => {
    const pool = new TokenPool(1, { workerUrl });
    try {
      await expect(pool.count(calls[0], 'bogus', OPTS)).rejects.toThrow(/unknown token encoding/);
      await expect(pool.count(calls[0], 'o200k_base', OPTS)).resolves.toBe(124);
      expect(pool.crashes).toBe(0);
    } finally {
      await pool.close();
    }
  });

  it('a crashing worker rejects its job and is replaced', async () => {
    const pool = new TokenPool(1, { workerUrl: fake });
    const ok = { ...calls[0], model: 'ok' };
    try {
      const a = pool.count({ ...calls[0], model: 'crash' }, 'o200k_base', OPTS);
      const b = pool.count(ok, 'o200k_base', OPTS); // queued behind the crash
      await expect(a).rejects.toThrow(/token worker crashed: boom/);
      await expect(b).resolves.toBe(42);
      await expect(pool.count({ ...calls[0], model: 'exit' }, 'o200k_base', OPTS)).rejects.toThrow(
        /exited with code 3/,
      );
      await expect(pool.count({ ...calls[0], model: 'fail' }, 'o200k_base', OPTS)).rejects.toThrow(/nope/);
      await expect(pool.count(ok, 'o200k_base', OPTS)).resolves.toBe(42);
      expect(pool.crashes).toBe(2);
    } finally {
      await pool.close();
    }
  });

  it('close() rejects queued and in-flight jobs and later calls', async () => {
    const pool = new TokenPool(1, { workerUrl: fake });
    const ok = { ...calls[0], model: 'ok' };
    const a = pool.count(ok, 'o200k_base', OPTS);
    const b = pool.count(ok, 'o200k_base', OPTS);
    const settled = Promise.allSettled([a, b]);
    await pool.close();
    for (const r of await settled) {
      expect(r.status).toBe('rejected');
      expect(String((r as PromiseRejectedResult).reason)).toMatch(/closed/);
    }
    await expect(pool.count(ok, 'o200k_base', OPTS)).rejects.toThrow(/closed/);
  });

  it('falls back to inline counting when worker.js is absent (running .ts sources)', async () => {
    const pool = new TokenPool();
    expect(pool.mode).toBe('inline');
    try {
      await expect(pool.count(calls[0], 'cl100k_base', OPTS)).resolves.toBe(129);
      await expect(pool.count(calls[0], 'bogus', OPTS)).rejects.toThrow(/unknown token encoding/);
    } finally {
      await pool.close();
    }
  });
});
