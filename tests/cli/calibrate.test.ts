/**
 * `sift calibrate` fits its streaming window to the model and checks, before the model loads, that some token lies
 * past sink + local to score: on the 256-token default model LServe's 128 + 256 cannot work.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { calibrationWindow } from '../../cli/calibrate.js';
import { assertOneLineError, pooled, runCli } from './run.js';

test('the default window fits the model: LServe 128 + 256 on long contexts, a scaled window on short ones', () => {
  assert.deepEqual(calibrationWindow(256, 1000, {}), { sink: 4, local: 32 });
  assert.deepEqual(calibrationWindow(1024, 5000, {}), { sink: 16, local: 128 });
  assert.deepEqual(calibrationWindow(4096, 5000, {}), { sink: 128, local: 256 });
  assert.deepEqual(calibrationWindow(256, 1000, { sink: 8 }), { sink: 8, local: 32 });
  assert.throws(() => calibrationWindow(256, 1000, { sink: 128, local: 256 }), /fill the 256-token window/);
  assert.throws(() => calibrationWindow(256, 30, {}), /the text has 30 tokens, none past sink 4 \+ local 32/);
});

test('calibrate refuses a window or a text with nothing to score in one line, before loading the model', async () => {
  const short = path.join(os.tmpdir(), `sift-calibrate-${process.pid}.txt`);
  writeFileSync(short, 'Once upon a time there was a cat.');
  const cases: [string[], RegExp][] = [
    [['--sink', '128', '--local', '256'], /sink 128 \+ local 256 fill the 256-token window .*--sink 4 --local 32/],
    [['--text', short], /the text has \d+ tokens, none past sink 4 \+ local 32 to score: use a longer --text/],
    // the text-window flags it shares with imatrix (cli/window-engine.ts)
    [['--window', '300'], /--window 300 exceeds the model's context 256/],
    [['--chunk', '0'], /--chunk must be an integer >= 1 \(got 0\)/],
  ];
  await pooled(cases, 2, async ([args, want]) => {
    const all = ['calibrate', '--text', short, '--out', `${short}.tsv`, ...args];
    const r = await runCli(all);
    assertOneLineError(r, want, all.join(' '));
    assert.doesNotMatch(r.stderr, /calibrate: \d+\/\d+ tokens/, 'refused before running the model');
  });
});
