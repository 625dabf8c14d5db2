/**
 * HTTP port: /healthz (liveness), /readyz (readiness), /metrics (Prometheus), and the HTTP authorization
 * mode (Envoy ext_authz `http_service`): any other path is a check of that method, path, headers and
 * body; 200 = allow (headers to add upstream returned as response headers), anything else = deny.
 * An optional "/authz" prefix (Envoy's `path_prefix`) is stripped.
 */
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { Decider } from './decision/decide.js';
import type { Decision } from './decision/types.js';
import type { Metrics } from './metrics.js';

export interface HttpOptions {
  port: number;
  metrics: Metrics;
  ready: () => boolean;
  decider: Decider;
  observe: (d: Decision, seconds: number, requestId: string | undefined) => void;
}

function readBody(req: IncomingMessage, limit: number): Promise<Buffer | undefined> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    let truncated = false;
    req.on('data', (c: Buffer) => {
      if (truncated) return;
      size += c.length;
      if (size > limit) {
        truncated = true;
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(truncated ? undefined : chunks.length ? Buffer.concat(chunks) : undefined));
    req.on('error', reject);
  });
}

export async function startHttp(opts: HttpOptions): Promise<{ port: number; close(): Promise<void> }> {
  const json = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(JSON.stringify(body));
  };
  const server = createServer(async (req, res) => {
    const url = req.url ?? '/';
    try {
      if (url === '/healthz') return json(res, 200, { status: 'ok' });
      if (url === '/readyz') {
        const ok = opts.ready();
        return json(res, ok ? 200 : 503, {
          status: ok ? 'ready' : 'not-ready',
          store: opts.decider.breaker.current,
        });
      }
      if (url === '/metrics') {
        const text = await opts.metrics.registry.metrics();
        res.writeHead(200, { 'content-type': opts.metrics.registry.contentType });
        return res.end(text);
      }
      const t0 = performance.now();
      const headers: Record<string, string> = {};
      for (const [k, v] of Object.entries(req.headers))
        if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(',') : v;
      const body = await readBody(req, opts.decider.config.server.maxBodyBytes);
      if (body === undefined && Number(headers['content-length']) > 0)
        headers['x-envoy-auth-partial-body'] = 'true';
      const path = url.startsWith('/authz/') ? url.slice('/authz'.length) : url;
      const d = await opts.decider.decide({ method: req.method ?? 'GET', path, headers, body });
      opts.observe(d, (performance.now() - t0) / 1000, headers['x-request-id']);
      if (d.kind === 'allow') {
        res.writeHead(200, { ...d.upstreamHeaders, ...d.responseHeaders });
        return res.end();
      }
      res.writeHead(d.httpStatus, d.headers);
      res.end(d.body);
    } catch (err) {
      json(res, 500, {
        error: { message: (err as Error).message, type: 'server_error', code: 'internal_error', param: null },
      });
    }
  });
  server.keepAliveTimeout = 65_000;
  const port = await new Promise<number>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, () => {
      const a = server.address();
      resolve(typeof a === 'object' && a ? a.port : opts.port);
    });
  });
  return {
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
