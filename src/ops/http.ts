/**
 * The metrics/probe port: GET (or HEAD) /healthz (liveness), /readyz (readiness), /metrics
 * (Prometheus), and nothing else: 404 for any other path, 405 for another method. It decides and
 * debits nothing, so it can be exposed to the cluster (the Service, the PodMonitor, the kubelet).
 * The HTTP authorization mode has its own listener (src/http-authz.ts, server.http_authz).
 */
import { createServer, type Server, type ServerResponse } from 'node:http';
import type { Metrics } from './metrics.js';

export interface HttpOptions {
  port: number;
  /** Bind address; undefined = every interface. */
  host?: string;
  metrics: Metrics;
  /** Readiness: the same answer grpc.health.v1 gives. */
  ready: () => boolean;
  /** Details for the /readyz JSON. */
  status?: () => Record<string, unknown>;
}

export interface HttpListener {
  port: number;
  /** Stop listening, let requests being answered finish (up to graceMs), then drop every connection. */
  close(graceMs?: number): Promise<void>;
}

export function sendJson(
  res: ServerResponse,
  status: number,
  body: unknown,
  extra: Record<string, string> = {},
): void {
  res.writeHead(status, { 'content-type': 'application/json', ...extra });
  res.end(JSON.stringify(body));
}

export function errorJson(message: string, type: string, code: string) {
  return { error: { message, type, code, param: null } };
}

const PROBES = new Set(['/healthz', '/readyz', '/metrics']);

export async function startHttp(opts: HttpOptions): Promise<HttpListener> {
  const server = createServer(async (req, res) => {
    const pathOnly = (req.url ?? '/').split('?', 1)[0];
    req.resume(); // a body sent here is never read
    try {
      if (!PROBES.has(pathOnly))
        return sendJson(
          res,
          404,
          errorJson(
            'Not found: this port serves /metrics, /healthz and /readyz only (the HTTP authorization mode, when enabled, has its own port: server.http_authz).',
            'invalid_request_error',
            'not_found',
          ),
        );
      if (req.method !== 'GET' && req.method !== 'HEAD')
        return sendJson(
          res,
          405,
          errorJson('Method not allowed', 'invalid_request_error', 'method_not_allowed'),
          {
            allow: 'GET, HEAD',
          },
        );
      if (pathOnly === '/healthz') return sendJson(res, 200, { status: 'ok' });
      if (pathOnly === '/readyz') {
        const ok = opts.ready();
        return sendJson(res, ok ? 200 : 503, { status: ok ? 'ready' : 'not-ready', ...opts.status?.() });
      }
      const text = await opts.metrics.registry.metrics();
      res.writeHead(200, { 'content-type': opts.metrics.registry.contentType });
      res.end(text);
    } catch {
      if (res.headersSent) return res.destroy();
      sendJson(res, 500, errorJson('internal error', 'server_error', 'internal_error'));
    }
  });
  return listen(server, opts.port, opts.host);
}

/** Listen on host:port (every interface when host is undefined) and hand back the bound port and a close(). */
export async function listen(server: Server, port: number, host?: string): Promise<HttpListener> {
  server.keepAliveTimeout = 65_000;
  const bound = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    const done = () => {
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : port);
    };
    if (host) server.listen(port, host, done);
    else server.listen(port, done);
  });
  return {
    port: bound,
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
