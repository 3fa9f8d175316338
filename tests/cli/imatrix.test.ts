/**
 * `sift imatrix` and `--quantize-imatrix` / `--quantize-gptq` on the command line: wrong usage and bad files are one-line errors naming
 * the flag, the file or the tensor, before any model output.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { assertOneLineError, pooled, runCli } from './run.js';

test('imatrix and --quantize-imatrix refuse bad usage and bad files in one line', async () => {
  const base = path.join(os.tmpdir(), `sift-imatrix-cli-${process.pid}`);
  const blank = `${base}-blank.txt`;
  writeFileSync(blank, '\n\n   \n');
  const garbage = `${base}.imatrix`;
  writeFileSync(garbage, 'not an importance matrix');
  const story = `${base}-story.txt`;
  writeFileSync(story, 'Once upon a time there was a cat.\n\nIt sat in the sun.\n');
  const gen = ['generate', '--prompt', '', '--max-tokens', '1'];
  const cases: [string[], RegExp][] = [
    [['imatrix', '--text', `${base}-missing.txt`, '--out', `${base}.out`], /cannot read --text .*-missing\.txt/],
    [['imatrix', '--text', blank, '--out', `${base}.out`], /holds no text to calibrate on/],
    [
      ['imatrix', '--text', story, '--out', `${base}.out`, '--window', '300'],
      /--window 300 exceeds the model's context 256/,
    ],
    [['imatrix', '--text', story, '--out', `${base}.out`, '--max-tokens', '0'], /--max-tokens must be an integer >= 1/],
    [
      [...gen, '--quantize', 'q4', '--quantize-imatrix', garbage],
      /importance matrix .*sift-imatrix-cli-\d+\.imatrix: /,
    ],
    [[...gen, '--quantize', 'int8', '--quantize-imatrix', garbage], /quantizeImatrix .* needs --quantize q4/],
    [[...gen, '--quantize', 'q4', '--quantize-gptq', garbage], /GPTQ statistics .*sift-imatrix-cli-\d+\.imatrix: /],
    [[...gen, '--quantize', 'int8', '--quantize-gptq', garbage], /quantizeGptq .* needs --quantize q4/],
  ];
  await pooled(cases, 2, async ([args, want]) => {
    const r = await runCli(args);
    assertOneLineError(r, want, args.join(' '));
  });
  const r = await runCli(['imatrix', '--out', `${base}.out`]);
  assert.equal(r.code, 2, 'no --text: usage error');
  assert.match(r.stderr, /--text and --out are required/);
});
