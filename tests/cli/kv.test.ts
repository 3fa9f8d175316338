/**
 * `sift kv` (cli/kv.ts): the slab split of one layer's K (or V) pool it reports (model/kv-storage.ts), from the
 * shape alone: pages per slab within the binding limit, slabs per context, and the largest cache the kernels bind.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { main } from '../../cli/kv.js';

async function kvJson(argv: string[]): Promise<Record<string, unknown>> {
  const chunks: string[] = [];
  const write = process.stdout.write.bind(process.stdout);
  process.stdout.write = ((s: string) => {
    chunks.push(String(s));
    return true;
  }) as typeof process.stdout.write;
  try {
    assert.equal(await main([...argv, '--json']), 0);
  } finally {
    process.stdout.write = write;
  }
  return JSON.parse(chunks.join(''));
}

test('sift kv reports how a layer pool splits into slabs and how far the kernels reach', async () => {
  // Llama-3-8B: 8 KV heads x 128 dims x f16 = 2 KiB per token per layer pool; pages of 64 tokens = 128 KiB
  const h100 = await kvJson(['--shape', 'llama3-8b', '--binding-limit-mib', '2048', '--contexts', '131072,1048576']);
  const s = h100.slabs as Record<string, number>;
  assert.equal(s.pageBytesPerLayer, 131072);
  assert.equal(s.pagesPerSlab, 16384, '2 GiB / 128 KiB');
  assert.equal(s.maxSlabsPerPool, 5, '(16 storage buffers - 6 others) / 2');
  assert.equal(s.maxTokens, 5 * 16384 * 64);
  const per = h100.perSequence as { tokens: number; slabs: { kvSlabsPerLayer: number; fits: boolean } }[];
  assert.deepEqual(
    per.map((p) => p.slabs.kvSlabsPerLayer),
    [1, 1],
  );
  // lavapipe's 128 MiB: 1M tokens of Llama-3-8B need 16 slabs per layer pool, more than a kernel binds
  const lp = await kvJson(['--shape', 'llama3-8b', '--contexts', '1048576,4096']);
  const perLp = lp.perSequence as { slabs: { kvSlabsPerLayer: number; digestSlabsPerLayer: number; fits: boolean } }[];
  assert.deepEqual(perLp[0].slabs, { kvSlabsPerLayer: 16, digestSlabsPerLayer: 2, fits: false });
  assert.deepEqual(perLp[1].slabs, { kvSlabsPerLayer: 1, digestSlabsPerLayer: 1, fits: true });
  await assert.rejects(kvJson(['--shape', 'llama3-8b', '--binding-limit-mib', '0']), /binding-limit-mib/);
});
