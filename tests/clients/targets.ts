/**
 * Shared parts of the structured-output target tests (targets-json.test.ts, targets-tools.test.ts) on the real
 * default model: the schemas and tools, a bounded pool of concurrent requests, the POST and the results file.
 */
import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { projectRoot } from '../../config/paths.js';
import { refSchema } from '../helpers/json-schemas.js';
import { KEY, type LiveSift, MODEL } from './live-server.js';

export type Schema = Record<string, unknown>;

/**
 * Requests per target test: the target's 50 when the run records its result (SIFT_WRITE_RESULTS=1), else the first
 * 15 of the same seeded sequence, which keeps `npm test` within its time (each is ~4-5 s of stories15M on lavapipe).
 */
export const TARGET_REQUESTS = process.env.SIFT_WRITE_RESULTS === '1' ? 50 : 15;

export const SCHEMAS: Schema[] = [
  {
    type: 'object',
    properties: { name: { type: 'string' }, age: { type: 'integer' }, email: { type: 'string' } },
    required: ['name', 'age', 'email'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: {
      title: { type: 'string' },
      genre: { enum: ['fairy tale', 'adventure', 'mystery'] },
      tags: { type: 'array', items: { type: 'string' }, maxItems: 4 },
      rating: { type: 'number' },
      finished: { type: 'boolean' },
    },
    required: ['title', 'genre', 'tags', 'rating', 'finished'],
    additionalProperties: false,
  },
  refSchema(),
  {
    type: 'object',
    properties: {
      characters: {
        type: 'array',
        minItems: 1,
        maxItems: 3,
        items: {
          type: 'object',
          properties: { name: { type: 'string' }, role: { enum: ['hero', 'friend', 'villain'] } },
          required: ['name', 'role'],
          additionalProperties: false,
        },
      },
    },
    required: ['characters'],
    additionalProperties: false,
  },
  {
    type: 'object',
    properties: {
      city: { type: 'string' },
      population: { anyOf: [{ type: 'integer', minimum: 0 }, { type: 'null' }] },
      country: { type: 'string' },
    },
    required: ['city'],
    additionalProperties: false,
  },
];

export const TOOLS = [
  {
    type: 'function',
    function: {
      name: 'get_weather',
      description: 'Current weather in a city',
      parameters: {
        type: 'object',
        properties: { city: { type: 'string' }, unit: { enum: ['celsius', 'fahrenheit'] } },
        required: ['city', 'unit'],
        additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: {
      name: 'search_books',
      description: 'Find books',
      parameters: {
        type: 'object',
        properties: { query: { type: 'string' }, limit: { type: 'integer', minimum: 1, maximum: 20 } },
        required: ['query', 'limit'],
        additionalProperties: false,
      },
    },
  },
  {
    type: 'function',
    function: { name: 'get_time', description: 'The time now', parameters: { type: 'object', properties: {} } },
  },
];

/** Runs run(0..n-1), `width` at a time. */
export async function pool<T>(n: number, width: number, run: (i: number) => Promise<T>): Promise<T[]> {
  const out: T[] = new Array(n);
  let next = 0;
  await Promise.all(
    Array.from({ length: width }, async () => {
      while (next < n) {
        const i = next++;
        out[i] = await run(i);
      }
    }),
  );
  return out;
}

/** Max tokens per target request: enough for every schema's documents, short enough for lavapipe. */
export const MAX_TOKENS = 48;

export interface ChatResult {
  choices: Array<{
    finish_reason: string;
    message: {
      content: string | null;
      tool_calls?: Array<{ id: string; function: { name: string; arguments: string } }>;
    };
  }>;
}

/** POSTs one chat request (temperature 1, MAX_TOKENS) and returns its body; fails the test on a non-200. */
export async function post(sift: LiveSift, body: Schema): Promise<ChatResult> {
  const r = await fetch(`${sift.url}/v1/chat/completions`, {
    method: 'POST',
    headers: { 'content-type': 'application/json', authorization: `Bearer ${KEY}` },
    body: JSON.stringify({ model: MODEL, temperature: 1, max_tokens: MAX_TOKENS, ...body }),
  });
  const b = (await r.json()) as ChatResult;
  assert.equal(r.status, 200, JSON.stringify(b));
  return b;
}

/**
 * Writes bench/results/<name>.json with the command that produced it, when SIFT_WRITE_RESULTS=1 (a plain test run
 * leaves the tree as it was).
 */
export function writeResult(name: string, file: string, result: Record<string, unknown>): void {
  if (process.env.SIFT_WRITE_RESULTS !== '1') return;
  const out = path.join(projectRoot(), 'bench', 'results');
  mkdirSync(out, { recursive: true });
  const command = `SIFT_WRITE_RESULTS=1 node scripts/run-tests.mjs tests/clients/${file}`;
  writeFileSync(
    path.join(out, `${name}.json`),
    `${JSON.stringify({ date: new Date().toISOString(), command, max_tokens: MAX_TOKENS, ...result }, null, 2)}\n`,
  );
}
