import type { Dialect } from './types.js';

export interface Route {
  dialect: Dialect;
  /** Azure OpenAI deployment name (URL-decoded), when the path is an Azure deployment path. */
  azureDeployment?: string;
}

const AZURE_RE = /^\/openai\/deployments\/([^/]+)\/(chat\/completions|completions|embeddings)$/;

/** Suffixes (after an optional free prefix such as `/openai`) that identify a dialect. Order matters. */
const SUFFIXES: ReadonlyArray<readonly [string, Dialect]> = [
  ['/v1/chat/completions', 'openai.chat'],
  ['/v1/completions', 'openai.completions'],
  ['/v1/embeddings', 'openai.embeddings'],
  ['/v1/responses', 'openai.responses'],
  ['/v1/messages', 'anthropic.messages'],
];

const AZURE_DIALECT: Record<string, Dialect> = {
  'chat/completions': 'openai.chat',
  completions: 'openai.completions',
  embeddings: 'openai.embeddings',
};

/**
 * Classify a request path (`:path` pseudo-header, may include a query string).
 * Returns undefined for paths that are not token-consuming LLM calls
 * (e.g. `/v1/models`, `/v1/messages/count_tokens`, `/v1/responses/{id}`).
 */
export function classifyPath(path: string): Route | undefined {
  if (typeof path !== 'string' || path.length === 0 || path.length > 8192) return undefined;
  let p = path;
  const q = p.search(/[?#]/);
  if (q >= 0) p = p.slice(0, q);
  // Tolerate trailing slashes (`/v1/chat/completions/`).
  let end = p.length;
  while (end > 1 && p.charCodeAt(end - 1) === 47 /* / */) end--;
  p = p.slice(0, end);

  const az = AZURE_RE.exec(p);
  if (az) {
    let name: string;
    try {
      name = decodeURIComponent(az[1]);
    } catch {
      return undefined; // malformed percent-encoding
    }
    if (name.length === 0) return undefined;
    return { dialect: AZURE_DIALECT[az[2]], azureDeployment: name };
  }

  for (const [suffix, dialect] of SUFFIXES) {
    if (p.endsWith(suffix)) return { dialect };
  }
  return undefined;
}

/** The header the provider of a route authenticates with: Azure api-key, Anthropic x-api-key, else Authorization. */
export function keyHeaderOf(route: Route): 'authorization' | 'x-api-key' | 'api-key' {
  if (route.azureDeployment !== undefined) return 'api-key';
  return route.dialect === 'anthropic.messages' ? 'x-api-key' : 'authorization';
}
