/**
 * `sift generate` as a process, on a tiny synthetic model whose tokenizer is 26 single letters (no download): the
 * text printed to the terminal and the `text` of --json are the same, with and without stop strings. A stop
 * string that spans two tokens must not leak its first character to the terminal (the first token's text is held
 * back until the next one shows whether the stop string follows).
 */
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import path from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { llama2cStopIds } from '../../checkpoint/llama2c.js';
import { modelPath } from '../../checkpoint/models.js';
import { engineConfig } from '../../config/engine.js';
import { argmax } from '../../engine/sampler.js';
import { ModelRunner } from '../../model/runner.js';
import { LETTERS, scratchDir, writeTextSide, writeTinyLlama } from '../helpers/tiny-text.js';

const run = promisify(execFile);
const CLI = path.resolve('dist/cli/main.js');

/** A random-init model over the letters vocab; untied embeddings, so greedy decoding does not repeat its input. */
function lettersModel(): string {
  const dir = scratchDir('letters-model');
  const vocab = writeTextSide(dir, [...LETTERS], false);
  writeTinyLlama(dir, vocab, 4);
  return dir;
}

test('sift generate: --stop cuts the terminal text and --json text alike, across a token boundary', async () => {
  const dir = lettersModel();
  const generate = async (...extra: string[]) =>
    (
      await run(process.execPath, [
        CLI,
        'generate',
        '--model',
        dir,
        '--prompt-ids',
        '1',
        '--temperature',
        '0',
        '--max-tokens',
        '24',
        ...extra,
      ])
    ).stdout;
  const full = JSON.parse(await generate('--json')) as { text: string; output_ids: number[] };
  const text = full.text;
  assert.ok(/^[a-z]{6,}$/.test(text), `the model should write at least 6 letters, wrote ${JSON.stringify(text)}`);
  assert.equal(await generate(), `${text}\n`, 'terminal text = --json text');
  // A two-letter stop string that first occurs at k >= 1: the letters of tokens k and k+1.
  let k = 1;
  while (k + 2 <= text.length && text.indexOf(text.slice(k, k + 2)) !== k) k++;
  assert.ok(k + 2 <= text.length, `no two-letter string first occurs past the start of ${text}`);
  const stop = text.slice(k, k + 2);
  const want = text.slice(0, k);
  assert.equal(await generate('--stop', stop), `${want}\n`, `terminal text with --stop ${stop}`);
  const cut = JSON.parse(await generate('--json', '--stop', stop)) as { text: string; finish_reason: string };
  assert.equal(cut.text, want);
  assert.equal(cut.finish_reason, 'stop');
  // The earliest of several stop strings wins; one that never appears ("zzzz") changes nothing.
  const stops = ['zzzz', text.slice(k + 1, k + 4), stop];
  const earliest = Math.min(...stops.map((s) => (text.includes(s) ? text.indexOf(s) : text.length)));
  assert.equal(await generate(...stops.flatMap((s) => ['--stop', s])), `${text.slice(0, earliest)}\n`);
});

test('sift generate: the default length stops at the context limit; an explicit one past it is an error', async () => {
  const dir = lettersModel();
  const prompt = ['1', ...Array.from({ length: 249 }, (_, i) => String(3 + (i % 26)))].join(',');
  const args = [CLI, 'generate', '--model', dir, '--prompt-ids', prompt, '--temperature', '0', '--json'];
  const res = await run(process.execPath, args);
  const out = JSON.parse(res.stdout) as { output_ids: number[]; finish_reason: string; max_context: number };
  assert.equal(out.output_ids.length, 256 - 250, 'the rest of the 256-token context');
  assert.equal(out.finish_reason, 'length');
  assert.equal(out.max_context, 256);
  // it says why it stopped, and how to allow more
  assert.match(
    res.stderr,
    /stopped at the context limit of 256 tokens \(250 prompt \+ 6 generated\); --max-context N allows more/,
  );
  await assert.rejects(run(process.execPath, [...args, '--max-tokens', '7']), (e: { stderr: string; code: number }) => {
    assert.notEqual(e.code, 0);
    assert.match(e.stderr, /CONTEXT_LENGTH_EXCEEDED.*maximum context length is 256 tokens.*250 prompt tokens/);
    return true;
  });
});

test('sift generate --chat on a model without a chat template says it falls back, and what it drops', async () => {
  const dir = lettersModel();
  const args = [CLI, 'generate', '--model', dir, '--chat', 'abc', '--system', 'xyz', '--max-tokens', '2'];
  const { stderr } = await run(process.execPath, args);
  assert.match(stderr, /has no chat template; --chat falls back to BOS \+ the message text \(--system is dropped/);
});

test('stories15M stops where llama2.c stops: at the BOS that would begin the next story', async () => {
  const args = [CLI, 'generate', '--prompt', '', '--temperature', '0', '--json'];
  const out = JSON.parse((await run(process.execPath, args)).stdout) as {
    output_ids: number[];
    finish_reason: string;
    text: string;
  };
  assert.equal(out.finish_reason, 'stop', 'ended by a stop id, not the length limit');
  assert.ok(out.output_ids.length < 255, `${out.output_ids.length} tokens`);
  assert.ok(!out.output_ids.includes(1) && !out.output_ids.includes(2));
  assert.match(out.text, /^Once upon a time, there was a little girl named Lily\./);
  // the token the model chose next, the one that ended the story, is BOS (id 1): check on the GPU
  const dir = modelPath('stories15M');
  const runner = await ModelRunner.load(dir, engineConfig({ flags: { maxSeqs: 1 } }));
  try {
    const ids = [1, ...out.output_ids];
    const logits = await runner.prefill(
      'bos-check',
      ids,
      Array.from({ length: 4 }, (_, i) => i),
    );
    assert.equal(argmax(logits.subarray(logits.length - runner.config.vocabSize)), 1);
  } finally {
    runner.destroy();
  }
  assert.deepEqual(llama2cStopIds(dir), [1], 'the converted stories15M directory is known as a llama2.c import');
});
