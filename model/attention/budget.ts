/**
 * The one token-budget rule of sparse decode (Quest / LServe page selection), written once.
 *
 * A decode step of a sequence whose context holds `contextLen` tokens (the new token included) in
 * P = ceil(contextLen / pageSize) pages reads, per retrieval head:
 *   - every page when the context fits the token budget (contextLen <= tokenBudget: dense);
 *   - else K = min(P, max(2, floor(tokenBudget / pageSize))) pages: the sink page (page 0), the newest page (the one
 *     holding the new token) and the K - 2 best-scoring others. Two (MIN_PAGES_KEPT, config/attention.ts) is the
 *     floor because the sink and the newest page are always kept; the config, the flag and a request's
 *     attention.token_budget are held to at least that many pages' worth of tokens (tokenBudgetProblem), so the
 *     floor only guards callers that bypass them (benchmarks).
 * The selection (model/attention/sparse-decode.ts) hands K to the page_select kernel; usage accounting reports
 * tokensAttended(); nothing else recomputes the rule.
 */
import { MIN_PAGES_KEPT } from '../../config/attention.js';
import { SiftError } from '../../config/errors.js';

function checkArgs(contextLen: number, tokenBudget: number, pageSize: number): void {
  if (!Number.isInteger(contextLen) || contextLen < 1 || !Number.isInteger(pageSize) || pageSize < 1) {
    throw new SiftError('INTERNAL', `budget: contextLen ${contextLen}, pageSize ${pageSize}`);
  }
  if (!(tokenBudget >= 0)) throw new SiftError('INTERNAL', `budget: tokenBudget ${tokenBudget}`);
}

/** Pages a decode step keeps at context length `contextLen` (Infinity = dense: every page). */
export function pagesKept(contextLen: number, tokenBudget: number, pageSize: number): number {
  checkArgs(contextLen, tokenBudget, pageSize);
  const P = Math.ceil(contextLen / pageSize);
  if (contextLen <= tokenBudget) return P;
  return Math.min(P, Math.max(MIN_PAGES_KEPT, Math.floor(tokenBudget / pageSize)));
}

/**
 * KV tokens a decode step reads per retrieval head: the kept pages, whole except the newest, which holds only
 * contextLen - (P - 1) * pageSize tokens. Equals contextLen when every page is kept. (A step that reuses an earlier
 * selection reads the pages that selection kept plus the newest page; this counts the selection's pages.)
 */
export function tokensAttended(contextLen: number, tokenBudget: number, pageSize: number): number {
  const keep = pagesKept(contextLen, tokenBudget, pageSize);
  const P = Math.ceil(contextLen / pageSize);
  return (keep - 1) * pageSize + (contextLen - (P - 1) * pageSize);
}
