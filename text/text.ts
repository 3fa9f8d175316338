/**
 * The text side of a model directory in one object: tokenizer, chat template and stop ids.
 * Plain prompts get BOS; chat prompts are rendered by the template (which writes its own BOS).
 */
import type { ChatMessage } from './chat-template.js';
import { ChatTemplate, validateMessages } from './chat-template.js';
import { type StreamDecoder, Tokenizer } from './tokenizer.js';

export class TextSide {
  private constructor(
    readonly tokenizer: Tokenizer,
    readonly chat: ChatTemplate,
  ) {}

  static load(dir: string): TextSide {
    const tokenizer = Tokenizer.load(dir);
    return new TextSide(
      tokenizer,
      ChatTemplate.load(dir, (t) => tokenizer.tokenToId(t)),
    );
  }

  /** Every id that ends generation. */
  get stopIds(): readonly number[] {
    return this.chat.stopIds.length ? this.chat.stopIds : this.tokenizer.eosId === null ? [] : [this.tokenizer.eosId];
  }

  encodePrompt(text: string): Promise<number[]> {
    return this.tokenizer.encode(text, { addBos: true });
  }

  /** Renders `messages` (validated; errors name the field) with the chat template and encodes the result. */
  encodeChat(messages: unknown, addGenerationPrompt = true): Promise<number[]> {
    const msgs = validateMessages(messages) as ChatMessage[];
    return this.tokenizer.encode(this.chat.render(msgs, { addGenerationPrompt }), { addBos: false });
  }

  /** A streaming detokenizer that continues after `promptIds` (so the first word keeps its leading space). */
  streamDecoder(promptIds: number[] = []): StreamDecoder {
    return this.tokenizer.createStreamDecoder({ context: promptIds });
  }
}

export function loadText(dir: string): TextSide {
  return TextSide.load(dir);
}
