/** KV byte accounting and pool sizing. */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isSiftError } from '../../config/errors.js';
import {
  bytesPerPage,
  headSplit,
  kvBytesPerSequence,
  kvBytesPerToken,
  pagesForBudget,
  streamingBytesPerSequence,
} from '../../kvcache/index.js';

const stories15M = { numLayers: 6, numKvHeads: 6, headDim: 48, bytesPerElement: 2 };
const llama3_8b = { numLayers: 32, numKvHeads: 8, headDim: 128, bytesPerElement: 2 };

test('bytes per token: stories15M and a Llama-3-8B shape, with and without streaming heads', () => {
  assert.equal(kvBytesPerToken(stories15M), 6 * 2 * 6 * 48 * 2);
  assert.equal(kvBytesPerToken(stories15M), 6912);
  assert.equal(kvBytesPerToken(llama3_8b), 131072);
  assert.equal(kvBytesPerToken({ ...stories15M, bytesPerElement: 4 }), 13824);
  // Half the (layer, KV head) pairs stream: the paged pool holds the other half per token ...
  assert.deepEqual(headSplit({ ...llama3_8b, streamingFraction: 0.5 }), { streaming: 128, retrieval: 128 });
  assert.equal(kvBytesPerToken({ ...llama3_8b, streamingFraction: 0.5 }), 65536);
  assert.equal(kvBytesPerToken({ ...stories15M, streamingFraction: 0.5 }), 3456);
  // ... and each sequence holds a fixed ring: (2 sink + 4 local + 1) pages of 64 tokens of the streaming half.
  const ring = { sinkTokens: 128, localTokens: 256, pageSize: 64 };
  assert.equal(streamingBytesPerSequence({ ...llama3_8b, streamingFraction: 0.5 }, ring), 7 * 64 * 65536);
  assert.equal(streamingBytesPerSequence(llama3_8b, ring), 0);
  // A 32k-token sequence: 131072 * 32768 dense vs 65536 * 32768 + the ring with streaming heads.
  assert.equal(kvBytesPerSequence(llama3_8b, 32768, { pageSize: 64 }), 4 * 2 ** 30);
  assert.equal(
    kvBytesPerSequence({ ...llama3_8b, streamingFraction: 0.5 }, 32768, {
      pageSize: 64,
      streaming: { sinkTokens: 128, localTokens: 256 },
    }),
    2 * 2 ** 30 + 7 * 64 * 65536,
  );
  for (const bad of [
    { ...stories15M, numLayers: 0 },
    { ...stories15M, streamingFraction: 1.5 },
  ]) {
    assert.throws(
      () => kvBytesPerToken(bad),
      (e: unknown) => isSiftError(e, 'CONFIG_INVALID'),
    );
  }
});

test('pages for a byte budget, with digests and streaming rings', () => {
  // stories15M, pages of 64: 442368 bytes of K/V; + digests: 4 logical pages * 36 heads * 2 * 48 * 2 bytes.
  assert.equal(bytesPerPage(stories15M, 64), 442368);
  assert.equal(bytesPerPage(stories15M, 64, 16), 442368 + 4 * 36 * 2 * 48 * 2);
  const mib256 = 256 * 2 ** 20;
  const plain = pagesForBudget(mib256, stories15M, { pageSize: 64 });
  assert.deepEqual(plain, {
    numPages: Math.floor(mib256 / 442368),
    streamingPages: 0,
    bytesPerPage: 442368,
    streamingBytesPerPage: 0,
  });
  const half = { ...llama3_8b, streamingFraction: 0.5 };
  const gib8 = 8 * 2 ** 30;
  const s = pagesForBudget(gib8, half, {
    pageSize: 64,
    streaming: { sinkTokens: 128, localTokens: 256, maxSequences: 16 },
  });
  assert.equal(s.streamingPages, 16 * 7);
  assert.equal(s.streamingBytesPerPage, 64 * 65536);
  assert.equal(s.numPages, Math.floor((gib8 - 16 * 7 * 64 * 65536) / (64 * 65536)));
  assert.ok(s.numPages * s.bytesPerPage + s.streamingPages * s.streamingBytesPerPage <= gib8);
  assert.throws(
    () => pagesForBudget(1000, stories15M, { pageSize: 64 }),
    (e: unknown) => isSiftError(e, 'CONFIG_INVALID'),
  );
});
