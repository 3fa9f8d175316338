/**
 * Reference streaming-head attention (sink + local Lambda mask) and streaming-pool KV write, walking the stream table
 * one key at a time; math in f64. Exactly the kernel's sources: keys/values at positions >= the sequence's first new
 * position in the batch are this batch's f32 activations (full precision), older ones the f16 streaming cache.
 * Cache layout as tests/reference/attention.ts: (numPages, pageSize, numKvHeads, headDim) f16 bits.
 * Also a dense reference with the same mask over a sequence's whole K/V history (f32), the semantics the ring must
 * reproduce.
 */
import { f16ToF32, f32ToF16 } from '../../util/dtype.js';
import { softcapRef } from './attention.js';

export interface StreamingRefShape {
  T: number;
  numHeads: number; // query heads processed
  numKvHeads: number; // heads in the cache
  headDim: number;
  pageSize: number;
  sinkTokens: number;
  localTokens: number;
  sinkPages: number;
  ringPages: number;
  qHeadOffset: number;
  qRowHeads: number;
  kvHeadOffset: number;
  kvRowHeads: number;
}

/**
 * Key positions query position `pos` attends to: [0, min(sink, pos+1)) U [max(sink, pos+1-local), pos], those with
 * j > pos - window only when a sliding window is given.
 */
export function streamingKeys(pos: number, sink: number, local: number, window = 0): number[] {
  const keys: number[] = [];
  for (let j = 0; j < Math.min(sink, pos + 1); j++) keys.push(j);
  for (let j = Math.max(sink, pos + 1 - local); j <= pos; j++) keys.push(j);
  return window > 0 ? keys.filter((j) => j > pos - window) : keys;
}

/** Index of element 0 of cached position j (stream-table row seq, cache head kvh) in a cache. */
export function streamingCacheIndex(
  table: Uint32Array,
  s: StreamingRefShape,
  seq: number,
  j: number,
  kvh: number,
): number {
  const row = seq * (s.sinkPages + s.ringPages);
  let page: number;
  let slot: number;
  if (j < s.sinkTokens) {
    page = table[row + Math.floor(j / s.pageSize)];
    slot = j % s.pageSize;
  } else {
    const r = j - s.sinkTokens;
    page = table[row + s.sinkPages + (Math.floor(r / s.pageSize) % s.ringPages)];
    slot = r % s.pageSize;
  }
  return ((page * s.pageSize + slot) * s.numKvHeads + kvh) * s.headDim;
}

function softmaxAttend(
  q: Float32Array,
  qo: number,
  headDim: number,
  scale: number,
  softcap: number,
  n: number,
  key: (i: number, d: number) => number,
  value: (i: number, d: number) => number,
  out: Float32Array,
): void {
  const scores = new Float64Array(n);
  let max = Number.NEGATIVE_INFINITY;
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let d = 0; d < headDim; d++) dot += q[qo + d] * key(i, d);
    scores[i] = softcapRef(dot * scale, softcap);
    if (scores[i] > max) max = scores[i];
  }
  let sum = 0;
  for (let i = 0; i < n; i++) sum += scores[i] = Math.exp(scores[i] - max);
  for (let d = 0; d < headDim; d++) {
    let acc = 0;
    for (let i = 0; i < n; i++) acc += scores[i] * value(i, d);
    out[qo + d] = acc / sum;
  }
}

export interface StreamingAttentionRefArgs extends StreamingRefShape {
  q: Float32Array; // (T, qRowHeads, headDim)
  kFresh: Float32Array; // (T, kvRowHeads, headDim)
  vFresh: Float32Array;
  kCache: Uint16Array; // f16 bits
  vCache: Uint16Array;
  streamTable: Uint32Array; // (numSeqs, sinkPages + ringPages)
  tokenSeq: Uint32Array;
  positions: Uint32Array;
  freshStart: Uint32Array;
  scale: number;
  /** The layer's sliding window and logit soft-cap (0 / absent: none). */
  window?: number;
  softcap?: number;
  /** out (T, qRowHeads, headDim) to fill in place (heads outside the range are left alone); default zeros. */
  out?: Float32Array;
}

export function streamingAttentionRef(a: StreamingAttentionRefArgs): Float32Array {
  const out = a.out ?? new Float32Array(a.T * a.qRowHeads * a.headDim);
  const group = a.numHeads / a.numKvHeads;
  const hd = a.headDim;
  for (let t = 0; t < a.T; t++) {
    const pos = a.positions[t];
    const fs = a.freshStart[t];
    const firstNew = a.positions[fs];
    const keys = streamingKeys(pos, a.sinkTokens, a.localTokens, a.window);
    for (let h = 0; h < a.numHeads; h++) {
      const kvh = Math.floor(h / group);
      const qo = (t * a.qRowHeads + a.qHeadOffset + h) * hd;
      const src = keys.map((j) =>
        j >= firstNew
          ? { fresh: true, o: ((fs + j - firstNew) * a.kvRowHeads + a.kvHeadOffset + kvh) * hd }
          : { fresh: false, o: streamingCacheIndex(a.streamTable, a, a.tokenSeq[t], j, kvh) },
      );
      const get = (f: Float32Array, c: Uint16Array) => (i: number, d: number) =>
        src[i].fresh ? f[src[i].o + d] : f16ToF32(c[src[i].o + d]);
      softmaxAttend(
        a.q,
        qo,
        hd,
        a.scale,
        a.softcap ?? 0,
        keys.length,
        get(a.kFresh, a.kCache),
        get(a.vFresh, a.vCache),
        out,
      );
    }
  }
  return out;
}

/** Returns copies of the caches with heads [kvHeadOffset, +numKvHeads) of each token written at slots[t] (skip 0xFFFFFFFF). */
export function kvWriteStreamingRef(
  k: Float32Array,
  v: Float32Array,
  kCache: Uint16Array,
  vCache: Uint16Array,
  slots: Uint32Array,
  s: { T: number; numKvHeads: number; headDim: number; kvHeadOffset: number; kvRowHeads: number },
): { kCache: Uint16Array; vCache: Uint16Array } {
  const kc = kCache.slice();
  const vc = vCache.slice();
  const numSlots = kc.length / (s.numKvHeads * s.headDim);
  for (let t = 0; t < s.T; t++) {
    if (slots[t] >= numSlots) continue;
    for (let h = 0; h < s.numKvHeads; h++) {
      const dst = (slots[t] * s.numKvHeads + h) * s.headDim;
      const src = (t * s.kvRowHeads + s.kvHeadOffset + h) * s.headDim;
      for (let d = 0; d < s.headDim; d++) {
        kc[dst + d] = f32ToF16(k[src + d]);
        vc[dst + d] = f32ToF16(v[src + d]);
      }
    }
  }
  return { kCache: kc, vCache: vc };
}

/**
 * Dense masked reference: query (numHeads, headDim) at `pos` over a sequence's full history keys/values
 * (positions 0..pos, each (numKvHeads, headDim) f32) with the sink + local mask. Returns (numHeads, headDim).
 */
export function denseMaskedRef(
  q: Float32Array,
  history: { k: Float32Array[]; v: Float32Array[] },
  pos: number,
  s: {
    numHeads: number;
    numKvHeads: number;
    headDim: number;
    sinkTokens: number;
    localTokens: number;
    scale: number;
    window?: number;
    softcap?: number;
  },
): Float32Array {
  const out = new Float32Array(s.numHeads * s.headDim);
  const keys = streamingKeys(pos, s.sinkTokens, s.localTokens, s.window);
  const group = s.numHeads / s.numKvHeads;
  for (let h = 0; h < s.numHeads; h++) {
    const kvh = Math.floor(h / group);
    const o = kvh * s.headDim;
    softmaxAttend(
      q,
      h * s.headDim,
      s.headDim,
      s.scale,
      s.softcap ?? 0,
      keys.length,
      (i, d) => history.k[keys[i]][o + d],
      (i, d) => history.v[keys[i]][o + d],
      out,
    );
  }
  return out;
}
