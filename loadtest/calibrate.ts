/**
 * Before the load: two one-token requests with prompts of 10 and 50 words tell how many prompt tokens a word costs
 * on the target (its tokenizer and chat template), from usage.prompt_tokens. They also show at once whether the
 * target answers a streaming completion at all (a 401, 404 or malformed stream stops the run with its message).
 */
import { SiftError } from '../config/errors.js';
import type { SseClient } from './sse-client.js';
import { type Calibration, GUESSED_CALIBRATION, longRequest, type WorkloadOptions } from './workload.js';

const SMALL = 10;
const LARGE = 50;

export async function calibrate(client: SseClient, o: WorkloadOptions, signal?: AbortSignal): Promise<Calibration> {
  const raw: WorkloadOptions = { ...o, calibration: { overhead: 0, perWord: 1, measured: false } };
  const tokens: number[] = [];
  for (const [i, words] of [SMALL, LARGE].entries()) {
    const spec = longRequest(raw, 1_000_000 + i, words);
    spec.body.max_tokens = 1;
    const r = await client.send(spec, signal);
    if (r.aborted) throw new SiftError('INVALID_ARGUMENT', 'interrupted during the calibration requests');
    if (r.error && r.error !== 'malformed') {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `the target failed a first streaming request (${r.error}): ${r.errorDetail}`,
      );
    }
    if (r.error === 'malformed') {
      throw new SiftError('INVALID_ARGUMENT', `the target's first streaming response is malformed: ${r.errorDetail}`);
    }
    if (!r.usage) return GUESSED_CALIBRATION;
    tokens.push(r.usage.promptTokens);
  }
  const perWord = (tokens[1] - tokens[0]) / (LARGE - SMALL);
  if (!(perWord > 0)) return GUESSED_CALIBRATION;
  return { overhead: tokens[0] - perWord * SMALL, perWord, measured: true };
}
