/**
 * Worker threads doing bulk work run at background priority (util/thread-priority.ts): on Linux the calling thread
 * gets nice BACKGROUND_NICE and the main thread keeps its own; the big-body parse worker of the server is one of
 * them. Elsewhere lowerThreadPriority reports that it did nothing.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { Worker } from 'node:worker_threads';
import { BIG_BODY_BYTES } from '../../server/body.js';
import { BACKGROUND_NICE } from '../../util/thread-priority.js';
import { FakeEngine } from '../server/fake-engine.js';
import { testApp, testText } from '../server/helpers.js';

const linux = process.platform === 'linux';

/** The nice value of each thread of this process, by thread id (Linux). */
function threadNice(): Map<number, number> {
  const out = new Map<number, number>();
  for (const tid of readdirSync('/proc/self/task')) {
    const stat = readFileSync(`/proc/self/task/${tid}/stat`, 'utf8');
    out.set(Number(tid), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16])); // field 19: nice
  }
  return out;
}

test('lowerThreadPriority lowers the calling thread only', async () => {
  const mainNice = linux ? threadNice().get(process.pid) : null;
  const url = new URL('../../util/thread-priority.js', import.meta.url).href;
  const w = new Worker(
    `import(${JSON.stringify(url)}).then(async (m) => {
      const { parentPort } = await import('node:worker_threads');
      const { readFileSync } = await import('node:fs');
      const applied = m.lowerThreadPriority();
      let nice = null;
      try {
        const stat = readFileSync('/proc/thread-self/stat', 'utf8');
        nice = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[16]);
      } catch {}
      parentPort.postMessage({ applied, nice });
    });`,
    { eval: true },
  );
  const got = await new Promise<{ applied: boolean; nice: number | null }>((resolve, reject) => {
    w.once('message', resolve);
    w.once('error', reject);
  });
  await w.terminate();
  if (!linux) {
    assert.equal(got.applied, false);
    return;
  }
  assert.deepEqual(got, { applied: true, nice: BACKGROUND_NICE });
  assert.equal(threadNice().get(process.pid), mainNice, 'the main thread keeps its priority');
});

test('the parse worker of a big body runs at background priority', { skip: !linux && 'Linux only' }, async (t) => {
  const app = await testApp(t, await FakeEngine.story(await testText()));
  const mainNice = threadNice().get(process.pid);
  const before = new Set([...threadNice()].filter(([, n]) => n === BACKGROUND_NICE).map(([tid]) => tid));
  const r = await app.inject({
    method: 'POST',
    url: '/v1/completions',
    headers: { 'content-type': 'application/json' },
    payload: `${' '.repeat(BIG_BODY_BYTES)}{"model": "fake-model", "prompt": "Once upon a time", "max_tokens": 2}`,
  });
  assert.equal(r.statusCode, 200, r.body);
  const lowered = [...threadNice()].filter(([tid, n]) => n === BACKGROUND_NICE && !before.has(tid));
  assert.equal(lowered.length, 1, 'one new thread at background priority: the parse worker');
  assert.equal(threadNice().get(process.pid), mainNice);
});
