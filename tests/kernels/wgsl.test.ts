/**
 * The WGSL preprocessor (shaders/lib/wgsl.ts) on in-memory sources: defines, //#if / //#else nesting, includes
 * (once each, from sub-folders), override constants, and every error case. No GPU. Also checks that every shader in
 * shaders/ preprocesses with the defines its wrapper gives and is named by a kernel test.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { projectRoot } from '../../config/paths.js';
import { slabBinding } from '../../shaders/lib/slabs.js';
import { checkOverrides, overrideNames, preprocessWgsl, readShaderFile } from '../../shaders/lib/wgsl.js';

/** A reader over in-memory files. */
const files =
  (f: Record<string, string>) =>
  (name: string): string | undefined =>
    f[name];

test('defines: $NAME is replaced on kept lines, F16 adds enable f16', () => {
  const read = files({ k: 'const HD: u32 = $HD;\nconst LANES: u32 = $LANES; // $HD lanes' });
  assert.equal(
    preprocessWgsl('k', { HD: 64, LANES: 8 }, read),
    'const HD: u32 = 64;\nconst LANES: u32 = 8; // 64 lanes',
  );
  assert.equal(preprocessWgsl('k', { HD: 2, LANES: 1, F16: true }, read).split('\n')[0], 'enable f16;');
});

test('//#if, //#if !, //#else and nesting keep exactly the chosen lines', () => {
  const src = [
    'a',
    '//#if X',
    'x',
    '//#if !Y',
    'x-not-y',
    '//#else',
    'x-y',
    '//#endif',
    '//#else',
    'not-x',
    '//#endif',
    'b',
  ];
  const read = files({ k: src.join('\n') });
  const run = (d: Record<string, boolean>) => preprocessWgsl('k', d, read).split('\n');
  assert.deepEqual(run({ X: true }), ['a', 'x', 'x-not-y', 'b']);
  assert.deepEqual(run({ X: true, Y: true }), ['a', 'x', 'x-y', 'b']);
  assert.deepEqual(run({}), ['a', 'not-x', 'b']);
  assert.deepEqual(run({ Y: true }), ['a', 'not-x', 'b']);
  // A define in a dropped branch is never needed: $Z stays undefined without error there.
  assert.deepEqual(preprocessWgsl('k', {}, files({ k: '//#if Q\n$Z\n//#endif\nok' })).split('\n'), ['ok']);
});

test('includes: inlined in place, each file once, sub-folders, only in kept branches', () => {
  const read = files({
    main: '//#include lib/a\n//#include lib/b\nmain\n//#if X\n//#include lib/c\n//#endif',
    'lib/a': '//#include lib/b\na',
    'lib/b': 'b $N',
    'lib/c': 'c',
  });
  assert.deepEqual(preprocessWgsl('main', { N: 1 }, read).split('\n'), ['b 1', 'a', 'main']);
  assert.deepEqual(preprocessWgsl('main', { N: 1, X: true }, read).split('\n'), ['b 1', 'a', 'main', 'c']);
  // An include never read (in a dropped branch) may be missing.
  assert.equal(preprocessWgsl('k', {}, files({ k: '//#if X\n//#include nope\n//#endif\nok' })), 'ok');
});

test('//#slabs: one slab is plain indexing; several get their bindings and a load / store over the whole pool', () => {
  const decl = '@group(0) @binding(2) var<storage, read_write> kCache: array<u32>; // (pages, ...) f16 pairs';
  const read = files({ k: `${decl}\n//#slabs kCache\nbody` });
  assert.deepEqual(preprocessWgsl('k', {}, read).split('\n'), [
    decl,
    'fn kCacheLoad(i: u32) -> u32 { return kCache[i]; }',
    'fn kCacheStore(i: u32, v: u32) { kCache[i] = v; }',
    'body',
  ]);
  const code = preprocessWgsl('k', { SLABS_kCache: 3, SLAB_BYTES_kCache: 64 }, read);
  // slabs 1 and 2 at slabBinding(2, s), same access and type; 16 u32 per slab
  assert.ok(code.includes(`@group(0) @binding(${slabBinding(2, 1)}) var<storage, read_write> kCache_1: array<u32>;`));
  assert.ok(code.includes(`@group(0) @binding(${slabBinding(2, 2)}) var<storage, read_write> kCache_2: array<u32>;`));
  assert.ok(!code.includes('kCache_3'));
  assert.match(code, /fn kCacheLoad\(i: u32\) -> u32 \{\n {2}let s = i \/ 16u;\n {2}let o = i - s \* 16u;/);
  assert.match(code, /case 2u: \{ r = kCache_2\[o\]; \}/);
  assert.match(code, /default: \{ kCache\[o\] = v; \}/);
  // a read-only pool of vec4: no store; elements of 16 bytes
  const ro = files({ k: '@group(0) @binding(1) var<storage, read> digests: array<vec4<u32>>;\n//#slabs digests' });
  const c2 = preprocessWgsl('k', { SLABS_digests: 2, SLAB_BYTES_digests: 160 }, ro);
  assert.match(c2, /fn digestsLoad\(i: u32\) -> vec4<u32> \{\n {2}let s = i \/ 10u;/);
  assert.ok(!c2.includes('digestsStore'));
  // errors: no declaration before it, slab bytes not whole elements
  assert.throws(
    () => preprocessWgsl('k', {}, files({ k: 'x\n//#slabs kCache' })),
    /k\.wgsl:2: \/\/#slabs kCache must follow/,
  );
  assert.throws(
    () => preprocessWgsl('k', { SLABS_digests: 2, SLAB_BYTES_digests: 24 }, ro),
    /SLAB_BYTES_digests = 24 is not a whole number of vec4<u32>/,
  );
});

test('preprocessor errors name the file and line', () => {
  const cases: [Record<string, string>, RegExp][] = [
    [{ k: 'a\n//#include lib/missing' }, /k\.wgsl:2: no shader source lib\/missing\.wgsl/],
    [{ k: 'x = $HD;' }, /k\.wgsl:1: \$HD is not defined/],
    [{ k: '//#if X\na' }, /k\.wgsl:1: \/\/#if without \/\/#endif/],
    [{ k: 'a\n//#else' }, /k\.wgsl:2: \/\/#else without \/\/#if/],
    [{ k: '//#endif' }, /k\.wgsl:1: \/\/#endif without \/\/#if/],
    [{ k: '//#if X\n//#else\n//#else\n//#endif' }, /k\.wgsl:3: second \/\/#else for the \/\/#if of line 1/],
    [{ k: '//#ifdef X\n//#endif' }, /k\.wgsl:1: unknown directive "\/\/#ifdef X"/],
    [{ k: '//#include lib/a\n//#endif', 'lib/a': '//#if X' }, /lib\/a\.wgsl:1: \/\/#if without \/\/#endif/],
    [{ k: 'a' }, /no shader source nope\.wgsl/],
  ];
  for (const [f, re] of cases) {
    const name = 'nope' in f || re.source.includes('nope') ? 'nope' : 'k';
    assert.throws(() => preprocessWgsl(name, {}, files(f)), re);
  }
});

test('override constants: a pipeline constant must name a declared override', () => {
  const code = 'override WG: u32 = 64;\n  override LANES : u32;\nconst HW: u32 = 4u;';
  assert.deepEqual(overrideNames(code), ['WG', 'LANES']);
  checkOverrides('k', code, { WG: 128, LANES: 8 });
  checkOverrides('k', code, {});
  assert.throws(
    () => checkOverrides('k', code, { HW: 8 }),
    /k\.wgsl: pipeline constant HW names no override \(declared: WG, LANES\)/,
  );
  assert.throws(() => checkOverrides('k', code, { WG: Number.NaN }), /pipeline constant WG = NaN/);
});

/** Every shader the kernels load, with defines of the kind their wrappers pass (kernel variants included). */
const SHADERS: [name: string, defines: Record<string, string | number | boolean>][] = [
  ['attention', { HD: 64, DPW: 1 }],
  ['attention_lanes', { HD: 64, LANES: 8 }],
  ['attention_mass', { HD: 64, LANES: 8 }],
  ['block_digest', { HW: 32 }],
  ['block_group', { HW: 32, GROUP: 8 }],
  ['block_select', { HD: 64, MAXKB: 256, GROUP: 0, MAXG: 1 }],
  ['block_select', { HD: 64, MAXKB: 256, GROUP: 8, MAXG: 32 }],
  ['column_gram', {}],
  ['column_sumsq', {}],
  ['digest_levels', { HW: 32 }],
  ['digest_levels', { HW: 32, SLABS_digests: 2, SLAB_BYTES_digests: 4096, SLABS_levels: 3, SLAB_BYTES_levels: 512 }],
  ['embedding', { F32: true }],
  ['gather_rows', {}],
  ['head_rmsnorm', {}],
  ['hier_select', { HW: 32, V4: true, COMBINE_MAX: false, PAGES: true, FINAL: true }],
  ['hier_select', { HW: 24, V4: false, COMBINE_MAX: true, PAGES: false, FINAL: false }],
  ['kv_write', {}],
  ['kv_write', { SLABS_kCache: 5, SLAB_BYTES_kCache: 1024, SLABS_vCache: 5, SLAB_BYTES_vCache: 1024 }],
  ['kv_write_streaming', {}],
  ['logit_softcap', {}],
  ['matmul', { F32: false, BF16: false, XV4: true, TT: 4 }],
  ['matmul_rows', { F32: true, BF16: false, XV4: true, TT: 16, KC: 72, C4N: 72, STRIDEV: 72 }],
  ['matmul_rows', { Q4: true, NORM: true, NORM_BINDING: 6, GLU: true, TT: 16, KC: 40, C4N: 76, STRIDEV: 38 }],
  ['matmul_tiled', { F32: true, BF16: false, XV4: true }],
  ['matmul_tiled', { F32: false, BF16: true, XV4: false }],
  ['matmul_wg', { F32: true, BF16: false, XV4: false, TT: 8, WG: 64, SUBGROUPS: true }],
  ['page_digest', { HW: 32 }],
  ['page_score', { HW: 32, V4: true, COMBINE_MAX: false }],
  ['page_select', { MAX_PAGES: 4096 }],
  [
    'prefill_attention',
    { HD: 64, G: 4, BQ: 16, SPLIT: 1, QB: 2, UW: 4, QUAD: true, STREAM: true, BK: 64, SHARED: false, SUBGROUPS: false },
  ],
  ['prefill_attention', { HD: 64, G: 4, BQ: 16, SPLIT: 4, QB: 1, UW: 2, BK: 64, SHARED: true, SUBGROUPS: true }],
  ['residual_add', {}],
  ['rmsnorm', {}],
  ['rmsnorm', { ACC: true }],
  ['rope', {}],
  ['rope_kv_write', { DIGEST: true, FRESH: true }],
  ['rope_kv_write', { DIGEST: true, FRESH: true, SPLIT_K: true, SLABS_kCache: 2, SLAB_BYTES_kCache: 64 }],
  ['rope_kv_write', { SPLIT_V: true, SLABS_vCache: 2, SLAB_BYTES_vCache: 64 }],
  ['sample', { WG: 64 }],
  ['sparse_decode', { HW: 32, G: 4, BKD: 32, TPH: 16, DPT: 2 }],
  ['sparse_decode_lanes', { HW: 32, LANES: 8, G: 4 }],
  ['sparse_decode_lanes', { HW: 32, LANES: 8, G: 4, SLABS_kCache: 4, SLAB_BYTES_kCache: 8192 }],
  ['sparse_decode_reduce', {}],
  ['streaming_attention', { HD: 64, LANES: 8 }],
  ['swiglu', { FUSED: true }],
];

function wgslFiles(): string[] {
  const out: string[] = [];
  const walk = (dir: string, rel: string) => {
    for (const f of readdirSync(dir, { withFileTypes: true })) {
      if (f.isDirectory()) walk(path.join(dir, f.name), `${rel}${f.name}/`);
      else if (f.name.endsWith('.wgsl')) out.push(`${rel}${f.name}`);
    }
  };
  walk(path.join(projectRoot(), 'shaders'), '');
  return out.sort();
}

test('every kernel shader preprocesses, and every .wgsl file is read by one of them', () => {
  const read = new Set<string>();
  const tracking = (name: string) => {
    const src = readShaderFile(name);
    if (src !== undefined) read.add(`${name}.wgsl`);
    return src;
  };
  for (const [name, defines] of SHADERS) {
    const code = preprocessWgsl(name, defines, tracking);
    assert.ok(/\bfn main\b/.test(code), `${name}: no entry point after preprocessing`);
    assert.ok(!/\$[A-Z_]/.test(code) && !/^\s*\/\/#/m.test(code), `${name}: directives or $NAME left`);
  }
  assert.deepEqual(
    wgslFiles().filter((f) => !read.has(f)),
    [],
    'shaders/ holds .wgsl files no kernel loads (dead code, or add them to SHADERS)',
  );
});

test('every .wgsl file in shaders/ is named by a kernel test', () => {
  const dir = path.join(projectRoot(), 'tests', 'kernels');
  const tests = readdirSync(dir)
    .filter((f) => f.endsWith('.test.ts'))
    .map((f) => readFileSync(path.join(dir, f), 'utf8'))
    .join('\n');
  const esc = (f: string) => f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  // Named as shaders/<file> or as <file> on its own (attention.wgsl is not named by streaming_attention.wgsl).
  const named = (f: string) => new RegExp(`(shaders/|^|[^\\w/])${esc(f)}`, 'm').test(tests);
  const unnamed = wgslFiles().filter((f) => !named(f));
  assert.deepEqual(unnamed, [], 'name each WGSL file (includes too) in the header of the test that covers it');
});
