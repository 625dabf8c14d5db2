/** The semantic tier's index: the nearest earlier prompt of the same family by embedding similarity. */
import type { CacheConfig } from '../config/types.js';

export interface SemanticIndex {
  nearest(
    cfg: CacheConfig,
    scope: string,
    family: string,
    text: string,
    timeoutMs: number,
  ): Promise<{ hash: string; similarity: number } | undefined>;
  add(cfg: CacheConfig, scope: string, family: string, text: string, hash: string): Promise<void>;
}
