/**
 * The fast counter (src/tokens/bpe.ts: shared rank table, hand-written ASCII pre-tokenizers) may serve
 * the hot path only where its counts equal tiktoken's (the reference) exactly. This corpus covers prose, code, JSON, CJK, emoji, long
 * whitespace-free runs, whitespace runs, special-token strings and random mixes, for every encoding
 * in FAST_ENCODINGS; an encoding that fails here must be removed from FAST_ENCODINGS.
 */
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { pieceCacheSlot } from '../src/tokens/bpe.js';
import {
  countText,
  ENCODINGS,
  FAST_ENCODINGS,
  fastCounter,
  getCounter,
  getEncoder,
  hasLongRun,
  MAX_RUN,
  referenceCounter,
} from '../src/tokens/encoders.js';

const prose = [
  'The quick brown fox jumps over the lazy dog.',
  "Hello! How are you today? I'd like to book a flight from Berlin to New York on the 3rd of May.",
  'Rate limiting LLM traffic by tokens, not requests, is what keeps a shared budget fair: a 100k-token prompt costs 1,000× a short question.',
  'Straße, Größe, Äpfel und Öl — über 12.5% der Gäste aßen Crème brûlée à la française.',
  'Ça coûte 3,50 € ; l’été dernier, où étiez-vous ?',
  'Привет, как дела? Это тест токенизатора на кириллице.',
  'مرحبا بالعالم، هذا اختبار.',
  'नमस्ते दुनिया, यह एक परीक्षण है।',
  'Γειά σου Κόσμε! Αυτό είναι ένα τεστ.',
  '  leading spaces and trailing spaces   \n\n\nmultiple newlines\r\nwindows line\tand\ttabs  ',
  "I'm, you're, he's, we've, they'll, she'd, IT'S, We'RE — contractions in CASE.",
  'Numbers: 1 12 123 1234 12345 123456 3.14159 -42 1e10 0x1F 1,000,000 2024-05-01T12:34:56Z',
];

const code = [
  `export async function decide(input: CheckInput): Promise<Decision> {\n  const route = classifyPath(input.path);\n  if (!route) return allow('not-llm', {}, {}, [], {});\n  for (let i = 0; i < 10; i++) {\n    console.log(\`i = \${i}\`);\n  }\n}\n`,
  'def fib(n):\n    """Return the n-th Fibonacci number."""\n    a, b = 0, 1\n    for _ in range(n):\n        a, b = b, a + b\n    return a\n\nprint([fib(i) for i in range(20)])\n',
  '#include <stdio.h>\nint main(void) {\n\tchar buf[256];\n\twhile (fgets(buf, sizeof buf, stdin)) { printf("%s", buf); }\n\treturn 0;\n}\n',
  "SELECT u.id, COUNT(*) AS n FROM users u JOIN orders o ON o.user_id = u.id WHERE o.created_at >= NOW() - INTERVAL '7 days' GROUP BY u.id HAVING n > 3;",
  '<div class="card"><h1 id=\'title\'>Hi &amp; bye</h1><!-- comment --><script>var x = 1 && 2 || 3;</script></div>',
  'fn main() -> Result<(), Box<dyn std::error::Error>> {\n    let v: Vec<u8> = (0..=255).collect();\n    println!("{:?}", &v[..4]);\n    Ok(())\n}\n',
  '    \n        \n\t\t\n   x = [1,2,3]   ;;;   y = {a:1}   \n\n\n\n',
];

const json = [
  JSON.stringify({
    model: 'gpt-4o',
    messages: [
      { role: 'system', content: 'You are helpful.' },
      { role: 'user', content: 'What is 2+2?' },
    ],
    max_tokens: 100,
    temperature: 0.7,
    tools: [{ type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } }],
  }),
  JSON.stringify({ a: [1, 2, 3, { b: null, c: true, d: 'x"y\\z' }], e: '\u00e9\u4e2d' }, null, 2),
  '{"type":"object","properties":{"location":{"type":"string","description":"City, e.g. San Francisco, CA"},"unit":{"type":"string","enum":["celsius","fahrenheit"]}},"required":["location"]}',
];

const cjk = [
  '今日は良い天気ですね。明日も晴れるといいのですが、週末は雨の予報です。',
  '我们正在测试一个基于令牌的速率限制器，它在模型服务器前面计算令牌数量。',
  '안녕하세요, 세계! 이것은 토크나이저 테스트입니다.',
  'カタカナとひらがなと漢字が混ざった文章：東京タワーへ行きました！',
  '中文没有空格所以整段文字会连在一起直到遇到标点符号为止这是一个比较长的句子用来测试分词器的行为是否一致',
  '繁體中文測試：臺灣、香港、澳門。',
];

const emoji = [
  '😀😃😄😁😆😅🤣😂🙂🙃😉😊😇',
  '👨‍👩‍👧‍👦 family, 🏳️‍🌈 flag, 👍🏽 thumbs, 🇩🇪🇺🇸🇯🇵 flags',
  'Ship it 🚀🚀🚀!!! 🎉 — done ✅ (really ✔️) ❤️‍🔥',
  '🧑🏿‍💻 writes code; 🐈‍⬛ sleeps; 1️⃣ 2️⃣ #️⃣ *️⃣',
];

const runs = [
  'a'.repeat(1000),
  'ab'.repeat(700),
  'x'.repeat(50) + 'y'.repeat(50),
  ' '.repeat(500),
  '\n'.repeat(300),
  '\t \n'.repeat(100),
  '!'.repeat(400),
  '1234567890'.repeat(100),
  'aGVsbG8gd29ybGQgdGhpcyBpcyBiYXNlNjQgZW5jb2RlZCB0ZXh0IQ=='.repeat(30),
  'deadbeef0123456789abcdef'.repeat(50),
  `https://example.com/${'path/segment/'.repeat(40)}?q=${'k=v&'.repeat(40)}`,
  '中'.repeat(600),
  '😀'.repeat(300),
  'Qz9'.repeat(2000),
  'ThisIsAVeryLongCamelCaseIdentifierWithoutAnySpaces'.repeat(20),
  'snake_case_identifier_'.repeat(60),
];

const special = [
  'before <|endoftext|> after',
  '<|im_start|>user\nhi<|im_end|>',
  '<|fim_prefix|>a<|fim_middle|>b<|fim_suffix|>c<|endofprompt|>',
  '<|endoftext|><|endoftext|>',
];

const odd = [
  '',
  ' ',
  'a',
  '\u0000\u0001\u0002',
  '\u00a0\u2003\u3000 mixed spaces',
  'e\u0301 combining',
  'lone \ud800 surrogate',
  'lone \udc00 low',
];

const corpus = [...prose, ...code, ...json, ...cjk, ...emoji, ...runs, ...special, ...odd];

// A long mixed document (> CHUNK_CHARS) exercising chunking, plus its pieces.
const longDoc = Array.from({ length: 40 }, (_, i) => corpus[i % corpus.length]).join('\n\n');

const fastEncodings = ENCODINGS.filter((e) => FAST_ENCODINGS.has(e));

describe('fast tokenizer equals tiktoken', () => {
  it('serves every encoding in FAST_ENCODINGS with the shared-table counter and the rest with tiktoken', () => {
    for (const e of ENCODINGS) {
      const c = getCounter(e);
      if (process.env.TOLLGATE_TOKENIZER === 'tiktoken') expect(c.impl).toBe('tiktoken');
      else expect(c.impl).toBe(FAST_ENCODINGS.has(e) ? 'bpe' : 'tiktoken');
    }
  });

  for (const name of fastEncodings) {
    describe(name, () => {
      const fast = fastCounter(name);
      const ref = getEncoder(name);
      const refCounter = referenceCounter(name);

      it('raw counts are identical on the corpus (prose, code, JSON, CJK, emoji, runs, special strings)', () => {
        for (const t of corpus)
          expect(fast.count(t), JSON.stringify(t.slice(0, 60))).toBe(ref.encode_ordinary(t).length);
      });

      it('raw counts are identical on a long mixed document', () => {
        expect(fast.count(longDoc)).toBe(ref.encode_ordinary(longDoc).length);
      });

      it('countText is exact without long runs, and within a token per cut with them', () => {
        for (const t of [...corpus, longDoc, longDoc.repeat(3)]) {
          const exact = ref.encode_ordinary(t).length;
          const got = countText(fast, t);
          if (!hasLongRun(t)) {
            expect(got, JSON.stringify(t.slice(0, 60))).toBe(exact);
            expect(countText(refCounter, t)).toBe(exact);
          } else {
            // Guarded: pre-tokens longer than MAX_PIECE are counted in MAX_RUN pieces.
            expect(Math.abs(got - exact)).toBeLessThanOrEqual(Math.ceil(t.length / MAX_RUN) + 1);
          }
        }
      });

      it('random mixes of corpus fragments and arbitrary unicode', () => {
        const piece = fc.oneof(
          fc.constantFrom(...corpus).map((s) => s.slice(0, 200)),
          fc.string({ unit: 'grapheme', maxLength: 40 }),
          fc.string({ unit: 'binary', maxLength: 40 }),
          fc.constantFrom(' ', '  ', '\n', '\r\n', '\t', '.', ',', "'s", '123', '😀', '中文'),
        );
        fc.assert(
          fc.property(fc.array(piece, { maxLength: 12 }), (parts) => {
            const t = parts.join('');
            expect(fast.count(t)).toBe(ref.encode_ordinary(t).length);
          }),
          { numRuns: 400, seed: 42 },
        );
      });

      it('the piece cache answers only for the exact pre-token it holds (colliding entries, same length and prefix)', () => {
        // Words of the same length and first four characters that map to the same cache entry,
        // with different token counts, counted alternately: each must keep its own count. (The
        // entry's full hash tells these apart; its stored characters settle a 32-bit hash collision,
        // which none of 4 million such words produced, so no test word can show that part.)
        const letters = fc.constantFrom(...'abcdefghijklmnopqrstuvwxyz');
        for (const [prefix, tail] of [
          [' spec', 3],
          [' specific', 3],
          [' specificatio', 3],
        ] as const) {
          const tails = fc.sample(fc.string({ unit: letters, minLength: tail, maxLength: tail }), {
            numRuns: 20000,
            seed: prefix.length,
          });
          const bySlot = new Map<number, string>();
          const pairs: [string, string][] = [];
          for (const t of tails) {
            const w = `${prefix}${t}`; // a leading space, as in prose: the hot path's commonest pre-token
            const other = bySlot.get(pieceCacheSlot(w));
            if (other && other !== w && ref.encode_ordinary(other).length !== ref.encode_ordinary(w).length)
              pairs.push([other, w]);
            else bySlot.set(pieceCacheSlot(w), w);
            if (pairs.length >= 40) break;
          }
          expect(pairs.length, prefix).toBeGreaterThanOrEqual(10);
          for (const [a, b] of pairs)
            for (const w of [a, b, a, b, `${a}${b}`, a])
              expect(fast.count(w), JSON.stringify(w)).toBe(ref.encode_ordinary(w).length);
        }
        // And a stream of many distinct words (far more than the cache holds), in two orders.
        const words = fc
          .sample(fc.string({ unit: letters, minLength: 1, maxLength: 18 }), { numRuns: 8000, seed: 7 })
          .map((t, i) => (i % 3 === 0 ? t : i % 3 === 1 ? ` ${t}` : ` ${t.toUpperCase()}`));
        const text = words.join('');
        const reversed = [...words].reverse().join('');
        for (const t of [text, reversed, text]) expect(fast.count(t)).toBe(ref.encode_ordinary(t).length);
      });

      it('random strings over the characters where pre-tokenizer rules meet (ASCII fast path vs regex)', () => {
        // Every ASCII character class, the apostrophe contractions, and the non-ASCII characters
        // that decide a pre-token next to ASCII: letters (accented, upper/lower, CJK), combining
        // marks, non-ASCII digits, Unicode White_Space that JavaScript's \s disagrees on (U+0085,
        // U+FEFF), U+017F (folds to s in a contraction), emoji and lone surrogates.
        const ch = fc.constantFrom(
          ..."aAzZmsStTdDlLvVreE019 \t\n\r\u000b\u000c''\"./,;:!?-_()[]{}<>@#$%^&*+=|~`\\",
          '\u0000',
          '\u001f',
          '\u007f',
          'é',
          'É',
          'ß',
          '\u0301',
          '中',
          '²',
          '٣',
          '\u0085',
          '\u00a0',
          '\ufeff',
          '\u2003',
          '\u3000',
          '\u017f',
          '😀',
          '\ud800',
        );
        fc.assert(
          fc.property(fc.array(ch, { maxLength: 48 }), (chars) => {
            const t = chars.join('');
            expect(fast.count(t), JSON.stringify(t)).toBe(ref.encode_ordinary(t).length);
          }),
          { numRuns: 3000, seed: 4242 },
        );
      });
    });
  }
});

describe('long-run guard', () => {
  const REGEX = /[^\s]{129}|\s{129}|[\r\n/]{129}/;
  it('hasLongRun answers exactly like the regex it replaces', () => {
    const ch = fc.constantFrom(
      'a',
      ' ',
      '\n',
      '/',
      '\r',
      '\u00a0',
      '\u0085',
      '\ufeff',
      '東',
      '😀',
      '\t',
      'Z',
    );
    fc.assert(
      fc.property(fc.array(fc.tuple(ch, fc.integer({ min: 1, max: 160 })), { maxLength: 8 }), (parts) => {
        const text = parts.map(([c, n]) => c.repeat(n)).join('');
        expect(hasLongRun(text)).toBe(REGEX.test(text));
      }),
      { seed: 7, numRuns: 2000 },
    );
  });
});
