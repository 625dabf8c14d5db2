/**
 * A tollgate with its response phase observed: every settlement event is recorded, and a test waits
 * for the next one after playing a response (playExtProc). On the memory store or a real Valkey.
 */
import type { AppOptions } from '../../src/app.js';
import type { SettledEvent } from '../../src/settle/settler.js';
import { startTestApp, type TestApp } from './app.js';
import { EnvoyClient } from './envoy.js';
import { type ExtProcPlay, playExtProc } from './ext-proc.js';

export interface SettleApp {
  app: TestApp;
  envoy: EnvoyClient;
  events: SettledEvent[];
  /** Play a response and wait for its settlement event (or `timeoutMs` for none). */
  settle(p: ExtProcPlay, timeoutMs?: number): Promise<SettledEvent | undefined>;
  close(): Promise<void>;
}

export async function waitFor<T>(f: () => T | undefined, timeoutMs = 5000): Promise<T | undefined> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const v = f();
    if (v !== undefined) return v;
    if (Date.now() > until) return undefined;
    await new Promise((r) => setTimeout(r, 5));
  }
}

export async function startSettleApp(yaml: string, opts: Partial<AppOptions> = {}): Promise<SettleApp> {
  const events: SettledEvent[] = [];
  const app = await startTestApp(yaml, { ...opts, onSettled: (e) => events.push(e) });
  const envoy = new EnvoyClient(app.grpcPort);
  return {
    app,
    envoy,
    events,
    async settle(p, timeoutMs = 15_000) {
      const before = events.length;
      await playExtProc(app.grpcPort, p);
      return waitFor(
        () => events.slice(before).find((e) => p.id === undefined || e.id === p.id.slice(0, 256)),
        timeoutMs,
      );
    },
    async close() {
      envoy.close();
      await app.close(500);
    },
  };
}
