/**
 * `tollgate replay` (src/ops/replay.ts): the documented command (docs/replay.md) run as the real CLI
 * on the sample in docs/examples/, its numbers checked against a hand computation; the calls file's
 * three shapes; simulated time (rolling refill, calendar windows at the recorded time); --json.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { parseCalls, ReplayInputError, replay } from '../src/ops/replay.js';
import { killAll, REPO, runCli } from './fixtures/ops/ops.js';

afterAll(() => killAll());

const doc = readFileSync(join(REPO, 'docs/replay.md'), 'utf8');
const command = /```sh\n(tollgate replay [^\n]+)\n```/.exec(doc)![1];
const args = command
  .split(/\s+/)
  .slice(1)
  .map((a) => (a.startsWith('docs/') ? join(REPO, a) : a));

/**
 * The sample by hand (docs/examples/calls.jsonl). Current: tenant-requests 5 per minute (one back
 * every 12 s), gpt-4o-tokens 10000 a day; each gpt-4o line costs 3000 tokens.
 *  acme 09:00:00 gpt-4o: allow (3000)      :01 allow (6000)      :02 the request (mini): allow
 *       :03 gpt-4o: allow (9000; requests left 1.25)   :04 gpt-4o: 12000 > 10000 → reroute to mini
 *       :05 mini: requests 0.42 → deny (tenant-requests)   :06 gpt-4o: deny (mini frees first:
 *       tenant-requests binds)   09:10:00 gpt-4o: 12000 → reroute   :01 20000 tokens → reroute
 *  beta 09:20:00 gpt-4o 6000: allow   :01 12000 → reroute
 *  → 5 allowed, 4 rerouted (gpt-4o-tokens, first 09:00:04), 2 denied (tenant-requests, first 09:00:05).
 * Candidate: 3 per minute (one back every 20 s) queueable into `batch`, gpt-4o-tokens 5000 a day.
 *  acme :00 allow (3000)   :01 6000 > 5000 → reroute   :02 request: allow (requests 0.1)
 *       :03, :04 gpt-4o: deny (gpt-4o-tokens blocks too, not queueable; mini's requests frees first)
 *       :05 mini: only tenant-requests blocks → would queue   :06 gpt-4o: deny
 *       09:10 both calls reroute   beta: 6000 > 5000 can never fit gpt-4o → both reroute
 *  → 2 allowed, 5 rerouted (first 09:00:01), 3 denied (first 09:00:03), 1 would queue.
 */
const EXPECTED = {
  candidate: {
    totals: { calls: 11, allowed: 2, rerouted: 5, denied: 3, queued: 1, other: 0 },
    'tenant-requests': { denied: 3, rerouted: 0, queued: 1, first_bound: '2026-03-02T09:00:03.000Z' },
    'gpt-4o-tokens': { denied: 0, rerouted: 5, queued: 0, first_bound: '2026-03-02T09:00:01.000Z' },
  },
  current: {
    totals: { calls: 11, allowed: 5, rerouted: 4, denied: 2, queued: 0, other: 0 },
    'tenant-requests': { denied: 2, rerouted: 0, queued: 0, first_bound: '2026-03-02T09:00:05.000Z' },
    'gpt-4o-tokens': { denied: 0, rerouted: 4, queued: 0, first_bound: '2026-03-02T09:00:04.000Z' },
  },
};

describe('tollgate replay: the documented example', () => {
  it('prints the hand-computed numbers, as docs/replay.md shows them', async () => {
    expect(command).toContain('--compare');
    const r = await runCli(args);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const lines = r.stdout.split('\n');
    const totals = (file: string, t: typeof EXPECTED.current.totals) =>
      `${file}: ${t.calls} calls, ${t.allowed} allowed, ${t.rerouted} rerouted, ${t.denied} denied, ${t.queued} would queue`;
    expect(lines).toContain(totals(args[2], EXPECTED.candidate.totals));
    expect(lines).toContain(totals(args[5], EXPECTED.current.totals));
    for (const limit of ['tenant-requests', 'gpt-4o-tokens'] as const) {
      const row = lines
        .find((l) => l.startsWith(`${limit} `))!
        .trim()
        .split(/\s+/);
      const cells = (e: (typeof EXPECTED.current)[typeof limit]) =>
        [e.denied, e.rerouted, e.queued, 0, e.first_bound].map(String);
      expect(row).toEqual([limit, ...cells(EXPECTED.candidate[limit]), ...cells(EXPECTED.current[limit])]);
    }
    // the output in the docs is this output (the paths as documented)
    const shown = /The command above prints:\n\n```text\n([\s\S]*?)```/.exec(doc)![1];
    expect(r.stdout.replaceAll(`${REPO}/`, '')).toBe(shown);
  });

  it('--json: the same numbers, one run per config', async () => {
    const r = await runCli([...args, '--json']);
    expect(r.code).toBe(0);
    const { runs } = JSON.parse(r.stdout);
    expect(runs.map((x: any) => x.config)).toEqual([args[2], args[5]]);
    for (const [run, e] of [
      [runs[0], EXPECTED.candidate],
      [runs[1], EXPECTED.current],
    ] as const) {
      expect(run).toMatchObject(e.totals);
      for (const l of run.limits) expect(l).toMatchObject(e[l.limit as 'tenant-requests']);
    }
  });

  it('the sample configs are the ones the docs show', () => {
    for (const f of ['replay-current.yaml', 'replay-candidate.yaml'])
      expect(doc).toContain(`\`\`\`yaml\n${readFileSync(join(REPO, 'docs/examples', f), 'utf8')}\`\`\``);
  });

  it('a bad line is named; usage errors exit 2', async () => {
    const bad = await runCli(['replay', '--config', args[2], join(REPO, 'docs/replay.md')]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/line 1: not JSON/);
    expect((await runCli(['replay', '--config', args[2]])).code).toBe(2);
  });
});

const TOKENS = `
identity:
  tenant:
    - header: x-tenant-id
limits:
  - { name: daily, per: tenant, tokens: 1000, reset: daily }
  - { name: rolling, per: tenant, requests: 2, every: 1h }
`;

describe('replay: inputs and simulated time', () => {
  it('reads ISO and epoch times, headers, dim.<name> and identity, and orders by time', () => {
    const calls = parseCalls(
      [
        '{"time": 1772442600000, "model": "m", "prompt_tokens": 1, "output_tokens": 2, "headers": {"X-Tenant-Id": "a"}}',
        '',
        '{"ts": "1772442500000", "model": "m", "prompt": "3", "output": "4", "dim.tenant": "b"}',
        '{"time": "2026-03-02T09:00:00+01:00", "body": "{}", "path": "/v1/messages"}',
        '{"time": "2026-03-02T09:00:00Z", "model": "m", "prompt_tokens": 5, "identity": {"tenant": "c"}}',
      ].join('\n'),
    );
    expect(calls.map((c) => c.line)).toEqual([4, 5, 3, 1]);
    expect(calls[0]).toMatchObject({
      kind: 'request',
      path: '/v1/messages',
      at: Date.parse('2026-03-02T08:00Z'),
    });
    expect(calls[2]).toMatchObject({ kind: 'counts', prompt: 3, output: 4, identity: { tenant: 'b' } });
    expect(calls[1]).toMatchObject({ prompt: 5, output: 0, identity: { tenant: 'c' } });
    expect(calls[3]).toMatchObject({ headers: { 'x-tenant-id': 'a' }, prompt: 1, output: 2 });
    expect(() => parseCalls('{"model": "m", "prompt_tokens": 1}')).toThrow(ReplayInputError);
    expect(() => parseCalls('{"time": 1, "model": "m", "prompt_tokens": -1}')).toThrow(/line 1/);
    expect(() => parseCalls('{"time": 1, "headers": {}}')).toThrow(/needs a "body"/);
  });

  it('calendar windows and rolling buckets follow the recorded time, not the wall clock', async () => {
    const cfg = parseConfigText(TOKENS);
    const at = (iso: string, prompt: number, tenant = 'acme') =>
      JSON.stringify({
        time: iso,
        model: 'gpt-4o',
        prompt_tokens: prompt,
        output_tokens: 0,
        identity: { tenant },
      });
    const calls = parseCalls(
      [
        at('2026-03-02T23:59:00Z', 900), // allowed: daily 900, rolling 1 left
        at('2026-03-02T23:59:30Z', 200), // the day's 1000 exceeded: denied by `daily`
        at('2026-03-03T00:00:10Z', 200), // a new day (simulated): allowed, rolling ~0 left
        at('2026-03-03T00:00:20Z', 200), // denied by `rolling` (2 an hour)
        at('2026-03-03T00:31:00Z', 200), // half an hour later one request is back: allowed
      ].join('\n'),
    );
    const r = await replay(cfg, calls);
    expect(r).toMatchObject({ calls: 5, allowed: 3, denied: 2 });
    expect(r.limits).toEqual([
      expect.objectContaining({ limit: 'daily', denied: 1, first_bound: '2026-03-02T23:59:30.000Z' }),
      expect.objectContaining({ limit: 'rolling', denied: 1, first_bound: '2026-03-03T00:00:20.000Z' }),
    ]);
  });

  it('a recorded request is decided as Envoy would have it, headers and body', async () => {
    const cfg = parseConfigText(TOKENS);
    const req = (t: string, tenant: string) =>
      JSON.stringify({
        time: t,
        headers: { 'x-tenant-id': tenant },
        body: { model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }], max_tokens: 400 },
      });
    const r = await replay(
      cfg,
      parseCalls(
        [
          req('2026-03-02T10:00:00Z', 'a'),
          req('2026-03-02T10:00:01Z', 'a'),
          req('2026-03-02T10:00:02Z', 'a'),
          req('2026-03-02T10:00:03Z', 'b'),
        ].join('\n'),
      ),
    );
    // 400 reserved + the prompt each: tenant a's third exceeds `rolling` (2 an hour) and `daily`
    // (1000); the binding limit is the one that frees last, `daily` (at midnight)
    expect(r).toMatchObject({ allowed: 3, denied: 1 });
    expect(r.limits.map((l) => [l.limit, l.denied])).toEqual([
      ['daily', 1],
      ['rolling', 0],
    ]);
  });
});
