/** `sift generate`: run one prompt through the engine and stream the result to the terminal. */
import path from 'node:path';
import { llama2cStopIds } from '../checkpoint/llama2c.js';
import { DEFAULT_MODEL } from '../checkpoint/models.js';
import { resolveModel } from '../checkpoint/pull.js';
import { SiftError } from '../config/errors.js';
import { intFlag, numFlag } from '../config/flags.js';
import { type GenerationEvent, sequenceLimit } from '../engine/client.js';
import { EngineCore } from '../engine/core.js';
import { type SamplingParams, validateSampling } from '../engine/sampler.js';
import { ModelRunner } from '../model/runner.js';
import type { TextSide } from '../text/text.js';
import { attentionConfigFrom, engineConfigFrom, engineHelp, engineOptionDefs, parse, progressLine } from './common.js';
import { loadModelText } from './model-text.js';

const HELP = `usage: sift generate [--model NAME|DIR] (--prompt TEXT | --chat TEXT | --prompt-ids 1,2,3) [options]

  --model NAME|DIR      a known model name (default ${DEFAULT_MODEL}, fetched on first use) or an HF directory
  --prompt TEXT         plain-text prompt (BOS is added); "" means BOS only
  --chat TEXT           a user message, rendered with the model's chat template (a model without one, such as
                        stories15M, gets BOS + the message text, and a note on stderr says so)
  --system TEXT         a system message for --chat (dropped by the fallback of a model without a template)
  --prompt-ids LIST     comma-separated token ids (no tokenizer involved)
  --max-tokens N        tokens to generate (default 256, or the rest of the context if that is less: it then
                        stops at the context limit and says so); a prompt plus N over the limit is an error.
                        Generation also ends at the model's stop ids (stories15M: at the end of the story,
                        where llama2.c stops)
  --temperature T       0 = greedy (default 1.0)
  --top-p P             nucleus sampling (default 0.9)
  --top-k K             keep the K most likely tokens, 0 = off (default 0)
  --seed N              seed of the sampler (same seed, same tokens)
  --stop TEXT           stop when TEXT appears (repeatable)
  --json                print one JSON object (prompt_ids, output_ids, text, finish_reason, attention, timings)
`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parse(
    argv,
    {
      model: { type: 'string' },
      prompt: { type: 'string' },
      chat: { type: 'string' },
      system: { type: 'string' },
      'prompt-ids': { type: 'string' },
      'max-tokens': { type: 'string' },
      temperature: { type: 'string' },
      'top-p': { type: 'string' },
      'top-k': { type: 'string' },
      seed: { type: 'string' },
      stop: { type: 'string', multiple: true },
      json: { type: 'boolean' },
      ...engineOptionDefs(),
    },
    'generate',
  );
  if (values.help) {
    process.stdout.write(`${HELP}\n${engineHelp()}\n`);
    return 0;
  }
  const given = ['prompt', 'chat', 'prompt-ids'].filter((k) => values[k as keyof typeof values] !== undefined);
  if (given.length !== 1) {
    throw new SiftError(
      'INVALID_ARGUMENT',
      'give exactly one of --prompt, --chat or --prompt-ids (see sift generate --help)',
    );
  }
  const cfg = engineConfigFrom(values);
  const attention = attentionConfigFrom(values, cfg.pageSize);
  const sampling: SamplingParams = {
    temperature: numFlag(values.temperature, 'temperature', 1),
    topP: numFlag(values['top-p'], 'top-p', 0.9),
    topK: intFlag(values['top-k'], 'top-k', 0),
    seed: values.seed === undefined ? null : intFlag(values.seed, 'seed', 0),
  };
  checkSampling(sampling);
  const askedTokens = values['max-tokens'] === undefined ? null : intFlag(values['max-tokens'], 'max-tokens', 256, 1);
  const json = Boolean(values.json);
  const progress = progressLine();
  const dir = await resolveModel((values.model as string | undefined) ?? DEFAULT_MODEL, {
    autoPull: true,
    onProgress: (p) => progress.update(p.message),
  });
  progress.done();

  let text: TextSide | null = null;
  let promptIds: number[];
  if (values['prompt-ids'] !== undefined) {
    promptIds = String(values['prompt-ids'])
      .split(',')
      .filter((s) => s.trim() !== '')
      .map((s) => {
        const n = Number(s);
        if (!Number.isInteger(n) || n < 0)
          throw new SiftError('INVALID_ARGUMENT', `--prompt-ids: "${s}" is not a token id`);
        return n;
      });
    try {
      text = loadModelText(dir);
    } catch {
      text = null; // token ids need no tokenizer; text output is then omitted
    }
  } else {
    text = loadModelText(dir);
    if (values.chat !== undefined && !text.chat.isModelTemplate) {
      // base models (stories15M) have no chat template: say what the fallback makes of the conversation
      process.stderr.write(
        `sift generate: ${path.basename(dir)} has no chat template; --chat falls back to BOS + the message text` +
          `${values.system !== undefined ? ' (--system is dropped: the fallback keeps user messages only)' : ''}\n`,
      );
    }
    promptIds =
      values.chat !== undefined
        ? await text.encodeChat([
            ...(values.system !== undefined ? [{ role: 'system', content: String(values.system) }] : []),
            { role: 'user', content: String(values.chat) },
          ])
        : await text.encodePrompt(String(values.prompt));
  }

  const loadBar = progressLine();
  const engine = await ModelRunner.load(dir, cfg, {
    attention,
    onProgress: (p) =>
      loadBar.update(
        `loading ${dir}: ${p.tensorsDone}/${p.tensorsTotal} tensors, ${(p.bytesDone / 2 ** 20).toFixed(1)} MiB`,
      ),
  });
  loadBar.done();
  // One request through the same engine core the server uses (paged KV, sparse attention, streaming heads).
  const loop = EngineCore.create(engine);
  try {
    const maxTokens = askedTokens ?? Math.max(1, Math.min(256, sequenceLimit(loop) - promptIds.length));
    // The same TextStream as the server's: detokenize, cut at the first stop string, hold back what could begin one.
    const stream = text?.stream(promptIds, (values.stop as string[] | undefined) ?? []);
    const outputIds: number[] = [];
    const h = loop.submit({
      id: 'generate',
      promptIds,
      maxTokens,
      sampling,
      stopIds: text?.stopIds ?? [...engine.config.eosTokenIds, ...llama2cStopIds(dir)],
    });
    let done: Extract<GenerationEvent, { type: 'done' }> | null = null;
    for await (const ev of h) {
      if (ev.type === 'done') {
        done = ev;
        break;
      }
      if (ev.type !== 'token' || stream?.stopped) continue;
      outputIds.push(ev.id);
      if (!stream) {
        if (!json) process.stdout.write(`${ev.id} `);
        continue;
      }
      const d = stream.push(ev.id);
      if (!json) process.stdout.write(d.text);
      if (stream.stopped) h.cancel();
    }
    if (!done) throw new SiftError('INTERNAL', 'generation ended without a result');
    if (done.error) throw done.error;
    if (stream) {
      const rest = stream.finish();
      if (!json) process.stdout.write(rest.text);
    }
    const finish: string = stream?.stopped ? 'stop' : done.finishReason;
    const atContextLimit = finish === 'length' && promptIds.length + outputIds.length >= loop.maxContext;
    if (atContextLimit) {
      // the server refuses a max_tokens that does not fit; here the default stops at the limit, so say so
      process.stderr.write(
        `sift generate: stopped at the context limit of ${loop.maxContext} tokens (${promptIds.length} prompt + ` +
          `${outputIds.length} generated); --max-context N allows more (past the model's trained ` +
          `${engine.config.maxPositionEmbeddings} tokens, quality is not guaranteed)\n`,
      );
    }
    const ttft = done.timings.ttftMs ?? done.timings.durationMs;
    const prefillMs = ttft - done.timings.queuedMs;
    const decodeMs = done.timings.durationMs - ttft;
    const t = {
      prefillMs,
      decodeMs,
      prefillTokensPerS: promptIds.length / (prefillMs / 1000),
      decodeTokensPerS: outputIds.length > 1 ? (outputIds.length - 1) / (decodeMs / 1000) : 0,
    };
    const att = done.attention;
    if (json) {
      process.stdout.write(
        `${JSON.stringify({
          model: dir,
          prompt_ids: promptIds,
          output_ids: outputIds,
          text: stream ? stream.text : null,
          finish_reason: finish,
          max_context: loop.maxContext,
          attention: {
            mode: att.mode,
            requested_mode: att.requestedMode,
            mean_tokens_attended: round(att.meanTokensAttended),
            mean_context_tokens: round(att.meanContextTokens),
            prefill_key_blocks_skipped_share:
              att.prefillKeyBlocksSkippedShare === null ? null : round(att.prefillKeyBlocksSkippedShare),
          },
          timings: {
            prefill_ms: round(t.prefillMs),
            decode_ms: round(t.decodeMs),
            prefill_tokens_per_s: round(t.prefillTokensPerS),
            decode_tokens_per_s: round(t.decodeTokensPerS),
          },
        })}\n`,
      );
    } else {
      process.stdout.write('\n');
      process.stderr.write(
        `[${promptIds.length} prompt tokens, ${outputIds.length} generated, finish: ${finish}, attention ${att.mode}` +
          `${att.mode === att.requestedMode ? '' : ` (${att.requestedMode} asked; every head read every token)`}: ` +
          `${att.meanTokensAttended.toFixed(0)} of ${att.meanContextTokens.toFixed(0)} KV tokens/step` +
          `${att.prefillKeyBlocksSkippedShare === null ? '' : `, prefill skipped ${(att.prefillKeyBlocksSkippedShare * 100).toFixed(0)}% of key blocks`}` +
          `] prefill ${t.prefillTokensPerS.toFixed(1)} tok/s, ` +
          `decode ${t.decodeTokensPerS.toFixed(1)} tok/s (${engine.gpu.caps.adapterName})\n`,
      );
    }
  } finally {
    await loop.shutdown(0);
  }
  return 0;
}

/** The sampler's own range checks (engine/sampler.ts), before anything loads, naming the flag. */
function checkSampling(s: SamplingParams): void {
  try {
    validateSampling(s);
  } catch (e) {
    if (!(e instanceof SiftError) || e.param === null) throw e;
    const flag = `--${e.param.replace(/_/g, '-')}`;
    const got = { temperature: s.temperature, top_p: s.topP, top_k: s.topK, seed: s.seed }[e.param];
    throw new SiftError('INVALID_ARGUMENT', `${flag}${e.message.slice(e.param.length)} (got ${got})`, {
      param: e.param,
    });
  }
}

const round = (x: number) => Math.round(x * 100) / 100;
