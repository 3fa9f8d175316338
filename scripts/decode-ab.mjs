#!/usr/bin/env node
// Decode attention before / after in one process: the SparseDecodeKernel of two builds of sift (their dist/ folders;
// each loads its own shaders), every page of one ctx-token sequence selected (dense decode through the top-k kernel,
// as the engine runs it while the context fits the token budget), the two timed in alternation on their own devices;
// prints min and median ms per call. Random f16 K/V; default adapter (lavapipe here).
//
//   node scripts/decode-ab.mjs OLD_DIST NEW_DIST stories|llama CONTEXT REPEATS
//
// Not a test; used for the before/after rows of bench/results/PREFILL.md.
const [oldRoot, newRoot, shapeName, ctxS, repsS] = process.argv.slice(2);
const roots = { old: oldRoot, new: newRoot };
const shapes = { stories: [6, 6, 48], llama: [32, 8, 128] }; // (q heads, KV heads, head dim)
const [H, KV, HD] = shapes[shapeName];
const ctx = Number(ctxS),
  reps = Number(repsS);
const ps = 64,
  P = Math.ceil(ctx / ps);
const sides = {};
for (const [name, root] of Object.entries(roots)) {
  const { Gpu, UniformArena } = await import(`${root}/shaders/runtime.js`);
  const { SparseDecodeKernel, partialsBytes } = await import(`${root}/shaders/sparse_decode.js`);
  const gpu = await Gpu.create({});
  const words = (P * ps * KV * HD) / 2;
  const rnd = (n) => {
    const a = new Uint32Array(n);
    for (let i = 0; i < n; i++)
      a[i] = (0x3800 + ((Math.random() * 0x400) | 0)) | ((0x3800 + ((Math.random() * 0x400) | 0)) << 16);
    return a;
  };
  const k = gpu.upload('k', rnd(words)),
    v = gpu.upload('v', rnd(words));
  const maxSelected = P;
  const sel = new Uint32Array(KV * maxSelected);
  for (let h = 0; h < KV; h++) for (let i = 0; i < P; i++) sel[h * maxSelected + i] = i;
  const counts = new Uint32Array(KV).fill(P);
  const q = gpu.upload(
    'q',
    Float32Array.from({ length: H * HD }, () => Math.random() - 0.5),
  );
  const out = gpu.createBuffer('out', H * HD * 4);
  const kernel = new SparseDecodeKernel(gpu, {});
  const { numSplits, pagesPerSplit } = kernel.splitPlan(P, ps);
  const args = {
    q,
    kCache: k,
    vCache: v,
    blockTable: gpu.upload(
      'bt',
      Uint32Array.from({ length: P }, (_, i) => i),
    ),
    rows: gpu.upload('rows', new Uint32Array([0, ctx - 1, 0, 0])),
    selected: gpu.upload('sel', sel),
    counts: gpu.upload('cnt', counts),
    partials: gpu.createBuffer('part', partialsBytes(1, H, numSplits, HD)),
    out,
    numRows: 1,
    numHeads: H,
    numKvHeads: KV,
    headDim: HD,
    pageSize: ps,
    maxPagesPerSeq: P,
    maxSelected,
    numSplits,
    pagesPerSplit,
    scale: 1 / Math.sqrt(HD),
  };
  const arena = new UniformArena(gpu);
  const STEPS = 8;
  sides[name] = {
    gpu,
    times: [],
    run: async () => {
      arena.reset();
      await gpu.sync();
      const t0 = performance.now();
      gpu.run((pass) => {
        for (let s = 0; s < STEPS; s++) kernel.encode(pass, arena, args);
      }, arena);
      await gpu.sync();
      return (performance.now() - t0) / STEPS;
    },
  };
  await sides[name].run(); // compile
}
for (let r = 0; r < reps; r++) for (const s of Object.values(sides)) s.times.push(await s.run());
for (const [name, s] of Object.entries(sides)) {
  const t = [...s.times].sort((a, b) => a - b);
  console.log(
    `${shapeName} ctx ${ctx} ${name}: min ${t[0].toFixed(2)} ms, median ${t[t.length >> 1].toFixed(2)} ms (${reps} repeats x 8 calls)`,
  );
}
process.exit(0);
