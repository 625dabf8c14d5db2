/**
 * Calls whose body tollgate cannot prove (issue 19 item 1, issue 26 item 1): a partial, missing or
 * oversized body names no model tollgate can trust, and a body with a duplicate or escaped top-level
 * "model" key would be rewritten wrongly by Envoy's Lua. Such calls are charged as the costliest model
 * they could be (or refused: server.partial_body: deny) and never rerouted to a fallback.
 */
import type { Config } from '../config/types.js';
import type { ModelKeyProblem } from '../dialects/model-key.js';
import { modelConfig, priceMicros, reservedOutput } from '../policy/plan.js';
import type { Decision, DenyDecision } from './types.js';

/** Why a call's fallbacks are not tried: its body cannot be proven, or its model is in the path. */
export type Unproven = 'partial-body' | 'path-model' | ModelKeyProblem;

/**
 * The model a call with an unreadable body is charged as: the configured model (or "*") whose estimate
 * costs the most — dollars first, then weighted tokens; on a tie a named model over "*", so that its
 * model-scoped limits apply. Bounded by the config's models; only unproven calls pay for it.
 */
export function costliestModel(cfg: Config, promptTokens: number): string {
  let best = '*';
  let bestMicros = -1;
  let bestTokens = -1;
  const consider = (name: string) => {
    const mc = modelConfig(cfg, name);
    const out = reservedOutput(cfg, mc, undefined, 1);
    const micros = priceMicros(mc, promptTokens, out);
    const tokens = (promptTokens + out) * mc.tokenWeight;
    if (micros > bestMicros || (micros === bestMicros && tokens > bestTokens)) {
      best = name;
      bestMicros = micros;
      bestTokens = tokens;
    }
  };
  for (const name of cfg.models.keys()) consider(name);
  consider('*'); // last and only if strictly costlier: a tie keeps the named model
  return best;
}

const WHY: Record<Unproven, string> = {
  'partial-body': 'its body was not received in full',
  // the shipped Envoy configs rewrite the body's model; an Azure deployment path (or Gemini's
  // models/{model}) names the model instead, so the proxy would refuse the rerouted call
  // (deploy/lua/model-rewrite.lua)
  'path-model':
    'its model is named by the path (an Azure deployment, a Gemini models/{model}), not by the body',
  'duplicate-model-key': 'its body names "model" more than once',
  'escaped-model-key': 'its body writes the "model" key with escapes',
};

/**
 * A denial of a call whose fallbacks were not tried: says so in a header
 * (`x-tollgate-reroute: refused;reason=<why>`) and in the error message.
 */
export function refuseReroute(d: Decision, why: Unproven): Decision {
  if (d.kind !== 'deny' || (d.reason !== 'rate-limited' && d.reason !== 'never-fits')) return d;
  d.headers['x-tollgate-reroute'] = `refused;reason=${why}`;
  try {
    const body = JSON.parse(d.body);
    body.error.message += ` Its fallback models were not tried: tollgate does not reroute a request when ${WHY[why]}.`;
    body.reroute = { refused: why };
    d.body = JSON.stringify(body);
  } catch {}
  return d;
}

/** server.partial_body: deny — 413 for a body not received in full, 400 for none at all. */
export function partialRefused(missing: boolean): DenyDecision {
  const [status, message, code] = missing
    ? [400, 'A request body is required.', 'invalid_request']
    : [
        413,
        'The request body is larger than this gateway reads in full; its cost cannot be determined. Send a smaller request.',
        'request_too_large',
      ];
  return {
    kind: 'deny',
    reason: 'bad-request',
    httpStatus: status as number,
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ error: { message, type: 'invalid_request_error', code, param: null } }),
    stats: {},
  };
}
