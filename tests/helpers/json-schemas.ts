/**
 * Seeded random JSON schemas inside sift's constrained-output subset (text/json-schema.ts), for property tests of
 * the grammar: objects with required and optional properties, strings and enums, integers with
 * bounds, numbers, booleans, nulls, consts, arrays with item counts, tuples, nested objects, anyOf, and $defs / $ref.
 */
import type { Rng } from './rng.js';

type Schema = Record<string, unknown>;

const WORDS = ['name', 'age', 'city', 'tags', 'score', 'ok', 'kind', 'items', 'note', 'id', 'size', 'color'];

export function randomSchema(rng: Rng, depth = 0): Schema {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rng.next() * xs.length)];
  const leaf = (): Schema => {
    switch (pick(['string', 'integer', 'number', 'boolean', 'null', 'enum', 'const', 'boundedInt', 'shortString'])) {
      case 'string':
        return { type: 'string' };
      case 'shortString':
        return { type: 'string', enum: ['a', 'b c', ''] };
      case 'integer':
        return { type: 'integer' };
      case 'boundedInt': {
        const lo = Math.floor(rng.next() * 50) - 20;
        return { type: 'integer', minimum: lo, maximum: lo + Math.floor(rng.next() * 100) };
      }
      case 'number':
        return { type: 'number' };
      case 'boolean':
        return { type: 'boolean' };
      case 'null':
        return { type: 'null' };
      case 'enum':
        return {
          type: 'string',
          enum: ['red', 'green', 'blue', 'light blue'].slice(0, 2 + Math.floor(rng.next() * 3)),
        };
      default:
        return { const: pick(['fixed', 3, true]) };
    }
  };
  if (depth >= 2) return leaf();
  switch (pick(['object', 'object', 'array', 'leaf', 'anyOf', 'tuple'])) {
    case 'object': {
      const n = 1 + Math.floor(rng.next() * 4);
      const names = [...WORDS].sort(() => rng.next() - 0.5).slice(0, n);
      const properties: Schema = {};
      for (const k of names) properties[k] = randomSchema(rng, depth + 1);
      return {
        type: 'object',
        properties,
        required: names.filter(() => rng.next() < 0.7),
        additionalProperties: false,
      };
    }
    case 'array': {
      const lo = Math.floor(rng.next() * 3);
      return {
        type: 'array',
        items: randomSchema(rng, depth + 1),
        minItems: lo,
        maxItems: lo + Math.floor(rng.next() * 4),
      };
    }
    case 'tuple':
      return { type: 'array', prefixItems: [leaf(), leaf()], items: false, minItems: 2 };
    case 'anyOf':
      return { anyOf: [randomSchema(rng, depth + 1), leaf()] };
    default:
      return leaf();
  }
}

/** A schema with $defs and a $ref to them (as pydantic and zod write nested models). */
export function refSchema(): Schema {
  return {
    type: 'object',
    $defs: {
      point: { type: 'object', properties: { x: { type: 'integer' }, y: { type: 'integer' } }, required: ['x', 'y'] },
    },
    properties: { start: { $ref: '#/$defs/point' }, end: { $ref: '#/$defs/point' }, label: { type: 'string' } },
    required: ['start', 'end', 'label'],
    additionalProperties: false,
  };
}
