/**
 * Target: 50 seeded tool_choice "required" requests on the real default model (stories15M) all give tool calls
 * whose names exist, whose ids look like OpenAI's and whose arguments validate against the tool's parameters
 * (three tools), finish_reason tool_calls. Temperature 1, 10 requests at a time over HTTP. The tally goes to
 * bench/results/structured-tools-required-stories15M-lavapipe.json when SIFT_WRITE_RESULTS=1, which runs all 50; a plain test run sends the first 15.
 */
// run-tests: timeout 900
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { type LiveSift, liveSift } from './live-server.js';
import { pool, post, TARGET_REQUESTS, TOOLS, writeResult } from './targets.js';

let sift: LiveSift;
before(async () => {
  sift = await liveSift();
});
after(() => sift?.close());

test(`${TARGET_REQUESTS} seeded tool_choice required requests: every one a valid tool call`, async () => {
  const ajv = new Ajv2020({ strict: false });
  const t0 = performance.now();
  const outcomes = await pool(TARGET_REQUESTS, 10, async (i) => {
    const b = await post(sift, {
      seed: 1000 + i,
      messages: [{ role: 'user', content: 'What is the weather in Paris, and a good book?' }],
      tools: TOOLS,
      tool_choice: 'required',
    });
    const c = b.choices[0];
    const calls = c.message.tool_calls ?? [];
    if (c.finish_reason !== 'tool_calls' || calls.length === 0) return { ok: false, why: JSON.stringify(c) };
    for (const call of calls) {
      const tool = TOOLS.find((t) => t.function.name === call.function.name);
      if (!tool || !/^call_[A-Za-z0-9]{24}$/.test(call.id)) return { ok: false, why: JSON.stringify(call) };
      if (!ajv.validate(tool.function.parameters, JSON.parse(call.function.arguments))) {
        return { ok: false, why: `${ajv.errorsText()}: ${call.function.arguments}` };
      }
    }
    return { ok: true, why: '' };
  });
  const valid = outcomes.filter((o) => o.ok).length;
  writeResult('structured-tools-required-stories15M-lavapipe', 'targets-tools', {
    requests: TARGET_REQUESTS,
    valid,
    seconds: Math.round((performance.now() - t0) / 1000),
  });
  assert.equal(valid, TARGET_REQUESTS, JSON.stringify(outcomes.filter((o) => !o.ok).slice(0, 3)));
});
