/**
 * `sift bench`: forward-pass throughput. Prefill tokens/s (the prompt in chunks of maxBatchTokens, timed to the
 * last chunk's logits) and decode tokens/s (one token per step, each step's logits read back, as generation does),
 * after a warm-up, repeated, reported as median and min..max. JSON and a markdown table.
 */
import { mkdirSync, existsSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { SiftError } from '../../config/errors.js';
import { Engine } from '../engine.js';
import { DEFAULT_MODEL } from '../models.js';
import { resolveModel } from '../pull.js';
import { SYNTHETIC_PRESETS, writeSyntheticCheckpoint } from '../model/synthetic.js';
import { argmax } from '../sampler.js';
import { engineConfigFrom, engineHelp, engineOptionDefs, intFlag, parse, progressLine } from './common.js';

const HELP = `usage: sift bench [--model NAME|DIR | --synthetic PRESET] [options]

Measures the forward pass: prefill tokens/s and decode tokens/s (batch of one sequence).
  --model NAME|DIR        model to measure (default ${DEFAULT_MODEL})
  --synthetic PRESET      instead, a random-init checkpoint of a preset shape: ${Object.keys(SYNTHETIC_PRESETS).join(', ')}
                          (written once under $TMPDIR/sift-synthetic/)
  --prompt-len LIST       prompt lengths for prefill (default 128,512)
  --decode-tokens N       decode steps per repeat (default 32)
  --context LIST          context lengths at which decode is measured (default 16)
  --repeat N              repeats after one warm-up (default 3)
  --json                  print the JSON result instead of the table
  --out FILE              also write the JSON result to FILE
`;

interface Stat {
  median: number;
  min: number;
  max: number;
}
const stat = (xs: number[]): Stat => {
  const s = [...xs].sort((a, b) => a - b);
  return { median: s[Math.floor(s.length / 2)], min: s[0], max: s[s.length - 1] };
};
const list = (v: unknown, name: string, def: number[]) =>
  v === undefined ? def : String(v).split(',').map((x) => intFlag(x.trim(), name, 0, 1));

export async function main(argv: string[]): Promise<number> {
  const { values } = parse(argv, {
    model: { type: 'string' },
    synthetic: { type: 'string' },
    'prompt-len': { type: 'string' },
    'decode-tokens': { type: 'string' },
    context: { type: 'string' },
    repeat: { type: 'string' },
    json: { type: 'boolean' },
    out: { type: 'string' },
    ...engineOptionDefs(),
  });
  if (values.help) {
    process.stdout.write(`${HELP}\n${engineHelp()}\n`);
    return 0;
  }
  const cfg = engineConfigFrom(values);
  const promptLens = list(values['prompt-len'], 'prompt-len', [128, 512]);
  const contexts = list(values.context, 'context', [16]);
  const decodeTokens = intFlag(values['decode-tokens'], 'decode-tokens', 32, 1);
  const repeat = intFlag(values.repeat, 'repeat', 3, 1);
  const progress = progressLine();

  let dir: string;
  let label: string;
  if (values.synthetic !== undefined) {
    const preset = SYNTHETIC_PRESETS[String(values.synthetic)];
    if (!preset) {
      throw new SiftError('INVALID_ARGUMENT', `unknown --synthetic preset "${values.synthetic}" (known: ${Object.keys(SYNTHETIC_PRESETS).join(', ')})`);
    }
    dir = path.join(os.tmpdir(), 'sift-synthetic', preset.name);
    if (!existsSync(path.join(dir, 'config.json'))) {
      progress.update(`writing synthetic checkpoint ${preset.name} ...`);
      mkdirSync(path.dirname(dir), { recursive: true });
      writeSyntheticCheckpoint(dir, preset);
    }
    label = `synthetic:${preset.name}`;
  } else {
    dir = await resolveModel((values.model as string | undefined) ?? DEFAULT_MODEL, { autoPull: true, onProgress: (p) => progress.update(p.message) });
    label = dir;
  }
  progress.update(`loading ${label} ...`);
  const engine = await Engine.load(dir, cfg);
  progress.done();
  const c = engine.config;
  const vocab = c.vocabSize;
  const rand = (n: number, seed: number) => Array.from({ length: n }, (_, i) => 3 + ((i * 2654435761 + seed * 40503) % (vocab - 3)));
  const table = new Uint32Array(engine.forwardPass.maxPagesPerSeq);
  for (let i = 0; i < table.length; i++) table[i] = i % engine.kv.numPages;
  const maxLen = Math.min(engine.maxContext, engine.kv.numPages * engine.kv.pageSize);

  const prefill: { promptLen: number; ms: Stat; tokensPerS: Stat }[] = [];
  for (const len of promptLens) {
    if (len > maxLen) throw new SiftError('INVALID_ARGUMENT', `--prompt-len ${len} exceeds what the KV cache / context holds (${maxLen})`);
    const ids = rand(len, len);
    const times: number[] = [];
    for (let r = 0; r <= repeat; r++) {
      progress.update(`prefill ${len}: run ${r}/${repeat}`);
      const t0 = performance.now();
      await engine.prefill(ids, table);
      if (r > 0) times.push(performance.now() - t0);
    }
    prefill.push({ promptLen: len, ms: stat(times), tokensPerS: stat(times.map((t) => (len / t) * 1000)) });
  }
  const decode: { context: number; steps: number; msPerToken: Stat; tokensPerS: Stat }[] = [];
  for (const ctx of contexts) {
    if (ctx + decodeTokens > maxLen) throw new SiftError('INVALID_ARGUMENT', `--context ${ctx} + --decode-tokens ${decodeTokens} exceeds ${maxLen}`);
    progress.update(`decode @${ctx}: prefill`);
    let logits = await engine.prefill(rand(ctx, 1), table);
    const per: number[] = [];
    for (let r = 0; r <= repeat; r++) {
      progress.update(`decode @${ctx}: run ${r}/${repeat}`);
      const t0 = performance.now();
      for (let s = 0; s < decodeTokens; s++) logits = await engine.decodeOneToken(argmax(logits), ctx + s, table);
      if (r > 0) per.push((performance.now() - t0) / decodeTokens);
    }
    decode.push({ context: ctx, steps: decodeTokens, msPerToken: stat(per), tokensPerS: stat(per.map((t) => 1000 / t)) });
  }
  progress.done();
  const result = {
    date: new Date().toISOString(),
    model: label,
    shape: { hidden: c.hiddenSize, layers: c.numLayers, heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim, intermediate: c.intermediateSize, vocab },
    adapter: engine.gpu.caps.adapterName,
    adapterDescription: engine.gpu.caps.description,
    host: { cpus: os.cpus().length, cpuModel: os.cpus()[0]?.model ?? '' },
    config: cfg,
    repeat,
    prefill,
    decode,
  };
  engine.destroy();
  if (values.out) writeFileSync(String(values.out), `${JSON.stringify(result, null, 2)}\n`);
  if (values.json) process.stdout.write(`${JSON.stringify(result, null, 2)}\n`);
  else process.stdout.write(`${benchTable(result)}\n`);
  return 0;
}

const f1 = (x: number) => x.toFixed(1);

export function benchTable(r: {
  model: string;
  adapter: string;
  prefill: { promptLen: number; ms: Stat; tokensPerS: Stat }[];
  decode: { context: number; msPerToken: Stat; tokensPerS: Stat }[];
}): string {
  const lines = [
    `model ${r.model} on ${r.adapter}`,
    '',
    '| phase | tokens | ms (median) | tokens/s (median) | tokens/s (min..max) |',
    '|---|---|---|---|---|',
    ...r.prefill.map((p) => `| prefill | ${p.promptLen} | ${f1(p.ms.median)} | ${f1(p.tokensPerS.median)} | ${f1(p.tokensPerS.min)}..${f1(p.tokensPerS.max)} |`),
    ...r.decode.map((d) => `| decode @${d.context} | 1/step | ${f1(d.msPerToken.median)} | ${f1(d.tokensPerS.median)} | ${f1(d.tokensPerS.min)}..${f1(d.tokensPerS.max)} |`),
  ];
  return lines.join('\n');
}
