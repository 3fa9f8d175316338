#!/usr/bin/env python3
"""PyTorch SDPA peer for `sift bench attention` (one layer, fp16, 32 q heads / 8 kv heads, head_dim 128):
decode (q_len 1 over a context) and causal prefill, timed with CUDA events (warm-up, then the median of repeats).
  sdpa_peer.py --contexts 4096,32768 --prefill 4096,16384 --out sdpa.json
  sdpa_peer.py --summary attention.json sdpa.json     (a short side-by-side table; either file may be missing)
"""
import argparse
import json
import os
import statistics
import sys


def ints(s):
    return [int(x) for x in s.split(",") if x.strip()] if s else []


def timed(torch, fn, warmup, repeat, inner):
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        a = torch.cuda.Event(enable_timing=True)
        b = torch.cuda.Event(enable_timing=True)
        a.record()
        for _ in range(inner):
            fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) / inner)
    return {"median": statistics.median(times), "min": min(times), "max": max(times), "n": len(times)}


def peer(args):
    import torch
    import torch.nn.functional as F

    if not torch.cuda.is_available():
        print("SKIPPED: torch has no CUDA device here")
        return 0
    hq, hkv, d = args.heads, args.kv_heads, args.head_dim
    dev = torch.device("cuda")
    torch.manual_seed(0)

    def sdpa(q, k, v, causal):
        try:
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        except TypeError:  # torch < 2.5: no enable_gqa, expand the kv heads
            g = hq // hkv
            return F.scaled_dot_product_attention(
                q, k.repeat_interleave(g, 1), v.repeat_interleave(g, 1), is_causal=causal
            )

    out = {"device": torch.cuda.get_device_name(0), "torch": torch.__version__, "shape": [hq, hkv, d],
           "dtype": "float16", "decode": [], "prefill": []}
    for ctx in args.contexts:
        k = torch.randn(1, hkv, ctx, d, device=dev, dtype=torch.float16)
        v = torch.randn_like(k)
        q = torch.randn(1, hq, 1, d, device=dev, dtype=torch.float16)
        ms = timed(torch, lambda: sdpa(q, k, v, False), 10, args.repeat, 20)
        gbps = 2 * ctx * hkv * d * 2 / (ms["median"] * 1e6)
        out["decode"].append({"context": ctx, "ms": ms, "gbps": gbps})
        print(f"decode  ctx {ctx:>7}: {ms['median']:.4f} ms ({ms['min']:.4f}..{ms['max']:.4f}), {gbps:.0f} GB/s")
        del k, v, q
    for n in args.prefill:
        q = torch.randn(1, hq, n, d, device=dev, dtype=torch.float16)
        k = torch.randn(1, hkv, n, d, device=dev, dtype=torch.float16)
        v = torch.randn_like(k)
        ms = timed(torch, lambda: sdpa(q, k, v, True), 3, args.repeat, 3)
        tflops = 4 * hq * d * n * (n + 1) / 2 / (ms["median"] * 1e9)
        out["prefill"].append({"context": n, "ms": ms, "tflops": tflops})
        print(f"prefill ctx {n:>7}: {ms['median']:.3f} ms ({ms['min']:.3f}..{ms['max']:.3f}), {tflops:.0f} TFLOP/s")
        del q, k, v
        torch.cuda.empty_cache()
    if args.out:
        with open(args.out, "w") as f:
            json.dump(out, f, indent=2)
    return 0


def load(path):
    if path and os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    return {}


def summary(att_path, peer_path):
    att, pr = load(att_path), load(peer_path)
    sd = {r["context"]: r["ms"]["median"] for r in pr.get("decode", [])}
    sp = {r["context"]: r["ms"]["median"] for r in pr.get("prefill", [])}
    fmt = lambda x: "-" if x is None else f"{x:.4g}"
    print(f"sift adapter: {att.get('adapter', '?')}; SDPA device: {pr.get('device', 'not run')}")
    print("| phase | context | sift dense | sift sparse (amortized / block-sparse) | PyTorch SDPA |")
    print("|---|---|---|---|---|")
    for r in att.get("decode", []):
        dense = min(r["ms"]["dense"]["median"], r["ms"]["denseSparse"]["median"])
        print(f"| decode | {r['context']} | {fmt(dense)} | {fmt(r['ms']['sparseAmortized']['median'])} | {fmt(sd.get(r['context']))} |")
    for r in att.get("prefill", []):
        print(f"| prefill | {r['context']} | {fmt(r['ms']['dense']['median'])} | {fmt(r['ms']['blockSparse']['median'])} | {fmt(sp.get(r['context']))} |")
    return 0


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--contexts", type=ints, default=ints("4096,32768,65536,131072"))
    ap.add_argument("--prefill", type=ints, default=ints("4096,16384,32768"))
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--head-dim", type=int, default=128)
    ap.add_argument("--repeat", type=int, default=10)
    ap.add_argument("--out")
    ap.add_argument("--summary", nargs=2, metavar=("SIFT_ATTENTION_JSON", "SDPA_JSON"))
    args = ap.parse_args()
    if args.summary:
        return summary(*args.summary)
    try:
        import torch  # noqa: F401
    except ImportError:
        print("SKIPPED: python3 cannot import torch")
        return 0
    return peer(args)


if __name__ == "__main__":
    sys.exit(main())
