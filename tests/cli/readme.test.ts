/**
 * The README's examples work as written on the default model. Every `node bin/sift.js` line of a ```sh block runs,
 * in order, from a scratch folder that holds a story.txt (the calibrate and imatrix examples read it), through bin/sift.js as a
 * user runs it. Two cannot run as written inside a test, and run in a bounded form:
 *   - `serve` listens until stopped: it runs with `--port 0` added (8000 may be taken), answers the Quick start's curl
 *     body and GET /v1/models, then gets SIGTERM and must exit 0;
 *   - `loadtest` runs for minutes and starts its own server: it runs against the serve above (`--url`), with
 *     `--duration 1 --concurrency 1` in place of the README's values and `--scenarios short --max-requests 2
 *     --max-tokens 8` added, and must write its reports.
 * The `npm start` / `npm test` lines of the Quick start are the setup path, not examples of the command: npm test
 * runs this file. The commands quoted inline under Performance (benchmarks of minutes to hours) are checked for
 * flags: every `--flag` they use must be an option of that command's (or suite's) --help.
 */
import assert from 'node:assert/strict';
import { type ChildProcess, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { OTHER_ENV } from '../../config/env.js';
import { readGram } from '../../model/gram.js';
import { readImatrix } from '../../model/imatrix.js';
import { linesOf } from './run.js';

const README = fs.readFileSync(path.resolve('README.md'), 'utf8');
const BIN = path.resolve('bin/sift.js');
const cwd = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-readme-'));

/** Splits a shell command line into words: single and double quotes, backslash escapes, `#` comments. */
export function shellWords(line: string): string[] {
  const words: string[] = [];
  let cur: string | null = null;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i];
    if (ch === "'") {
      const end = line.indexOf("'", i + 1);
      cur = (cur ?? '') + line.slice(i + 1, end);
      i = end;
    } else if (ch === '"') {
      let j = i + 1;
      let s = '';
      for (; line[j] !== '"'; j++) s += line[j] === '\\' ? line[++j] : line[j];
      cur = (cur ?? '') + s;
      i = j;
    } else if (ch === '\\') {
      cur = (cur ?? '') + line[++i];
    } else if (/\s/.test(ch)) {
      if (cur !== null) words.push(cur);
      cur = null;
    } else if (ch === '#' && cur === null) {
      break;
    } else {
      cur = (cur ?? '') + ch;
    }
  }
  if (cur !== null) words.push(cur);
  return words;
}

/** Marks a ```sh block that a test machine cannot run; the comment says why. */
const NOT_RUN = /<!-- readme-test: not run \(([^)]+)\) -->\n$/;

/** The command lines of the README's ```sh blocks (continuation lines joined); `notRun` says which to leave out. */
function shBlocks(): { lines: string[]; notRun: string | null }[] {
  return [...README.matchAll(/```sh\n([\s\S]*?)```/g)].map((m) => ({
    lines: m[1]
      .replace(/\\\n\s*/g, ' ')
      .split('\n')
      .filter((l) => l.trim() !== ''),
    notRun: NOT_RUN.exec(README.slice(0, m.index))?.[1] ?? null,
  }));
}

const shLines = () => shBlocks().flatMap((b) => b.lines);

const isSift = (w: string[]) => w[0] === 'node' && w[1] === 'bin/sift.js';
const examples = shBlocks()
  .filter((b) => b.notRun === null)
  .flatMap((b) => b.lines.map(shellWords))
  .filter(isSift)
  .map((w) => w.slice(2));

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

function sift(args: string[], timeoutMs = 300_000): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, ...args], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString('utf8');
    });
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString('utf8');
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
  });
}

const ok = (r: Run, what: string) => {
  const why = `${what}\nexit ${r.code}\nstderr:\n${r.stderr}\nstdout:\n${r.stdout.slice(0, 3000)}`;
  assert.equal(r.code, 0, why);
  assert.doesNotMatch(r.stderr, /\n\s+at .+:\d+:\d+/, `a stack trace: ${why}`);
  assert.doesNotMatch(r.stderr, /artificially reduced/, `Dawn's warnings reached the user: ${why}`);
};

const STORY =
  'Once upon a time, there was a little dog named Max. Max liked to run in the park with his friend Sam. ' +
  'One day, Sam found a big red ball under a tree. "Look, Max!" said Sam. Max wagged his tail and ran to the ball. ' +
  'They played all day in the sun. When the sun went down, Max was tired. Sam gave him a hug and they went home. ' +
  'The next morning, Max woke up early. He wanted to play again, so he took the ball to Sam and barked. ' +
  'Sam laughed and threw the ball far away. Max ran as fast as he could and brought it back. They were very happy.';

/** Checks one example's output, by what it is. */
function checkExample(args: string[], r: Run): void {
  const what = args.join(' ');
  ok(r, what);
  if (args[0] === 'generate' && args.includes('--json')) {
    const j = JSON.parse(r.stdout) as { prompt_ids: number[]; output_ids: number[]; text: string };
    const ids = args[args.indexOf('--prompt-ids') + 1]?.split(',').map(Number);
    if (ids) assert.deepEqual(j.prompt_ids, ids, what);
    if (args.includes('--max-tokens'))
      assert.equal(j.output_ids.length, Number(args[args.indexOf('--max-tokens') + 1]));
    assert.ok(j.text.length > 0, `${what}: no text`);
  } else if (args[0] === 'generate') {
    assert.ok(r.stdout.trim().length > 0, `${what} printed nothing`);
    if (args[args.indexOf('--prompt') + 1] === '' && args.includes('--temperature')) {
      assert.match(r.stdout, /^Once upon a time, there was a little girl named Lily\./, what);
    }
  } else if (args[0] === 'calibrate') {
    const out = args[args.indexOf('--out') + 1];
    const rows = linesOf(fs.readFileSync(path.join(cwd, out), 'utf8')).filter((l) => !l.startsWith('#'));
    assert.equal(rows.length, 6, `${out}: one line per layer`);
    for (const row of rows) assert.equal(row.split('\t').length, 6, `${out}: one score per KV head`);
  } else if (args[0] === 'imatrix' && args.includes('--full')) {
    const g = readGram(path.join(cwd, args[args.indexOf('--out') + 1]));
    assert.equal(g.values.size, 6 * 4 + 1, `${what}: one Gram matrix per distinct linear input of stories15M`);
    assert.ok(g.tokens > 50, `${what}: ${g.tokens} tokens`);
  } else if (args[0] === 'imatrix') {
    const m = readImatrix(path.join(cwd, args[args.indexOf('--out') + 1]));
    assert.equal(m.values.size, 6 * 7 + 1, `${what}: one entry per matrix of stories15M`);
    assert.ok(m.tokens > 50, `${what}: ${m.tokens} tokens`);
  } else if (args[0] === 'kv') {
    assert.match(r.stdout, /bytes per token/);
  }
}

/** `serve` as written plus --port 0, until "model ready"; resolves with its URL. */
async function startServe(args: string[]): Promise<{ url: string; child: ChildProcess; out: () => string }> {
  const child = spawn(process.execPath, [BIN, ...args, '--port', '0'], { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout?.on('data', (b: Buffer) => {
    out += b.toString('utf8');
  });
  child.stderr?.on('data', (b: Buffer) => {
    out += b.toString('utf8');
  });
  const t0 = Date.now();
  for (;;) {
    const ready = linesOf(out)
      .filter((l) => l.startsWith('{'))
      .map((l) => JSON.parse(l) as { msg: string; url?: string });
    const url = ready.find((j) => j.url)?.url;
    if (url && ready.some((j) => j.msg === 'model ready')) return { url, child, out: () => out };
    if (child.exitCode !== null) throw new Error(`serve exited ${child.exitCode}:\n${out}`);
    if (Date.now() - t0 > 180_000) throw new Error(`serve not ready in time:\n${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** The Quick start's curl: its URL path and JSON body. */
function quickStartCurl(): { path: string; body: Record<string, unknown> } {
  const w = shLines()
    .map(shellWords)
    .find((x) => x[0] === 'curl');
  assert.ok(w, 'the README has a curl example');
  const url = w.find((x) => x.startsWith('http'));
  assert.ok(url);
  return { path: new URL(url).pathname, body: JSON.parse(w[w.indexOf('-d') + 1]) };
}

test('shellWords splits as a shell would', () => {
  assert.deepEqual(shellWords(`node bin/sift.js generate --prompt "" --stop "." -d '{"a": 1}'   # comment`), [
    'node',
    'bin/sift.js',
    'generate',
    '--prompt',
    '',
    '--stop',
    '.',
    '-d',
    '{"a": 1}',
  ]);
});

test('every sh example of the README runs on the default model (serve and loadtest bounded)', async (t) => {
  assert.ok(examples.length >= 6, `examples found: ${examples.length}`);
  // nothing is left out silently: a block not run says why, and the test says which
  for (const b of shBlocks().filter((x) => x.notRun !== null)) {
    const cmds = b.lines.map(shellWords).filter(isSift);
    assert.ok(cmds.length > 0, `a block marked not run holds no sift command: ${b.lines.join(' | ')}`);
    t.diagnostic(`not run (${b.notRun}): ${cmds.map((w) => w.slice(2).join(' ')).join(' | ')}`);
  }
  fs.writeFileSync(path.join(cwd, 'story.txt'), STORY);
  let serve: Awaited<ReturnType<typeof startServe>> | null = null;
  try {
    for (const args of examples) {
      if (args[0] === 'serve') {
        serve = await startServe(args);
        // the Quick start's request, against this server
        const curl = quickStartCurl();
        const res = await fetch(`${serve.url}${curl.path}`, {
          method: 'POST',
          headers: { 'content-type': 'application/json' },
          body: JSON.stringify(curl.body),
        });
        const body = (await res.json()) as { choices: { message: { content: string } }[] };
        assert.equal(res.status, 200, JSON.stringify(body));
        assert.ok(body.choices[0].message.content.length > 0);
        const models = (await (await fetch(`${serve.url}/v1/models`)).json()) as {
          data: {
            sift: { attention: { token_budget: number; streaming_head_share: number }; prefix_cache: boolean };
          }[];
        };
        const s = models.data[0].sift;
        const flag = (f: string) => Number(args[args.indexOf(f) + 1]);
        assert.equal(s.attention.token_budget, flag('--token-budget'));
        if (args.includes('--streaming-fraction')) {
          assert.ok(s.attention.streaming_head_share > 0, 'the head pattern made streaming heads');
          assert.equal(s.prefix_cache, false);
          assert.match(serve.out(), /the prefix cache is off/);
        }
        continue;
      }
      if (args[0] === 'loadtest') {
        assert.ok(serve, 'the README runs serve before loadtest');
        const bounded = args.map((a, i) =>
          args[i - 1] === '--duration' ? '1' : args[i - 1] === '--concurrency' ? '1' : a,
        );
        bounded.push('--url', serve.url, '--scenarios', 'short', '--max-requests', '2', '--max-tokens', '8');
        const r = await sift(bounded);
        ok(r, bounded.join(' '));
        const outDir = args[args.indexOf('--out') + 1];
        assert.ok(fs.existsSync(path.join(cwd, outDir, 'report.html')), 'loadtest wrote its report');
        continue;
      }
      checkExample(args, await sift(args));
    }
  } finally {
    if (serve) {
      const exited = new Promise<number | null>((r) => serve?.child.on('exit', (c) => r(c)));
      serve.child.kill('SIGTERM');
      assert.equal(await exited, 0, `serve did not exit 0 on SIGTERM:\n${serve.out()}`);
      for (const line of linesOf(serve.out())) assert.doesNotThrow(() => JSON.parse(line), `not JSON: ${line}`);
    }
  }
});

test('the commands quoted under Performance use only flags their command offers', async () => {
  // quoted commands (not the placeholder `node bin/sift.js <command>`)
  const quoted = [...README.matchAll(/`(node bin\/sift\.js [^`]+)`/g)]
    .map((m) => shellWords(m[1]).slice(2))
    .filter((a) => /^[a-z]+$/.test(a[0] ?? ''));
  assert.ok(quoted.length >= 8, `quoted commands found: ${quoted.length}`);
  const helps = new Map<string, string>();
  for (const args of quoted) {
    const cmd = args[0] === 'bench' && args[1] && !args[1].startsWith('-') ? args.slice(0, 2) : args.slice(0, 1);
    const key = cmd.join(' ');
    if (!helps.has(key)) {
      const r = await sift([...cmd, '--help']);
      ok(r, `${key} --help`);
      helps.set(key, r.stdout);
    }
    const help = helps.get(key) ?? '';
    for (const flag of args.filter((a) => a.startsWith('--'))) {
      assert.match(help, new RegExp(`^\\s+${flag}(\\s|$)`, 'm'), `\`sift ${args.join(' ')}\`: ${key} has no ${flag}`);
    }
  }
});

test('the README names every environment variable sift reads outside the config sections', () => {
  for (const name of Object.keys(OTHER_ENV)) {
    // test and setup knobs are documented where they are used
    if (/^SIFT_(TEST_|SKIP_|CLUSTER_)/.test(name) && name !== 'SIFT_TEST_FILE_TIMEOUT_S') continue;
    assert.ok(README.includes(`\`${name}`), `README does not mention ${name}`);
  }
  assert.doesNotMatch(README, /SIFT_ADAPTER\b/, 'SIFT_ADAPTER is not read any more');
});
