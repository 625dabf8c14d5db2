/** A cache hit as the Check's answer: HTTP 200 with the answer (JSON or SSE) via denied_response. */
import type { CacheHit, CacheQuery } from './cache.js';
import { servedBody } from './serve.js';

export interface HitResponse {
  status: 200;
  headers: Record<string, string>;
  body: string;
}

export function hitResponse(q: CacheQuery, hit: CacheHit): HitResponse | undefined {
  try {
    const { body, contentType } = servedBody(q.dialect, q.key.stream, hit.json);
    const tier =
      hit.tier === 'semantic' ? `semantic;similarity=${(hit.similarity ?? 0).toFixed(2)}` : 'exact';
    const headers: Record<string, string> = {
      'content-type': contentType,
      'x-tollgate-source': 'cache',
      'x-tollgate-cache': tier,
    };
    if (q.key.stream) headers['cache-control'] = 'no-cache';
    return { status: 200, headers, body };
  } catch {
    return undefined;
  }
}
