/**
 * Uniforms declared by name (shaders/lib/params.ts): the WGSL `struct Params` parser, the uniform layout rules, value
 * checks, and the check of a declaration against its shader's struct (names, order, count, types) at pipeline
 * creation and at dispatch, on real kernels (attention_lanes.wgsl, sparse_decode_reduce.wgsl).
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { defineParams, parseParamsStruct } from '../../shaders/lib/params.js';
import { loadWgsl, UniformArena } from '../../shaders/runtime.js';
import { testGpu } from '../helpers/gpu.js';

/** The declaration attention.ts packs attention_common.wgsl's struct Params with. */
const ATTENTION = {
  tokens: 'u32',
  nHeads: 'u32',
  nKvHeads: 'u32',
  group: 'u32',
  pageSize: 'u32',
  maxPagesPerSeq: 'u32',
  scale: 'f32',
  qHeadOffset: 'u32',
  qRowHeads: 'u32',
  firstToken: 'u32',
  window: 'u32',
  softcap: 'f32',
} as const;

test('parseParamsStruct reads names and canonical types, ignoring comments', () => {
  const code = `
    // struct Params { fake: u32 }
    struct Other { a: u32 }
    struct Params {
      n: u32,            // count, with a comma, in a comment
      /* block */ scale : f32,
      v: vec4u,
      modes: array< vec4<u32> ,16 >,
    }`;
  assert.deepEqual(parseParamsStruct(code), [
    ['n', 'u32'],
    ['scale', 'f32'],
    ['v', 'vec4<u32>'],
    ['modes', 'array<vec4<u32>, 16>'],
  ]);
  assert.equal(parseParamsStruct('struct P { a: u32 }'), undefined);
  assert.throws(() => parseParamsStruct('struct Params { @align(16) a: u32 }'), /attributes are not supported/);
});

test('pack lays out scalars, vectors and vec4 arrays as WGSL uniforms do, and checks every value', () => {
  const spec = defineParams('k', { a: 'u32', b: 'f32', c: 'i32', v: 'vec2<u32>', m: 'array<vec4<u32>, 2>' });
  // a@0 b@4 c@8 v@16 (vec2 aligns to 8) m@32 (arrays to 16), size 64
  assert.equal(spec.bytes, 64);
  const bytes = spec.pack({ a: 7, b: 0.5, c: -3, v: [1, 2], m: [1, 2, 3, 4, 5, 6, 7, 8] });
  const dv = new DataView(bytes.buffer);
  assert.equal(dv.getUint32(0, true), 7);
  assert.equal(dv.getFloat32(4, true), 0.5);
  assert.equal(dv.getInt32(8, true), -3);
  assert.equal(dv.getUint32(12, true), 0); // gap
  assert.deepEqual([dv.getUint32(16, true), dv.getUint32(20, true)], [1, 2]);
  assert.deepEqual(
    Array.from({ length: 8 }, (_, i) => dv.getUint32(32 + 4 * i, true)),
    [1, 2, 3, 4, 5, 6, 7, 8],
  );
  assert.equal(defineParams('k', { n: 'u32' }).bytes, 16); // padded to 16
  const ok = { a: 1, b: 1, c: 1, v: [0, 0], m: new Array(8).fill(0) };
  const bad: [Partial<typeof ok> & Record<string, unknown>, RegExp][] = [
    [{ a: -1 }, /k: uniform a: -1 is not a u32 \(u32\)/],
    [{ a: 1.5 }, /uniform a: 1.5 is not a u32/],
    [{ a: 2 ** 32 }, /uniform a: 4294967296 is not a u32/],
    [{ b: Number.NaN }, /uniform b: NaN is not a f32/],
    [{ b: Number.POSITIVE_INFINITY }, /uniform b: Infinity is not a f32/],
    [{ c: 2 ** 31 }, /uniform c: 2147483648 is not a i32/],
    [{ v: [1] }, /uniform v: 1 values is not 2 u32 values \(vec2<u32>\)/],
    [{ m: [1, 2, 3] }, /uniform m: 3 values is not 8 u32 values \(array<vec4<u32>, 2>\)/],
    [{ a: undefined }, /uniform a: undefined is not a u32/],
  ];
  for (const [change, re] of bad) {
    assert.throws(() => spec.pack({ ...ok, ...change } as typeof ok), re);
  }
  assert.throws(() => defineParams('k', { _pad: 'u32' }), /padding is WGSL's alone/);
  assert.throws(() => defineParams('k', { a: 'array<u32, 4>' as 'u32' }), /16-byte element stride/);
});

test('a declaration is checked against struct Params: names, order, count, types, offsets', () => {
  const code = loadWgsl('attention_lanes', { HD: 64, LANES: 8 });
  defineParams('attention', ATTENTION).check('attention_lanes', code);
  const { softcap: _softcap, ...missing } = ATTENTION;
  const { tokens, nHeads, nKvHeads, group, ...rest } = ATTENTION;
  const swapped = { tokens, nHeads, group, nKvHeads, ...rest };
  const cases: [Record<string, string>, RegExp][] = [
    [missing, /field 11 \(softcap: f32\) is not declared in TS \(12 fields vs 11\)/],
    [{ ...ATTENTION, extra: 'u32' }, /field 12 \(extra: u32\) is not in the WGSL struct \(13 fields vs 12\)/],
    [swapped, /field 2 is group in TS but nKvHeads in WGSL/],
    [{ ...ATTENTION, scale: 'u32' }, /field scale is u32 in TS but f32 in WGSL/],
    [{ ...ATTENTION, pageSize: 'i32' }, /field pageSize is i32 in TS but u32 in WGSL/],
  ];
  for (const [fields, re] of cases) {
    const spec = defineParams('attention', fields as Record<string, 'u32'>);
    assert.throws(
      () => spec.check('attention_lanes', code),
      (e: Error) => {
        assert.match(e.message, /^attention: uniforms do not match struct Params of attention_lanes\.wgsl: /);
        assert.match(e.message, re);
        assert.match(
          e.message,
          /\n {2}TS: {3}tokens: u32, .*\n {2}WGSL: tokens: u32, nHeads: u32, nKvHeads: u32, group: u32,/,
        );
        return true;
      },
    );
  }
  // Padding: trailing `_` fields need no declaration; one inside the struct moves the fields after it.
  const padded = 'struct Params { a: u32, _p0: u32, b: u32, _p1: u32 }';
  assert.throws(
    () => defineParams('k', { a: 'u32', b: 'u32' }).check('k', padded),
    /field b sits at byte 4 in TS but 8/,
  );
  defineParams('k', { a: 'u32' }).check('k', 'struct Params { a: u32, _p0: u32, _p1: u32, _p2: u32 }');
  assert.throws(() => defineParams('k', { a: 'u32' }).check('k', 'fn main() {}'), /k\.wgsl declares no struct Params/);
});

test('pipelines check their uniform declaration at creation, and dispatches the slot it packed', async () => {
  const gpu = await testGpu();
  const defines = { HD: 64, LANES: 8 };
  const { nKvHeads, group, ...rest } = ATTENTION;
  const wrong = defineParams('attention', { ...rest, group, nKvHeads } as typeof ATTENTION);
  assert.throws(() => gpu.pipeline('attention_lanes', defines, {}, wrong), /uniforms do not match struct Params/);
  assert.throws(
    () => gpu.pipeline('attention_lanes', defines),
    /attention_lanes\.wgsl declares struct Params: its wrapper must pass the declaration/,
  );
  assert.throws(
    () => gpu.pipeline('attention_lanes', defines, { WG: 64 }, wrong),
    /pipeline constant WG names no override/,
  );
  const right = defineParams('attention', ATTENTION);
  const pipe = gpu.pipeline('attention_lanes', defines, {}, right);
  assert.throws(() => gpu.pipeline('attention_lanes', defines, {}, wrong), /uniforms do not match/); // cached: still checked
  // A dispatch binds the uniform slot its pipeline's declaration packed, and no other.
  const reduce = defineParams('sparse_decode_reduce', {
    count: 'u32',
    headDim: 'u32',
    numSplits: 'u32',
    nHeads: 'u32',
    qRowHeads: 'u32',
    qHeadOffset: 'u32',
  });
  const arena = new UniformArena(gpu);
  const buf = gpu.createBuffer('x', 1024);
  const other = arena.params(reduce, { count: 0, headDim: 2, numSplits: 1, nHeads: 1, qRowHeads: 1, qHeadOffset: 0 });
  const raw = arena.alloc(new Uint32Array(12));
  const pass = gpu.device.createCommandEncoder().beginComputePass();
  const bindings = [buf, buf, buf, buf, buf, buf, buf];
  assert.throws(
    () => gpu.dispatch(pass, pipe, [...bindings, other], 1),
    /packed by a declaration checked against its struct Params \(got sparse_decode_reduce's\)/,
  );
  assert.throws(() => gpu.dispatch(pass, pipe, [...bindings, raw], 1), /\(got none\)/);
  const values = {
    tokens: 0,
    nHeads: 1,
    nKvHeads: 1,
    group: 1,
    pageSize: 16,
    maxPagesPerSeq: 1,
    scale: 1,
    qHeadOffset: 0,
    qRowHeads: 1,
    firstToken: 0,
    window: 0,
    softcap: 0,
  };
  gpu.dispatch(pass, pipe, [...bindings, arena.params(right, values)], 0); // accepted (0 workgroups: nothing runs)
  pass.end();
  arena.destroy();
});
