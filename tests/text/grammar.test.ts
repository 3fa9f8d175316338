/**
 * Constrained JSON output (text/grammar.ts over xgrammar, text/json-schema.ts): over seeded random schemas of the
 * supported subset and a random "model" (a fresh random logits row per step, sampled at temperature 1 within the
 * mask), every output is a complete document that parses and validates against its schema (ajv), and ends with a
 * stop id within its token limit, however short the limit: the closing walk ends it in time. Runs on the story
 * vocab (byte fallback, no download) and on the real stories15M vocabulary. Unsupported keywords are refused by
 * name.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { Ajv2020 as Ajv } from 'ajv/dist/2020.js';
import { isSiftError } from '../../config/errors.js';
import { Sampler } from '../../engine/sampler.js';
import { Grammars } from '../../text/grammar.js';
import { checkSchema, schemaProblems } from '../../text/json-schema.js';
import { loadText, type TextSide } from '../../text/text.js';
import { randomSchema, refSchema } from '../helpers/json-schemas.js';
import { Rng } from '../helpers/rng.js';
import { storiesDir } from '../helpers/stories.js';
import { storyText } from '../helpers/tiny-text.js';

interface Run {
  /** Set when the shortest document needs more than maxTokens (the server refuses such a request). */
  refused?: number;
  text: string;
  stopped: boolean;
  tokens: number;
}

/** Generates under `schema` as the engine does: mask, sample within it, the constraint takes the token. */
async function generate(
  grammars: Grammars,
  text: TextSide,
  schema: Record<string, unknown> | null,
  maxTokens: number,
  seed: number,
): Promise<Run> {
  const c = await grammars.constraint(schema);
  const rng = new Rng(seed);
  const V = text.tokenizer.vocabSize;
  const sampler = new Sampler({ temperature: 1, topK: 0, topP: 1, seed });
  const ids: number[] = [];
  let stopped = false;
  if (c.minTokens > maxTokens) {
    c.dispose();
    return { text: '', stopped: false, tokens: 0, refused: c.minTokens };
  }
  try {
    for (let i = 0; i < maxTokens; i++) {
      const mask = await c.nextMask(maxTokens - i);
      const row = Float32Array.from(rng.normalArray(V).map((v) => v * 3));
      const id = await c.take(sampler.sample(row, mask), maxTokens - i);
      if (text.stopIds.includes(id)) {
        stopped = true;
        break;
      }
      ids.push(id);
    }
  } finally {
    c.dispose();
  }
  return { text: text.tokenizer.decode(ids), stopped, tokens: ids.length };
}

async function checkMany(text: TextSide, runs: number, seed: number): Promise<void> {
  const grammars = new Grammars(text.tokenizer, text.stopIds);
  const ajv = new Ajv({ strict: false });
  const rng = new Rng(seed);
  let refused = 0;
  for (let i = 0; i < runs; i++) {
    const schema = i === 0 ? refSchema() : randomSchema(rng);
    assert.deepEqual(schemaProblems(schema), [], 'the generator stays inside the subset');
    const maxTokens = [12, 40, 90, 160][i % 4];
    const r = await generate(grammars, text, schema, maxTokens, seed * 1000 + i);
    const what = `run ${i} (max ${maxTokens}): ${JSON.stringify(schema)}\n-> ${JSON.stringify(r.text)}`;
    if (r.refused !== undefined) {
      refused++;
      continue;
    }
    assert.ok(r.stopped, `ended without a stop id: ${what}`);
    let value: unknown;
    assert.doesNotThrow(() => {
      value = JSON.parse(r.text);
    }, `does not parse: ${what}`);
    assert.ok(ajv.validate(schema, value), `does not validate (${ajv.errorsText()}): ${what}`);
  }
  assert.ok(refused <= runs / 4, `${refused} of ${runs} refused`);
}

test('story vocab: 40 random schemas, random logits, short and long limits: all parse and validate', async () => {
  await checkMany(await storyText(), 40, 7);
});

test('stories15M vocab: 40 random schemas, random logits: all parse and validate', async () => {
  await checkMany(loadText(await storiesDir()), 40, 8);
});

test('json_object (schema null) gives one JSON object', async () => {
  const text = await storyText();
  const grammars = new Grammars(text.tokenizer, text.stopIds);
  for (let seed = 0; seed < 6; seed++) {
    const r = await generate(grammars, text, null, 30 + seed * 10, seed);
    assert.ok(r.stopped);
    const v = JSON.parse(r.text);
    assert.ok(typeof v === 'object' && v !== null && !Array.isArray(v), r.text);
  }
});

test('keywords the grammar would not enforce are refused by path', () => {
  const bad = {
    type: 'object',
    properties: {
      a: { type: 'array', items: { type: 'string' }, uniqueItems: true },
      b: { type: 'number', minimum: 0.5 },
      c: { not: { type: 'string' } },
      d: { type: 'string', pattern: '^x' },
      e: { type: 'integer', minimum: 5, maximum: 1 },
      f: { type: 'string', maxLength: 3 },
    },
    allOf: [],
    required: ['a', 'zz'],
  };
  const problems = schemaProblems(bad).join('\n');
  for (const p of [
    'properties.a.uniqueItems',
    'properties.b.minimum',
    'properties.c.not',
    'properties.d.pattern',
    'properties.e.minimum',
    'properties.f.maxLength',
    'allOf',
    '"zz" is not in properties',
  ])
    assert.ok(problems.includes(p), `${p} missing from:\n${problems}`);
  assert.throws(
    () => checkSchema(bad, 'response_format.json_schema.schema'),
    (e) =>
      isSiftError(e, 'INVALID_ARGUMENT') &&
      e.param === 'response_format.json_schema.schema' &&
      /uniqueItems/.test(e.message),
  );
  assert.deepEqual(schemaProblems(refSchema()), []);
  assert.ok(schemaProblems({ $ref: '#/$defs/nope' }).length > 0);
});
