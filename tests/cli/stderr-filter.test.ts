/**
 * Dawn's two native "maxDynamic... artificially reduced" warnings never reach the user: the filter drops exactly
 * those lines wherever the chunks of the child's stderr split, and forwards everything else as it arrives. The
 * commands that open a GPU run behind it; signals reach the command once; the adapter is named as Dawn lists it.
 */
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { test } from 'node:test';
import { DAWN_LIMIT_WARNING, DawnWarningFilter } from '../../cli/stderr-filter.js';
import { foldAdapterName, listAdapters, parseAdapterList } from '../../shaders/runtime.js';
import { Rng } from '../helpers/rng.js';
import { CLI, linesOf, runCli } from './run.js';

const W1 =
  'Warning: maxDynamicUniformBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.';
const W2 =
  'Warning: maxDynamicStorageBuffersPerPipelineLayout artificially reduced from 1000000 to 16 to fit dynamic offset allocation limit.';

test('the filter drops exactly the two warning lines, however the text is split into chunks', () => {
  const kept = [
    'sift: error [X]: something\n',
    '\r\x1b[Kloading 3/57 tensors',
    '\r\x1b[K\n',
    'Warning: maxDynamicUniformBuffersPerPipelineLayout reduced (another text)\n',
    `${W1} and more\n`,
    'Warning: something else\n',
    'Warning: maxDynamic\n',
  ];
  const input = [
    kept[0],
    `${W1}\n`,
    kept[1],
    kept[2],
    `${W2}\r\n`,
    kept[3],
    kept[4],
    `${W2}\n`,
    kept[5],
    kept[6],
    'tail',
  ];
  const text = input.join('');
  const want = `${kept.join('')}tail`;
  const rng = new Rng(7);
  for (let trial = 0; trial < 300; trial++) {
    const f = new DawnWarningFilter();
    let out = '';
    let at = 0;
    while (at < text.length) {
      const n = trial < text.length ? (at === 0 ? trial + 1 : text.length) : rng.int(1, 40);
      out += f.push(text.slice(at, at + n));
      at += n;
    }
    out += f.end();
    assert.equal(out, want, `trial ${trial}`);
  }
  assert.ok(DAWN_LIMIT_WARNING.test(W1) && DAWN_LIMIT_WARNING.test(W2));
  // what cannot be a warning is forwarded at once, without waiting for its newline (progress lines)
  assert.equal(new DawnWarningFilter().push('\r\x1b[Kloading'), '\r\x1b[Kloading');
  assert.equal(new DawnWarningFilter().push('Warning: maxDyn'), '', 'a possible warning is held');
});

test('commands that open a GPU print no Dawn warning; unfiltered, Dawn does print them', async () => {
  const filtered = await runCli(['gpu', '--json']);
  assert.equal(filtered.code, 0, filtered.stderr);
  assert.equal(filtered.stderr, '');
  const caps = JSON.parse(filtered.stdout) as { adapterName: string };
  const raw = await runCli(['gpu', '--json'], { env: { SIFT_STDERR_FILTER: 'off' } });
  assert.equal(raw.code, 0, raw.stderr);
  assert.ok(
    linesOf(raw.stderr).length > 0 && linesOf(raw.stderr).every((l) => DAWN_LIMIT_WARNING.test(l)),
    `Dawn's warnings, which the filter removes:\n${raw.stderr}`,
  );
  // the adapter is named as Dawn lists it ("llvmpipe (LLVM 15.0.6, 256 bits)"), not in its folded form
  const listed = await listAdapters();
  assert.ok(listed.length > 0, 'Dawn lists the adapters');
  assert.ok(
    listed.some((a) => a.name === caps.adapterName),
    `${caps.adapterName} in ${JSON.stringify(listed)}`,
  );
  assert.notEqual(caps.adapterName, foldAdapterName(caps.adapterName));
});

test("Dawn's adapter listing parses; names fold as Dawn folds them", () => {
  const msg =
    "no suitable backends found\nAvailable adapters:\n * backend: 'vulkan', name: 'llvmpipe (LLVM 15.0.6, 256 bits)'\n * backend: 'vulkan', name: 'NVIDIA H100 80GB HBM3'";
  assert.deepEqual(parseAdapterList(msg), [
    { backend: 'vulkan', name: 'llvmpipe (LLVM 15.0.6, 256 bits)' },
    { backend: 'vulkan', name: 'NVIDIA H100 80GB HBM3' },
  ]);
  assert.equal(parseAdapterList('some other error'), null);
  assert.equal(foldAdapterName('llvmpipe (LLVM 15.0.6, 256 bits)'), 'llvmpipe-llvm-15-0-6-256-bits-');
});

test('sift serve behind the filter: one Ctrl-C (SIGINT) is one signal, a graceful shutdown, exit 0', async () => {
  const child = spawn(process.execPath, [CLI, 'serve', '--port', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (b: Buffer) => {
    out += b.toString('utf8');
  });
  child.stderr.on('data', (b: Buffer) => {
    out += b.toString('utf8');
  });
  const exited = new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
  try {
    const t0 = Date.now();
    while (!out.includes('"model ready"')) {
      assert.ok(Date.now() - t0 < 120_000, `no "model ready" in time:\n${out}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    child.kill('SIGINT');
    assert.equal(await exited, 0, out);
    assert.match(out, /"signal":"SIGINT".*shutting down/);
    assert.match(out, /"msg":"shutdown complete"/);
    assert.doesNotMatch(out, /second signal/);
  } finally {
    child.kill('SIGKILL');
  }
});

test('kill -9 of sift ends the command behind the filter at once, as it did without one', async () => {
  // a GPU command that runs for minutes: the filter runs it in a child of the process the user started
  const parent = spawn(
    process.execPath,
    [
      CLI,
      'bench',
      'attention',
      '--shape',
      'stories15M',
      '--contexts',
      '65536',
      '--prefill-contexts',
      'none',
      '--repeat',
      '1000',
    ],
    { stdio: 'ignore' },
  );
  try {
    let child = 0;
    const t0 = Date.now();
    while (child === 0) {
      assert.ok(Date.now() - t0 < 60_000, 'the filtered child started');
      await new Promise((r) => setTimeout(r, 100));
      let kids = '';
      try {
        kids = execFileSync('pgrep', ['-P', String(parent.pid)], { encoding: 'utf8' });
      } catch {
        // pgrep exits 1 while there is no child yet
      }
      child = Number(kids.trim().split('\n')[0] || 0);
    }
    const alive = (pid: number) => {
      try {
        process.kill(pid, 0);
        return true;
      } catch {
        return false;
      }
    };
    assert.ok(alive(child));
    parent.kill('SIGKILL');
    const t1 = Date.now();
    // the child notices on its next event-loop turn; on a loaded 2-core machine lavapipe's threads can hold that off
    // for seconds, so allow 20 s (the command itself would run for minutes)
    while (alive(child) && Date.now() - t1 < 20_000) await new Promise((r) => setTimeout(r, 20));
    assert.ok(!alive(child), 'the child outlived the killed parent');
  } finally {
    parent.kill('SIGKILL');
  }
});
