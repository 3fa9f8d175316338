// Quest's upper bound of q . k over the keys a digest covers, and the order-preserving u32 key of a score (host
// side: none). The including shader declares q (f32 pairs), digests (u32 or vec4<u32> under V4, min at db, max at
// db + HW), workgroup qp / qn (the group's summed positive / negative query parts, unless COMBINE_MAX) and const HW.

// Maps an f32 score to a u32 whose unsigned order is the float order; NaN ranks last; 0xffffffff is reserved
// for the forced pages (sink, newest).
fn orderKey(s: f32) -> u32 {
  let b = bitcast<u32>(s);
  if ((b & 0x7fffffffu) > 0x7f800000u) { return 0u; }
  var k = b | 0x80000000u;
  if ((b & 0x80000000u) != 0u) { k = ~b; }
  return min(k, 0xfffffffeu);
}

// sum_d (a[d] * kmax[d] + c[d] * kmin[d]) over the digest at word offset db (min at db, max at db + HW).
fn bound(db: u32, qb: u32) -> f32 {
  var acc = vec2<f32>(0.0);
//#if V4
  let b4 = db / 4u;
  for (var j = 0u; j < HW / 4u; j++) {
    let mn = digestsLoad(b4 + j);
    let mx = digestsLoad(b4 + HW / 4u + j);
    for (var c = 0u; c < 4u; c++) {
//#if COMBINE_MAX
      let qd = q[qb + 4u * j + c];
      let a = max(qd, vec2<f32>(0.0));
      let n = min(qd, vec2<f32>(0.0));
//#else
      let a = qp[4u * j + c];
      let n = qn[4u * j + c];
//#endif
      acc += a * unpack2x16float(mx[c]) + n * unpack2x16float(mn[c]);
    }
  }
//#else
  for (var w = 0u; w < HW; w++) {
//#if COMBINE_MAX
    let qd = q[qb + w];
    let a = max(qd, vec2<f32>(0.0));
    let n = min(qd, vec2<f32>(0.0));
//#else
    let a = qp[w];
    let n = qn[w];
//#endif
    acc += a * unpack2x16float(digestsLoad(db + HW + w)) + n * unpack2x16float(digestsLoad(db + w));
  }
//#endif
  return acc.x + acc.y;
}
