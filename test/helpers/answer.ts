/** Checks with a chosen deadline, and CheckResponse → CheckAnswer for hand-built requests. */
import { buildCheckRequest, type CheckAnswer, type CheckOptions, type EnvoyClient } from './envoy.js';

const STATUS: Record<string, number> = {
  TooManyRequests: 429,
  BadRequest: 400,
  Forbidden: 403,
  ServiceUnavailable: 503,
  OK: 200,
};

export function toAnswer(res: any): CheckAnswer {
  const code = res.status?.code ?? 0;
  const dr = res.denied_response;
  let json: any;
  try {
    json = dr?.body ? JSON.parse(dr.body) : undefined;
  } catch {}
  const map = (l: any[] | undefined) =>
    Object.fromEntries((l ?? []).map((h) => [String(h.header.key).toLowerCase(), h.header.value]));
  const st = dr?.status?.code;
  const actions: string[] = [];
  for (const l of [res.ok_response?.headers, res.ok_response?.response_headers_to_add, dr?.headers])
    for (const h of l ?? []) actions.push(h.append_action ?? 'APPEND_IF_EXISTS_OR_ADD');
  return {
    code,
    allowed: code === 0,
    httpStatus: code === 0 ? undefined : typeof st === 'number' ? st : STATUS[st as string],
    headers: code === 0 ? map(res.ok_response?.response_headers_to_add) : map(dr?.headers),
    upstream: map(res.ok_response?.headers),
    removed: res.ok_response?.headers_to_remove ?? [],
    appendActions: actions,
    body: dr?.body,
    json,
    raw: res,
  };
}

/** Like EnvoyClient.check, with a deadline for slow machines under heavy load. */
export async function checkWithin(c: EnvoyClient, o: CheckOptions, deadlineMs: number): Promise<CheckAnswer> {
  return toAnswer(await c.checkRaw(buildCheckRequest(o), deadlineMs));
}
