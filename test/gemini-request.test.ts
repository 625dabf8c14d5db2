/**
 * The Gemini request dialect (src/dialects/gemini.ts): path matching and GenerateContentRequest
 * parsing into a ParsedCall. Request shapes follow Google's Gemini API reference
 * (models.generateContent: contents, systemInstruction, tools.functionDeclarations,
 * generationConfig).
 */
import { describe, expect, it } from 'vitest';
import {
  classifyGeminiPath,
  GEMINI_DIALECT,
  type GeminiParsedCall,
  parseGeminiBody,
  parseGeminiCall,
} from '../src/dialects/gemini.js';
import { isParseError, type ParsedCall } from '../src/dialects/types.js';
import { countPromptTokens } from '../src/tokens/count.js';

describe('classifyGeminiPath', () => {
  it('matches generateContent and streamGenerateContent on the Developer API and Vertex AI', () => {
    expect(classifyGeminiPath('/v1beta/models/gemini-2.5-flash:generateContent')).toEqual({
      dialect: GEMINI_DIALECT,
      model: 'gemini-2.5-flash',
      stream: false,
      sse: false,
    });
    expect(classifyGeminiPath('/v1beta/models/gemini-2.5-pro:streamGenerateContent?alt=sse')).toEqual({
      dialect: GEMINI_DIALECT,
      model: 'gemini-2.5-pro',
      stream: true,
      sse: true,
    });
    expect(classifyGeminiPath('/v1beta/models/gemini-2.0-flash:streamGenerateContent?key=abc')).toMatchObject(
      {
        stream: true,
        sse: false,
      },
    );
    expect(classifyGeminiPath('/v1/models/gemini-2.0-flash-001:generateContent')?.model).toBe(
      'gemini-2.0-flash-001',
    );
    expect(
      classifyGeminiPath(
        '/v1/projects/p1/locations/us-central1/publishers/google/models/gemini-2.5-flash:generateContent',
      ),
    )?.toMatchObject({ model: 'gemini-2.5-flash' });
    expect(classifyGeminiPath('/gemini/v1beta/models/my%20model:generateContent')?.model).toBe('my model');
  });

  it('rejects other methods and paths', () => {
    for (const p of [
      '/v1beta/models/gemini-2.5-flash:countTokens',
      '/v1beta/models/gemini-2.5-flash:embedContent',
      '/v1beta/models/gemini-2.5-flash:batchGenerateContent',
      '/v1beta/models/gemini-2.5-flash',
      '/v1beta/models',
      '/v1beta/models/:generateContent',
      '/v1beta/models/%E0%A4%A:generateContent',
      '/v1/chat/completions',
      '',
      `/v1beta/models/${'m'.repeat(300)}:generateContent`,
    ]) {
      expect(classifyGeminiPath(p), p).toBeUndefined();
    }
  });
});

const route = { model: 'gemini-2.5-flash', stream: false };

function parse(body: unknown, r = route): GeminiParsedCall {
  const c = parseGeminiCall(body, r);
  if (isParseError(c as GeminiParsedCall)) throw new Error((c as { error: string }).error);
  return c as GeminiParsedCall;
}

describe('parseGeminiCall', () => {
  it('contents, systemInstruction, tools, generationConfig', () => {
    const c = parse({
      systemInstruction: { parts: [{ text: 'You are a cat. Your name is Neko.' }] },
      contents: [
        {
          role: 'user',
          parts: [{ text: 'Hello there' }, { inlineData: { mimeType: 'image/jpeg', data: '/9j/4AAQ' } }],
        },
        {
          role: 'model',
          parts: [
            {
              functionCall: {
                name: 'find_theaters',
                args: { location: 'Mountain View, CA', movie: 'Barbie' },
              },
            },
          ],
        },
        {
          role: 'user',
          parts: [
            {
              functionResponse: {
                name: 'find_theaters',
                response: { name: 'find_theaters', content: { movie: 'Barbie', theaters: [] } },
              },
            },
          ],
        },
        {
          parts: [{ text: 'Thanks' }, { fileData: { mimeType: 'application/pdf', fileUri: 'gs://b/f.pdf' } }],
        },
      ],
      tools: [
        {
          functionDeclarations: [
            {
              name: 'find_theaters',
              description:
                'find theaters based on location and optionally movie title which is currently playing in theaters.',
              parameters: {
                type: 'object',
                properties: {
                  location: {
                    type: 'string',
                    description: 'The city and state, e.g. San Francisco, CA or a zip code e.g. 95616',
                  },
                  movie: { type: 'string', description: 'Any movie title', enum: ['Barbie', 'Oppenheimer'] },
                },
                required: ['location'],
              },
            },
          ],
        },
        { googleSearch: {} },
        { codeExecution: {} },
      ],
      generationConfig: {
        maxOutputTokens: 800,
        candidateCount: 2,
        temperature: 1.0,
        thinkingConfig: { thinkingBudget: 1024 },
      },
    });
    expect(c.dialect).toBe('gemini.generateContent');
    expect(c.model).toBe('gemini-2.5-flash');
    expect(c.stream).toBe(false);
    expect(c.n).toBe(2);
    expect(c.requestedOutput).toBe(1600);
    expect(c.tools).toEqual(['find_theaters', 'googleSearch', 'codeExecution']);
    expect(c.prompt.kind).toBe('chat');
    expect(c.prompt.images).toBe(2);
    expect(c.prompt.messages).toEqual([
      { role: 'system', parts: ['You are a cat. Your name is Neko.'] },
      { role: 'user', parts: ['Hello there'] },
      { role: 'model', parts: ['find_theaters', '{"location":"Mountain View, CA","movie":"Barbie"}'] },
      {
        role: 'user',
        parts: ['find_theaters', '{"name":"find_theaters","content":{"movie":"Barbie","theaters":[]}}'],
      },
      { role: 'user', parts: ['Thanks'] },
    ]);
    expect(c.prompt.toolDefs).toEqual([
      {
        name: 'find_theaters',
        description:
          'find theaters based on location and optionally movie title which is currently playing in theaters.',
        properties: [
          {
            name: 'location',
            type: 'string',
            description: 'The city and state, e.g. San Francisco, CA or a zip code e.g. 95616',
          },
          { name: 'movie', type: 'string', description: 'Any movie title', enum: ['Barbie', 'Oppenheimer'] },
        ],
      },
    ]);
    // The parsed call counts like any other chat call (an estimate for Gemini).
    const n = countPromptTokens(c as unknown as ParsedCall, 'o200k_base', { imageTokens: 258 });
    expect(n).toBeGreaterThan(2 * 258 + 40);
  });

  it('snake_case spellings, a streaming route, no generationConfig', () => {
    const c = parse(
      {
        system_instruction: { parts: [{ text: 'sys' }] },
        contents: [
          { role: 'user', parts: [{ text: 'hi', inline_data: { mime_type: 'image/png', data: '' } }] },
        ],
        tools: [
          {
            function_declarations: [
              { name: 'f', parameters_json_schema: { type: 'object', $defs: { a: {} } } },
            ],
          },
        ],
        generation_config: { max_output_tokens: 64 },
      },
      { model: 'gemini-2.0-flash', stream: true },
    );
    expect(c).toMatchObject({
      model: 'gemini-2.0-flash',
      stream: true,
      n: 1,
      requestedOutput: 64,
      tools: ['f'],
    });
    expect(c.prompt.images).toBe(1);
    expect(c.prompt.messages[0]).toEqual({ role: 'system', parts: ['sys'] });
    expect(c.prompt.toolDefs[0].extra).toBe('{"$defs":{"a":{}}}');
    const plain = parse({ contents: [{ parts: [{ text: 'x' }] }] });
    expect(plain.requestedOutput).toBeUndefined();
    expect(plain.n).toBe(1);
  });

  it('rejects malformed bodies with a ParseError, never throws', () => {
    const bad: unknown[] = [
      null,
      [],
      'x',
      {},
      { contents: 'x' },
      { contents: [3] },
      { contents: [{ parts: [{ text: 3 }] }] },
      { contents: [{ role: 5, parts: [] }] },
      { contents: [], systemInstruction: 7 },
      { contents: [], generationConfig: { maxOutputTokens: 0 } },
      { contents: [], generationConfig: { maxOutputTokens: 1.5 } },
      { contents: [], generationConfig: { candidateCount: 1000 } },
      { contents: [], generationConfig: 'x' },
      { contents: [], tools: [{ functionDeclarations: [{ description: 'no name' }] }] },
      { contents: [], tools: [{ functionDeclarations: [{ name: 'f', parameters: 'x' }] }] },
    ];
    for (const b of bad) {
      const r = parseGeminiCall(b, route);
      expect(isParseError(r as GeminiParsedCall), JSON.stringify(b)).toBe(true);
    }
    let deep: unknown = {};
    for (let i = 0; i < 200; i++) deep = { a: deep };
    expect(
      isParseError(
        parseGeminiCall(
          { contents: [{ parts: [{ functionCall: { name: 'f', args: deep } }] }] },
          route,
        ) as GeminiParsedCall,
      ),
    ).toBe(true);
  });

  it('parseGeminiBody: bytes and strings, invalid JSON', () => {
    const body = JSON.stringify({ contents: [{ parts: [{ text: 'héllo 😀' }] }] });
    const a = parseGeminiBody(Buffer.from(body), route) as GeminiParsedCall;
    expect(a.prompt.messages[0].parts).toEqual(['héllo 😀']);
    expect(parseGeminiBody(body, route)).toEqual(a);
    expect(parseGeminiBody('{', route)).toEqual({ error: 'request body is not valid JSON' });
  });
});
