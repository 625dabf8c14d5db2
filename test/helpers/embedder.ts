/**
 * A local OpenAI-compatible embeddings server with deterministic vectors: each word that is not a
 * stop word adds 1 to one of 64 dimensions (by a hash of the word), so paraphrases with the same
 * content words embed identically and different questions far apart. `delayMs` makes it slow.
 */
import { createHash } from 'node:crypto';
import { createServer, type Server } from 'node:http';

const STOP = new Set([
  'what',
  'is',
  'whats',
  'the',
  'of',
  'a',
  'please',
  'tell',
  'me',
  'which',
  'city',
  'capital',
]);
export const DIMS = 64;

export function embedText(text: string): number[] {
  const v = new Array<number>(DIMS).fill(0);
  for (const w of text
    .toLowerCase()
    .replace(/[^a-z0-9 ]/g, ' ')
    .split(/\s+/)) {
    if (!w || STOP.has(w)) continue;
    v[createHash('sha256').update(w).digest()[0] % DIMS] += 1;
  }
  v[DIMS - 1] += 0.01; // never all zero
  return v;
}

export interface TestEmbedder {
  url: string;
  calls: number;
  delayMs: number;
  close(): Promise<void>;
}

export async function startEmbedder(): Promise<TestEmbedder> {
  const state = { calls: 0, delayMs: 0 };
  const server: Server = createServer((req, res) => {
    let body = '';
    req.on('data', (c) => {
      body += c;
    });
    req.on('end', () => {
      state.calls++;
      const { input, model } = JSON.parse(body) as { input: string; model: string };
      const reply = JSON.stringify({
        object: 'list',
        model,
        data: [{ object: 'embedding', index: 0, embedding: embedText(input) }],
      });
      setTimeout(() => {
        res.writeHead(200, { 'content-type': 'application/json' });
        res.end(reply);
      }, state.delayMs);
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const port = (server.address() as { port: number }).port;
  return {
    url: `http://127.0.0.1:${port}/v1/embeddings`,
    get calls() {
      return state.calls;
    },
    get delayMs() {
      return state.delayMs;
    },
    set delayMs(v: number) {
      state.delayMs = v;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  } as TestEmbedder;
}
