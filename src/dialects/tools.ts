/** Tool and function definitions and tool calls, shared by the OpenAI and Anthropic dialects. */
import { type Ctx, checkArray, fail, isObj, MAX_ITEMS, type Obj, own, stringifyOrFail } from './json.js';
import type { Dialect, ToolDef, ToolProperty } from './types.js';

export const PROP_KNOWN = new Set(['type', 'description', 'enum']);
export const PARAMS_KNOWN = new Set(['type', 'properties', 'required', 'additionalProperties']);

export function extraJson(o: Obj, known: Set<string>, where: string): string | undefined {
  let extra: Obj | undefined;
  for (const k of Object.keys(o)) {
    if (known.has(k)) continue;
    extra ??= {};
    extra[k] = o[k];
  }
  return extra ? stringifyOrFail(extra, where) : undefined;
}

export function scalarString(v: unknown, where: string): string {
  if (v === undefined || v === null) return '';
  if (typeof v === 'string') return v;
  return stringifyOrFail(v, where);
}

/** Normalise {name, description, parameters|input_schema} into a ToolDef. */
export function toolDef(name: unknown, description: unknown, params: unknown, where: string): ToolDef {
  if (typeof name !== 'string') fail(`${where}.name must be a string`);
  const def: ToolDef = {
    name,
    description: typeof description === 'string' ? description : '',
    properties: [],
  };
  if (params === undefined || params === null) return def;
  if (!isObj(params)) fail(`${where} parameters must be an object`);
  def.extra = extraJson(params, PARAMS_KNOWN, `${where}.parameters`);
  const props = own(params, 'properties');
  if (props === undefined || props === null) return def;
  if (!isObj(props)) fail(`${where}.parameters.properties must be an object`);
  const keys = Object.keys(props);
  if (keys.length > MAX_ITEMS) fail(`${where}.parameters.properties has too many keys (max ${MAX_ITEMS})`);
  for (const key of keys) {
    const schema = props[key];
    const pw = `${where}.parameters.properties.${key}`;
    const prop: ToolProperty = { name: key, type: '', description: '' };
    if (isObj(schema)) {
      prop.type = scalarString(own(schema, 'type'), `${pw}.type`);
      prop.description = scalarString(own(schema, 'description'), `${pw}.description`);
      const en = own(schema, 'enum');
      if (Array.isArray(en)) {
        const items = checkArray(en, `${pw}.enum`);
        prop.enum = items.map((it, i) => scalarString(it, `${pw}.enum[${i}]`));
      }
      prop.extra = extraJson(schema, PROP_KNOWN, pw);
    } else {
      prop.extra = stringifyOrFail(schema, pw);
    }
    def.properties.push(prop);
  }
  return def;
}

/** OpenAI chat `tools` (and `functions`), Responses `tools`, Anthropic `tools`. */
export function parseTools(ctx: Ctx, body: Obj, dialect: Dialect): void {
  const tools = own(body, 'tools');
  if (tools !== undefined && tools !== null) {
    const arr = checkArray(tools, 'tools');
    for (let i = 0; i < arr.length; i++) {
      const t = arr[i];
      const w = `tools[${i}]`;
      if (!isObj(t)) fail(`${w} must be an object`);
      const fn = own(t, 'function');
      if (isObj(fn)) {
        // OpenAI chat: { type: 'function', function: { name, description, parameters } }
        ctx.addTool(own(fn, 'name'));
        ctx.toolDefs.push(
          toolDef(own(fn, 'name'), own(fn, 'description'), own(fn, 'parameters'), `${w}.function`),
        );
      } else if (dialect === 'anthropic.messages' && own(t, 'input_schema') !== undefined) {
        ctx.addTool(own(t, 'name'));
        ctx.toolDefs.push(toolDef(own(t, 'name'), own(t, 'description'), own(t, 'input_schema'), w));
      } else if (own(t, 'type') === 'function' && typeof own(t, 'name') === 'string') {
        // Responses API: { type: 'function', name, description, parameters }
        ctx.addTool(own(t, 'name'));
        ctx.toolDefs.push(toolDef(own(t, 'name'), own(t, 'description'), own(t, 'parameters'), w));
      } else {
        // Built-in / server tools (web_search, file_search, custom, ...): name only, no schema tokens.
        const name = own(t, 'name');
        ctx.addTool(typeof name === 'string' ? name : own(t, 'type'));
        if (typeof own(t, 'description') === 'string' || own(t, 'parameters') !== undefined) {
          if (typeof name === 'string') {
            ctx.toolDefs.push(toolDef(name, own(t, 'description'), own(t, 'parameters'), w));
          }
        }
      }
    }
  }
  if (dialect === 'openai.chat') {
    const fns = own(body, 'functions');
    if (fns !== undefined && fns !== null) {
      const arr = checkArray(fns, 'functions');
      for (let i = 0; i < arr.length; i++) {
        const f = arr[i];
        if (!isObj(f)) fail(`functions[${i}] must be an object`);
        ctx.addTool(own(f, 'name'));
        ctx.toolDefs.push(
          toolDef(own(f, 'name'), own(f, 'description'), own(f, 'parameters'), `functions[${i}]`),
        );
      }
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Dialects
// ---------------------------------------------------------------------------------------------

export function pushToolCall(ctx: Ctx, parts: string[], fn: Obj, argKey: string, where: string): void {
  const name = own(fn, 'name');
  if (typeof name === 'string') parts.push(name);
  ctx.addTool(name);
  const args = own(fn, argKey);
  if (typeof args === 'string') parts.push(args);
  else if (args !== undefined && args !== null) parts.push(stringifyOrFail(args, `${where}.${argKey}`));
}
