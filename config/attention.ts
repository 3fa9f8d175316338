/**
 * Sparse-attention configuration (LServe-style unified sparse attention). Defaults follow the published anchors
 * (LServe, Quest, DuoAttention, MInference): token budget 4096, physical pages of 64 tokens split into logical pages of 16, selection reused for
 * 4 decode steps, streaming heads with sink 128 + local 256, dense prefill for retrieval heads.
 * Requests may override `mode` and `tokenBudget` (API field `attention: {mode, token_budget}`).
 */
import { SiftError } from './errors.js';
import { resolveSection, type SectionLayers, type SectionSpec, type SectionValues, sourceOf } from './schema.js';

/**
 * The one token-budget rule's lower bound (model/attention/budget.ts applies the rule): a sparse decode step keeps
 * whole pages, always the sink page (page 0) and the newest page, so a budget below two pages could not be kept.
 * The flag, the config file, the environment and a request's attention.token_budget are all held to it.
 */
export const MIN_PAGES_KEPT = 2;

export const ATTENTION_SPEC = {
  mode: {
    kind: 'string',
    default: 'sparse',
    choices: ['dense', 'sparse'],
    flag: 'attention',
    doc: 'decode attention of retrieval heads: sparse = top pages within the token budget (dense when the context fits)',
  },
  tokenBudget: {
    kind: 'int',
    default: 4096,
    min: MIN_PAGES_KEPT,
    max: 1 << 24,
    rangeText: `at least ${MIN_PAGES_KEPT} pages: ${MIN_PAGES_KEPT} x --page-size, ${MIN_PAGES_KEPT * 64} tokens with 64-token pages`,
    doc: 'KV tokens a sparse decode step attends to per retrieval head, in whole pages (the sink page and the newest page always; per request: attention.token_budget)',
  },
  logicalPageSize: {
    kind: 'int',
    default: 16,
    min: 1,
    max: 4096,
    doc: 'tokens per logical page (key digest granularity); must divide the page size',
  },
  reuseInterval: {
    kind: 'int',
    default: 4,
    min: 1,
    max: 1024,
    doc: 'decode steps a page selection is reused before it is recomputed (always recomputed after a prefill)',
  },
  sink: { kind: 'int', default: 128, min: 0, max: 1 << 20, doc: 'streaming heads: attention-sink tokens at the start' },
  local: { kind: 'int', default: 256, min: 1, max: 1 << 20, doc: 'streaming heads: most recent tokens attended' },
  headPattern: {
    kind: 'string',
    default: '',
    defaultText: 'none, every head a retrieval head',
    doc: 'head-pattern TSV (layers x KV heads, higher = retrieval; DuoAttention format or `sift calibrate` output); with streaming heads the prefix cache is off (a cached prefix would skip writing their rings)',
  },
  streamingFraction: {
    kind: 'optional-number',
    default: null,
    min: 0,
    max: 1,
    defaultText: "LServe's, 0.5 for GQA models and 0.25 for MHA",
    doc: 'share of the (layer, KV head) pairs that stream when a head pattern is given (1 = every head streams, as StreamingLLM)',
  },
  prefillMode: {
    kind: 'string',
    default: 'dense',
    choices: ['dense', 'block-sparse'],
    doc: 'prefill of retrieval heads: dense, or dynamic block-sparse (mean-pooled 64-token blocks, top key blocks + diagonal + sink)',
  },
  prefillTopBlocks: {
    kind: 'int',
    default: 16,
    min: 1,
    max: 1 << 16,
    doc: 'block-sparse prefill: key blocks kept per query block by score (plus the diagonal and sink blocks)',
  },
  prefillSelect: {
    kind: 'string',
    default: 'hierarchical',
    choices: ['hierarchical', 'flat'],
    doc: 'block-sparse prefill: block selection over groups of 8 blocks bounded by coarse digests (selection bytes per chunk flat in the prompt), or every earlier block scored (flat; linear)',
  },
} as const satisfies SectionSpec;

export type AttentionConfig = SectionValues<typeof ATTENTION_SPEC>;

/**
 * Resolves the section and checks what involves the page size. Messages name the flags; a config file or the
 * environment sets the same fields (attention.logicalPageSize, SIFT_ATTENTION_TOKEN_BUDGET, ...).
 */
export function attentionConfig(layers: SectionLayers = {}, pageSize = 64): AttentionConfig {
  const c = resolveSection('ATTENTION', ATTENTION_SPEC, layers);
  const where = (key: string) => sourceOf('ATTENTION', ATTENTION_SPEC, layers, key);
  if (pageSize % c.logicalPageSize !== 0) {
    throw new SiftError(
      'CONFIG_INVALID',
      `${where('logicalPageSize')} ${c.logicalPageSize} must divide the page size (--page-size ${pageSize})`,
      { param: 'logicalPageSize' },
    );
  }
  const problem = tokenBudgetProblem(c.tokenBudget, pageSize);
  if (problem) throw new SiftError('CONFIG_INVALID', `${where('tokenBudget')} ${problem}`, { param: 'tokenBudget' });
  return c;
}

/** The smallest token budget at `pageSize` tokens per page. */
export function minTokenBudget(pageSize: number): number {
  return MIN_PAGES_KEPT * pageSize;
}

/** Why `budget` breaks the rule ("must be at least ... (got 64)"), or null when it holds. */
export function tokenBudgetProblem(budget: number, pageSize: number): string | null {
  if (Number.isInteger(budget) && budget >= minTokenBudget(pageSize)) return null;
  return (
    `must be an integer of at least ${minTokenBudget(pageSize)} tokens: ${MIN_PAGES_KEPT} pages of ${pageSize}, ` +
    `the sink page and the newest page (got ${budget})`
  );
}
