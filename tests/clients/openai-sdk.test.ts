/**
 * The official openai SDK against a live sift on stories15M (nonsense content, valid structure): the structured
 * output helpers (chat.completions.parse with zodResponseFormat: strict json_schema, parsed and checked by the SDK
 * and by zod), a strict zodFunction tool call streamed through chat.completions.stream (delta.tool_calls
 * accumulated by the SDK into parsed arguments), and models.retrieve.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import OpenAI from 'openai';
import { zodFunction, zodResponseFormat } from 'openai/helpers/zod';
import { z } from 'zod';
import { KEY, type LiveSift, liveSift, MODEL } from './live-server.js';

describe('openai SDK against sift', () => {
  let sift: LiveSift;
  let client: OpenAI;
  before(async () => {
    sift = await liveSift();
    client = new OpenAI({ baseURL: `${sift.url}/v1`, apiKey: KEY, maxRetries: 0, timeout: 120_000 });
  });
  after(() => sift?.close());

  test('models.retrieve', async () => {
    const m = await client.models.retrieve(MODEL);
    assert.equal(m.id, MODEL);
    await assert.rejects(client.models.retrieve('gpt-4o'), (e: unknown) => e instanceof OpenAI.NotFoundError);
  });

  test('chat.completions.parse with zodResponseFormat: parsed, schema-valid output', async () => {
    const Pet = z.object({
      name: z.string(),
      species: z.enum(['cat', 'dog', 'bird']),
      age: z.number().int(),
      friendly: z.boolean(),
      toys: z.array(z.string()),
    });
    for (const seed of [1, 2, 3]) {
      const r = await client.chat.completions.parse({
        model: MODEL,
        messages: [
          { role: 'developer', content: 'Describe a pet as JSON.' },
          { role: 'user', content: 'Tell me about the cat Lily.' },
        ],
        response_format: zodResponseFormat(Pet, 'pet'),
        max_completion_tokens: 72,
        temperature: 1,
        seed,
      });
      const msg = r.choices[0].message;
      assert.equal(r.choices[0].finish_reason, 'stop');
      assert.ok(msg.parsed, `no parsed value: ${msg.content}`);
      assert.deepEqual(Pet.parse(msg.parsed), msg.parsed);
    }
  });

  test('a strict zodFunction tool, streamed: the SDK assembles parsed arguments from delta.tool_calls', async () => {
    const getWeather = zodFunction({
      name: 'get_weather',
      description: 'Weather in a city',
      parameters: z.object({ city: z.string(), unit: z.enum(['celsius', 'fahrenheit']) }),
    });
    const stream = client.chat.completions.stream({
      model: MODEL,
      messages: [{ role: 'user', content: 'What is the weather in Paris?' }],
      tools: [getWeather],
      tool_choice: 'required',
      max_tokens: 64,
      temperature: 0.8,
      seed: 7,
    });
    let deltas = 0;
    stream.on('chunk', (c) => {
      if (c.choices[0]?.delta?.tool_calls) deltas++;
    });
    const final = await stream.finalChatCompletion();
    const choice = final.choices[0];
    assert.equal(choice.finish_reason, 'tool_calls');
    assert.ok(deltas >= 1);
    const call = choice.message.tool_calls?.[0];
    assert.ok(call && call.type === 'function');
    assert.match(call.id, /^call_/);
    assert.equal(call.function.name, 'get_weather');
    const args = call.function.parsed_arguments as { city: string; unit: string };
    assert.equal(typeof args.city, 'string');
    assert.ok(['celsius', 'fahrenheit'].includes(args.unit));
  });
});
