/**
 * store.topology and store.wait_replicas in the config, VALKEY_SENTINELS / VALKEY_SENTINEL_NAME /
 * VALKEY_SENTINEL_PASSWORD in the environment, and the refusals when they disagree. The topology itself
 * runs in test/sentinel.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { parseConfigText } from '../src/config/load.js';
import { readSettings } from '../src/settings.js';
import { storeOptions } from '../src/store/connect.js';
import { valkeyOptions } from '../src/store/valkey.js';
import { ReplicaWait } from '../src/store/wait.js';
import { startTestApp } from './helpers/app.js';

const limits = 'limits:\n  - { name: r, per: tenant, requests: 5, every: 1m }\n';

describe('store.topology', () => {
  it('defaults: standalone, resp, no WAIT; sentinel picks iovalkey', () => {
    const std = parseConfigText(limits).store;
    expect([std.topology, std.client, std.waitReplicas]).toEqual(['standalone', 'resp', 0]);
    const s = parseConfigText(`store: { topology: sentinel, wait_replicas: 1 }\n${limits}`).store;
    expect([s.topology, s.client, s.waitReplicas]).toEqual(['sentinel', 'iovalkey', 1]);
  });

  it('refuses client: resp with topology: sentinel, and unknown topologies', () => {
    expect(() => parseConfigText(`store: { topology: sentinel, client: resp }\n${limits}`)).toThrow(
      /store\.client: resp cannot follow a Sentinel failover/,
    );
    expect(() => parseConfigText(`store: { topology: mesh }\n${limits}`)).toThrow(
      /store\.topology: expected one of standalone, sentinel, cluster/,
    );
    expect(() => parseConfigText(`store: { wait_replicas: -1 }\n${limits}`)).toThrow(/store\.wait_replicas/);
  });

  it('reads VALKEY_SENTINELS, VALKEY_SENTINEL_NAME and VALKEY_SENTINEL_PASSWORD', () => {
    const s = readSettings({
      VALKEY_SENTINELS: 's0:26380, s1,[::1]:26381',
      VALKEY_SENTINEL_NAME: 'main',
      VALKEY_SENTINEL_PASSWORD: 'pw',
    });
    expect(s.valkeySentinel).toEqual({
      sentinels: [
        { host: 's0', port: 26380 },
        { host: 's1', port: 26379 },
        { host: '::1', port: 26381 },
      ],
      name: 'main',
      password: 'pw',
    });
    expect(readSettings({}).valkeySentinel).toBeUndefined();
    expect(() => readSettings({ VALKEY_SENTINELS: 's0:1' })).toThrow(/set both or neither/);
    expect(() => readSettings({ VALKEY_SENTINELS: 's0:x', VALKEY_SENTINEL_NAME: 'm' })).toThrow(
      /VALKEY_SENTINELS: expected host:port/,
    );
  });

  it('the topology and the environment must agree', () => {
    const sentinel = { sentinels: [{ host: 's', port: 26379 }], name: 'm' };
    expect(() =>
      storeOptions({ topology: 'sentinel', waitReplicas: 0 }, { valkeyUrl: 'valkey://x' }, 25),
    ).toThrow(/needs VALKEY_SENTINELS and VALKEY_SENTINEL_NAME/);
    expect(() =>
      storeOptions({ topology: 'standalone', waitReplicas: 0 }, { valkeySentinel: sentinel }, 25),
    ).toThrow(/store\.topology is standalone/);
  });

  it('iovalkey options: the sentinels, the URL credentials and db, TLS to both, fail fast', () => {
    const o = valkeyOptions({
      url: 'valkeys://u:p%40ss@ignored:1/2',
      timeoutMs: 25,
      sentinel: { sentinels: [{ host: 's', port: 26379 }], name: 'm', password: 'sp' },
    });
    expect(o).toMatchObject({
      sentinels: [{ host: 's', port: 26379 }],
      name: 'm',
      role: 'master',
      sentinelPassword: 'sp',
      username: 'u',
      password: 'p@ss',
      db: 2,
      enableTLSForSentinelMode: true,
      enableOfflineQueue: false,
      failoverDetector: true,
    });
    expect(o.host).toBeUndefined();
    expect((o.reconnectOnError as (e: Error) => unknown)(new Error('READONLY You can'))).toBe(1);
  });

  it('topology: sentinel without sentinels refuses to start', async () => {
    await expect(startTestApp(`store: { topology: sentinel }\n${limits}`)).rejects.toThrow(
      /needs VALKEY_SENTINELS and VALKEY_SENTINEL_NAME/,
    );
  });

  it("ReplicaWait: WAIT within half the timeout; short on the server's word skips WAIT for a while, a late reply does not", async () => {
    const sent: (string | number)[][] = [];
    let answer: () => Promise<unknown> = async () => 1;
    const w = new ReplicaWait(1, (args) => {
      sent.push(args);
      return answer();
    });
    await w.after(performance.now(), 40);
    expect(sent[0][0]).toBe('WAIT');
    expect(sent[0][1]).toBe(1);
    expect(sent[0][2]).toBeLessThanOrEqual(20);
    expect(w.short).toBe(0);
    // a reply that does not come in time: short for this call, but WAIT is not skipped after it
    answer = () => new Promise((r) => setTimeout(() => r(1), 60));
    await w.after(performance.now(), 40);
    expect(w.short).toBe(1);
    await new Promise((r) => setTimeout(r, 80));
    answer = async () => 1;
    await w.after(performance.now(), 40);
    expect([w.short, sent.length]).toEqual([1, 3]);
    // the server says fewer replicas: short, and the next writes skip WAIT (counted short)
    answer = async () => 0;
    await w.after(performance.now(), 40);
    await w.after(performance.now(), 40);
    expect([w.short, sent.length]).toEqual([3, 4]);
  });
});
