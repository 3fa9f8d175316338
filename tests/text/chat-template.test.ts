import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { llama2cStopIds } from '../../checkpoint/llama2c.js';
import { isSiftError } from '../../config/errors.js';
import { ChatTemplate, FALLBACK_CHAT_TEMPLATE, validateMessages } from '../../text/chat-template.js';
import { loadText } from '../../text/text.js';
import { storiesDir } from '../helpers/stories.js';

// Written for this test in the shape of Llama-3-Instruct's and ChatML's (Qwen) templates.
const LLAMA3 =
  "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}" +
  "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}";
const CHATML = `{% for message in messages %}
{% if loop.first and message['role'] != 'system' %}<|im_start|>system
You are a helpful assistant.<|im_end|>
{% endif %}
<|im_start|>{{ message['role'] }}
{{ message['content'] }}<|im_end|>
{% endfor %}
{% if add_generation_prompt %}<|im_start|>assistant
{% endif %}`;
const STRICT = `{% for m in messages %}{% if (m['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}[{{ m['role'] }}]{{ m['content'] }}{% endfor %}`;

const conv = [
  { role: 'system', content: 'Be brief.' },
  { role: 'user', content: 'Hi!' },
  { role: 'assistant', content: 'Hello.' },
  {
    role: 'user',
    content: [
      { type: 'text', text: 'Tell me' },
      { type: 'text', text: 'a story.' },
    ],
  },
];

describe('chat templates', () => {
  test('Llama-3 style, generation prompt on and off', () => {
    const t = new ChatTemplate({ template: LLAMA3, bosToken: '<|begin_of_text|>', eosToken: '<|eot_id|>' });
    assert.ok(t.isModelTemplate);
    const body =
      '<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nHi!<|eot_id|>' +
      '<|start_header_id|>assistant<|end_header_id|>\n\nHello.<|eot_id|>' +
      '<|start_header_id|>user<|end_header_id|>\n\nTell me\na story.<|eot_id|>';
    assert.equal(t.render(conv), `${body}<|start_header_id|>assistant<|end_header_id|>\n\n`);
    assert.equal(t.render(conv, { addGenerationPrompt: false }), body);
  });

  test('ChatML, with trim_blocks/lstrip_blocks as transformers renders it', () => {
    const t = new ChatTemplate({ template: CHATML });
    assert.equal(
      t.render([{ role: 'user', content: 'Hi' }]),
      '<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n',
    );
    assert.equal(
      t.render(conv.slice(0, 2), { addGenerationPrompt: false }),
      '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi!<|im_end|>\n',
    );
  });

  test('raise_exception in a template is INVALID_ARGUMENT with its message', () => {
    const t = new ChatTemplate({ template: STRICT });
    assert.equal(t.render(conv.slice(1)), '[user]Hi![assistant]Hello.[user]Tell me\na story.');
    assert.throws(
      () => t.render(conv),
      (e: unknown) => isSiftError(e, 'INVALID_ARGUMENT') && /roles must alternate/.test(e.message),
    );
  });

  test('fallback for models without a template: BOS + user contents', () => {
    const t = new ChatTemplate({ bosToken: '<s>' });
    assert.equal(t.isModelTemplate, false);
    assert.equal(t.source, FALLBACK_CHAT_TEMPLATE);
    assert.equal(t.render(conv), '<s>Hi!\nTell me\na story.');
    assert.equal(
      t.render([{ role: 'user', content: 'Once upon a time' }], { addGenerationPrompt: false }),
      '<s>Once upon a time',
    );
  });

  test('stories15M: no template -> fallback, stop ids from the configs, prompt encodes like a plain prompt', async () => {
    const dir = await storiesDir();
    // as generate and serve load it: EOS, and BOS where llama2.c stops (a directory imported before the importer
    // wrote BOS into generation_config.json is recognised by its marker)
    const side = loadText(dir, { extraStopIds: llama2cStopIds(dir) });
    const t = side.chat;
    assert.equal(t.isModelTemplate, false);
    assert.deepEqual(side.stopIds, [2, 1]);
    const text = t.render([{ role: 'user', content: 'Once upon a time' }]);
    assert.deepEqual(await side.tokenizer.encode(text, { addBos: false }), [1, 9038, 2501, 263, 931]);
    assert.deepEqual(await side.encodeChat([{ role: 'user', content: 'Once upon a time' }]), [1, 9038, 2501, 263, 931]);
  });

  test('message validation names the field', () => {
    const bad: [unknown, string][] = [
      [[], 'messages'],
      ['hi', 'messages'],
      [[{ role: 'user', content: 'a' }, null], 'messages[1]'],
      [
        [
          { role: 'user', content: 'a' },
          { role: 'user', content: 'b' },
          { role: 'bot', content: 'c' },
        ],
        'messages[2].role',
      ],
      [[{ role: 'user' }], 'messages[0].content'],
      [[{ role: 'user', content: 5 }], 'messages[0].content'],
      [[{ role: 'user', content: [{ type: 'image_url', image_url: {} }] }], 'messages[0].content[0].type'],
      [[{ role: 'user', content: [{ type: 'text', text: 1 }] }], 'messages[0].content[0].text'],
      [[{ role: 'tool', content: 'x', tool_call_id: 3 }], 'messages[0].tool_call_id'],
    ];
    for (const [msgs, param] of bad) {
      assert.throws(
        () => validateMessages(msgs),
        (e: unknown) => isSiftError(e, 'INVALID_ARGUMENT') && e.param === param && e.message.startsWith(param),
        param,
      );
    }
    // Accepted: assistant tool calls with null content, tool results.
    const ok = validateMessages([
      { role: 'user', content: 'weather?' },
      { role: 'assistant', content: null, tool_calls: [{ id: 'c1', type: 'function' }] },
      { role: 'tool', content: 'sunny', tool_call_id: 'c1' },
    ]);
    assert.equal(ok[1].content, null);
    assert.equal(ok[2].tool_call_id, 'c1');
  });
});

test('developer messages render as system where the template has no developer role; tools reach the template', () => {
  const plain = new ChatTemplate({
    template: '{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}',
  });
  assert.equal(plain.hasDeveloperRole, false);
  const msgs = [
    { role: 'developer', content: 'Be brief.' },
    { role: 'user', content: 'Hi' },
  ];
  assert.equal(plain.render(msgs, { addGenerationPrompt: false }), '<system>Be brief.<user>Hi');
  const dev = new ChatTemplate({
    template:
      "{% for m in messages %}{% if m.role == 'developer' %}[dev]{% else %}<{{ m.role }}>{% endif %}{{ m.content }}{% endfor %}",
  });
  assert.equal(dev.hasDeveloperRole, true);
  assert.equal(dev.render(msgs, { addGenerationPrompt: false }), '[dev]Be brief.<user>Hi');
  const withTools = new ChatTemplate({
    template:
      '{% if tools %}{% for t in tools %}{{ t.function.name }};{% endfor %}{% endif %}{{ messages[0].content }}',
  });
  const tool = { type: 'function', function: { name: 'get_weather', parameters: { type: 'object' } } };
  assert.equal(withTools.render([{ role: 'user', content: 'x' }], { tools: [tool] }), 'get_weather;x');
  assert.equal(withTools.render([{ role: 'user', content: 'x' }]), 'x');
});
