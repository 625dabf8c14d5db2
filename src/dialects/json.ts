/**
 * The shared JSON walker of the request dialects: bounds on attacker-controlled bodies, typed field
 * readers that fail with the field's name, an iterative (never recursive) JSON re-serialiser, and the
 * mutable state of one parse. Every dialect file builds on these; see parse.ts for the robustness
 * contract.
 */
import type { PromptMessage, ToolDef } from './types.js';

export const MAX_DEPTH = 64;
export const MAX_ITEMS = 100_000;
export const MAX_NODES = 2_000_000;
export const MAX_OUTPUT_TOKENS = 10_000_000;
export const MAX_N = 128;

export class Fail extends Error {}

export function fail(msg: string): never {
  throw new Fail(msg);
}

export type Obj = Record<string, unknown>;

export function isObj(v: unknown): v is Obj {
  return v !== null && typeof v === 'object' && !Array.isArray(v);
}

export function own(o: Obj, k: string): unknown {
  return Object.hasOwn(o, k) ? o[k] : undefined;
}

export function optString(o: Obj, k: string, where: string): string | undefined {
  const v = own(o, k);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'string') fail(`${where}${k} must be a string`);
  return v;
}

export function optBool(o: Obj, k: string): boolean {
  const v = own(o, k);
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') fail(`${k} must be a boolean`);
  return v;
}

export function optPosInt(o: Obj, k: string, max: number): number | undefined {
  const v = own(o, k);
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1 || v > max) {
    fail(`${k} must be a positive integer ≤ ${max}`);
  }
  return v;
}

export function checkArray(v: unknown, where: string): unknown[] {
  if (!Array.isArray(v)) fail(`${where} must be an array`);
  if (v.length > MAX_ITEMS) fail(`${where} has ${v.length} items (max ${MAX_ITEMS})`);
  return v;
}

/**
 * Iterative JSON serialisation (same output as JSON.stringify for JSON-parsed data).
 * Returns undefined when nesting exceeds `maxDepth` or the value has more than MAX_NODES nodes.
 */
export function safeStringify(value: unknown, maxDepth = MAX_DEPTH): string | undefined {
  interface Frame {
    arr?: unknown[];
    obj?: Obj;
    keys?: string[];
    i: number;
  }
  const out: string[] = [];
  const stack: Frame[] = [];
  let nodes = 0;
  const visit = (x: unknown): boolean => {
    if (++nodes > MAX_NODES) return false;
    switch (typeof x) {
      case 'string':
        out.push(JSON.stringify(x));
        return true;
      case 'number':
        out.push(Number.isFinite(x) ? String(x) : 'null');
        return true;
      case 'boolean':
        out.push(x ? 'true' : 'false');
        return true;
      case 'object':
        if (x === null) {
          out.push('null');
          return true;
        }
        if (stack.length >= maxDepth) return false;
        if (Array.isArray(x)) {
          out.push('[');
          stack.push({ arr: x, i: 0 });
        } else {
          out.push('{');
          stack.push({ obj: x as Obj, keys: Object.keys(x), i: 0 });
        }
        return true;
      default:
        out.push('null');
        return true;
    }
  };
  if (!visit(value)) return undefined;
  while (stack.length > 0) {
    const f = stack[stack.length - 1];
    if (f.arr) {
      if (f.i >= f.arr.length) {
        out.push(']');
        stack.pop();
        continue;
      }
      if (f.i > 0) out.push(',');
      if (!visit(f.arr[f.i++])) return undefined;
    } else {
      const keys = f.keys!;
      if (f.i >= keys.length) {
        out.push('}');
        stack.pop();
        continue;
      }
      const k = keys[f.i];
      if (f.i > 0) out.push(',');
      f.i++;
      out.push(JSON.stringify(k), ':');
      if (!visit(f.obj![k])) return undefined;
    }
  }
  return out.join('');
}

export function stringifyOrFail(v: unknown, where: string): string {
  const s = safeStringify(v);
  if (s === undefined) fail(`${where} is nested deeper than ${MAX_DEPTH} levels or too large`);
  return s;
}

/** Mutable state while parsing one body. */
export class Ctx {
  messages: PromptMessage[] = [];
  texts: string[] = [];
  preTokenized = 0;
  images = 0;
  toolDefs: ToolDef[] = [];
  toolNames = new Set<string>();

  addTool(name: unknown): void {
    if (typeof name === 'string' && name.length > 0) this.toolNames.add(name);
  }
}
