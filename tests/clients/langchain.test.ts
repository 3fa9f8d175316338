/**
 * LangChain's ChatOpenAI (@langchain/openai) against a live sift on stories15M: withStructuredOutput in its
 * json_schema and function-calling methods, bindTools with a required tool (invoke and stream), and a plain chat
 * turn. The content is the tiny model's nonsense; the structure must hold every time.
 */
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { type AIMessageChunk, HumanMessage, SystemMessage } from '@langchain/core/messages';
import { tool } from '@langchain/core/tools';
import { ChatOpenAI } from '@langchain/openai';
import { z } from 'zod';
import { KEY, type LiveSift, liveSift, MODEL } from './live-server.js';

describe('LangChain ChatOpenAI against sift', () => {
  let sift: LiveSift;
  let chat: ChatOpenAI;
  before(async () => {
    sift = await liveSift();
    chat = new ChatOpenAI({
      model: MODEL,
      apiKey: KEY,
      temperature: 0.7,
      maxTokens: 72,
      maxRetries: 0,
      configuration: { baseURL: `${sift.url}/v1` },
    });
  });
  after(() => sift?.close());

  const Story = z.object({
    title: z.string().describe('the title'),
    hero: z.string(),
    mood: z.enum(['happy', 'sad']),
    chapters: z.number().int(),
  });

  test('plain invoke', async () => {
    const r = await chat.invoke([new SystemMessage('Tell stories.'), new HumanMessage('Once upon a time')]);
    assert.equal(typeof r.content, 'string');
  });

  for (const method of ['jsonSchema', 'functionCalling'] as const) {
    test(`withStructuredOutput (${method}) returns a value the schema accepts`, async () => {
      const structured = chat.withStructuredOutput(Story, { method, name: 'story' });
      for (let i = 0; i < 2; i++) {
        const v = await structured.invoke('Write a story about a dog.');
        assert.deepEqual(Story.parse(v), v);
      }
    });
  }

  const weather = tool(async ({ city }) => `sunny in ${city}`, {
    name: 'get_weather',
    description: 'Weather in a city',
    schema: z.object({ city: z.string(), days: z.number().int() }),
  });

  test('bindTools with a required tool: AIMessage.tool_calls, invoke and stream', async () => {
    const withTools = chat.bindTools([weather], { tool_choice: 'any' });
    const m = await withTools.invoke('What is the weather in Oslo?');
    assert.ok(m.tool_calls && m.tool_calls.length >= 1, JSON.stringify(m));
    const call = m.tool_calls[0];
    assert.equal(call.name, 'get_weather');
    assert.match(call.id ?? '', /^call_/);
    assert.equal(typeof call.args.city, 'string');
    assert.ok(Number.isInteger(call.args.days));
    let acc: AIMessageChunk | undefined;
    for await (const chunk of await withTools.stream('Weather in Rome?')) acc = acc ? acc.concat(chunk) : chunk;
    assert.ok(acc?.tool_calls && acc.tool_calls.length >= 1);
    assert.equal(acc.tool_calls[0].name, 'get_weather');
    assert.equal(typeof acc.tool_calls[0].args.city, 'string');
  });
});
