/**
 * The admin listener (server.admin or TOLLGATE_ADMIN_PORT; off unless set; bound to 127.0.0.1 unless
 * configured). Every request needs `Authorization: Bearer $TOLLGATE_ADMIN_TOKEN` (compared in constant
 * time, as SHA-256 digests); anything else is a 401 before the path is even looked at.
 *
 *   GET  /v1/usage?<dimension>=<value>...[&model=<m>]   every limit that applies, read by a dry run
 *   POST /v1/credits {"limit", "scope": {...}, "amount"}  one-off top-up of the current window / bucket
 *   POST /v1/reset   {"limit", "scope": {...}}            refill to full
 *   POST /v1/cache/purge {"scope": {...}}                 drop a scope's cached answers (docs/cache.md)
 *
 * Each write logs one audit line: who (the token's digest prefix, never the token), what, which limit
 * and scope, how much. docs/admin.md.
 */
import { createHash, timingSafeEqual } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { scopeFromPairs } from '../cache/key.js';
import type { Config } from '../config/types.js';
import { errorJson, type HttpListener, listen, sendJson } from '../ops/http.js';
import type { Logger } from '../ops/log.js';
import type { Store } from '../store/types.js';
import { AdminError, adjustLimit, usageOf } from './usage.js';

export interface AdminOptions {
  port: number;
  host: string;
  /** TOLLGATE_ADMIN_TOKEN: required (a listener without one refuses to start). */
  token: string;
  /** The config in force (reloads apply). */
  config: () => Config;
  store: Store;
  log: Logger;
  /** The answer cache's purge (when cache: is on): drop a scope id's answers. */
  purgeCache?: (scopeId: string) => Promise<{ entries: number; bytes: number }>;
}

const MAX_BODY = 64 * 1024;
const sha256 = (s: string) => createHash('sha256').update(s).digest();

/** Refuse to start an admin listener without a token (an open admin API would give budget away). */
export function adminToken(token: string | undefined): string {
  if (!token)
    throw new Error(
      'the admin API (server.admin / TOLLGATE_ADMIN_PORT) needs TOLLGATE_ADMIN_TOKEN: set it, or turn the admin listener off',
    );
  return token;
}

function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size <= MAX_BODY) chunks.push(c);
    });
    req.on('end', () => {
      if (size > MAX_BODY) return reject(new AdminError(413, 'too_large', `body over ${MAX_BODY} bytes`));
      try {
        const v = JSON.parse(Buffer.concat(chunks).toString('utf8') || 'null');
        if (!v || typeof v !== 'object' || Array.isArray(v)) throw new Error('not an object');
        resolve(v as Record<string, unknown>);
      } catch {
        reject(new AdminError(400, 'invalid_json', 'the body must be a JSON object'));
      }
    });
    req.on('error', reject);
  });
}

const fail = (res: ServerResponse, status: number, code: string, message: string, extra = {}) =>
  sendJson(
    res,
    status,
    errorJson(message, status === 401 ? 'authentication_error' : 'invalid_request_error', code),
    extra,
  );

const ROUTES: Record<string, string> = {
  '/v1/usage': 'GET',
  '/v1/credits': 'POST',
  '/v1/reset': 'POST',
  '/v1/cache/purge': 'POST',
};

export async function startAdmin(opts: AdminOptions): Promise<HttpListener> {
  const expected = sha256(adminToken(opts.token));
  /** Who made a write, for the audit line: a prefix of the token's digest. */
  const who = `token:${expected.toString('hex').slice(0, 12)}`;
  const authorized = (req: IncomingMessage): boolean => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    return m !== null && timingSafeEqual(sha256(m[1]), expected);
  };
  const server = createServer(async (req, res) => {
    const url = new URL(req.url ?? '/', 'http://admin');
    try {
      if (!authorized(req)) {
        req.resume();
        return fail(res, 401, 'unauthorized', 'Missing or wrong admin token (Authorization: Bearer …).', {
          'www-authenticate': 'Bearer',
        });
      }
      const method = ROUTES[url.pathname];
      if (!method) {
        req.resume();
        return fail(res, 404, 'not_found', 'Not found: /v1/usage, /v1/credits, /v1/reset, /v1/cache/purge.');
      }
      if (req.method !== method) {
        req.resume();
        return fail(res, 405, 'method_not_allowed', `Use ${method}.`, { allow: method });
      }
      const cfg = opts.config();
      if (url.pathname === '/v1/usage') {
        const scope = Object.fromEntries(url.searchParams);
        const { model, ...dims } = scope;
        return sendJson(res, 200, await usageOf(cfg, opts.store, dims, model));
      }
      const body = await readJson(req);
      if (url.pathname === '/v1/cache/purge') return sendJson(res, 200, await purge(opts, who, body));
      const op = url.pathname === '/v1/credits' ? 'credit' : 'reset';
      const report = await adjustLimit(cfg, opts.store, op, body);
      opts.log.info(
        {
          audit: true,
          who,
          action: op,
          limit: report.limit,
          scope: report.scope,
          amount: body.amount,
          units: report.units,
        },
        `admin ${op}`,
      );
      return sendJson(res, 200, report);
    } catch (err) {
      if (err instanceof AdminError) return fail(res, err.status, err.code, err.message);
      opts.log.warn({ err: (err as Error).message, path: url.pathname }, 'admin call failed');
      if (res.headersSent) return res.destroy();
      fail(res, 503, 'store_unavailable', `The store did not answer: ${(err as Error).message}`);
    }
  });
  return listen(server, opts.port, opts.host);
}

/** POST /v1/cache/purge {"scope": {"tenant": "acme"}} (or {"scope": "global"}): audited. */
async function purge(opts: AdminOptions, who: string, body: Record<string, unknown>) {
  if (!opts.purgeCache)
    throw new AdminError(404, 'not_found', 'The answer cache is off (no cache: in the config).');
  const scope = body.scope;
  let id: string;
  let label: string;
  if (scope === 'global') {
    id = label = 'global';
  } else if (scope && typeof scope === 'object' && !Array.isArray(scope) && Object.keys(scope).length > 0) {
    const pairs = Object.entries(scope).map(([k, v]) => `${k}=${String(v)}`);
    id = scopeFromPairs(pairs).id;
    label = pairs.sort().join(',');
  } else
    throw new AdminError(
      400,
      'invalid_request',
      'scope must be {"<dimension>": "<value>", ...} or "global".',
    );
  const r = await opts.purgeCache(id);
  opts.log.info(
    { audit: true, who, action: 'cache-purge', scope: label, entries: r.entries },
    'admin cache purge',
  );
  return { scope: label, ...r };
}
