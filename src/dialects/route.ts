import { classifyGeminiPath } from './gemini.js';
import type { Dialect } from './types.js';

export interface Route {
  dialect: Dialect;
  /**
   * The model the path names (URL-decoded): an Azure deployment or Gemini's `models/{model}`. It
   * overrides the body's, and a reroute to a fallback is refused (Envoy's rewrite changes the body's
   * model only).
   */
  pathModel?: string;
  /** Azure OpenAI deployment name (URL-decoded), when the path is an Azure deployment path. */
  azureDeployment?: string;
  /** Streaming named by the path (Gemini's streamGenerateContent); other dialects say it in the body. */
  stream?: boolean;
}

/** What a body parser needs from the route besides the dialect. */
export type PathFacts = Pick<Route, 'pathModel' | 'stream'>;

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
 * (e.g. `/v1/models`, `/v1/messages/count_tokens`, `/v1/responses/{id}`, Gemini's `:countTokens`).
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
    return { dialect: AZURE_DIALECT[az[2]], pathModel: name, azureDeployment: name };
  }

  // `…/models/{model}:generateContent` / `:streamGenerateContent` (the query says `alt=sse`)
  const gemini = classifyGeminiPath(q >= 0 ? p + path.slice(q) : p);
  if (gemini) return { dialect: gemini.dialect, pathModel: gemini.model, stream: gemini.stream };

  for (const [suffix, dialect] of SUFFIXES) {
    if (p.endsWith(suffix)) return { dialect };
  }
  return undefined;
}

/**
 * The header the provider of a route authenticates with: Azure api-key, Anthropic x-api-key, Gemini
 * x-goog-api-key (or its `?key=` query parameter, see identity.ts), else Authorization.
 */
export function keyHeaderOf(route: Route): 'authorization' | 'x-api-key' | 'api-key' | 'x-goog-api-key' {
  if (route.azureDeployment !== undefined) return 'api-key';
  if (route.dialect === 'gemini.generateContent') return 'x-goog-api-key';
  return route.dialect === 'anthropic.messages' ? 'x-api-key' : 'authorization';
}
