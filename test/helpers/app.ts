/** Start a real tollgate (gRPC + HTTP) on free ports with a config given as YAML text. */
import { Writable } from 'node:stream';
import { afterAll, beforeAll } from 'vitest';
import { type App, type AppOptions, startApp } from '../../src/app.js';
import { parseConfigText } from '../../src/config/load.js';
import { createLogger } from '../../src/ops/log.js';
import { EnvoyClient } from './envoy.js';
import { startValkey, type TestValkey } from './valkey.js';

export interface TestApp extends App {
  logs: string[];
}

export async function startTestApp(yaml: string, opts: Partial<AppOptions> = {}): Promise<TestApp> {
  const config = parseConfigText(yaml);
  if (!/decision_deadline|timeout:/.test(yaml)) {
    // Tests that are not about timeouts get generous ones: on a loaded 2-core CI machine (test files run
    // in parallel) a 25 ms store timeout would turn their answers into fail-open "degraded" ones.
    // Timeout behaviour itself is tested with explicit settings (resilience, trust-faults).
    config.server.decisionDeadlineMs = 2000;
    config.store.timeoutMs = 1000;
    config.server.overloadBudgetMs = 6000;
  }
  config.server.grpcHost = '127.0.0.1';
  config.server.grpcPort = 0;
  config.server.httpPort = 0;
  if (config.server.httpAuthz) config.server.httpAuthz.port = 0; // keeps its configured bind address
  if (config.server.admin) config.server.admin.port = 0;
  const logs: string[] = [];
  const sink = new Writable({
    write(chunk, _enc, cb) {
      logs.push(String(chunk));
      cb();
    },
  });
  const logger = createLogger(process.env.TEST_LOG_LEVEL || 'debug', sink);
  const app = await startApp({ config, logger, tokenWorkers: 0, ...opts });
  return Object.assign(app, { logs });
}

/**
 * One private valkey-server per test file, and apps started on it on demand; everything is closed in
 * afterAll. Call at the top level of a test file.
 */
export function valkeyApps(): {
  vk: () => TestValkey;
  serve: (yaml: string, opts?: Partial<AppOptions>) => Promise<{ app: TestApp; client: EnvoyClient }>;
} {
  let vk: TestValkey | undefined;
  const apps: { app: TestApp; client: EnvoyClient }[] = [];
  beforeAll(async () => {
    vk = await startValkey();
  });
  afterAll(async () => {
    for (const { app, client } of apps) {
      client.close();
      await app.close(500);
    }
    await vk?.close();
  });
  return {
    vk: () => vk!,
    serve: async (yaml, opts = {}) => {
      const app = await startTestApp(yaml, { valkeyUrl: vk!.url, ...opts });
      const client = new EnvoyClient(app.grpcPort);
      apps.push({ app, client });
      return { app, client };
    },
  };
}
