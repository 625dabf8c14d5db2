/**
 * Embeddings from an OpenAI-compatible endpoint (POST {url} {model, input}), with its own timeout and
 * breaker: after 3 failures in a row it is not called for 5 s (a slow or dead embedder costs one
 * timeout, then nothing), so the semantic tier never delays a decision past its budget.
 */
import { envValue } from '../settings.js';
import { normalize } from './lsh.js';

const OPEN_AFTER = 3;
const OPEN_FOR_MS = 5000;

export interface EmbedderConfig {
  url: string;
  model: string;
  apiKeyEnv?: string;
  timeoutMs: number;
}

export class Embedder {
  private failures = 0;
  private openUntil = 0;

  /** Calls refused while the breaker is open (metrics, tests). */
  skipped = 0;

  async embed(cfg: EmbedderConfig, text: string, budgetMs: number): Promise<Float32Array | undefined> {
    if (Date.now() < this.openUntil) {
      this.skipped++;
      return undefined;
    }
    const ms = Math.max(1, Math.min(cfg.timeoutMs, budgetMs));
    const key = cfg.apiKeyEnv ? envValue(cfg.apiKeyEnv) || undefined : undefined;
    try {
      const res = await fetch(cfg.url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', ...(key && { authorization: `Bearer ${key}` }) },
        body: JSON.stringify({ model: cfg.model, input: text }),
        signal: AbortSignal.timeout(ms),
      });
      if (!res.ok) throw new Error(`embeddings: HTTP ${res.status}`);
      const j = (await res.json()) as { data?: { embedding?: unknown }[] };
      const e = j.data?.[0]?.embedding;
      if (!Array.isArray(e) || e.length === 0 || e.some((x) => typeof x !== 'number'))
        throw new Error('embeddings: no vector');
      this.failures = 0;
      return normalize(e as number[]);
    } catch {
      if (++this.failures >= OPEN_AFTER) {
        this.openUntil = Date.now() + OPEN_FOR_MS;
        this.failures = 0;
      }
      return undefined;
    }
  }
}
