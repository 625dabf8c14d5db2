/**
 * SettleSession alone (a fake Settler): the body waits while the reservation is being opened, bounded;
 * exactly one finish per stream; a stream with no id settles nothing; never throws.
 */
import { describe, expect, it } from 'vitest';
import type { ExtProcProcessingRequest } from '../src/settle/messages.js';
import { ResponseBudget, type SessionSettler, SettleSession } from '../src/settle/session.js';
import type { OpenReservation, ResponseOutcome } from '../src/settle/settler.js';
import { chatJson } from './helpers/provider-bodies.js';

const ID = `${Date.now().toString(36)}.AAAAAAAAAAAAAAAAAAAAAA`;

function fake(delayMs: number) {
  const finished: ResponseOutcome[] = [];
  const open: OpenReservation = {
    id: ID,
    key: 'k',
    store: undefined as never,
    reservation: { entries: [] } as never,
    record: {
      m: 'gpt-4o',
      d: 'openai.chat',
      enc: 'o200k_base',
      p: 10,
      o: 100,
      $: [0, 0, -1, -1],
      w: 1,
      u: 't',
      at: 0,
    },
  };
  const settler: SessionSettler = {
    open: (id) => new Promise((r) => setTimeout(() => r(id === ID ? open : 'unmatched'), delayMs)),
    finish: async (_r, res) => {
      finished.push(res);
      return res.usage?.source === 'reported' ? 'settled' : 'kept';
    },
  };
  return { settler, finished };
}

const meta = (id: string) => ({
  filter_metadata: {
    'envoy.filters.http.ext_authz': { fields: { tollgate_reservation: { stringValue: id } } },
  },
});
const headers = (id?: string): ExtProcProcessingRequest => ({
  request: 'response_headers',
  response_headers: { headers: { headers: [{ key: ':status', value: '200' }] } },
  ...(id && { metadata_context: meta(id) }),
});
const body = (b: string, eos = false): ExtProcProcessingRequest => ({
  request: 'response_body',
  response_body: { body: Buffer.from(b), end_of_stream: eos },
});

describe('SettleSession', () => {
  it('holds the body while the reservation opens, then settles once', async () => {
    const { settler, finished } = fake(50);
    const s = new SettleSession({ settler });
    s.feed(headers(ID));
    const j = chatJson(7, 9);
    s.feed(body(j.slice(0, 10)));
    s.feed(body(j.slice(10), true));
    expect(await s.end()).toBe('settled');
    expect(await s.end()).toBe('settled');
    expect(finished).toHaveLength(1);
    expect(finished[0].usage).toMatchObject({ prompt: 7, output: 9, source: 'reported' });
  });

  it('past maxPendingBytes while opening: the usage is unknown, the reservation stands', async () => {
    const { settler, finished } = fake(50);
    const s = new SettleSession({ settler, maxPendingBytes: 16 });
    s.feed(headers(ID));
    s.feed(body(chatJson(7, 9), true));
    expect(await s.end()).toBe('kept');
    expect(finished[0]).toEqual({ status: 200 });
  });

  it('no id: nothing settles; an unknown id: the open outcome; garbage messages do not throw', async () => {
    const { settler, finished } = fake(0);
    const none = new SettleSession({ settler });
    none.feed(headers());
    none.feed(body('{}', true));
    expect(await none.end()).toBeUndefined();
    const other = new SettleSession({ settler });
    other.feed(headers('nope'));
    other.feed({ request: 'response_body' } as ExtProcProcessingRequest);
    other.feed(null as unknown as ExtProcProcessingRequest);
    expect(await other.end()).toBe('unmatched');
    expect(finished).toHaveLength(0);
  });

  it('the process-wide response budget: a stream past it stops reading (reservation stands); bytes come back at the end', async () => {
    const { settler, finished } = fake(0);
    const budget = new ResponseBudget(64 * 1024);
    // a stream holding 40 KiB of a long SSE body, still open
    const a = new SettleSession({ settler, budget });
    a.feed(headers(ID));
    await new Promise((r) => setTimeout(r, 5));
    a.feed(body(`data: {"choices":[{"delta":{"content":"${'x'.repeat(40 * 1024)}"}}]}\n\n`));
    expect(budget.used).toBeGreaterThanOrEqual(40 * 1024);
    // a second one needing 40 KiB more: refused, its usage unknown, its reservation kept
    const b = new SettleSession({ settler, budget });
    b.feed(headers(ID));
    await new Promise((r) => setTimeout(r, 5));
    b.feed(body(`${chatJson(7, 9)}${' '.repeat(40 * 1024)}`, true));
    expect(await b.end()).toBe('kept');
    expect(budget.refusals).toBe(1);
    expect(finished.at(-1)).toEqual({ status: 200 });
    // the first ends normally and gives its bytes back
    a.feed(body('data: {"choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n', true));
    expect(await a.end()).toBe('settled');
    expect(budget.used).toBe(0);
  });
});
