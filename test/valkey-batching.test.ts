/**
 * ValkeyStore sends the checks of one event-loop turn together (one write on the connection), and a
 * batch never waits for the replies of the batch before it. (iovalkey's own auto-pipelining keeps one
 * batch in flight at a time, so under load every check also waited for the previous round trip.)
 * Real valkey-server; Valkey is held busy by one long script so that no reply can arrive meanwhile.
 */
import { Valkey } from 'iovalkey';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CheckPlan, EntryKind, Outcome } from '../src/store/types.js';
import { ValkeyStore } from '../src/store/valkey.js';
import { startValkey, type TestValkey } from './helpers/valkey.js';

let vk: TestValkey;
let store: ValkeyStore;

beforeAll(async () => {
  vk = await startValkey();
  store = new ValkeyStore({ url: vk.url, timeoutMs: 20_000 });
  await store.connect();
});

afterAll(async () => {
  await store.close();
  await vk.close();
});

const plan = (key: string): CheckPlan => ({
  keys: [key],
  candidates: [
    [
      {
        key: 0,
        kind: EntryKind.Rolling,
        capacity: 10,
        period: 60_000,
        tzOffsetMin: 0,
        cost: 1,
        shadow: false,
        downgradeAt: 0,
      },
    ],
  ],
});

/** The store's socket, with a count of write() calls made on it from now on. */
function watchWrites(): { writes: () => number; bytes: () => number; stop: () => void } {
  const socket = store.conn.socket as import('node:net').Socket;
  const original = socket.write;
  let writes = 0;
  socket.write = function (this: typeof socket, ...args: Parameters<typeof original>) {
    writes++;
    return original.apply(this, args);
  } as typeof original;
  return { writes: () => writes, bytes: () => socket.bytesWritten, stop: () => (socket.write = original) };
}

const turn = () => new Promise((r) => setImmediate(r));

/** Hold Valkey in a counted loop (TIME is frozen in scripts) for about a second or more. */
function stallValkey(): { busy: Valkey; done: Promise<unknown> } {
  const busy = new Valkey(vk.url);
  return { busy, done: busy.eval('local x = 0 for i = 1, 30000000 do x = x + i end return 1', 0) };
}

describe('ValkeyStore batching', () => {
  it('checks started in one turn of the event loop go out in one write', async () => {
    const w = watchWrites();
    try {
      const checks = Array.from({ length: 20 }, (_, i) => store.check(plan(`one-write:${i}`)));
      const results = await Promise.all(checks);
      expect(w.writes()).toBe(1);
      expect(results.every((r) => r.outcome === Outcome.Allowed)).toBe(true);
    } finally {
      w.stop();
    }
  });

  it('a batch whose script was flushed from Valkey reloads it, and every check of the batch is answered', async () => {
    await vk.client.script('FLUSH');
    const w = watchWrites();
    try {
      const results = await Promise.all(
        Array.from({ length: 8 }, (_, i) => store.check(plan(`noscript:${i}`))),
      );
      expect(results.map((r) => r.outcome)).toEqual(Array(8).fill(Outcome.Allowed));
      expect(w.writes()).toBeGreaterThanOrEqual(2); // the NOSCRIPT batch, then the reload and retries
    } finally {
      w.stop();
    }
  });

  it('a second batch is written while the first still waits for its replies', async () => {
    const { busy, done } = stallValkey();
    const w = watchWrites();
    try {
      await new Promise((r) => setTimeout(r, 50)); // the long script has started
      let answered = 0;
      const track = (p: Promise<unknown>) => p.then(() => answered++);
      const first = Array.from({ length: 5 }, (_, i) => track(store.check(plan(`first:${i}`))));
      await turn();
      await turn();
      const afterFirst = { writes: w.writes(), bytes: w.bytes() };
      const second = Array.from({ length: 5 }, (_, i) => track(store.check(plan(`second:${i}`))));
      await turn();
      await turn();
      expect(answered).toBe(0); // Valkey is still busy: no reply has come back
      expect(afterFirst.writes).toBe(1);
      expect(w.writes()).toBe(2); // the second batch did not wait for the first's replies
      expect(w.bytes()).toBeGreaterThan(afterFirst.bytes);
      await done;
      await Promise.all([...first, ...second]);
      expect(answered).toBe(10);
    } finally {
      w.stop();
      busy.disconnect();
    }
  });
});
