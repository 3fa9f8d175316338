/**
 * A property-based fuzzer of the HTTP API (fast-check): requests built from a valid chat or completions body with
 * one thing broken (a field set to a wrong type, an extreme, null, a too-long value; an unknown or duplicate key;
 * broken JSON; a body over the limit; token ids outside the vocabulary; odd Content-Types), sent raw, and judged:
 *   - never a 5xx;
 *   - every error is OpenAI-shaped ({"error": {message, type, param, code}}, a non-empty message);
 *   - an error caused by a broken field names that field in `param` (the field itself or a part of it);
 *   - a 200 is a complete answer (a well-formed stream ending in [DONE] for stream: true).
 * The same cases run in the test suite (in-process, a seeded few hundred) and against a live server
 * (scripts/fuzz-server.mjs, the 10,000-request run in bench/results).
 */
import fc from 'fast-check';

/** One raw request. */
export interface FuzzCase {
  /** What was broken, for the report (e.g. "temperature = \"0.5\"", "broken JSON"). */
  what: string;
  method: 'POST';
  url: string;
  headers: Record<string, string>;
  /** The exact body bytes (a string: JSON or not). */
  body: string;
  /** The body field the breakage is in ("temperature", "messages", "prompt"), or null for body-level breakage. */
  field: string | null;
}

export interface FuzzResponse {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: string;
}

export interface FuzzVerdict {
  ok: boolean;
  /** Why it failed. */
  problem: string | null;
}

export interface FuzzOptions {
  model: string;
  /** Token ids are valid in [0, vocabSize). */
  vocabSize: number;
  /** The server's body limit (bytes): "huge" bodies are just over it. */
  maxBodyBytes: number;
  /** Most tokens a valid case asks for (keeps a fuzz run short). */
  maxTokens: number;
}

const WORDS = ['Once', 'upon', 'a', 'time', 'there', 'was', 'a', 'little', 'girl', 'named', 'Lily', 'Hello', 'x'];

/** Values of every JSON type and the edges of each. */
const arbWeird = (): fc.Arbitrary<unknown> =>
  fc.oneof(
    fc.constantFrom(
      null,
      true,
      false,
      0,
      -0,
      -1,
      1,
      0.5,
      -0.5,
      2,
      2.5,
      3,
      16,
      17,
      20,
      21,
      256,
      1e6,
      2 ** 24,
      2 ** 24 + 1,
      2 ** 31,
      2 ** 53,
      -(2 ** 53),
      1e300,
      -1e300,
      '',
      ' ',
      '0.5',
      'true',
      'null',
      'dense',
      'sparse',
      'user',
      'system',
      'assistant',
      '\u0000',
      '😀',
      'é',
      [],
      [null],
      [1, 2],
      ['a'],
      [[1]],
      {},
      { mode: 'dense' },
      { mode: 'sparse', token_budget: 0 },
      { mode: 'sparse', token_budget: 2 ** 30 },
      { mode: 'fancy' },
      { include_usage: 'yes' },
      { role: 'user' },
      { role: 'user', content: null },
    ),
    fc.integer(),
    fc.double({ noNaN: true, noDefaultInfinity: true }),
    fc.string({ maxLength: 12 }),
    fc.array(fc.integer({ min: -5, max: 40000 }), { maxLength: 6 }),
    fc.array(fc.string({ maxLength: 6 }), { maxLength: 6 }),
    fc.dictionary(fc.string({ maxLength: 6 }), fc.integer(), { maxKeys: 3 }),
  );

const COMMON_FIELDS = [
  'model',
  'max_tokens',
  'temperature',
  'top_p',
  'top_k',
  'seed',
  'stop',
  'n',
  'presence_penalty',
  'frequency_penalty',
  'stream',
  'stream_options',
  'user',
  'attention',
] as const;
const CHAT_FIELDS = [...COMMON_FIELDS, 'messages', 'max_completion_tokens', 'logprobs', 'top_logprobs'] as const;
const COMPLETION_FIELDS = [...COMMON_FIELDS, 'prompt', 'logprobs'] as const;

type Body = Record<string, unknown>;

function baseBody(o: FuzzOptions, chat: boolean, words: string[], maxTokens: number, stream: boolean): Body {
  const text = words.join(' ');
  const b: Body = { model: o.model, max_tokens: maxTokens, temperature: 0 };
  if (chat) b.messages = [{ role: 'user', content: text }];
  else b.prompt = text;
  if (stream) b.stream = true;
  return b;
}

const url = (chat: boolean) => (chat ? '/v1/chat/completions' : '/v1/completions');
const JSON_CT = { 'content-type': 'application/json' };

/** A valid body with one field set to a weird value (or deleted, or a sub-field broken). */
function arbFieldCase(o: FuzzOptions): fc.Arbitrary<FuzzCase> {
  return fc
    .record({
      chat: fc.boolean(),
      words: fc.array(fc.constantFrom(...WORDS), { minLength: 1, maxLength: 8 }),
      maxTokens: fc.integer({ min: 1, max: o.maxTokens }),
      stream: fc.boolean(),
      pick: fc.nat(),
      value: arbWeird(),
      how: fc.constantFrom('set', 'set', 'set', 'delete', 'nested'),
    })
    .map(({ chat, words, maxTokens, stream, pick, value, how }) => {
      const fields = chat ? CHAT_FIELDS : COMPLETION_FIELDS;
      const field = fields[pick % fields.length];
      const b = baseBody(o, chat, words, maxTokens, stream);
      let what: string;
      if (how === 'delete') {
        delete b[field];
        what = `${field} deleted`;
      } else if (how === 'nested' && field === 'messages') {
        b.messages = [{ role: 'user', content: value }];
        what = `messages[0].content = ${JSON.stringify(value)}`;
      } else if (how === 'nested' && (field === 'attention' || field === 'stream_options')) {
        b[field] = field === 'attention' ? { mode: 'sparse', token_budget: value } : { include_usage: value };
        what = `${field}.* = ${JSON.stringify(value)}`;
      } else {
        b[field] = value;
        what = `${field} = ${JSON.stringify(value)?.slice(0, 80)}`;
      }
      return { what, method: 'POST', url: url(chat), headers: JSON_CT, body: JSON.stringify(b), field };
    });
}

/** Token ids out of the vocabulary, negative, fractional, in a list of lists. */
function arbTokenIdCase(o: FuzzOptions): fc.Arbitrary<FuzzCase> {
  const bad = fc.oneof(
    fc.integer({ min: o.vocabSize, max: o.vocabSize + 1000 }),
    fc.integer({ min: -1000, max: -1 }),
    fc.constantFrom(0.5, 2 ** 32, 2 ** 53, 1e300),
  );
  return fc
    .record({
      ids: fc.array(fc.integer({ min: 3, max: o.vocabSize - 1 }), { minLength: 1, maxLength: 8 }),
      badId: bad,
      at: fc.nat(),
      nested: fc.boolean(),
    })
    .map(({ ids, badId, at, nested }) => {
      const p = [...ids];
      p[at % p.length] = badId;
      const prompt = nested ? [[1, 5], p] : p;
      const body = JSON.stringify({ model: o.model, prompt, max_tokens: 2, temperature: 0 });
      return {
        what: `prompt ids ${JSON.stringify(prompt)}`,
        method: 'POST',
        url: '/v1/completions',
        headers: JSON_CT,
        body,
        field: 'prompt',
      } satisfies FuzzCase;
    });
}

/** Body-level breakage: broken JSON, duplicate and unknown keys, bodies over the limit, odd Content-Types. */
function arbBodyCase(o: FuzzOptions): fc.Arbitrary<FuzzCase> {
  const valid = (chat: boolean) => JSON.stringify(baseBody(o, chat, ['Hello'], 2, false));
  return fc.oneof(
    fc.record({ chat: fc.boolean(), cut: fc.nat() }).map(({ chat, cut }) => {
      const v = valid(chat);
      return {
        what: 'truncated JSON',
        method: 'POST' as const,
        url: url(chat),
        headers: JSON_CT,
        body: v.slice(0, cut % v.length),
        field: null,
      };
    }),
    fc
      .record({ chat: fc.boolean(), at: fc.nat(), junk: fc.string({ minLength: 1, maxLength: 4 }) })
      .map(({ chat, at, junk }) => {
        const v = valid(chat);
        const i = at % v.length;
        return {
          what: `junk ${JSON.stringify(junk)} at ${i}`,
          method: 'POST' as const,
          url: url(chat),
          headers: JSON_CT,
          body: v.slice(0, i) + junk + v.slice(i),
          field: null,
        };
      }),
    fc
      .record({ chat: fc.boolean(), value: arbWeird(), key: fc.constantFrom(...COMMON_FIELDS) })
      .map(({ chat, value, key }) => {
        // the same key twice: JSON.parse keeps the last one, so the case is "key = value"
        const v = valid(chat);
        return {
          what: `duplicate ${key}, last = ${JSON.stringify(value)?.slice(0, 40)}`,
          method: 'POST' as const,
          url: url(chat),
          headers: JSON_CT,
          body: `${v.slice(0, -1)},${JSON.stringify(key)}:${JSON.stringify(value)}}`,
          field: key,
        };
      }),
    fc
      .record({ chat: fc.boolean(), key: fc.string({ minLength: 1, maxLength: 10 }), value: arbWeird() })
      .map(({ chat, key, value }) => {
        const b = JSON.parse(valid(chat)) as Body;
        const known = (chat ? CHAT_FIELDS : COMPLETION_FIELDS) as readonly string[];
        const k = known.includes(key) || key === '__proto__' ? `x_${key}` : key;
        return {
          what: `unknown key ${JSON.stringify(k)}`,
          method: 'POST' as const,
          url: url(chat),
          headers: JSON_CT,
          body: `${JSON.stringify(b).slice(0, -1)},${JSON.stringify(k)}:${JSON.stringify(value)}}`,
          field: null,
        };
      }),
    fc.record({ chat: fc.boolean(), over: fc.integer({ min: 1, max: 4096 }) }).map(({ chat, over }) => {
      const pad = ' '.repeat(o.maxBodyBytes + over);
      return {
        what: `body over the limit by ${over} bytes`,
        method: 'POST' as const,
        url: url(chat),
        headers: JSON_CT,
        body: pad + valid(chat),
        field: null,
      };
    }),
    fc
      .record({
        chat: fc.boolean(),
        ct: fc.constantFrom(
          'text/plain',
          'application/json; charset=latin1',
          'application/x-www-form-urlencoded',
          'application/json; charset=utf-8',
          'application/octet-stream',
        ),
      })
      .map(({ chat, ct }) => ({
        what: `content-type ${ct}`,
        method: 'POST' as const,
        url: url(chat),
        headers: { 'content-type': ct },
        body: valid(chat),
        field: null,
      })),
    fc.constantFrom('[]', 'null', '0', '"x"', '{}', 'true', '{"model": null}').map((body) => ({
      what: `body ${body}`,
      method: 'POST' as const,
      url: '/v1/chat/completions',
      headers: JSON_CT,
      body,
      field: null,
    })),
  );
}

/** Every kind of broken request, weighted towards field breakage. */
export function arbFuzzCase(o: FuzzOptions): fc.Arbitrary<FuzzCase> {
  return fc.oneof(
    { weight: 6, arbitrary: arbFieldCase(o) },
    { weight: 1, arbitrary: arbTokenIdCase(o) },
    { weight: 2, arbitrary: arbBodyCase(o) },
  );
}

/** `n` cases from `seed` (the same every time). */
export function fuzzCases(o: FuzzOptions, seed: number, n: number): FuzzCase[] {
  return fc.sample(arbFuzzCase(o), { seed, numRuns: n });
}

function isErrorBody(j: unknown): j is { error: { message: string; type: string; param: unknown; code: unknown } } {
  if (typeof j !== 'object' || j === null) return false;
  const keys = Object.keys(j);
  if (keys.length !== 1 || keys[0] !== 'error') return false;
  const e = (j as { error: unknown }).error;
  if (typeof e !== 'object' || e === null) return false;
  const r = e as Record<string, unknown>;
  return (
    ['code', 'message', 'param', 'type'].every((k) => k in r) &&
    typeof r.message === 'string' &&
    r.message.length > 0 &&
    typeof r.type === 'string' &&
    (r.param === null || typeof r.param === 'string') &&
    (r.code === null || typeof r.code === 'string')
  );
}

/** Whether `param` names `field`: the field itself or a part of it (attention.token_budget, prompt[1][3]). */
export function namesField(param: unknown, field: string): boolean {
  return (
    typeof param === 'string' && (param === field || param.startsWith(`${field}.`) || param.startsWith(`${field}[`))
  );
}

/** Judges one answer (see the file comment). */
export function judge(c: FuzzCase, r: FuzzResponse): FuzzVerdict {
  const bad = (problem: string): FuzzVerdict => ({ ok: false, problem });
  if (r.status >= 500) return bad(`status ${r.status}: ${r.body.slice(0, 200)}`);
  const ct = String(r.headers['content-type'] ?? '');
  if (r.status === 200) {
    if (ct.startsWith('text/event-stream')) {
      if (!r.body.endsWith('data: [DONE]\n\n')) return bad('stream did not end with [DONE]');
      if (/^data: \{"error":/m.test(r.body)) return bad(`stream carried an error: ${r.body.slice(-300)}`);
      if (!/"finish_reason":"(stop|length)"/.test(r.body)) return bad('stream without a stop/length finish');
      return { ok: true, problem: null };
    }
    let j: { choices?: Array<{ finish_reason?: unknown }> };
    try {
      j = JSON.parse(r.body);
    } catch {
      return bad(`200 with a body that is not JSON: ${r.body.slice(0, 200)}`);
    }
    const reasons = (j.choices ?? []).map((ch) => ch.finish_reason);
    if (reasons.length === 0 || reasons.some((x) => x !== 'stop' && x !== 'length'))
      return bad(`200 with finish reasons ${JSON.stringify(reasons)}`);
    return { ok: true, problem: null };
  }
  if (r.status < 400) return bad(`status ${r.status}`);
  let j: unknown;
  try {
    j = JSON.parse(r.body);
  } catch {
    return bad(`${r.status} with a body that is not JSON: ${r.body.slice(0, 200)}`);
  }
  if (!isErrorBody(j)) return bad(`${r.status} with a body that is not OpenAI-shaped: ${r.body.slice(0, 200)}`);
  if (!ct.startsWith('application/json')) return bad(`${r.status} with content-type ${ct}`);
  // a field-level breakage answered with a 400 must name that field (404 model_not_found names `model` too)
  if (c.field !== null && (r.status === 400 || r.status === 404) && !namesField(j.error.param, c.field)) {
    return bad(`${r.status} names ${JSON.stringify(j.error.param)}, not ${c.field}: ${j.error.message}`);
  }
  return { ok: true, problem: null };
}

/** Runs `cases` through `send` with `concurrency` in flight; returns the failures and counts by status. */
export async function runFuzz(
  cases: FuzzCase[],
  send: (c: FuzzCase) => Promise<FuzzResponse>,
  opts: { concurrency?: number; onProgress?: (done: number) => void } = {},
): Promise<{ failures: Array<{ case: FuzzCase; problem: string }>; byStatus: Record<string, number> }> {
  const failures: Array<{ case: FuzzCase; problem: string }> = [];
  const byStatus: Record<string, number> = {};
  let next = 0;
  let done = 0;
  const worker = async () => {
    while (next < cases.length) {
      const c = cases[next++];
      let r: FuzzResponse;
      try {
        r = await send(c);
      } catch (e) {
        failures.push({ case: c, problem: `no answer: ${(e as Error).message}` });
        continue;
      }
      byStatus[r.status] = (byStatus[r.status] ?? 0) + 1;
      const v = judge(c, r);
      if (!v.ok) failures.push({ case: c, problem: v.problem ?? '' });
      opts.onProgress?.(++done);
    }
  };
  await Promise.all(Array.from({ length: opts.concurrency ?? 1 }, () => worker()));
  return { failures, byStatus };
}
