/**
 * A check on a Valkey Cluster (store.topology: cluster), where one script can only touch one slot.
 *
 * A plan whose keys all share a slot (every limit keyed by the `store.shard_by` dimension, and the
 * reservation record placed beside them) is one call of lua/check-limits.lua, exactly as on a single
 * server. Otherwise the chosen candidate is reserved slot by slot: each slot's entries are checked and
 * debited by one atomic script call (all slots at once), and when any slot refuses, the slots already
 * debited are refunded (lua/settle-entries.lua with nothing used) before the call is answered. So the
 * guarantee stays: never over-admit. The transient cost: while a refused call's debit is in flight, a
 * concurrent call on that slot may see it, and be refused when it would have fitted.
 *
 * Candidates are tried best first. The first pass honours downgrade thresholds (as the script does for
 * every candidate but the last); if none is chosen, the candidates that were refused by a threshold
 * alone are tried again without it. The queue's keys live in their own slot ({q.<queue>}): a call
 * refused only by queueable limits is appended there after the check (lua/queue-enqueue.lua).
 */
import { loadScript, type Script } from './scripts.js';
import { groupBySlot, keySlot } from './slot.js';
import {
  type CheckPlan,
  type CheckResult,
  type EntryResult,
  EntryStatus,
  Outcome,
  type PlanEntry,
  parseReply,
  planArgs,
} from './types.js';

/** Runs one script on the slot of its keys (EVALSHA, EVAL on NOSCRIPT). */
export type ExecScript = (script: Script, keys: string[], args: (string | number)[]) => Promise<unknown>;

export const CLUSTER_SCRIPTS = {
  check: loadScript('check-limits'),
  settleEntries: loadScript('settle-entries'),
  enqueue: loadScript('queue-enqueue'),
  putReservation: loadScript('reservation-put'),
};

/** One record entry as the check script lists it: index, key, kind, then numbers as text. */
export type DebitedEntry = [number, string, number, string, string, string, string, string];

/** The outcome of reserving one candidate slot by slot. */
interface Attempt {
  taken: boolean;
  /** Slots refunded (compensation). */
  refunded: number;
  /** Refused by downgrade thresholds only (would fit without them). */
  thresholdOnly: boolean;
  entries: EntryResult[];
  debited: DebitedEntry[];
  nowMs: number;
}

/** Whether every key of the plan but the queue's shares one slot (then one script call decides). */
export function oneSlot(plan: CheckPlan): boolean {
  const n = plan.keys.length - (plan.queue ? 2 : 0);
  if (n === 0) return true;
  const slot = keySlot(plan.keys[0]);
  for (let i = 1; i < n; i++) if (keySlot(plan.keys[i]) !== slot) return false;
  return true;
}

/** The plan without its queue part (its keys are the last two). */
function withoutQueue(plan: CheckPlan): CheckPlan {
  if (!plan.queue) return plan;
  return { ...plan, keys: plan.keys.slice(0, -2), queue: undefined };
}

/** A single-slot plan: one script call; the queue part in the same call when it shares the slot. */
export async function checkOneSlot(plan: CheckPlan, exec: ExecScript): Promise<CheckResult> {
  const sameSlot = !plan.queue || keySlot(plan.keys[plan.keys.length - 2]) === keySlot(plan.keys[0]);
  const p = sameSlot ? plan : withoutQueue(plan);
  const result = parseReply(
    p,
    (await exec(CLUSTER_SCRIPTS.check, p.keys, planArgs(p))) as (number | string)[],
  );
  if (!sameSlot) return enqueueIfQueueable(plan, result, exec);
  return result;
}

/** Try candidate `c` slot by slot; refund what was debited if any slot refuses. */
async function attempt(
  plan: CheckPlan,
  c: number,
  exec: ExecScript,
  member: string,
  thresholds: boolean,
): Promise<Attempt> {
  const cand = plan.candidates[c];
  const entries: EntryResult[] = new Array(cand.length);
  const groups = [...groupBySlot(cand.map((e) => plan.keys[e.key])).values()];
  const replies = await allSlots(
    groups.map((g) => slotCall(plan, cand, g, exec, member, thresholds)),
    groups.map((g) => g.length),
    exec,
    member,
  );
  let taken = true;
  let thresholdOnly = true;
  let nowMs = 0;
  const debited: DebitedEntry[] = [];
  replies.forEach((r, gi) => {
    nowMs = Math.max(nowMs, r.nowMs);
    groups[gi].forEach((pos, i) => {
      entries[pos] = r.entries[i];
    });
    if (r.taken) for (const d of r.debited) debited.push([groups[gi][d[0]], ...d.slice(1)] as DebitedEntry);
    else taken = false;
    if (!r.taken && !r.thresholdOnly) thresholdOnly = false;
  });
  const back = taken || plan.dryRun ? [] : replies.filter((r) => r.taken && r.debited.length > 0);
  // compensation: the slots that took their part give it back before the call is answered
  await Promise.allSettled(back.map((r) => refund(r, exec, member))); // a lost refund: an over-charge
  debited.sort((a, b) => a[0] - b[0]);
  const refunded = back.length;
  return {
    taken,
    refunded,
    thresholdOnly: !taken && thresholdOnly,
    entries,
    debited: taken ? debited : [],
    nowMs,
  };
}

/**
 * Every slot's reply. When one fails (a node down, a timeout): if another slot refused, the call is
 * refused anyway (the failed slot is reported as not read); else the slots that debited are refunded
 * before the error goes on (the call is then answered per on_store_failure, its budget untouched).
 */
async function allSlots(
  calls: Promise<SlotReply>[],
  sizes: number[],
  exec: ExecScript,
  member: string,
): Promise<SlotReply[]> {
  const settled = await Promise.allSettled(calls);
  const failed = settled.find((r) => r.status === 'rejected') as PromiseRejectedResult | undefined;
  const ok = settled.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
  if (!failed) return ok;
  await Promise.allSettled(
    ok.filter((r) => r.taken && r.debited.length > 0).map((r) => refund(r, exec, member)),
  );
  if (!ok.some((r) => !r.taken)) throw failed.reason;
  return settled.map((r, i) =>
    r.status === 'rejected'
      ? unread(sizes[i])
      : r.value.taken
        ? { ...r.value, taken: false, thresholdOnly: true, debited: [] } // refunded above
        : r.value,
  );
}

/** A slot whose call failed while another refused: its entries are reported as not blocking. */
function unread(n: number): SlotReply {
  const entries = Array.from({ length: n }, () => ({
    status: EntryStatus.Fits,
    remaining: 0,
    resetMs: 0,
    retryMs: 0,
  }));
  return { taken: false, thresholdOnly: false, entries, debited: [], keys: [], nowMs: 0 };
}

/** Give back what a chosen candidate debited, slot by slot (its record could not be written). */
export async function refundDebited(
  debited: DebitedEntry[],
  exec: ExecScript,
  member: string,
): Promise<void> {
  const parts = [...groupBySlot(debited.map((d) => d[1])).values()];
  await Promise.allSettled(
    parts.map((idx) =>
      refundPart(
        idx.map((i) => debited[i]),
        exec,
        member,
      ),
    ),
  );
}

interface SlotReply {
  taken: boolean;
  thresholdOnly: boolean;
  entries: EntryResult[];
  /** Local indexes (into the group) and the slot's keys. */
  debited: DebitedEntry[];
  keys: string[];
  nowMs: number;
}

/** One slot's part of a candidate: check and debit it atomically (or only check, in a dry run). */
async function slotCall(
  plan: CheckPlan,
  cand: PlanEntry[],
  group: number[],
  exec: ExecScript,
  member: string,
  thresholds: boolean,
): Promise<SlotReply> {
  const keys: string[] = [];
  const index = new Map<number, number>();
  const entries = group.map((pos) => {
    const e = cand[pos];
    let k = index.get(e.key);
    if (k === undefined) {
      k = keys.push(plan.keys[e.key]) - 1;
      index.set(e.key, k);
    }
    return { ...e, key: k, downgradeAt: thresholds ? e.downgradeAt : 0 };
  });
  // with thresholds, an empty second candidate (always fits, debits nothing) takes the script's choice
  // when this slot's part dips below one: the part is then not debited
  const sub: CheckPlan = { keys, candidates: thresholds ? [entries, []] : [entries], dryRun: plan.dryRun };
  const args = planArgs(sub);
  if (!plan.dryRun) args.splice(args.length - 1, 1, 2, member);
  const reply = (await exec(CLUSTER_SCRIPTS.check, keys, args)) as (number | string)[];
  const r = parseReply(sub, reply);
  const taken = r.chosen === 0;
  const statuses = r.candidates[0];
  const thresholdOnly = statuses.every(
    (s, i) => entries[i].shadow || s.status === EntryStatus.Fits || s.status === EntryStatus.BelowDowngrade,
  );
  // the script's list (cjson writes an empty one as {})
  const list = taken && !plan.dryRun ? JSON.parse(String(reply[reply.length - 1])) : [];
  const debited = Array.isArray(list) ? (list as DebitedEntry[]) : [];
  return { taken, thresholdOnly, entries: statuses, debited, keys, nowMs: r.nowMs };
}

/** Give back one slot's debit (everything reserved, nothing used; concurrency slots released). */
function refund(r: SlotReply, exec: ExecScript, member: string): Promise<unknown> {
  return refundPart(r.debited, exec, member);
}

/** lua/settle-entries.lua over one slot's debited entries with nothing used. */
function refundPart(part: DebitedEntry[], exec: ExecScript, member: string): Promise<unknown> {
  return exec(
    CLUSTER_SCRIPTS.settleEntries,
    part.map((d) => d[1]),
    settleEntriesArgs(member, part),
  );
}

/** lua/settle-entries.lua's ARGV: the member, then per entry its record fields and the units used. */
export function settleEntriesArgs(
  member: string,
  entries: DebitedEntry[],
  actual?: number[],
): (string | number)[] {
  const args: (string | number)[] = [member, entries.length];
  entries.forEach((e, i) => {
    args.push(e[2], e[3], e[4], e[5], e[6], e[7], actual ? actual[i] : 0);
  });
  return args;
}

/** What a multi-slot check answers, and the record's entries when a candidate was chosen. */
export interface ClusterCheck {
  result: CheckResult;
  debited?: DebitedEntry[];
  /** Slots that debited and were refunded because another slot refused. */
  compensated: number;
}

/** The check when the plan's keys span slots (see the header). */
export async function checkAcrossSlots(
  plan: CheckPlan,
  exec: ExecScript,
  member: string,
): Promise<ClusterCheck> {
  const C = plan.candidates.length;
  const results: EntryResult[][] = new Array(C);
  const retryable: number[] = [];
  let nowMs = Date.now();
  let chosen = -1;
  let debited: DebitedEntry[] | undefined;
  let compensated = 0;
  const run = async (c: number, thresholds: boolean) => {
    const a = await attempt(plan, c, exec, member, thresholds);
    compensated += a.refunded;
    results[c] = a.entries;
    if (a.nowMs) nowMs = a.nowMs;
    if (a.taken) {
      chosen = c;
      debited = a.debited;
    } else if (a.thresholdOnly && thresholds) retryable.push(c);
  };
  for (let c = 0; c < C && chosen < 0; c++) await run(c, c < C - 1);
  for (const c of retryable) {
    if (chosen >= 0) break;
    await run(c, false);
  }
  // candidates after the chosen one were not read (a single script reads them all): reported as
  // fitting and full; only their reported values differ, nothing is debited
  for (let c = 0; c < C; c++)
    results[c] ??= plan.candidates[c].map((e) => ({
      status: EntryStatus.Fits,
      remaining: e.capacity,
      resetMs: 0,
      retryMs: 0,
    }));
  const result = denial(plan, results, chosen, nowMs);
  if (chosen >= 0) return { result, debited, compensated };
  return { result: await enqueueIfQueueable(plan, result, exec), compensated };
}

/** The script's verdict, from every candidate's entries (lua/check-limits.lua "Denied"). */
function denial(plan: CheckPlan, results: EntryResult[][], chosen: number, nowMs: number): CheckResult {
  if (chosen >= 0) return { outcome: Outcome.Allowed, chosen, retryMs: 0, nowMs, candidates: results };
  let outcome = Outcome.Never;
  let retry = -1;
  plan.candidates.forEach((cand, c) => {
    let never = false;
    let worst = 0;
    cand.forEach((e, i) => {
      const s = results[c][i];
      if (e.shadow || s.status === EntryStatus.Fits || s.status === EntryStatus.BelowDowngrade) return;
      if (s.status === EntryStatus.Never) never = true;
      else if (s.retryMs > worst) worst = s.retryMs;
    });
    if (!never && (retry < 0 || worst < retry)) {
      retry = worst;
      outcome = Outcome.Denied;
    }
  });
  return { outcome, chosen: -1, retryMs: retry, nowMs, candidates: results };
}

/**
 * The queue tier after a refusal: queueable when every enforced limit blocking the first candidate is
 * (and none can never fit), as the script decides; then lua/queue-enqueue.lua on the queue's slot.
 */
async function enqueueIfQueueable(
  plan: CheckPlan,
  result: CheckResult,
  exec: ExecScript,
): Promise<CheckResult> {
  const q = plan.queue;
  if (!q || result.outcome !== Outcome.Denied) return result;
  const queueable = plan.candidates[0].every((e, i) => {
    const s = result.candidates[0][i].status;
    if (e.shadow || s === EntryStatus.Fits || s === EntryStatus.BelowDowngrade) return true;
    return Boolean(e.queueable) && s !== EntryStatus.Never;
  });
  if (!queueable) return result;
  const fields = planArgs({ keys: [], candidates: [], queue: q }).slice(3);
  if (plan.dryRun) fields[0] = 2; // decide, append nothing
  const n = plan.keys.length;
  const reply = (await exec(CLUSTER_SCRIPTS.enqueue, [plan.keys[n - 2], plan.keys[n - 1]], fields)) as (
    | number
    | string
  )[];
  if (Number(reply[0]) === Outcome.Queued)
    return { ...result, outcome: Outcome.Queued, streamId: String(reply[1]) };
  return { ...result, outcome: Outcome.QueueFull, queueFull: Number(reply[1]) };
}
