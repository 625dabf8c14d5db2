/** Start a real tollgate (gRPC + HTTP) on free ports with a config given as YAML text. */
import { Writable } from 'node:stream';
import { type App, type AppOptions, startApp } from '../../src/app.js';
import { parseConfigText } from '../../src/config/load.js';
import { createLogger } from '../../src/log.js';

export interface TestApp extends App {
  logs: string[];
}

export async function startTestApp(yaml: string, opts: Partial<AppOptions> = {}): Promise<TestApp> {
  const config = parseConfigText(yaml);
  config.server.grpcHost = '127.0.0.1';
  config.server.grpcPort = 0;
  config.server.httpPort = 0;
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
