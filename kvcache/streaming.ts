/**
 * Streaming-head pool (LServe's second pool, DuoAttention / StreamingLLM heads): each sequence holds a fixed set of
 * pages, `sinkPages = ceil(sink/pageSize)` for positions [0, sink) and a ring of `ringPages = ceil(local/pageSize) + 1`
 * pages recycled as the sequence grows, so a sequence's memory is constant at any length.
 *
 * Position p >= sink lives in ring page ((p - sink) / pageSize) mod ringPages, at offset (p - sink) mod pageSize.
 * The window is PAGE-GRANULAR: with n positions reserved, the resident positions are
 *   sink:   [0, min(sink, n))
 *   window: [windowStart, n), windowStart = sink + max(0, c - ringPages + 1) * pageSize, c = floor((n - 1 - sink) / pageSize)
 * i.e. the ring page being filled plus the ringPages - 1 full pages before it: at least
 * (ringPages - 1) * pageSize + 1 >= local + 1 newest positions, so the last `local` positions (and the newest) are
 * always resident and the newest token never overwrites one of them. Attention kernels mask to exactly the last
 * `local` positions; the extra resident tokens are just not read.
 */
import { SiftError } from '../config/errors.js';
import { type ResolvedStreamingConfig, streamingPagesPerSequence } from './config.js';
import type { SeqId } from './types.js';

/** Where one position of a streaming sequence lives. */
export interface StreamingSlot {
  /** Physical page in the streaming pool. */
  page: number;
  /** Token slot inside the page, in [0, pageSize). */
  offset: number;
  /** Flat slot index page * pageSize + offset (vLLM's slot mapping). */
  slot: number;
}

/** One streaming sequence's pages and resident positions. */
export interface StreamingTable {
  /** Sink pages: sinkPages[i] holds positions [i*pageSize, (i+1)*pageSize) clipped to [0, sink). */
  sinkPages: readonly number[];
  /** Ring pages: ringPages[j] holds positions sink + k*pageSize + [0, pageSize) for every k with k mod ringPages == j. */
  ringPages: readonly number[];
  /** Positions reserved so far (n). */
  numTokens: number;
  /** Resident sink positions are [0, sinkEnd). */
  sinkEnd: number;
  /**
   * Resident window positions are [windowStart, numTokens) (page-granular, at least the last `local` beyond the
   * sink; empty while numTokens <= sink).
   */
  windowStart: number;
}

interface StreamingSeq {
  pages: number[]; // sink pages then ring pages
  numTokens: number;
}

export class StreamingPool {
  readonly config: ResolvedStreamingConfig;
  readonly pageSize: number;
  readonly sinkTokens: number;
  readonly localTokens: number;
  /** ceil(sink / pageSize). */
  readonly numSinkPages: number;
  /** ceil(local / pageSize) + 1. */
  readonly numRingPages: number;
  /** numSinkPages + numRingPages: pages every sequence holds, from allocation to free. */
  readonly pagesPerSequence: number;
  private readonly freeList: number[] = [];
  private readonly seqs = new Map<SeqId, StreamingSeq>();

  constructor(config: ResolvedStreamingConfig) {
    this.config = config;
    this.pageSize = config.pageSize;
    this.sinkTokens = config.sinkTokens;
    this.localTokens = config.localTokens;
    this.numSinkPages = Math.ceil(config.sinkTokens / config.pageSize);
    this.numRingPages = Math.ceil(config.localTokens / config.pageSize) + 1;
    this.pagesPerSequence = streamingPagesPerSequence(config.sinkTokens, config.localTokens, config.pageSize);
    for (let p = config.numPages - 1; p >= 0; p--) this.freeList.push(p);
  }

  get numFree(): number {
    return this.freeList.length;
  }
  get numUsed(): number {
    return this.config.numPages - this.freeList.length;
  }
  /** Whether one more sequence fits. */
  canAllocate(): boolean {
    return this.freeList.length >= this.pagesPerSequence;
  }
  has(seqId: SeqId): boolean {
    return this.seqs.has(seqId);
  }

  /** Gives `seqId` its fixed pages with `numTokens` positions reserved; false (nothing changed) if none are free. */
  allocate(seqId: SeqId, numTokens: number): boolean {
    if (this.seqs.has(seqId)) throw new SiftError('INTERNAL', `kvcache: streaming sequence ${seqId} already exists`);
    if (!this.canAllocate()) return false;
    const pages: number[] = [];
    for (let i = 0; i < this.pagesPerSequence; i++) pages.push(this.freeList.pop()!);
    this.seqs.set(seqId, { pages, numTokens });
    return true;
  }

  /** Reserves `n` more positions; never needs a page (the ring recycles its oldest page). */
  reserve(seqId: SeqId, n: number): void {
    this.get(seqId).numTokens += n;
  }

  free(seqId: SeqId): void {
    const seq = this.get(seqId);
    for (let i = seq.pages.length - 1; i >= 0; i--) this.freeList.push(seq.pages[i]);
    this.seqs.delete(seqId);
  }

  table(seqId: SeqId): StreamingTable {
    const seq = this.get(seqId);
    return {
      sinkPages: seq.pages.slice(0, this.numSinkPages),
      ringPages: seq.pages.slice(this.numSinkPages),
      numTokens: seq.numTokens,
      sinkEnd: Math.min(this.sinkTokens, seq.numTokens),
      windowStart: this.windowStart(seq.numTokens),
    };
  }

  /**
   * The slot of reserved position `pos`, or null if the ring recycles it by the time positions [0, upTo) are written
   * (default: every reserved position). A prompt is reserved whole at admission but written in chunks, so the
   * engine passes the end of the chunk being written: it writes the positions that come back non-null, and a chunk
   * longer than the ring never overwrites a slot with an earlier position. Throws INTERNAL for a position not
   * reserved or not below `upTo`.
   */
  slotFor(seqId: SeqId, pos: number, upTo?: number): StreamingSlot | null {
    const seq = this.get(seqId);
    const end = upTo ?? seq.numTokens;
    if (!Number.isInteger(end) || end > seq.numTokens) {
      throw new SiftError(
        'INTERNAL',
        `kvcache: streaming chunk end ${end} past the ${seq.numTokens} reserved of ${seqId}`,
      );
    }
    if (!Number.isInteger(pos) || pos < 0 || pos >= end) {
      throw new SiftError('INTERNAL', `kvcache: streaming position ${pos} outside [0, ${end}) of ${seqId}`);
    }
    let page: number;
    let offset: number;
    if (pos < this.sinkTokens) {
      page = seq.pages[Math.floor(pos / this.pageSize)];
      offset = pos % this.pageSize;
    } else {
      if (pos < this.windowStart(end)) return null;
      const r = pos - this.sinkTokens;
      page = seq.pages[this.numSinkPages + (Math.floor(r / this.pageSize) % this.numRingPages)];
      offset = r % this.pageSize;
    }
    return { page, offset, slot: page * this.pageSize + offset };
  }

  /** First resident window position for `n` reserved positions (see the file comment). */
  private windowStart(n: number): number {
    if (n <= this.sinkTokens) return n; // no window yet: [n, n) is empty
    const c = Math.floor((n - 1 - this.sinkTokens) / this.pageSize);
    return this.sinkTokens + Math.max(0, c - this.numRingPages + 1) * this.pageSize;
  }

  private get(seqId: SeqId): StreamingSeq {
    const seq = this.seqs.get(seqId);
    if (!seq) throw new SiftError('INTERNAL', `kvcache: unknown or freed streaming sequence ${seqId}`);
    return seq;
  }
}
