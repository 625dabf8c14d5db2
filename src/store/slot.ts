/**
 * Valkey Cluster key slots: CRC16 (XMODEM) of the key, or of its hash tag — the part between the first
 * `{` and the first `}` after it, when that part is not empty — modulo 16384 (the cluster
 * specification, "Keys hash tags"). Used by the cluster store to group a plan's keys by slot, and by
 * reservation ids to carry the slot their record lives in (slotTag).
 */

const SLOTS = 16384;

const TABLE = (() => {
  const t = new Uint16Array(256);
  for (let i = 0; i < 256; i++) {
    let c = i << 8;
    for (let b = 0; b < 8; b++) c = c & 0x8000 ? ((c << 1) ^ 0x1021) & 0xffff : (c << 1) & 0xffff;
    t[i] = c;
  }
  return t;
})();

function crc16(bytes: Uint8Array, start: number, end: number): number {
  let crc = 0;
  for (let i = start; i < end; i++) crc = ((crc << 8) & 0xffff) ^ TABLE[((crc >> 8) ^ bytes[i]) & 0xff];
  return crc;
}

/** The cluster slot of a key (0..16383). */
export function keySlot(key: string): number {
  const b = Buffer.from(key, 'utf8');
  const open = b.indexOf(0x7b); // {
  if (open >= 0) {
    const close = b.indexOf(0x7d, open + 1); // }
    if (close > open + 1) return crc16(b, open + 1, close) % SLOTS;
  }
  return crc16(b, 0, b.length) % SLOTS;
}

let tags: string[] | undefined;

/**
 * A short tag (1–4 characters of [0-9a-z]) whose slot is `slot`: `{<tag>}` in a key puts it in that
 * slot. The first base-36 number hashing to each slot, found once (~0.2 s of CRCs, on first use).
 */
export function slotTag(slot: number): string {
  if (!tags) {
    const found: string[] = new Array(SLOTS);
    let left = SLOTS;
    for (let n = 0; left > 0; n++) {
      const t = n.toString(36);
      const s = crc16(Buffer.from(t), 0, t.length) % SLOTS;
      if (found[s] === undefined) {
        found[s] = t;
        left--;
      }
    }
    tags = found;
  }
  return tags[slot];
}

/** The tag of a key's slot (see slotTag). */
export const keySlotTag = (key: string): string => slotTag(keySlot(key));

/** Positions of `keys` grouped by their slot (slots in first-seen order, positions ascending). */
export function groupBySlot(keys: readonly string[]): Map<number, number[]> {
  const groups = new Map<number, number[]>();
  keys.forEach((k, i) => {
    const slot = keySlot(k);
    const g = groups.get(slot);
    if (g) g.push(i);
    else groups.set(slot, [i]);
  });
  return groups;
}
