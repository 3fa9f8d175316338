// The RoPE angle a = pos * invFreq, reduced to about [-pi, pi] (shared by the RoPE kernels).
// Positions reach 1e5-1e6, so a is up to ~1e6 rad and a plain f32 product is off by up to ulp(a) / 2 (4e-3 rad at
// pos 1e5), and sin/cos of a huge argument is worse still. Instead the product is formed exactly as four f32 terms
// (invFreq split into two 12-bit halves by masking, pos into bits [12, 24) and [0, 12): every partial product fits
// f32's 24-bit significand), each term is reduced modulo 2*pi with a four-part Cody-Waite constant (the first three
// parts have 6 significant bits, so k * part is exact for |k| < 2^18), and the reduced terms are summed and reduced
// once more. The angle is then within ~1e-6 rad of pos * invFreq computed exactly, for positions < 2^24 and
// |angle| < 2^18 * 2*pi (~1.6e6 rad). See tests/kernels/rope_kv_write.test.ts.

const INV_2PI: f32 = 0.15915493667125702;
// 2*pi = P1 + P2 + P3 + P4 to ~2.5e-13; P1..P3 carry 6 significant bits each.
const P1: f32 = 6.25;
const P2: f32 = 0.0322265625;
const P3: f32 = 0.000946044921875;
const P4: f32 = 1.2699757462542038e-05;

// x - 2*pi*round(x / 2*pi), for x exact in f32.
fn reduce2pi(x: f32) -> f32 {
  let n = round(x * INV_2PI);
  return (((x - n * P1) - n * P2) - n * P3) - n * P4;
}

// pos * w reduced to about [-pi, pi], computed as described above.
fn angle(pos: u32, w: f32) -> f32 {
  let wHi = bitcast<f32>(bitcast<u32>(w) & 0xfffff000u);
  let wLo = w - wHi;
  let pHi = f32(pos & 0x00fff000u);
  let pLo = f32(pos & 0x00000fffu);
  let s = reduce2pi(pHi * wHi) + reduce2pi(pHi * wLo) + reduce2pi(pLo * wHi) + reduce2pi(pLo * wLo);
  return reduce2pi(s);
}
