/** Loading the config file (YAML) and applying environment overrides. */
import { readFileSync } from 'node:fs';
import { load as yamlLoad } from 'js-yaml';
import { ConfigError } from '../errors.js';
import { validateConfig } from './schema.js';
import type { Config } from './types.js';

export function configPath(): string {
  return process.env.TOLLGATE_CONFIG || './tollgate.yaml';
}

export function parseConfigText(text: string, file?: string): Config {
  let raw: unknown;
  try {
    raw = yamlLoad(text, { filename: file });
  } catch (err) {
    throw new ConfigError([`YAML syntax: ${(err as Error).message}`], file);
  }
  return validateConfig(raw, file);
}

/** Read, validate and apply TOLLGATE_GRPC_PORT / TOLLGATE_HTTP_PORT overrides. */
export function loadConfig(file = configPath(), env: NodeJS.ProcessEnv = process.env): Config {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(
      [`cannot read file: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`],
      file,
    );
  }
  const cfg = parseConfigText(text, file);
  const port = (name: string, fallback: number) => {
    const v = env[name];
    if (v === undefined || v === '') return fallback;
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0 || n > 65535)
      throw new ConfigError([`${name}: expected a port number, got "${v}"`]);
    return n;
  };
  cfg.server.grpcPort = port('TOLLGATE_GRPC_PORT', cfg.server.grpcPort);
  cfg.server.httpPort = port('TOLLGATE_HTTP_PORT', cfg.server.httpPort);
  return cfg;
}
