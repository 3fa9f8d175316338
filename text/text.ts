/**
 * The text side of a model directory in one object: its tokenizer, its chat template and the ids that end
 * generation. Plain prompts get BOS; chat prompts are rendered by the template (which writes its own BOS). A
 * TextStream per completion turns the generated ids back into text.
 */
import { ChatTemplate, type RenderOptions } from './chat-template.js';
import { Grammars } from './grammar.js';
import { idList, readModelJson, tokenContent } from './model-files.js';
import { TextStream } from './stream.js';
import { Tokenizer } from './tokenizer.js';

export class TextSide {
  private grammarSet: Grammars | null = null;

  constructor(
    readonly tokenizer: Tokenizer,
    readonly chat: ChatTemplate,
    /** Every id that ends generation (never empty when the tokenizer has an EOS). */
    readonly stopIds: readonly number[],
  ) {}

  encodePrompt(text: string): Promise<number[]> {
    return this.tokenizer.encode(text, { addBos: true });
  }

  /**
   * Renders `messages` (validated; errors name the field, e.g. messages[1].role) with the template options (tools)
   * and encodes the result.
   */
  encodeChat(messages: unknown, opts: RenderOptions = {}): Promise<number[]> {
    return this.tokenizer.encode(this.chat.render(messages, opts), { addBos: false });
  }

  /** Constrained JSON output over this vocabulary (built on first use: xgrammar prepares the vocabulary once). */
  get grammars(): Grammars {
    this.grammarSet ??= new Grammars(this.tokenizer, this.stopIds);
    return this.grammarSet;
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

/**
 * Loads the text side of a model directory (tokenizer.json, tokenizer_config.json, the configs' eos ids);
 * `extraStopIds` are ids that also end generation (the caller knows them from elsewhere, e.g. llama2.c's BOS).
 */
export function loadText(dir: string, opts: { extraStopIds?: readonly number[] } = {}): TextSide {
  const tokenizer = Tokenizer.load(dir);
  const stopIds = [...new Set([...stopIdsOf(dir, tokenizer), ...(opts.extraStopIds ?? [])])];
  return new TextSide(tokenizer, ChatTemplate.load(dir), stopIds);
}
