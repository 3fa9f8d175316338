/**
 * Chained page hashes for the prefix cache: the key of a full page is
 * sha256(parentKey || token ids of the page as little-endian u32), so a key names the page's tokens AND every token
 * before them. sha256 makes a collision (two different prefixes sharing a page) practically impossible, so a lookup
 * hit is trusted without comparing token tuples.
 */
import { createHash } from 'node:crypto';
import { SiftError } from '../config/errors.js';

/** The parent key of a sequence's first page. */
export const ROOT_HASH = 'sift-kv-root';

/** Key of a full page holding `tokens`, preceded by the page whose key is `parent` (ROOT_HASH for page 0). */
export function chainHash(parent: string, tokens: readonly number[]): string {
  const ids = new Uint32Array(tokens.length);
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i];
    if (!Number.isInteger(t) || t < 0 || t > 0xffffffff) {
      throw new SiftError('INTERNAL', `kvcache: token id ${String(t)} is not a u32`);
    }
    ids[i] = t;
  }
  return createHash('sha256')
    .update(parent)
    .update(new Uint8Array(ids.buffer, ids.byteOffset, ids.byteLength))
    .digest('base64');
}

/** Keys of the first `numPages` full pages of `tokens` (pages of `pageSize`), in order. */
export function pageHashes(tokens: readonly number[], pageSize: number, numPages: number): string[] {
  const out: string[] = [];
  let parent = ROOT_HASH;
  for (let p = 0; p < numPages; p++) {
    parent = chainHash(parent, tokens.slice(p * pageSize, (p + 1) * pageSize));
    out.push(parent);
  }
  return out;
}
