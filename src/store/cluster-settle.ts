/**
 * A settlement on a Valkey Cluster whose limits live in other slots than its record
 * (src/store/cluster.ts): claim the record once (lua/settle-claim.lua: marked settled, its entries
 * handed back), then settle each slot's entries (lua/settle-entries.lua). Each slot's part sets a
 * done-mark in its own slot in the same step, so a part whose reply was lost (a timeout, a failover)
 * is retried without being applied twice. A part that still fails keeps its reservation as charged
 * (its concurrency slots free at their lease end) and the settlement fails.
 */
import { type DebitedEntry, type ExecScript, settleEntriesArgs } from './cluster-check.js';
import { loadScript } from './scripts.js';
import { groupBySlot, slotTag } from './slot.js';
import type { SettleRequest, SettleResult } from './types.js';

const claimScript = loadScript('settle-claim');
const entriesScript = loadScript('settle-entries');

/** Tries per slot part (the done-mark makes a repeat harmless), and the waits between them. */
const PART_RETRIES_MS = [100, 400];

/** A slot's done-mark for a reservation record `<prefix>:v:<rest>`: in `slot`, under the prefix. */
export function doneMark(recordKey: string, slot: number): string {
  const at = recordKey.indexOf(':v:');
  return `${recordKey.slice(0, at)}:v:{${slotTag(slot)}}:settled:${recordKey.slice(at + 3)}`;
}

export async function settleAcrossSlots(req: SettleRequest, exec: ExecScript): Promise<SettleResult> {
  const claim = (await exec(claimScript, [req.key], [req.actual.length])) as (number | string)[];
  if (Number(claim[0]) === 2) return { outcome: 'duplicate', remaining: [] };
  if (Number(claim[0]) !== 1) return { outcome: 'missing', remaining: [] };
  const raw = JSON.parse(String(claim[1])) as unknown;
  const entries = (Array.isArray(raw) ? raw : []) as DebitedEntry[];
  const member = String(claim[2]);
  const bySlot = groupBySlot(entries.map((e) => e[1]));
  const remaining: number[] = new Array(entries.length).fill(0);
  await Promise.all(
    [...bySlot].map(async ([slot, idx]) => {
      const part = idx.map((i) => entries[i]);
      const actual = idx.map((i) => Math.max(0, Math.ceil(req.actual[i])));
      const keys = [...part.map((e) => e[1]), doneMark(req.key, slot)];
      const left = await withRetries(() =>
        exec(entriesScript, keys, settleEntriesArgs(member, part, actual)),
      );
      // an empty reply: an earlier try applied this part (its reply was lost)
      if (Array.isArray(left) && left.length === idx.length)
        idx.forEach((i, j) => {
          remaining[i] = Number(left[j]);
        });
    }),
  );
  return { outcome: 'settled', remaining };
}

async function withRetries<T>(run: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await run();
    } catch (err) {
      if (i >= PART_RETRIES_MS.length) throw err;
      await new Promise((r) => setTimeout(r, PART_RETRIES_MS[i]));
    }
  }
}
