/**
 * `sift bench` as a user meets it: its help covers every suite and states each suite's defaults on the right line,
 * the forward suite's defaults fit the default model, and the model suites do not offer what they cannot measure.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { modelPath } from '../../checkpoint/models.js';
import { resolveModel } from '../../checkpoint/pull.js';
import { forwardPlan } from '../../cli/bench.js';
import { engineConfig } from '../../config/engine.js';
import { assertOneLineError, pooled, runCli } from './run.js';

test('bench --help lists every suite; each suite states its --repeat default on the --repeat line', async () => {
  const top = await runCli(['bench', '--help']);
  assert.equal(top.code, 0);
  for (const s of ['forward', 'attention', 'decode', 'agreement'])
    assert.match(top.stdout, new RegExp(`^  ${s} `, 'm'));
  const repeats: Record<string, number> = { forward: 3, attention: 5, decode: 3, agreement: 3 };
  await pooled(Object.entries(repeats), 2, async ([suite, n]) => {
    const r = await runCli(['bench', suite, '--help']);
    assert.equal(r.code, 0, r.stderr);
    const line = (flag: string) => r.stdout.split('\n').find((l) => l.trimStart().startsWith(flag)) ?? '';
    if (suite !== 'agreement') assert.match(line('--repeat'), new RegExp(`\\(default ${n}\\)`), suite);
    assert.doesNotMatch(line('--out'), /default/, `${suite}: --out has no default`);
    assert.match(line('--out'), /write the JSON result/);
    if (suite !== 'attention') {
      assert.doesNotMatch(
        r.stdout,
        /^\s+--(head-pattern|streaming-fraction|sink|local) /m,
        `${suite}: no streaming heads`,
      );
      assert.match(r.stdout, /--token-budget/);
    }
  });
});

test('bench forward: the default prompt lengths fit the default model; lengths that do not are refused first', async () => {
  const dir = await resolveModel('stories15M', { autoPull: true });
  assert.equal(dir, modelPath('stories15M'));
  const cfg = engineConfig();
  assert.deepEqual(forwardPlan(dir, cfg, {}).promptLens, [128, 256]);
  assert.throws(
    () => forwardPlan(dir, cfg, { 'prompt-len': '512' }),
    /--prompt-len 512 exceeds the 256-token context .*--max-context raises it/,
  );
  assert.deepEqual(forwardPlan(dir, engineConfig({ flags: { maxContext: 1024 } }), {}).promptLens, [128, 512]);
  assert.throws(() => forwardPlan(dir, cfg, { context: '240' }), /--context 240 \+ --decode-tokens 32 exceeds/);
});

test('bench forward/decode refuse streaming heads in one line, however they are asked for', async () => {
  const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [
      ['bench', 'forward', '--head-pattern', 'x.tsv'],
      {},
      /unknown option --head-pattern \(see sift bench forward --help\)/,
    ],
    [['bench', 'decode', '--streaming-fraction', '1'], {}, /unknown option --streaming-fraction/],
    [
      ['bench', 'decode', '--contexts', '256'],
      { SIFT_ATTENTION_HEAD_PATTERN: 'x.tsv' },
      /environment variable SIFT_ATTENTION_HEAD_PATTERN sets a head pattern, but sift bench decode measures retrieval heads only/,
    ],
  ];
  await pooled(cases, 3, async ([args, env, want]) =>
    assertOneLineError(await runCli(args, { env }), want, args.join(' ')),
  );
});
