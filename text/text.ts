/**
 * The text side of a model directory in one object: its tokenizer, its chat template and the ids that end
 * generation. Plain prompts get BOS; chat prompts are rendered by the template (which writes its own BOS). Big
 * inputs are rendered and tokenized on a worker thread (text/worker-pool.ts), so the event loop stays free. A
 * TextStream per completion turns the generated ids back into text.
 */
import { ChatTemplate, type RenderOptions } from './chat-template.js';
import { Grammars } from './grammar.js';
import { idList, readModelJson, tokenContent } from './model-files.js';
import { type PromptLimit, promptTooLong } from './prompt-bound.js';
import { TextStream } from './stream.js';
import { Tokenizer } from './tokenizer.js';
import { TokenizeWorker, WORKER_MIN_CHARS } from './worker-pool.js';

export type { PromptLimit } from './prompt-bound.js';

export class TextSide {
  private grammarSet: Grammars | null = null;

  constructor(
    readonly tokenizer: Tokenizer,
    readonly chat: ChatTemplate,
    /** Every id that ends generation (never empty when the tokenizer has an EOS). */
    readonly stopIds: readonly number[],
    /** Where big inputs are tokenized (text/worker-pool.ts); null = always inline. */
    private readonly worker: TokenizeWorker | null = null,
  ) {}

  /**
   * Encodes a plain prompt (with BOS). With `limit`, a text too long to fit is refused before tokenizing (and with
   * limit.refused, that refusal is thrown: the text is a stand-in).
   */
  encodePrompt(text: string, limit?: PromptLimit): Promise<number[]> {
    try {
      this.checkLength(text, 'prompt', limit); // before handing it over: a refusal costs no copy
    } catch (e) {
      return Promise.reject(e);
    }
    if (this.worker && text.length >= WORKER_MIN_CHARS) return this.worker.encodePrompt(text);
    return this.tokenizer.encode(text, { addBos: true });
  }

  /**
   * Renders `messages` (validated; errors name the field, e.g. messages[1].role) with the template options (tools)
   * and encodes the result. With `limit`, a rendered text too long to fit is refused before tokenizing (and with
   * limit.refused, that refusal is thrown: the contents are stand-ins).
   */
  async encodeChat(messages: unknown, limit?: PromptLimit, opts: RenderOptions = {}): Promise<number[]> {
    if (limit?.refused) throw limit.refused;
    if (this.worker && contentChars(messages) >= WORKER_MIN_CHARS) return this.worker.encodeChat(messages, limit, opts);
    const rendered = this.chat.render(messages, opts);
    this.checkLength(rendered, 'messages', limit);
    return this.tokenizer.encode(rendered, { addBos: false });
  }

  /** Constrained JSON output over this vocabulary (built on first use: xgrammar prepares the vocabulary once). */
  get grammars(): Grammars {
    this.grammarSet ??= new Grammars(this.tokenizer, this.stopIds);
    return this.grammarSet;
  }

  /**
   * Throws CONTEXT_LENGTH_EXCEEDED (naming `param`) when `text` has more than limit.maxTokens - 1 tokens for
   * certain, judged from its length alone (text/prompt-bound.ts): no room would be left to generate.
   */
  private checkLength(text: string, param: string, limit: PromptLimit | undefined): void {
    if (!limit) return;
    if (limit.refused) throw limit.refused;
    const e = promptTooLong(text, param, limit, this.tokenizer.lengthBound());
    if (e) throw e;
  }

  /**
   * Readies the text side for the first big input: starts the tokenizer worker (it loads its own copy of the
   * tokenizer) and walks the vocabulary for the length bound (a few hundred ms on a big vocabulary), so that input
   * neither waits nor stalls the event loop.
   */
  warmUp(): void {
    this.worker?.start();
    this.tokenizer.lengthBound();
  }

  /** Stops the tokenizer worker, if one runs. */
  close(): Promise<void> {
    return this.worker?.close() ?? Promise.resolve();
  }

  /** A TextStream for one completion of `promptIds`, cut at the first of `stop`. */
  stream(promptIds: readonly number[], stop: readonly string[] = []): TextStream {
    return new TextStream(this.tokenizer, { context: promptIds, stop });
  }
}

/**
 * Ids that end generation: the eos ids of generation_config.json and config.json and tokenizer_config.json's
 * eos_token; if none of them names one, the tokenizer's EOS.
 */
export function stopIdsOf(dir: string, tokenizer: Tokenizer): number[] {
  const ids = [
    ...idList(readModelJson(dir, 'generation_config.json').eos_token_id),
    ...idList(readModelJson(dir, 'config.json').eos_token_id),
  ];
  const eos = tokenContent(readModelJson(dir, 'tokenizer_config.json').eos_token);
  const eosId = eos === null ? null : tokenizer.tokenToId(eos);
  if (eosId !== null) ids.push(eosId);
  if (!ids.length && tokenizer.eosId !== null) ids.push(tokenizer.eosId);
  return [...new Set(ids)];
}

/** The text contents of chat messages (strings and text parts), in order; [] if `messages` is not an array. */
export function messageTexts(messages: unknown): string[] {
  if (!Array.isArray(messages)) return [];
  const out: string[] = [];
  for (const m of messages) {
    const c = (m as { content?: unknown } | null)?.content;
    if (typeof c === 'string') out.push(c);
    else if (Array.isArray(c)) {
      for (const part of c) {
        const t = (part as { text?: unknown } | null)?.text;
        if (typeof t === 'string') out.push(t);
      }
    }
  }
  return out;
}

function contentChars(messages: unknown): number {
  let n = 0;
  for (const t of messageTexts(messages)) n += t.length;
  return n;
}

/**
 * Loads the text side of a model directory (tokenizer.json, tokenizer_config.json, the configs' eos ids);
 * `extraStopIds` are ids that also end generation (the caller knows them from elsewhere, e.g. llama2.c's BOS).
 * With `worker` (default true) inputs of WORKER_MIN_CHARS or more are tokenized on a worker thread.
 */
export function loadText(dir: string, opts: { extraStopIds?: readonly number[]; worker?: boolean } = {}): TextSide {
  const tokenizer = Tokenizer.load(dir);
  const stopIds = [...new Set([...stopIdsOf(dir, tokenizer), ...(opts.extraStopIds ?? [])])];
  const worker = (opts.worker ?? true) ? new TokenizeWorker(dir) : null;
  return new TextSide(tokenizer, ChatTemplate.load(dir), stopIds, worker);
}
