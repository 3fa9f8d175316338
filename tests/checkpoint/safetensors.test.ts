import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { openSafetensorsDir, SafetensorsFile, writeSafetensors } from '../../checkpoint/safetensors.js';
import { isSiftError } from '../../config/errors.js';
import { decodeToF32, encodeFromF32, type WeightDType } from '../../util/dtype.js';
import { Rng } from '../helpers/rng.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-safetensors-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A file whose header is `header` (object or raw text) followed by `dataBytes` zero bytes. */
function rawFile(name: string, header: unknown, dataBytes: number, lengthOverride?: bigint): string {
  const json = Buffer.from(typeof header === 'string' ? header : JSON.stringify(header));
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(lengthOverride ?? BigInt(json.length));
  const file = path.join(tmp, name);
  fs.writeFileSync(file, Buffer.concat([len, json, Buffer.alloc(dataBytes)]));
  return file;
}

/** Asserts `fn` throws a SiftError of `code` whose message contains every string of `parts`. */
function throwsNaming(fn: () => unknown, code: 'CHECKPOINT_INVALID' | 'CHECKPOINT_UNSUPPORTED', parts: string[]) {
  assert.throws(fn, (e: unknown) => {
    assert.ok(isSiftError(e, code), `expected SiftError ${code}, got ${String(e)}`);
    for (const p of parts) assert.ok(e.message.includes(p), `message "${e.message}" should name "${p}"`);
    return true;
  });
}

test('round trip: every dtype, shapes incl. scalar and empty, metadata', () => {
  const rng = new Rng(5);
  const file = path.join(tmp, 'rt.safetensors');
  const dtypes: WeightDType[] = ['f32', 'f16', 'bf16'];
  const tensors = dtypes.flatMap((dtype) =>
    [[3, 5], [7], [2, 3, 4], [], [0, 4]].map((shape, i) => {
      const n = shape.reduce((a, d) => a * d, 1);
      return { name: `${dtype}.t${i}`, dtype, shape, data: encodeFromF32(rng.normalArray(n), dtype) };
    }),
  );
  writeSafetensors(file, tensors, { format: 'pt', note: 'x' });
  assert.deepEqual(
    fs.readdirSync(tmp).filter((f) => f.startsWith('rt.safetensors.tmp')),
    [],
    'no temp file left behind',
  );
  // The data area starts 8-byte aligned.
  assert.equal(Number(fs.readFileSync(file).readBigUInt64LE(0)) % 8, 0);
  const f = SafetensorsFile.open(file);
  try {
    assert.deepEqual({ ...f.metadata }, { format: 'pt', note: 'x' });
    assert.deepEqual(
      [...f.entries.keys()],
      tensors.map((t) => t.name),
    );
    for (const t of tensors) {
      assert.deepEqual(f.info(t.name), { dtype: t.dtype, shape: t.shape });
      assert.deepEqual(f.read(t.name), t.data);
    }
    // bf16 / f16 bytes decode to the values they encode.
    const bf = tensors.find((t) => t.dtype === 'bf16')!;
    assert.deepEqual(encodeFromF32(decodeToF32(f.read(bf.name), 'bf16'), 'bf16'), bf.data);
  } finally {
    f.close();
  }
});

test('writing over an existing file replaces it whole', () => {
  const file = path.join(tmp, 'over.safetensors');
  writeSafetensors(file, [{ name: 'a', dtype: 'F32', shape: [1000], data: new Uint8Array(4000) }]);
  writeSafetensors(file, [{ name: 'b', dtype: 'F16', shape: [2], data: new Uint8Array([0, 60, 0, 188]) }]);
  const f = SafetensorsFile.open(file);
  assert.deepEqual([...f.entries.keys()], ['b']);
  assert.deepEqual([...decodeToF32(f.read('b'), 'f16')], [1, -1]);
  f.close();
});

test('writer rejects a size mismatch and a repeated name', () => {
  const file = path.join(tmp, 'bad-write.safetensors');
  assert.throws(() => writeSafetensors(file, [{ name: 'a', dtype: 'f16', shape: [3], data: new Uint8Array(4) }]), /a/);
  const t = { name: 'a', dtype: 'f32' as const, shape: [1], data: new Uint8Array(4) };
  assert.throws(() => writeSafetensors(file, [t, t]), /repeated/);
  assert.equal(fs.existsSync(file), false);
});

test('sharded directory: index maps names to shards, each shard opened once', () => {
  const dir = path.join(tmp, 'sharded');
  fs.mkdirSync(dir);
  const mk = (name: string, v: number) => ({
    name,
    dtype: 'f32' as const,
    shape: [2],
    data: encodeFromF32(new Float32Array([v, v]), 'f32'),
  });
  writeSafetensors(path.join(dir, 's1.safetensors'), [mk('x', 1), mk('y', 2)]);
  writeSafetensors(path.join(dir, 's2.safetensors'), [mk('z', 3)]);
  const index = { metadata: {}, weight_map: { x: 's1.safetensors', y: 's1.safetensors', z: 's2.safetensors' } };
  fs.writeFileSync(path.join(dir, 'model.safetensors.index.json'), JSON.stringify(index));
  const st = openSafetensorsDir(dir);
  assert.equal(st.files.length, 2);
  assert.deepEqual(st.tensorNames.sort(), ['x', 'y', 'z']);
  assert.deepEqual([...decodeToF32(st.read('z'), 'f32')], [3, 3]);
  assert.equal(st.fileOf('y')?.path, path.join(dir, 's1.safetensors'));
  st.close();

  // The index names a tensor its shard lacks.
  fs.writeFileSync(
    path.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ weight_map: { ...index.weight_map, w: 's2.safetensors' } }),
  );
  throwsNaming(() => openSafetensorsDir(dir), 'CHECKPOINT_INVALID', ['s2.safetensors', 'w']);
  // The index names a shard that does not exist.
  fs.writeFileSync(
    path.join(dir, 'model.safetensors.index.json'),
    JSON.stringify({ weight_map: { x: 's9.safetensors' } }),
  );
  throwsNaming(() => openSafetensorsDir(dir), 'CHECKPOINT_INVALID', ['s9.safetensors', 'x']);
});

test('corrupt files: each error names the file and, where there is one, the tensor', () => {
  const good = { w: { dtype: 'F32', shape: [2, 3], data_offsets: [0, 24] } };

  // Truncated: a valid file cut short.
  const full = path.join(tmp, 'trunc.safetensors');
  writeSafetensors(full, [{ name: 'layer.w', dtype: 'f32', shape: [4, 4], data: new Uint8Array(64) }]);
  fs.truncateSync(full, fs.statSync(full).size - 10);
  throwsNaming(() => SafetensorsFile.open(full), 'CHECKPOINT_INVALID', [full, 'layer.w', 'out of range']);

  const tiny = path.join(tmp, 'tiny.safetensors');
  fs.writeFileSync(tiny, Buffer.alloc(5));
  throwsNaming(() => SafetensorsFile.open(tiny), 'CHECKPOINT_INVALID', [tiny, 'too short']);

  const pastEof = rawFile('past-eof.safetensors', good, 24, 1n << 40n);
  throwsNaming(() => SafetensorsFile.open(pastEof), 'CHECKPOINT_INVALID', [pastEof, 'header length']);

  const badJson = rawFile('bad-json.safetensors', '{"w": {"dtype": "F32", ', 24);
  throwsNaming(() => SafetensorsFile.open(badJson), 'CHECKPOINT_INVALID', [badJson, 'JSON']);

  const notObject = rawFile('array.safetensors', '[1, 2]', 0);
  throwsNaming(() => SafetensorsFile.open(notObject), 'CHECKPOINT_INVALID', [notObject, 'not a JSON object']);

  const outOfRange = rawFile('range.safetensors', { w: { dtype: 'F32', shape: [2, 3], data_offsets: [24, 48] } }, 24);
  throwsNaming(() => SafetensorsFile.open(outOfRange), 'CHECKPOINT_INVALID', [outOfRange, 'tensor w', 'out of range']);

  const reversed = rawFile('reversed.safetensors', { w: { dtype: 'F32', shape: [0], data_offsets: [8, 0] } }, 24);
  throwsNaming(() => SafetensorsFile.open(reversed), 'CHECKPOINT_INVALID', [reversed, 'tensor w']);

  const sizeMismatch = rawFile('size.safetensors', { w: { dtype: 'F16', shape: [2, 3], data_offsets: [0, 24] } }, 24);
  throwsNaming(() => SafetensorsFile.open(sizeMismatch), 'CHECKPOINT_INVALID', [
    sizeMismatch,
    'tensor w',
    '(2, 3)',
    '12',
  ]);

  const overlap = rawFile(
    'overlap.safetensors',
    { a: { dtype: 'F32', shape: [4], data_offsets: [0, 16] }, b: { dtype: 'F32', shape: [4], data_offsets: [8, 24] } },
    24,
  );
  throwsNaming(() => SafetensorsFile.open(overlap), 'CHECKPOINT_INVALID', [overlap, 'a', 'b', 'overlap']);

  const badShape = rawFile('shape.safetensors', { w: { dtype: 'F32', shape: [-1], data_offsets: [0, 4] } }, 4);
  throwsNaming(() => SafetensorsFile.open(badShape), 'CHECKPOINT_INVALID', [badShape, 'tensor w', 'shape']);

  const unknownDtype = rawFile('unk.safetensors', { w: { dtype: 'Q4_K', shape: [4], data_offsets: [0, 4] } }, 4);
  throwsNaming(() => SafetensorsFile.open(unknownDtype), 'CHECKPOINT_UNSUPPORTED', [unknownDtype, 'tensor w', 'Q4_K']);

  const badMeta = rawFile('meta.safetensors', { __metadata__: { n: 3 }, ...good }, 24);
  throwsNaming(() => SafetensorsFile.open(badMeta), 'CHECKPOINT_INVALID', [badMeta, '__metadata__']);
});

test('a known but unsupported dtype (I8) parses, and using it names file, tensor and dtype', () => {
  const file = rawFile(
    'i8.safetensors',
    {
      q: { dtype: 'I8', shape: [2, 4], data_offsets: [0, 8] },
      ok: { dtype: 'F32', shape: [1], data_offsets: [8, 12] },
    },
    12,
  );
  const f = SafetensorsFile.open(file);
  try {
    assert.deepEqual(f.info('ok'), { dtype: 'f32', shape: [1] });
    throwsNaming(() => f.info('q'), 'CHECKPOINT_UNSUPPORTED', [file, 'tensor q', 'I8']);
    throwsNaming(() => f.read('q'), 'CHECKPOINT_UNSUPPORTED', [file, 'tensor q', 'I8']);
  } finally {
    f.close();
  }
});

test('reads are lazy: a tensor is read from its byte range, not the whole file', () => {
  // Open, then corrupt a different tensor's bytes on disk: the read of ours is unaffected and sees fresh data.
  const file = path.join(tmp, 'lazy.safetensors');
  const a = encodeFromF32(new Float32Array([1, 2, 3]), 'f32');
  const b = encodeFromF32(new Float32Array([4, 5]), 'f32');
  writeSafetensors(file, [
    { name: 'a', dtype: 'f32', shape: [3], data: a },
    { name: 'b', dtype: 'f32', shape: [2], data: b },
  ]);
  const f = SafetensorsFile.open(file);
  const fd = fs.openSync(file, 'r+');
  const bStart = f.entries.get('b')!.begin;
  fs.writeSync(fd, encodeFromF32(new Float32Array([9]), 'f32'), 0, 4, bStart);
  fs.closeSync(fd);
  assert.deepEqual([...decodeToF32(f.read('a'), 'f32')], [1, 2, 3]);
  assert.deepEqual([...decodeToF32(f.read('b'), 'f32')], [9, 5]);
  f.close();
});
