/**
 * POST /tokenize and POST /detokenize in llama-server's shapes, so clients can count tokens before they send:
 *   /tokenize   {content, add_special?, with_pieces?} -> {tokens: [id, ...]} or {tokens: [{id, piece}, ...]}
 *   /detokenize {tokens: [id, ...]}                     -> {content}
 * add_special prepends BOS as a plain completions prompt gets it; a piece is the token's text (tokenizer's
 * tokenText: SentencePiece "▁" as a space, a byte piece as its character).
 */
import type { FastifyInstance } from 'fastify';
import '../context.js';
import { SiftError } from '../../config/errors.js';
import { definePlugin } from '../plugin.js';
import { detokenizeBody, tokenizeBody } from '../schemas.js';

async function tokenizeRoute(app: FastifyInstance): Promise<void> {
  app.post<{ Body: { content: string; add_special?: boolean; with_pieces?: boolean } }>(
    '/tokenize',
    { schema: { body: tokenizeBody } },
    async (request) => {
      const { text } = app.sift.state.require();
      const { content, add_special, with_pieces } = request.body;
      const ids = await text.tokenizer.encode(content, { addBos: add_special === true });
      if (!with_pieces) return { tokens: ids };
      return { tokens: ids.map((id) => ({ id, piece: text.tokenizer.tokenText(id) })) };
    },
  );
  app.post<{ Body: { tokens: number[] } }>('/detokenize', { schema: { body: detokenizeBody } }, async (request) => {
    const { text } = app.sift.state.require();
    const V = text.tokenizer.vocabSize;
    const bad = request.body.tokens.findIndex((id) => id >= V);
    if (bad >= 0) {
      throw new SiftError(
        'INVALID_ARGUMENT',
        `token id ${request.body.tokens[bad]} is outside the vocabulary [0, ${V})`,
        {
          param: `tokens[${bad}]`,
        },
      );
    }
    return { content: text.tokenizer.decode(request.body.tokens) };
  });
}

export default definePlugin(tokenizeRoute, {
  name: 'sift-route-tokenize',
  dependencies: ['sift-errors', 'sift-context'],
  encapsulate: true,
});
