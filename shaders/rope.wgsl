// Rotary position embedding, HF Llama rotate_half convention, in place on q and k:
//   for each head and i < half = headDim / 2, with a = positions[t] * invFreq[i]:
//   x[i]        <- x[i] * cos(a) - x[i + half] * sin(a)
//   x[i + half] <- x[i + half] * cos(a) + x[i] * sin(a)
// One thread per (token, head of q then k, pair i); one dispatch rotates q and k.
//
// Angle precision: positions reach 1e5-1e6, so a = pos * invFreq is up to ~1e6 rad and a plain f32 product is off
// by up to ulp(a) / 2 (4e-3 rad at pos 1e5), and sin/cos of a huge argument is worse still. Instead the product is
// formed exactly as four f32 terms (invFreq split into two 12-bit halves by masking, pos into bits [12, 24) and
// [0, 12): every partial product fits f32's 24-bit significand), each term is reduced modulo 2*pi with a four-part
// Cody-Waite constant (the first three parts have 6 significant bits, so k * part is exact for |k| < 2^18), and the
// reduced terms are summed and reduced once more. The angle is then within ~1e-6 rad of pos * invFreq computed
// exactly, for positions < 2^24 and |angle| < 2^18 * 2*pi (~1.6e6 rad). See tests/kernels/rope.test.ts.
//#include lib/grid

override WG: u32 = 64;

struct Params {
  tokens: u32,   // T
  nHeads: u32,   // query heads
  nKvHeads: u32, // key heads
  half: u32,     // headDim / 2
}

@group(0) @binding(0) var<storage, read_write> q: array<f32>;    // (T, nHeads, headDim), rotated in place
@group(0) @binding(1) var<storage, read_write> k: array<f32>;    // (T, nKvHeads, headDim), rotated in place
@group(0) @binding(2) var<storage, read> positions: array<u32>;  // (T) absolute position of each token
@group(0) @binding(3) var<storage, read> invFreq: array<f32>;    // (headDim / 2) rad per position
@group(0) @binding(4) var<uniform> p: Params;

//#include lib/rope_angle

@compute @workgroup_size(WG)
fn main(grid: Grid, @builtin(local_invocation_index) lid: u32) {
  let idx = threadIndex(grid, lid, WG);
  let heads = p.nHeads + p.nKvHeads;
  if (idx >= p.tokens * heads * p.half) { return; }
  let i = idx % p.half;
  let th = idx / p.half;
  let h = th % heads;
  let t = th / heads;
  let a = angle(positions[t], invFreq[i]);
  let c = cos(a);
  let s = sin(a);
  let hd = 2u * p.half;
  if (h < p.nHeads) {
    let base = (t * p.nHeads + h) * hd + i;
    let x0 = q[base];
    let x1 = q[base + p.half];
    q[base] = x0 * c - x1 * s;
    q[base + p.half] = x1 * c + x0 * s;
  } else {
    let base = (t * p.nKvHeads + (h - p.nHeads)) * hd + i;
    let x0 = k[base];
    let x1 = k[base + p.half];
    k[base] = x0 * c - x1 * s;
    k[base + p.half] = x1 * c + x0 * s;
  }
}
