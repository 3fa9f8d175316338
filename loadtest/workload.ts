/**
 * What the load is made of. Scenarios:
 *   short  - a one-line chat prompt, max_tokens = --max-tokens (default 64);
 *   long   - prompts of --prompt-lens tokens (a sweep, cycled request by request), max_tokens = --long-max-tokens;
 *   mixed  - short and long requests alternately;
 *   rate   - the short request driven by autocannon over fixed connections (requests/s, end-to-end latency);
 *   sessions       - multi-turn conversations of --turns turns (loadtest/sessions.ts): turn t sends the whole
 *                    conversation so far (t + 1 user messages of about --turn-tokens tokens, with a fixed
 *                    assistant reply between them), max_tokens = --max-tokens, and an X-Session-Id header naming
 *                    the conversation (the key a balancer routes on);
 *   sessions-nokey - the same conversations without the header.
 * Every prompt starts with words unique to its request (sessions: to its conversation), so a server's prefix
 * cache cannot skip a prefill except for the conversation's own earlier turns.
 * Prompt text is made of plain story words; how many tokens a word costs on the target is measured first
 * (calibrate), so that "128 tokens" means about 128 prompt tokens on that server's tokenizer and template.
 */
import type { Api } from './sse.js';
import type { RequestSpec } from './sse-client.js';

export const SCENARIOS = ['short', 'long', 'mixed', 'rate', 'sessions', 'sessions-nokey'] as const;
export type Scenario = (typeof SCENARIOS)[number];

export type AttentionMode = 'dense' | 'sparse';

const NAMES = ['Lily', 'Tom', 'Mia', 'Ben', 'Sue', 'Max', 'Anna', 'Sam', 'Lucy', 'Tim', 'Zoe', 'Jack'];
const ANIMALS = ['cat', 'dog', 'bird', 'fox', 'bear', 'frog', 'duck', 'rabbit', 'mouse', 'fish', 'lion', 'owl'];
const PLACES = ['park', 'river', 'garden', 'forest', 'house', 'beach', 'hill', 'farm', 'school', 'lake'];
const THINGS = ['ball', 'kite', 'boat', 'cake', 'hat', 'box', 'tree', 'flower', 'car', 'book', 'toy', 'apple'];
const ADJS = ['big', 'small', 'red', 'happy', 'shiny', 'soft', 'green', 'little', 'old', 'funny', 'blue', 'warm'];
const VERBS = ['saw', 'found', 'liked', 'wanted', 'took', 'made', 'had', 'gave', 'shared', 'lost'];

/** mulberry32: a small seeded PRNG, enough to vary prompts reproducibly. */
export function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** `words` words of simple story text, different for every seed. */
export function storyWords(words: number, seed: number): string {
  const r = rng(seed * 7919 + 17);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)];
  const out: string[] = [];
  while (out.length < words) {
    const s = `${pick(NAMES)} ${pick(VERBS)} a ${pick(ADJS)} ${pick(THINGS)} at the ${pick(PLACES)} with a ${pick(ANIMALS)}.`;
    out.push(...s.split(' '));
  }
  return out.slice(0, words).join(' ');
}

export function shortPrompt(seed: number): string {
  const r = rng(seed + 1);
  const pick = <T>(xs: readonly T[]) => xs[Math.floor(r() * xs.length)];
  return `Tell me a story about a ${pick(ADJS)} ${pick(ANIMALS)} named ${pick(NAMES)} (story ${seed}).`;
}

/** Prompt tokens on the target = overhead + perWord * words (chat template and BOS in the overhead). */
export interface Calibration {
  overhead: number;
  perWord: number;
  /** false when the server sent no usage, and the figures are a guess. */
  measured: boolean;
}

export const GUESSED_CALIBRATION: Calibration = { overhead: 12, perWord: 1.35, measured: false };

export function wordsForTokens(tokens: number, c: Calibration): number {
  return Math.max(1, Math.round((tokens - c.overhead) / c.perWord));
}

export interface WorkloadOptions {
  api: Api;
  model: string;
  maxTokens: number;
  longMaxTokens: number;
  /** Target prompt lengths of the long scenario, tokens (already clamped to the context). */
  promptLens: number[];
  attention: AttentionMode | null;
  calibration: Calibration;
  /** Turns per conversation (sessions scenarios). */
  turns: number;
  /** Tokens of each user message (sessions scenarios; already clamped to the context). */
  turnTokens: number;
  /** Conversations in flight (sessions scenarios; loadtest/sessions.ts). */
  conversations: number;
}

function body(o: WorkloadOptions, prompt: string, maxTokens: number): Record<string, unknown> {
  const b: Record<string, unknown> = {
    model: o.model,
    max_tokens: maxTokens,
    stream: true,
    stream_options: { include_usage: true },
  };
  if (o.api === 'chat') b.messages = [{ role: 'user', content: prompt }];
  else b.prompt = prompt;
  if (o.attention) b.attention = { mode: o.attention };
  return b;
}

const pathOf = (api: Api) => (api === 'chat' ? '/v1/chat/completions' : '/v1/completions');

export function shortRequest(o: WorkloadOptions, seed: number): RequestSpec {
  return {
    path: pathOf(o.api),
    body: body(o, shortPrompt(seed), o.maxTokens),
    api: o.api,
    expectUsage: true,
    kind: 'short',
    promptLen: null,
  };
}

export function longRequest(o: WorkloadOptions, seed: number, promptLen: number): RequestSpec {
  const words = wordsForTokens(promptLen, o.calibration);
  // The request number leads, so no two prompts share a prefix beyond the first word.
  const text = `Story ${seed}: ${storyWords(Math.max(1, words - 2), seed)}`;
  return {
    path: pathOf(o.api),
    body: body(o, text, o.longMaxTokens),
    api: o.api,
    expectUsage: true,
    kind: 'long',
    promptLen,
  };
}

/** The i-th request of a scenario ('rate' uses the short request; the sessions scenarios use a SessionPool). */
export function requestFor(scenario: Scenario, o: WorkloadOptions, i: number, seedBase: number): RequestSpec {
  const seed = seedBase + i;
  const lens = o.promptLens;
  switch (scenario) {
    case 'sessions':
    case 'sessions-nokey':
      throw new Error(`requestFor: the ${scenario} scenario takes its requests from a SessionPool`);
    case 'short':
    case 'rate':
      return shortRequest(o, seed);
    case 'long':
      return longRequest(o, seed, lens[i % lens.length]);
    case 'mixed':
      return i % 2 === 0 ? shortRequest(o, seed) : longRequest(o, seed, lens[Math.floor(i / 2) % lens.length]);
  }
}

export { pathOf };
