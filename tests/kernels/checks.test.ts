/**
 * The shape checks every kernel wrapper uses (shaders/lib/checks.ts, shaders/lib/paged.ts), on stand-in bindings:
 * binding sizes (whole buffers and ranges), head shapes, head ranges, the paged cache, and the messages that name the
 * kernel and the binding at fault. No GPU.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  bindingBytes,
  headRange,
  kvHeadRange,
  MAX_HEAD_DIM,
  requireBytes,
  requireHeads,
  requireInts,
  requireU32,
} from '../../shaders/lib/checks.js';
import { cachePageBytes, requireCache } from '../../shaders/lib/paged.js';
import type { Binding } from '../../shaders/runtime.js';

/** A stand-in GPUBuffer of `size` bytes (only what the checks read). */
const buffer = (size: number) => ({ size, mapState: 'unmapped' }) as unknown as GPUBuffer;

test('bindingBytes: a whole buffer, a range with a size, a range to the end of its buffer', () => {
  const b = buffer(1024);
  assert.equal(bindingBytes(b), 1024);
  assert.equal(bindingBytes({ buffer: b, offset: 256, size: 100 }), 100);
  assert.equal(bindingBytes({ buffer: b, offset: 256 }), 768);
  assert.equal(bindingBytes({ buffer: b }), 1024);
});

test('requireBytes names the kernel, the binding, what it holds and needs, and the shape', () => {
  const b: Binding = { buffer: buffer(1024), offset: 512 };
  requireBytes('attention', 'q', b, 512, '(2, 4, 16) f32');
  assert.throws(
    () => requireBytes('attention', 'q', b, 513, '(2, 4, 16) f32'),
    /^SiftError: attention: binding q holds 512 bytes, needs 513 for \(2, 4, 16\) f32$/,
  );
  assert.throws(() => requireBytes('k', 'x', buffer(4), 8), /^SiftError: k: binding x holds 4 bytes, needs 8$/);
});

test('integer, u32 and head-shape checks', () => {
  requireInts('k', { a: 0, b: 3 }, { b: 3 });
  assert.throws(() => requireInts('k', { a: 1.5 }), /k: a=1.5 must be an integer >= 0/);
  assert.throws(() => requireInts('k', { b: 2 }, { b: 3 }), /k: b=2 must be an integer >= 3/);
  requireU32('k', 'items', 2 ** 32 - 1);
  assert.throws(() => requireU32('k', 'items', 2 ** 32), /k: items = 4294967296 exceeds u32 indexing/);
  requireHeads('k', { numHeads: 8, numKvHeads: 2, headDim: MAX_HEAD_DIM });
  assert.throws(
    () => requireHeads('k', { numHeads: 6, numKvHeads: 4, headDim: 64 }),
    /numHeads 6 is not a multiple of numKvHeads 4/,
  );
  assert.throws(() => requireHeads('k', { numHeads: 4, numKvHeads: 4, headDim: 7 }), /headDim 7 must be even/);
  assert.throws(
    () => requireHeads('k', { numHeads: 4, numKvHeads: 4, headDim: 258 }),
    /headDim 258 must be even .* \[2, 256\]/,
  );
  assert.throws(
    () => requireHeads('k', { numHeads: 4, numKvHeads: 0, headDim: 8 }),
    /numKvHeads=0 must be an integer >= 1/,
  );
  assert.throws(() => requireHeads('k', { numHeads: 128, numKvHeads: 128, headDim: 8 }, 64), /numKvHeads 128 > 64/);
});

test('head ranges: defaults, fits, and rows too narrow', () => {
  assert.deepEqual(headRange('k', 4), { qHeadOffset: 0, qRowHeads: 4 });
  assert.deepEqual(headRange('k', 4, 2), { qHeadOffset: 2, qRowHeads: 6 });
  assert.throws(() => headRange('k', 4, 2, 5), /k: head range \[2, 6\) does not fit rows of 5 heads/);
  assert.deepEqual(kvHeadRange('k', 2, 8, 1, 4), { kvHeadOffset: 1, kvRowHeads: 4, rowPairs: 16, firstPair: 4 });
  assert.throws(() => kvHeadRange('k', 2, 8, 3, 4), /k: KV head range \[3, 5\) does not fit rows of 4 heads/);
});

test('requireCache: whole pages, at least one, K and V alike', () => {
  const s = { numKvHeads: 2, pageSize: 16, headDim: 8 };
  const page = cachePageBytes(16, 2, 8); // 512 bytes
  assert.equal(requireCache('k', s, buffer(3 * page + 16), buffer(3 * page)), 3);
  assert.throws(() => requireCache('k', s, buffer(page - 4)), /k: binding kCache holds 508 bytes: not one page/);
  assert.throws(() => requireCache('k', s, buffer(3 * page), buffer(2 * page)), /kCache holds 3 and vCache 2 pages/);
  assert.throws(() => requireCache('k', { ...s, headDim: 9 }, buffer(4096)), /headDim 9 must be even/);
});
