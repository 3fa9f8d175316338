/**
 * Sparse-attention configuration (LServe-style unified sparse attention). Defaults follow the published anchors
 * (LServe, Quest, DuoAttention, MInference): token budget 4096, physical pages of 64 tokens split into logical pages of 16, selection reused for
 * 4 decode steps, streaming heads with sink 128 + local 256, dense prefill for retrieval heads.
 * Requests may override `mode` and `tokenBudget` (API field `attention: {mode, token_budget}`).
 */
import { SiftError } from './errors.js';
import { resolveSection, type SectionSpec, type SectionValues } from './schema.js';

export const ATTENTION_SPEC = {
  mode: {
    kind: 'string',
    default: 'sparse',
    choices: ['dense', 'sparse'],
    doc: 'decode attention of retrieval heads: sparse = top pages within the token budget (dense when the context fits)',
  },
  tokenBudget: {
    kind: 'int',
    default: 4096,
    min: 64,
    max: 1 << 24,
    doc: 'KV tokens a sparse decode step attends to per retrieval head (whole pages, incl. the sink and newest page)',
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
    doc: 'head-pattern TSV (layers x KV heads, higher = retrieval; DuoAttention format or `sift calibrate` output); empty = all heads retrieval',
  },
  streamingFraction: {
    kind: 'optional-number',
    default: null,
    min: 0,
    max: 1,
    doc: 'share of KV heads that stream when a head pattern is given (default as LServe: 0.5 for GQA, 0.25 for MHA)',
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
} as const satisfies SectionSpec;

export type AttentionConfig = SectionValues<typeof ATTENTION_SPEC>;

export function attentionConfig(layers: Parameters<typeof resolveSection>[2] = {}, pageSize = 64): AttentionConfig {
  const c = resolveSection('ATTENTION', ATTENTION_SPEC, layers);
  if (pageSize % c.logicalPageSize !== 0) {
    throw new SiftError(
      'CONFIG_INVALID',
      `attention.logicalPageSize (${c.logicalPageSize}) must divide the page size (${pageSize})`,
    );
  }
  if (c.tokenBudget < 2 * pageSize) {
    throw new SiftError(
      'CONFIG_INVALID',
      `attention.tokenBudget (${c.tokenBudget}) must hold at least two pages (${2 * pageSize} tokens): the sink page and the newest page`,
    );
  }
  return c;
}
