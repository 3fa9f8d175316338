/**
 * The prefill chunk chosen from memory (model/chunk-size.ts): each bound of the auto rule wins where it should, a
 * chunk is a multiple of 64 unless a limit forces fewer, the flag overrides, and the startup line says which.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { ModelConfig } from '../../checkpoint/config.js';
import { AUTO_MAX_CHUNK, activationBytesPerToken, chunkLine, prefillChunk } from '../../model/chunk-size.js';

const shape = (hidden: number, heads: number, kvHeads: number, headDim: number, inter: number) =>
  ({
    hiddenSize: hidden,
    numHeads: heads,
    numKvHeads: kvHeads,
    headDim,
    intermediateSize: inter,
  }) as ModelConfig;
const STORIES = shape(288, 6, 6, 48, 768);
const LLAMA3_8B = shape(4096, 32, 8, 128, 14336);
const LAVAPIPE = { maxStorageBufferBindingSize: 128 * 2 ** 20, maxBufferSize: 2 ** 31 };
const MIB = 2 ** 20;

test('activation bytes per token: the forward pass buffers of one token', () => {
  // 3 hidden + 2 q + 2 kv + 3 intermediate f32, 3 u32
  assert.equal(activationBytesPerToken(STORIES), 4 * (3 * 288 + 2 * 288 + 2 * 288 + 3 * 768 + 3));
});

test('auto: the cap for a small model, the activation budget for a large one, multiples of 64', () => {
  const s = prefillChunk(STORIES, LAVAPIPE, { maxBatchTokens: null, activationMib: 256, maxContext: 32768 });
  assert.deepEqual([s.tokens, s.auto, s.limit], [AUTO_MAX_CHUNK, true, 'cap']);
  const l = prefillChunk(LLAMA3_8B, LAVAPIPE, { maxBatchTokens: null, activationMib: 256, maxContext: 131072 });
  const most = Math.floor((256 * MIB) / activationBytesPerToken(LLAMA3_8B));
  assert.equal(l.limit, 'activation budget');
  assert.equal(l.tokens, most - (most % 64));
  assert.ok(l.tokens % 64 === 0 && l.activationBytes <= 256 * MIB);
  // a bigger budget and 64 MiB bindings: the binding bounds it (T x 14336 f32 <= 64 MiB)
  const small = { ...LAVAPIPE, maxStorageBufferBindingSize: 64 * MIB };
  const b = prefillChunk(LLAMA3_8B, small, { maxBatchTokens: null, activationMib: 4096, maxContext: 131072 });
  assert.equal(b.limit, 'binding');
  assert.ok(b.tokens * 14336 * 4 <= 64 * MIB && (b.tokens + 64) * 14336 * 4 > 64 * MIB);
  // a short context: no chunk past it (rounded up to 64)
  const c = prefillChunk(STORIES, LAVAPIPE, { maxBatchTokens: null, activationMib: 256, maxContext: 200 });
  assert.deepEqual([c.tokens, c.limit], [256, 'context']);
  // a budget below 64 tokens keeps what fits; none fitting is an error that names the flag
  const tiny = prefillChunk(LLAMA3_8B, LAVAPIPE, { maxBatchTokens: null, activationMib: 5, maxContext: 131072 });
  assert.equal(tiny.tokens, Math.floor((5 * MIB) / activationBytesPerToken(LLAMA3_8B)));
  assert.ok(tiny.tokens > 0 && tiny.tokens < 64);
  const huge = shape(1 << 20, 8, 8, 128, 1 << 22);
  assert.throws(
    () => prefillChunk(huge, LAVAPIPE, { maxBatchTokens: null, activationMib: 1, maxContext: 4096 }),
    /--activation-mib 1/,
  );
});

test('--max-batch-tokens overrides; the startup line says which rule chose', () => {
  const f = prefillChunk(LLAMA3_8B, LAVAPIPE, { maxBatchTokens: 100, activationMib: 1, maxContext: 131072 });
  assert.deepEqual([f.tokens, f.auto], [100, false]);
  assert.match(chunkLine(f, 1), /^prefill chunk: 100 tokens \(--max-batch-tokens\)/);
  const a = prefillChunk(STORIES, LAVAPIPE, { maxBatchTokens: null, activationMib: 256, maxContext: 32768 });
  assert.match(
    chunkLine(a, 256),
    /2048 tokens \(auto, bounded by the cap\).*of --activation-mib 256; --max-batch-tokens/,
  );
});
