/**
 * Target: 50 seeded json_schema requests on the real default model (stories15M, whose words are nonsense here but
 * whose JSON must not be) all parse and validate. Five realistic schemas (flat, enums and arrays, nested $defs, an
 * array of objects, optional fields), temperature 1, 10 requests at a time over HTTP. The tally goes to
 * bench/results/structured-json-schema-stories15M-lavapipe.json when SIFT_WRITE_RESULTS=1, which runs all 50; a plain test run sends the first 15.
 */
// run-tests: timeout 900
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { type LiveSift, liveSift } from './live-server.js';
import { pool, post, SCHEMAS, TARGET_REQUESTS, writeResult } from './targets.js';

let sift: LiveSift;
before(async () => {
  sift = await liveSift();
});
after(() => sift?.close());

test(`${TARGET_REQUESTS} seeded json_schema requests: all parse and validate`, async () => {
  const ajv = new Ajv2020({ strict: false });
  const t0 = performance.now();
  const outcomes = await pool(TARGET_REQUESTS, 10, async (i) => {
    const schema = SCHEMAS[i % SCHEMAS.length];
    const b = await post(sift, {
      seed: i,
      messages: [{ role: 'user', content: 'Describe a story character as JSON.' }],
      response_format: { type: 'json_schema', json_schema: { name: `s${i % SCHEMAS.length}`, schema, strict: true } },
    });
    const c = b.choices[0];
    let value: unknown;
    try {
      value = JSON.parse(c.message.content ?? '');
    } catch {
      return { ok: false, why: `does not parse: ${c.message.content}` };
    }
    if (!ajv.validate(schema, value)) return { ok: false, why: `${ajv.errorsText()}: ${c.message.content}` };
    return { ok: c.finish_reason === 'stop', why: c.finish_reason };
  });
  const valid = outcomes.filter((o) => o.ok).length;
  writeResult('structured-json-schema-stories15M-lavapipe', 'targets-json', {
    requests: TARGET_REQUESTS,
    valid,
    seconds: Math.round((performance.now() - t0) / 1000),
  });
  assert.equal(valid, TARGET_REQUESTS, JSON.stringify(outcomes.filter((o) => !o.ok).slice(0, 3)));
});
