/** kvcache/: page bookkeeping in plain TypeScript (no WebGPU). The engine maps block tables onto GPU buffers. */
export { chainHash, pageHashes, ROOT_HASH } from './block-hash.js';
export {
  bytesPerPage,
  headSplit,
  type KvShape,
  kvBytesPerSequence,
  kvBytesPerToken,
  type PoolSizing,
  pagesForBudget,
  type StreamingShape,
  streamingBytesPerPage,
  streamingBytesPerSequence,
} from './bytes.js';
export {
  KV_DEFAULTS,
  type KvCacheConfig,
  type ResolvedKvCacheConfig,
  type ResolvedStreamingConfig,
  resolveKvCacheConfig,
  resolveStreamingConfig,
  type StreamingPoolConfig,
  streamingPagesPerSequence,
} from './config.js';
export { KvCacheManager, type KvCacheSnapshot } from './manager.js';
export { StreamingPool, type StreamingSlot, type StreamingTable } from './streaming.js';
export type { AllocResult, AppendResult, KvCacheStats, SeqId } from './types.js';
