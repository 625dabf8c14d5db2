/**
 * What the load generator sends, call after call (bench/loadgen.ts):
 *  - pool workloads (small, mix, deny, medium, rag): the pre-serialized pool of bench/workloads.ts in
 *    a cycle, each copy's TAG overwritten with a number unique to this run, so a prompt is never sent
 *    twice and tollgate's count cache cannot serve it from memory (the copy costs ~1 µs per KB);
 *  - `agent`: AGENT_CONVERSATIONS coding-agent conversations, round robin. Each call resends the
 *    conversation's whole history (a 4 KB system prompt and tool definitions shared by all
 *    conversations, then its turns) plus one new turn: an assistant reply and a user or tool message,
 *    1–4 KB together. A conversation past AGENT_MAX_BYTES starts over with new texts. They start at
 *    spread-out depths, so sizes are in their steady state from the first call (~75 KB on average, ~97%
 *    of each prompt sent in that conversation's previous call).
 */
import { randomInt } from 'node:crypto';
import {
  type BuiltRequest,
  buildWorkload,
  encodeCheck,
  rng,
  TAG,
  TENANTS,
  text,
  type WorkloadName,
} from './workloads.js';

export interface RequestStream {
  next(): BuiltRequest;
}

export const AGENT_CONVERSATIONS = 200;
export const AGENT_MAX_BYTES = 150_000;

/** A per-process run number: two load-generator runs against one server never share a prompt. */
const RUN = randomInt(1, 2 ** 40);

export function requestStream(name: WorkloadName, seed = 1): RequestStream {
  if (name === 'agent') return agentStream(seed);
  const pool = buildWorkload(name, seed);
  const marker = Buffer.from(TAG.trimEnd());
  const at = pool.map((r) => r.bytes.indexOf(marker));
  let i = 0;
  let serial = RUN * 1000;
  return {
    next() {
      const k = i;
      i = (i + 1) % pool.length;
      const r = pool[k];
      if (at[k] < 0) return r;
      const bytes = Buffer.from(r.bytes);
      bytes.write(String(serial++ % 1e12).padStart(12, '0'), at[k] + 1, 'latin1');
      return { bytes, big: r.big };
    },
  };
}

const TOOL_NAMES = ['read_file', 'write_file', 'run_tests', 'search_code', 'list_dir', 'apply_patch'];

function agentPrefix(): Buffer {
  const tools = TOOL_NAMES.map((name, i) => ({
    type: 'function',
    function: {
      name,
      description: text(180, 300 + i),
      parameters: {
        type: 'object',
        properties: {
          path: { type: 'string', description: 'Path relative to the repository root' },
          query: { type: 'string', description: text(60, 400 + i) },
          mode: { type: 'string', enum: ['fast', 'full'] },
        },
        required: ['path'],
      },
    },
  }));
  const system = { role: 'system', content: text(4000, 299) };
  const head = JSON.stringify({ model: 'gpt-4o-mini', max_tokens: 1024, stream: false, tools });
  return Buffer.from(`${head.slice(0, -1)},"messages":[${JSON.stringify(system)}`);
}

interface Conversation {
  id: number;
  gen: number;
  turns: Buffer[];
  bytes: number;
}

function agentStream(seed: number): RequestStream {
  const r = rng(seed);
  const prefix = agentPrefix();
  const tail = Buffer.from(']}');
  // Texts to draw turns from; each turn is made unique by its own header line.
  const texts = Array.from({ length: 256 }, (_, i) => text(400 + Math.floor(r() * 1600), seed * 10_000 + i));
  const turn = (c: Conversation, n: number): Buffer => {
    const say = (role: string, k: number) =>
      JSON.stringify({
        role,
        content: `[run ${RUN} conversation ${c.id}.${c.gen} turn ${n}${role}]\n${texts[(c.id * 31 + n * 7 + k) & 255]}`,
      });
    const user = n % 3 === 2 ? 'tool' : 'user';
    return Buffer.from(`,${say('assistant', 0)},${say(user, 1)}`);
  };
  const convs: Conversation[] = Array.from({ length: AGENT_CONVERSATIONS }, (_, id) => {
    const c: Conversation = { id, gen: 0, turns: [], bytes: 0 };
    const depth = r() * (AGENT_MAX_BYTES - prefix.length - 8000); // spread-out starting sizes
    while (c.bytes < depth) grow(c);
    return c;
  });
  function grow(c: Conversation): void {
    if (prefix.length + c.bytes > AGENT_MAX_BYTES) {
      c.gen++;
      c.turns = [];
      c.bytes = 0;
    }
    const t = turn(c, c.turns.length);
    c.turns.push(t);
    c.bytes += t.length;
  }
  let k = 0;
  return {
    next() {
      const c = convs[k];
      k = (k + 1) % convs.length;
      grow(c);
      const body = Buffer.concat([prefix, ...c.turns, tail]);
      const headers = { 'x-tenant-id': `tenant-${(c.id * 7919) % TENANTS}` };
      return { bytes: encodeCheck('/v1/chat/completions', headers, body), big: false };
    },
  };
}
