/**
 * server.checks_per_turn: at most that many decisions start per event-loop turn; the rest of a burst
 * waits, first come first served, for the next turns (src/decision/pacer.ts).
 */
import { describe, expect, it } from 'vitest';
import { TurnPacer } from '../src/decision/pacer.js';
import { valkeyApps } from './helpers/app.js';
import { chat } from './helpers/envoy.js';

/** Resolves in the check phase of the current turn, after every setImmediate scheduled before it. */
const immediate = () => new Promise<void>((r) => setImmediate(r));

/** Call enter() n times now; `started` lists the ids in the order they were let through. */
function burst(p: TurnPacer, perTurn: number, ids: number[], started: number[]): void {
  for (const id of ids) {
    const w = p.enter(perTurn);
    if (w) void w.then(() => started.push(id));
    else started.push(id);
  }
}

describe('TurnPacer', () => {
  it('lets perTurn through at once and the rest perTurn per later turn, in arrival order', async () => {
    const p = new TurnPacer();
    const started: number[] = [];
    burst(p, 3, [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], started);
    expect(started).toEqual([0, 1, 2]);
    expect(p.queued).toBe(7);
    await immediate();
    expect(started).toEqual([0, 1, 2, 3, 4, 5]);
    // Arrivals during a paced burst queue behind the checks already waiting.
    burst(p, 3, [10, 11], started);
    expect(started).toHaveLength(6);
    await immediate();
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8]);
    await immediate();
    expect(started).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
    expect(p.deferred).toBe(9);
    expect(p.queued).toBe(0);
  });

  it('counts per turn: a new turn lets perTurn through again, nothing waits under light load', async () => {
    const p = new TurnPacer();
    const started: number[] = [];
    for (let turn = 0; turn < 5; turn++) {
      burst(p, 2, [turn * 2, turn * 2 + 1], started);
      expect(started).toHaveLength(turn * 2 + 2); // both at once
      await immediate();
      await immediate();
    }
    expect(p.deferred).toBe(0);
  });

  it('checks_per_turn 0: no pacing', () => {
    const p = new TurnPacer();
    const started: number[] = [];
    burst(
      p,
      0,
      Array.from({ length: 100 }, (_, i) => i),
      started,
    );
    expect(started).toHaveLength(100);
    expect(p.deferred).toBe(0);
  });
});

const { serve } = valkeyApps();

const CONFIG = (server: string) => `
server:
${server}
limits:
  - { name: per-tenant, per: tenant, requests: 1000, every: 1h }
`;

async function deferredTotal(httpPort: number): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text();
  const m = /^tollgate_checks_deferred_total (\d+)/m.exec(text);
  if (!m) throw new Error('tollgate_checks_deferred_total missing from /metrics');
  return Number(m[1]);
}

describe('server.checks_per_turn through gRPC and Valkey', () => {
  /** 80 checks for one tenant sent at once on one connection; their remaining counts in send order. */
  async function burstOfChecks(server: string) {
    const { app, client } = await serve(CONFIG(server));
    const tenant = `paced-${Date.now()}-${Math.random()}`;
    const answers = await Promise.all(
      Array.from({ length: 80 }, () =>
        client.check({ headers: { 'x-tenant-id': tenant }, body: chat('gpt-4o-mini', 'hello') }),
      ),
    );
    return {
      allowed: answers.filter((a) => a.allowed && a.upstream['x-tollgate-degraded'] === undefined).length,
      remaining: answers.map((a) => Number(a.headers['x-ratelimit-remaining-requests'])),
      deferred: await deferredTotal(app.httpPort),
    };
  }
  const inOrder = Array.from({ length: 80 }, (_, i) => 999 - i);

  it('paces a burst: every check answered and debited once, first come first served', async () => {
    const r = await burstOfChecks('  checks_per_turn: 1');
    expect(r.allowed).toBe(80);
    expect(r.remaining).toEqual(inOrder);
    expect(r.deferred).toBeGreaterThan(0);
  });

  it('0 turns pacing off (same answers, nothing deferred)', async () => {
    const r = await burstOfChecks('  checks_per_turn: 0');
    expect(r.allowed).toBe(80);
    expect(r.remaining).toEqual(inOrder);
    expect(r.deferred).toBe(0);
  });
});
