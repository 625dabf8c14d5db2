/** Loading the config file (YAML) and applying environment overrides. */
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { load as yamlLoad } from 'js-yaml';
import { ConfigError } from '../errors.js';
import { readSettings, settings } from '../settings.js';
import { AUTHZ_DEFAULT_HOST, validateConfig } from './schema.js';
import type { Config } from './types.js';

export function configPath(): string {
  return settings().configFile;
}

export function parseConfigText(text: string, file?: string): Config {
  let raw: unknown;
  try {
    // an empty file (or only comments) is a valid config: all defaults
    raw = text.replace(/#.*$/gm, '').trim() === '' ? {} : yamlLoad(text, { filename: file });
  } catch (err) {
    throw new ConfigError([`YAML syntax: ${(err as Error).message}`], file);
  }
  return validateConfig(raw, file);
}

/** Read, validate and apply TOLLGATE_GRPC_PORT / TOLLGATE_HTTP_PORT / TOLLGATE_HTTP_AUTHZ_PORT overrides. */
export function loadConfig(file = configPath(), env?: Record<string, string | undefined>): Config {
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
  if (cfg.keyMap) {
    cfg.keyMap.file = resolve(dirname(file), cfg.keyMap.file);
    cfg.keyMap.entries = loadKeyMap(cfg.keyMap.file);
  }
  const s = env ? readSettings(env) : settings();
  cfg.server.grpcPort = s.grpcPort ?? cfg.server.grpcPort;
  cfg.server.httpPort = s.httpPort ?? cfg.server.httpPort;
  // The HTTP authorization mode's port; setting it turns the mode on (bound to server.http_authz.host,
  // 127.0.0.1 unless the config says otherwise).
  if (s.httpAuthzPort !== undefined)
    cfg.server.httpAuthz = { host: cfg.server.httpAuthz?.host ?? AUTHZ_DEFAULT_HOST, port: s.httpAuthzPort };
  // The admin API's port, likewise (server.admin.host, 127.0.0.1 unless configured).
  if (s.adminPort !== undefined)
    cfg.server.admin = { host: cfg.server.admin?.host ?? AUTHZ_DEFAULT_HOST, port: s.adminPort };
  return cfg;
}

/**
 * The key map: API key digests → dimension values, for deployments without a JWT issuer.
 *   keys:
 *     <sha256 hex of the key, or HMAC hex with TOLLGATE_API_KEY_SECRET, or tollgate's key_… id>:
 *       { org: acme, team: search, user: alice, plan: pro }
 */
export function loadKeyMap(file: string): Map<string, Record<string, string>> {
  let raw: unknown;
  try {
    raw = yamlLoad(readFileSync(file, 'utf8'), { filename: file });
  } catch (err) {
    throw new ConfigError(
      [`identity.key_map: cannot read or parse: ${(err as Error).message.split('\n')[0]}`],
      file,
    );
  }
  const problems: string[] = [];
  const entries = new Map<string, Record<string, string>>();
  const keys = (raw as { keys?: unknown } | null)?.keys;
  if (!keys || typeof keys !== 'object' || Array.isArray(keys))
    problems.push('keys: expected a mapping of key digests to dimension values');
  else
    for (const [digest, dims] of Object.entries(keys as Record<string, unknown>)) {
      if (!/^([0-9a-f]{64}|key_[0-9a-f]{32})$/.test(digest)) {
        problems.push(
          `keys.${digest.slice(0, 16)}…: expected a 64-hex-digit SHA-256 digest or a key_<32 hex> id`,
        );
        continue;
      }
      if (!dims || typeof dims !== 'object' || Array.isArray(dims)) {
        problems.push(`keys.${digest}: expected a mapping of dimension values`);
        continue;
      }
      const rec: Record<string, string> = {};
      for (const [k, v] of Object.entries(dims as Record<string, unknown>)) {
        if (typeof v !== 'string' && typeof v !== 'number')
          problems.push(`keys.${digest}.${k}: expected a string`);
        else rec[k] = String(v);
      }
      entries.set(digest, rec);
    }
  if (problems.length) throw new ConfigError(problems, file);
  return entries;
}
