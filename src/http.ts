/**
 * HTTP port: /healthz (liveness), /readyz (readiness), /metrics (Prometheus), and the HTTP authorization
 * mode (Envoy ext_authz `http_service`): any other path is a check of that method, path, headers and
 * body; 200 = allow (headers to add upstream returned as response headers), anything else = deny with
 * its status, headers and body. An optional "/authz" prefix (Envoy's `path_prefix`) is stripped.
 *
 * Bodies larger than server.max_body_bytes are handled like Envoy's allow_partial_message: the first
 * max_body_bytes are decided on, marked partial, and the cost is estimated from the full size.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Decider } from './decision/decide.js';
import type { Decision } from './decision/types.js';
import type { Metrics } from './ops/metrics.js';

export interface HttpOptions {
  port: number;
  host?: string;
  metrics: Metrics;
  /** Readiness: the same answer grpc.health.v1 gives. */
  ready: () => boolean;
  /** Details for the /readyz JSON. */
  status?: () => Record<string, unknown>;
  decider: Decider;
  observe: (d: Decision, seconds: number, requestId: string | undefined) => void;
  /** Count an authz check in flight; false = draining, refuse it. */
  begin?: () => boolean;
  end?: () => void;
}

export interface ReadBody {
  /** At most `limit` bytes; undefined when the request had no body. */
  body?: Buffer;
  /** Bytes the client sent in total. */
  size: number;
  truncated: boolean;
}

export function readBody(req: IncomingMessage, limit: number): Promise<ReadBody> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let kept = 0;
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (kept >= limit) return; // keep reading (the client is still sending) but store no more
      const part = kept + c.length > limit ? c.subarray(0, limit - kept) : c;
      chunks.push(part);
      kept += part.length;
    });
    req.on('end', () =>
      resolve({ body: kept > 0 ? Buffer.concat(chunks) : undefined, size, truncated: size > kept }),
    );
    req.on('error', reject);
  });
}

const PROBES = new Set(['/healthz', '/readyz', '/metrics']);

export async function startHttp(
  opts: HttpOptions,
): Promise<{ port: number; close(graceMs?: number): Promise<void> }> {
  const json = (res: ServerResponse, status: number, body: unknown, extra: Record<string, string> = {}) => {
    res.writeHead(status, { 'content-type': 'application/json', ...extra });
    res.end(JSON.stringify(body));
  };
  const server = createServer(async (req, res) => {
    const url = req.url ?? '/';
    const pathOnly = url.split('?', 1)[0];
    try {
      if (PROBES.has(pathOnly) && (req.method === 'GET' || req.method === 'HEAD')) {
        if (pathOnly === '/healthz') return json(res, 200, { status: 'ok' });
        if (pathOnly === '/readyz') {
          const ok = opts.ready();
          return json(res, ok ? 200 : 503, { status: ok ? 'ready' : 'not-ready', ...opts.status?.() });
        }
        const text = await opts.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': opts.metrics.registry.contentType });
        return res.end(text);
      }
      if (opts.begin && !opts.begin()) {
        req.resume();
        return json(
          res,
          503,
          {
            error: {
              message: 'tollgate is shutting down',
              type: 'server_error',
              code: 'unavailable',
              param: null,
            },
          },
          { connection: 'close' },
        );
      }
      try {
        const t0 = performance.now();
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(req.headers))
          if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(',') : v;
        const { body, size, truncated } = await readBody(req, opts.decider.config.server.maxBodyBytes);
        if (truncated) {
          // As Envoy does with allow_partial_message: a prefix of the body, flagged partial.
          headers['x-envoy-auth-partial-body'] = 'true';
          if (!(Number(headers['content-length']) > 0)) headers['content-length'] = String(size);
        }
        const path = url.startsWith('/authz/') ? url.slice('/authz'.length) : url;
        const d = await opts.decider.decide({ method: req.method ?? 'GET', path, headers, body });
        opts.observe(d, (performance.now() - t0) / 1000, headers['x-request-id']);
        if (d.kind === 'allow') {
          // Envoy's http_service removes the headers named here from the upstream request
          // (client-sent x-tollgate-*: no spoofing in HTTP mode either).
          const remove = d.removeHeaders.length
            ? { 'x-envoy-auth-headers-to-remove': d.removeHeaders.join(',') }
            : {};
          res.writeHead(200, { ...d.upstreamHeaders, ...d.responseHeaders, ...remove });
          return res.end();
        }
        res.writeHead(d.httpStatus, d.headers);
        res.end(d.body);
      } finally {
        opts.end?.();
      }
    } catch {
      if (res.headersSent) return res.destroy();
      json(res, 500, {
        error: { message: 'internal error', type: 'server_error', code: 'internal_error', param: null },
      });
    }
  });
  server.keepAliveTimeout = 65_000;
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : opts.port);
    };
    if (opts.host) server.listen(opts.port, opts.host, done);
    else server.listen(opts.port, done);
  });
  return {
    port,
    /** Stop listening, let requests being answered finish (up to graceMs), then drop every connection. */
    close: (graceMs = 1000) =>
      new Promise<void>((resolve) => {
        const timer = setTimeout(() => server.closeAllConnections(), graceMs);
        timer.unref();
        server.close(() => {
          clearTimeout(timer);
          resolve();
        });
        server.closeIdleConnections();
      }),
  };
}
