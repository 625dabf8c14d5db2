/**
 * The shared machinery of response usage extraction: the SSE line splitter, bounded JSON buffering
 * with the tail scan, the bounded text collector and its estimate, and hostile bodies (garbage,
 * truncation, empty, no usage, oversized).
 */
import { describe, expect, it } from 'vitest';
import {
  createUsageExtractor,
  estimateTokens,
  lastObjectForKey,
  resolveUsage,
  type SseEvent,
  SseParser,
  scanUsage,
  TextCollector,
} from '../src/dialects/usage/index.js';
import { countChars, sse } from './helpers/usage-harness.js';

describe('SseParser', () => {
  const parse = (chunks: string[], max?: number, tail?: number): SseEvent[] => {
    const out: SseEvent[] = [];
    const p = new SseParser((e) => out.push(e), max, tail);
    for (const c of chunks) p.push(Buffer.from(c, 'utf8'));
    p.end();
    return out;
  };

  it('fields, multi-line data, comments, CRLF, no space after the colon, unknown fields', () => {
    const events = parse([
      ': hi\r\nevent: a\r\ndata: 1\r\ndata:2\r\nid: 9\r\nretry: 5\r\nfoo: bar\r\n\r\ndata\n\n',
    ]);
    expect(events).toEqual([
      { event: 'a', data: '1\n2', overLong: false, droppedBytes: 0 },
      { data: '', overLong: false, droppedBytes: 0 },
    ]);
  });

  it('blank lines without data dispatch nothing; a last event without its blank line is delivered at end', () => {
    expect(parse(['\n\n\nevent: x\n\n', 'data: {"a":1}'])).toEqual([
      { data: '{"a":1}', overLong: false, droppedBytes: 0 },
    ]);
  });

  it('multi-byte characters split across chunks decode intact', () => {
    const s = 'data: 😀日本\n\n';
    const b = Buffer.from(s);
    for (let i = 1; i < b.length; i++) {
      const out: SseEvent[] = [];
      const p = new SseParser((e) => out.push(e));
      p.push(b.subarray(0, i));
      p.push(b.subarray(i));
      p.end();
      expect(out.map((e) => e.data)).toEqual(['😀日本']);
    }
  });

  it('an over-long line keeps only its tail, bounded', () => {
    const big = `data: ${'x'.repeat(10_000)}END\n\ndata: small\n\n`;
    const events = parse(big.match(/.{1,333}/gs)!, 1000, 100);
    expect(events).toHaveLength(2);
    expect(events[0].overLong).toBe(true);
    expect(events[0].data.length).toBeLessThanOrEqual(100);
    expect(events[0].data.endsWith('END')).toBe(true);
    expect(events[0].droppedBytes + Buffer.byteLength(events[0].data)).toBe(10_009);
    expect(events[1]).toEqual({ data: 'small', overLong: false, droppedBytes: 0 });
  });
});

describe('lastObjectForKey', () => {
  it('finds the last real key, skipping escaped look-alikes in strings and braces in strings', () => {
    const text =
      '{"choices":[{"text":"say \\"usage\\": {\\"x\\":1} }"}],"usage":{"prompt_tokens":3,"s":"}{"},"x":1}';
    expect(lastObjectForKey(text, ['usage'])).toEqual({ key: 'usage', value: { prompt_tokens: 3, s: '}{' } });
  });

  it('works on a tail that starts mid-token and ignores an unterminated object', () => {
    expect(lastObjectForKey('3,4]},"usage":{"a":1}}', ['usage'])?.value).toEqual({ a: 1 });
    expect(lastObjectForKey('"usage":{"a":1}, "usage": {"b": ', ['usage'])?.value).toEqual({ a: 1 });
    expect(lastObjectForKey('"usage": null', ['usage'])).toBeUndefined();
  });
});

describe('TextCollector bound', () => {
  it('keeps whole pieces up to the bound and estimates the rest without under-counting', () => {
    const c = new TextCollector(10);
    c.add('0123456789');
    c.add('abcdefgh'); // 8 ASCII → 2
    c.add('日本語😀'); // 4 characters → 4
    c.add(42);
    const r = c.result();
    expect(r.text).toBe('0123456789');
    expect(r.droppedAsciiBytes).toBe(8);
    expect(r.droppedNonAsciiChars).toBe(4);
    expect(estimateTokens(r)).toBe(6);
  });

  it('an extractor past its text bound counts the kept text plus the estimate', () => {
    const pieces = Array.from({ length: 100 }, (_, i) => `word${i} `);
    const body = sse(
      pieces.map((p): [undefined, unknown] => [
        undefined,
        { choices: [{ index: 0, delta: { content: p } }] },
      ]),
    );
    const x = createUsageExtractor('openai.chat', undefined, { maxTextChars: 50 });
    x.push(Buffer.from(body));
    const scan = x.end();
    expect(scan.text.text.length).toBeLessThanOrEqual(50);
    const all = pieces.join('');
    const u = resolveUsage(scan, countChars);
    expect(u.source).toBe('counted');
    expect(u.output).toBe(scan.text.text.length + Math.ceil((all.length - scan.text.text.length) / 4));
  });
});

describe('bounded JSON', () => {
  const usage = { prompt_tokens: 10, completion_tokens: 20000, total_tokens: 20010 };
  const big = JSON.stringify({
    object: 'chat.completion',
    choices: [{ index: 0, message: { role: 'assistant', content: 'z'.repeat(100_000) } }],
    usage,
  });

  it('past maxJsonBytes the usage is taken from the tail', () => {
    const x = createUsageExtractor('openai.chat', undefined, { maxJsonBytes: 10_000, tailBytes: 1000 });
    for (let i = 0; i < big.length; i += 777) x.push(Buffer.from(big.slice(i, i + 777)));
    const scan = x.end();
    expect(scan.jsonOverflow).toBe(true);
    expect(scan.text.text).toBe('');
    expect(resolveUsage(scan, countChars)).toMatchObject({ prompt: 10, output: 20000, source: 'reported' });
  });

  it('past maxJsonBytes with no usage in the tail: output estimated from the bytes (over-count)', () => {
    const noUsage = JSON.stringify({ choices: [{ message: { content: 'z'.repeat(100_000) } }] });
    const scan = scanUsage('openai.chat', noUsage, undefined, { maxJsonBytes: 10_000, tailBytes: 1000 });
    const u = resolveUsage(scan, countChars);
    expect(u.source).toBe('counted');
    expect(u.output).toBe(Math.ceil(noUsage.length / 4));
  });

  it('Gemini usageMetadata and Responses usage from the tail too', () => {
    const g = JSON.stringify({
      candidates: [{ content: { parts: [{ text: 'y'.repeat(50_000) }] }, finishReason: 'STOP' }],
      usageMetadata: { promptTokenCount: 5, candidatesTokenCount: 7, thoughtsTokenCount: 2 },
    });
    const u = resolveUsage(
      scanUsage('gemini.generateContent', g, undefined, { maxJsonBytes: 1000, tailBytes: 500 }),
      countChars,
    );
    expect(u).toMatchObject({ prompt: 5, output: 9, reasoning: 2, source: 'reported' });
  });

  it('an over-long SSE event (response.completed with a huge output) still yields its usage', () => {
    const completed = {
      type: 'response.completed',
      response: {
        output: [{ type: 'message', content: [{ type: 'output_text', text: 'q'.repeat(20_000) }] }],
        usage: { input_tokens: 4, output_tokens: 5000, output_tokens_details: { reasoning_tokens: 0 } },
      },
    };
    const scan = scanUsage('openai.responses', sse([['response.completed', completed]]), undefined, {
      maxLineBytes: 4096,
      tailBytes: 1024,
    });
    expect(resolveUsage(scan, countChars)).toMatchObject({ prompt: 4, output: 5000, source: 'reported' });
  });

  it('an over-long SSE delta line without usage is estimated one token per byte', () => {
    const line = { choices: [{ delta: { content: 'w'.repeat(8000) } }] };
    const scan = scanUsage('openai.chat', sse([[undefined, line]]), undefined, {
      maxLineBytes: 4096,
      tailBytes: 1024,
    });
    const u = resolveUsage(scan, countChars);
    expect(u.source).toBe('counted');
    expect(u.output).toBeGreaterThanOrEqual(8000);
  });
});

describe('hostile and empty bodies', () => {
  const dialects = [
    'openai.chat',
    'openai.responses',
    'anthropic.messages',
    'gemini.generateContent',
  ] as const;

  it.each(dialects)('%s: empty, blank, garbage, truncated JSON, non-JSON SSE → none', (d) => {
    for (const body of [
      '',
      '   \n\n',
      'not json at all',
      '{"usage": {"prompt_tokens": 3',
      '\u0000\u00ff\u00fe',
      'data: {oops\n\n',
      '[1,2',
      '<html>502 Bad Gateway</html>',
    ]) {
      const scan = scanUsage(d, body);
      expect(resolveUsage(scan, countChars), JSON.stringify(body)).toMatchObject({
        source: 'none',
        output: 0,
        promptReported: false,
      });
    }
  });

  it.each(dialects)('%s: hostile usage values are ignored', (d) => {
    const body = JSON.stringify({
      usage: { prompt_tokens: -5, completion_tokens: 'many', input_tokens: 1e300, output_tokens: Number.NaN },
      usageMetadata: { promptTokenCount: -1, candidatesTokenCount: '3' },
      choices: 'x',
      content: { not: 'an array' },
      candidates: [null, 3, { content: { parts: 'no' } }],
      output: [null],
    });
    expect(() => resolveUsage(scanUsage(d, body), countChars)).not.toThrow();
    expect(resolveUsage(scanUsage(d, body), countChars).source).not.toBe('reported');
  });

  it('a provider error JSON (non-2xx body) has no usage', () => {
    const body = JSON.stringify({
      error: { message: 'Rate limit reached', type: 'requests', param: null, code: 'rate_limit_exceeded' },
    });
    expect(resolveUsage(scanUsage('openai.chat', body), countChars).source).toBe('none');
  });

  it('a stream with no usage and no content → none; [DONE] alone → none', () => {
    expect(resolveUsage(scanUsage('openai.chat', 'data: [DONE]\n\n'), countChars).source).toBe('none');
    expect(
      resolveUsage(scanUsage('anthropic.messages', sse([['ping', { type: 'ping' }]])), countChars).source,
    ).toBe('none');
  });

  it('end() is idempotent and later pushes are ignored', () => {
    const x = createUsageExtractor('openai.chat');
    x.push(Buffer.from('{"usage":{"prompt_tokens":1,"completion_tokens":2}}'));
    const a = x.end();
    x.push(Buffer.from('garbage'));
    expect(x.end()).toBe(a);
  });
});
