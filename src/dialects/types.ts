/** API dialects tollgate understands. */
export type Dialect =
  | 'openai.chat'
  | 'openai.completions'
  | 'openai.embeddings'
  | 'openai.responses'
  | 'anthropic.messages'
  | 'gemini.generateContent';

/** A parsed LLM call: everything the limiter needs, nothing else. Plain data (structured-clone safe). */
export interface ParsedCall {
  dialect: Dialect;
  /** body.model, or the model the path names (an Azure deployment, Gemini's models/{model}): the path wins. */
  model?: string;
  /** max_tokens | max_completion_tokens | max_output_tokens, multiplied by n (and best_of for completions). */
  requestedOutput?: number;
  /** Number of choices requested, 1..128. */
  n: number;
  stream: boolean;
  /** What to tokenize. */
  prompt: Prompt;
  /** Names of tools declared (tools[].function.name / tools[].name) and invoked (tool_calls, tool_use). */
  tools: string[];
  /** Set by token workers: the top-level "model" key is duplicated or escaped (see model-key.ts). */
  modelKey?: 'duplicate-model-key' | 'escaped-model-key';
}

export interface PromptMessage {
  /** Role as sent (system, developer, user, assistant, tool, function, ...). */
  role: string;
  /** Optional participant name (OpenAI `name` field): costs tokens_per_name extra. */
  name?: string;
  /**
   * Text pieces of this message that are tokenized one by one: text content parts, refusal text,
   * tool call names and arguments, tool_call_id, tool results, Anthropic tool_use name + JSON input, ...
   */
  parts: string[];
}

export interface ToolProperty {
  name: string;
  /** JSON-schema `type` (non-string types are JSON-encoded). */
  type: string;
  description: string;
  /** `enum` items as strings, or undefined if the property has no enum. */
  enum?: string[];
  /**
   * JSON of schema keys the cookbook formula ignores (nested `properties`, `items`, `anyOf`, ...).
   * Counted as plain text so that huge nested schemas cannot bypass the limiter.
   */
  extra?: string;
}

export interface ToolDef {
  name: string;
  description: string;
  properties: ToolProperty[];
  /** JSON of parameter-schema keys other than type/properties/required (e.g. `$defs`); counted as text. */
  extra?: string;
}

export interface Prompt {
  kind: 'chat' | 'text';
  /** chat: the conversation (system prompts included as role 'system' messages). */
  messages: PromptMessage[];
  /** text: completions prompts / embeddings inputs / suffix, each tokenized separately. */
  texts: string[];
  /** Tokens supplied directly as token-id arrays (they count as their length). */
  preTokenized: number;
  /** Number of image parts (counted, not tokenized). */
  images: number;
  /** Tool / function definitions. */
  toolDefs: ToolDef[];
}

export interface ParseError {
  error: string;
}

export function isParseError(x: ParsedCall | ParseError): x is ParseError {
  return typeof (x as ParseError).error === 'string';
}

/** What a dialect reads besides the prompt (the prompt goes into the Ctx). */
export interface CallShape {
  n: number;
  requestedOutput?: number;
  stream: boolean;
  kind: Prompt['kind'];
}
