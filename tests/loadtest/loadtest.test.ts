import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { main } from '../../cli/loadtest.js';
import { levelFigures, runLevel } from '../../loadtest/level.js';
import { PERCENTILE_NOTE, type Report, summaryTable } from '../../loadtest/report.js';
import { SseCompletionReader } from '../../loadtest/sse.js';
import { type RequestOutcome, SseClient } from '../../loadtest/sse-client.js';
import { percentile, summarize } from '../../loadtest/stats.js';
import { shortRequest } from '../../loadtest/workload.js';
import { type Behaviour, startFake } from './fake-openai.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'sift-loadtest-'));
after(() => fs.rmSync(tmp, { recursive: true, force: true }));
let runs = 0;

/** Runs `sift loadtest` in-process against `url` and returns its exit code and report. */
async function loadtest(
  url: string,
  args: string[],
): Promise<{ code: number; report: Report; html: string; dir: string }> {
  const dir = path.join(tmp, `run${runs++}`);
  const code = await main(['--url', url, '--out', dir, ...args]);
  const report = JSON.parse(fs.readFileSync(path.join(dir, 'report.json'), 'utf8')) as Report;
  return { code, report, html: fs.readFileSync(path.join(dir, 'report.html'), 'utf8'), dir };
}

describe('percentiles', () => {
  test('linear interpolation between closest ranks on known arrays', () => {
    const xs = Array.from({ length: 100 }, (_, i) => i + 1);
    assert.equal(percentile(xs, 50), 50.5);
    assert.ok(Math.abs((percentile(xs, 90) as number) - 90.1) < 1e-9);
    assert.ok(Math.abs((percentile(xs, 99) as number) - 99.01) < 1e-9);
    assert.equal(percentile(xs, 0), 1);
    assert.equal(percentile(xs, 100), 100);
    assert.equal(percentile([3, 1, 2], 50), 2);
    assert.equal(percentile([1, 2, 3, 4], 25), 1.75);
    assert.equal(percentile([7], 99), 7);
    assert.equal(percentile([], 50), null);
    assert.throws(() => percentile([1], 101), RangeError);
  });
  test('summary of a sample', () => {
    const s = summarize([10, 20, 30, 40, Number.NaN]);
    assert.deepEqual(
      { ...s, p99: Number(s.p99!.toFixed(9)) },
      { n: 4, mean: 25, min: 10, max: 40, p50: 25, p90: 37, p99: 39.7 },
    );
    assert.equal(summarize([]).p50, null);
  });
});

describe('report percentiles and their sample counts', () => {
  const outcome = (i: number): RequestOutcome => ({
    kind: 'short',
    promptLen: null,
    start: i,
    end: i + 100,
    error: null,
    errorDetail: null,
    aborted: false,
    status: 200,
    ttftMs: 10 + i,
    itlMs: [5, 6],
    e2eMs: 100 + i,
    outputTokens: 3,
    contentDeltas: 3,
    usage: null,
    finishReason: 'length',
    staleSocketRetry: false,
    replica: null,
  });
  const plan = { scenario: 'short' as const, attention: null, concurrency: 1, durationMs: 1000, maxRequests: null };
  const row = (n: number) => {
    const t = summaryTable([
      levelFigures(
        plan,
        Array.from({ length: n }, (_, i) => outcome(i)),
        1,
        false,
      ),
    ]);
    return Object.fromEntries(t[0].map((h, i) => [h, t[1][i]]));
  };

  test('p90 and p99 are left out below 10 and 100 samples, and the sample count is shown', () => {
    assert.equal(row(4)['TTFT ms p50/p90/p99'], '11.5 / – / – (n=4)');
    assert.equal(row(4)['e2e ms p50/p90/p99'], '101.5 / – / – (n=4)');
    assert.match(row(20)['TTFT ms p50/p90/p99'], /^\d+\.\d \/ \d+\.\d \/ – \(n=20\)$/);
    assert.match(row(120)['TTFT ms p50/p90/p99'], /^\d+\.\d \/ \d+\.\d \/ \d+\.\d$/);
    assert.match(PERCENTILE_NOTE, /p90 is shown from 10 samples and p99 from 100/);
  });
});

describe('SSE completion reader', () => {
  const frame = (o: unknown) => `data: ${JSON.stringify(o)}\n\n`;
  const chunk = (delta: Record<string, unknown>, finish: string | null = null) =>
    frame({ object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish }] });
  const usage = frame({
    object: 'chat.completion.chunk',
    choices: [],
    usage: { prompt_tokens: 7, completion_tokens: 2, total_tokens: 9 },
  });
  const good =
    chunk({ role: 'assistant', content: '' }) +
    chunk({ content: 'Hi' }) +
    chunk({ content: ' there' }) +
    chunk({}, 'stop') +
    usage +
    'data: [DONE]\n\n';
  const read = (text: string, expectUsage = true, pieces = 1) => {
    const r = new SseCompletionReader('chat', expectUsage);
    const step = Math.ceil(text.length / pieces);
    for (let i = 0; i < text.length; i += step) r.feed(text.slice(i, i + step), i);
    return r.finish(text.length);
  };
  test('a complete stream, whole or byte by byte, with CRLF line ends', () => {
    for (const text of [good, good.replace(/\n/g, '\r\n')]) {
      for (const pieces of [1, 7, text.length]) {
        const v = read(text, true, pieces);
        assert.equal(v.malformed, null, `${pieces} pieces`);
        assert.equal(v.contentTimes.length, 2);
        assert.equal(v.finishReason, 'stop');
        assert.deepEqual(v.usage, { promptTokens: 7, completionTokens: 2, cachedTokens: null, attentionRan: null });
        assert.notEqual(v.doneTime, null);
      }
    }
  });
  test('each way of being incomplete or malformed is named', () => {
    const cases: [string, RegExp][] = [
      [good.replace('data: [DONE]\n\n', ''), /before data: \[DONE\]/],
      [good.replace(chunk({ content: 'Hi' }), 'data: {"choices": [oops\n\n'), /not JSON/],
      [good.replace(chunk({ role: 'assistant', content: '' }), ''), /no delta.role/],
      [good.replace(chunk({}, 'stop'), ''), /no finish_reason/],
      [good.replace(usage, ''), /no usage chunk/],
      [`${good}${chunk({ content: 'x' })}`, /data after \[DONE\]/],
      [good.replace(chunk({}, 'stop'), chunk({}, 'stop') + chunk({ content: '!' })), /content after finish_reason/],
      [good.replace('"completion_tokens":2', '"completion_tokens":1'), /completion_tokens 1 < 2/],
    ];
    for (const [text, why] of cases) assert.match(read(text).malformed ?? 'none', why);
    assert.equal(read(good.replace(usage, ''), false).malformed, null, 'usage is only required when asked for');
    const err = read(`${chunk({ role: 'assistant' })}data: {"error":{"message":"device lost"}}\n\n`);
    assert.equal(err.streamError, 'device lost');
  });
});

describe('sift loadtest against a fake OpenAI server (10 ms per token)', () => {
  test('TTFT, ITL and token counts match the fake; throughput scales with concurrency; reports complete', async (t) => {
    const fake = await startFake({ prefillMs: 30, tokenMs: 10 });
    t.after(() => fake.close());
    const { code, report, html } = await loadtest(fake.url, [
      '--duration',
      '1.2',
      '--concurrency',
      '1,4',
      '--scenarios',
      'short',
      '--max-tokens',
      '20',
    ]);
    assert.equal(code, 0);
    assert.equal(report.levels.length, 2);
    const [c1, c4] = report.levels;
    for (const l of report.levels) {
      assert.equal(l.requests.errors, 0, JSON.stringify(l.errorsByKind));
      assert.ok(l.requests.ok >= l.concurrency * 2, `${l.requests.ok} requests at c=${l.concurrency}`);
      // The fake's first token comes 30 ms after the request, then one every 10 ms, 20 tokens in all. The lower
      // bounds are exact; the upper ones leave room for a loaded machine's timers while still telling TTFT, ITL and
      // e2e apart (a TTFT that counted the whole stream would be >= 220 ms, an ITL that counted TTFT >= 30 ms).
      assert.ok(l.ttftMs.p50! >= 29 && l.ttftMs.p50! < 150, `TTFT p50 ${l.ttftMs.p50}`);
      assert.ok(l.itlMs.p50! >= 8 && l.itlMs.p50! < 28, `ITL p50 ${l.itlMs.p50}`);
      assert.ok(l.tpotMs.mean! >= 9 && l.tpotMs.mean! < 28, `TPOT ${l.tpotMs.mean}`);
      assert.ok(l.e2eMs.p50! >= 29 + 19 * 10 && l.e2eMs.p50! < 700, `e2e p50 ${l.e2eMs.p50}`);
      assert.equal(l.outputTokens.min, 20);
      assert.equal(l.outputTokens.max, 20);
      assert.equal(l.outputTokensTotal, 20 * l.requests.ok);
      assert.equal(l.itlMs.n, 19 * l.requests.ok);
      assert.deepEqual(l.finishReasons, { length: l.requests.ok });
      assert.equal(l.driver, 'sse-client');
    }
    const scale = c4.outputTokensPerS / c1.outputTokensPerS;
    assert.ok(scale > 2.5 && scale < 4.5, `aggregate tokens/s at c=4 / c=1 = ${scale}`);
    assert.ok(
      c1.streamTokensPerS.mean! > 60 && c1.streamTokensPerS.mean! < 100,
      `per-stream ${c1.streamTokensPerS.mean}`,
    );

    // Every field of the report.
    for (const k of [
      'tool',
      'version',
      'date',
      'command',
      'host',
      'config',
      'target',
      'calibration',
      'notes',
      'interrupted',
      'levels',
    ]) {
      assert.ok(k in report, k);
    }
    assert.equal(report.target.baseUrl, fake.url);
    assert.equal(report.target.model, 'fake-model');
    assert.equal(report.target.serverKind, 'fake');
    assert.equal(report.target.contextLength, 256);
    assert.ok(report.host.cpus > 0 && report.host.hostname.length > 0);
    assert.deepEqual(report.config.concurrency, [1, 4]);
    for (const k of [
      'requestsPerS',
      'outputTokensPerS',
      'ttftMs',
      'itlMs',
      'tpotMs',
      'e2eMs',
      'streamTokensPerS',
      'errorsByKind',
      'requests',
      'wallS',
    ]) {
      assert.ok(k in c1, k);
    }
    for (const k of ['n', 'mean', 'p50', 'p90', 'p99', 'min', 'max']) assert.ok(k in c1.ttftMs, k);
    // Requests carry streaming with usage, and no attention field for a server that is not sift.
    const body = fake.bodies[0];
    assert.equal(body.stream, true);
    assert.deepEqual(body.stream_options, { include_usage: true });
    assert.equal(body.attention, undefined);

    // The HTML stands alone.
    assert.ok(html.includes('<svg'));
    assert.doesNotMatch(html, /https?:\/\//i);
    assert.doesNotMatch(html, /<script|<link|<img|<iframe|@import|url\(/i);
    assert.ok(html.includes('fake-model'));
  });

  test('malformed streams and HTTP 500/429 are errors by kind (streaming client and autocannon)', async (t) => {
    const cycle: Behaviour[] = ['ok', 'no-done', 'bad-json', 'http500', 'http429'];
    for (const scenario of ['short', 'rate']) {
      const fake = await startFake({ prefillMs: 5, tokenMs: 2, behave: (i) => cycle[i % cycle.length] });
      t.after(() => fake.close());
      const { code, report } = await loadtest(fake.url, [
        '--duration',
        '20',
        '--max-requests',
        '10',
        '--concurrency',
        '1',
        '--scenarios',
        scenario,
        '--max-tokens',
        '5',
      ]);
      assert.equal(code, 0);
      const l = report.levels[0];
      assert.equal(l.driver, scenario === 'rate' ? 'autocannon' : 'sse-client');
      assert.equal(l.requests.ok, 2, scenario);
      assert.equal(l.requests.errors, 8, scenario);
      assert.deepEqual(l.errorsByKind, { malformed: 4, http_500: 2, http_429: 2 }, scenario);
      assert.match(l.errorExamples.malformed, /\[DONE\]|not JSON/);
      assert.match(l.errorExamples.http_429, /HTTP 429: queue full/);
      assert.equal(l.outputTokensTotal, 10);
    }
  });

  test('long prompts: calibrated lengths, TTFT rises with prompt length, clamped to the context', async (t) => {
    const fake = await startFake({ prefillMs: 10, prefillMsPerToken: 0.5, tokenMs: 3, context: 256 });
    t.after(() => fake.close());
    const { code, report, html } = await loadtest(fake.url, [
      ...[
        '--duration',
        '1',
        '--concurrency',
        '1',
        '--scenarios',
        'long',
        '--prompt-lens',
        '40,120,300',
        '--long-max-tokens',
        '6',
      ],
    ]);
    assert.equal(code, 0);
    assert.deepEqual(report.config.promptLens, [40, 120, 250]);
    assert.ok(report.notes.some((n) => /clamped to 40,120,250/.test(n)));
    assert.equal(report.calibration?.measured, true);
    const l = report.levels[0];
    assert.equal(l.requests.errors, 0, JSON.stringify(l.errorExamples));
    assert.deepEqual(
      l.byPromptLen.map((g) => g.promptLen),
      [40, 120, 250],
    );
    for (const g of l.byPromptLen)
      assert.ok(Math.abs((g.promptTokens as number) - g.promptLen) <= 2, `${g.promptTokens} vs ${g.promptLen}`);
    const ttft = l.byPromptLen.map((g) => g.ttftMs.p50 as number);
    assert.ok(ttft[0] < ttft[1] && ttft[1] < ttft[2], `TTFT by prompt length ${ttft}`);
    assert.ok(html.includes('TTFT p50 vs prompt length'));
  });

  test('a server that does not report its context answers 400 context_length_exceeded: counted by kind, clear note', async (t) => {
    const fake = await startFake({ prefillMs: 2, tokenMs: 1, context: 256, reportContext: false });
    t.after(() => fake.close());
    // The calibration prompts (10 and 50 words) fit; the 300-token prompts do not fit the fake's 256.
    const { code, report } = await loadtest(fake.url, [
      '--duration',
      '5',
      '--max-requests',
      '3',
      '--concurrency',
      '1',
      '--scenarios',
      'long',
      '--prompt-lens',
      '300',
    ]);
    assert.equal(code, 1, 'no request succeeded');
    assert.equal(report.target.contextLength, null);
    assert.deepEqual(report.levels[0].errorsByKind, { context_length_exceeded: 3 });
    assert.ok(
      report.notes.some((n) =>
        /3 requests exceeded the server's context .*exceeds the context length 256.*lower --prompt-lens/.test(n),
      ),
    );
  });

  test('--attention dense,sparse sends attention: {mode} and draws dense vs sparse side by side', async (t) => {
    const fake = await startFake({ prefillMs: 5, tokenMs: 2 });
    t.after(() => fake.close());
    const { report, html } = await loadtest(fake.url, [
      '--duration',
      '0.4',
      '--concurrency',
      '1,2',
      '--scenarios',
      'short',
      '--max-tokens',
      '8',
      '--attention',
      'dense,sparse',
    ]);
    assert.deepEqual(
      report.levels.map((l) => `${l.attention}@${l.concurrency}`),
      ['dense@1', 'sparse@1', 'dense@2', 'sparse@2'],
    );
    const modes = new Set(fake.bodies.map((b) => (b.attention as { mode: string }).mode));
    assert.deepEqual([...modes].sort(), ['dense', 'sparse']);
    assert.ok(report.notes.some((n) => /does not say it is sift/.test(n)));
    assert.ok(html.includes('Dense vs sparse attention'));
    assert.ok(
      html.includes(PERCENTILE_NOTE.replace(/"/g, '&quot;')),
      'the report says which percentiles it leaves out',
    );
  });

  test('sessions: conversations turn by turn, interleaved, keyed or not; counts by replica and cached tokens', async (t) => {
    const fake = await startFake({ prefillMs: 2, tokenMs: 1, replica: 'fake-a', prefixCache: true, context: 512 });
    t.after(() => fake.close());
    const { code, report, html } = await loadtest(fake.url, [
      '--duration',
      '30',
      '--max-requests',
      '12',
      '--concurrency',
      '2',
      '--scenarios',
      'sessions,sessions-nokey',
      '--turns',
      '3',
      '--turn-tokens',
      '12',
      '--max-tokens',
      '3',
    ]);
    assert.equal(code, 0);
    assert.equal(report.config.turns, 3);
    assert.equal(report.config.turnTokens, 12);
    // The calibration requests come first (2), then 12 per level.
    const bodies = fake.bodies.slice(2);
    const headers = fake.headers.slice(2);
    assert.equal(bodies.length, 24);
    const users = (b: Record<string, unknown>) =>
      (b.messages as { role: string; content: string }[]).filter((m) => m.role === 'user').map((m) => m.content);
    for (const [li, l] of report.levels.entries()) {
      const keyed = l.scenario === 'sessions';
      assert.equal(l.requests.ok, 12, JSON.stringify(l.errorExamples));
      assert.deepEqual(l.byReplica, [
        {
          replica: 'fake-a',
          ok: 12,
          errors: 0,
          promptTokens: l.prefixCache.promptTokens,
          cachedTokens: l.prefixCache.cachedTokens,
        },
      ]);
      // Group the level's requests by conversation (the first user message names it).
      const mine = bodies.slice(li * 12, li * 12 + 12);
      const convs = new Map<string, number[]>();
      mine.forEach((b, i) => {
        const first = users(b)[0];
        assert.match(first, /^Conversation \d+: /);
        convs.set(first, [...(convs.get(first) ?? []), i]);
      });
      assert.ok(convs.size >= 4, `at least the 2 x concurrency conversations started (${convs.size})`);
      const distinctKeys = new Set<unknown>();
      for (const idx of convs.values()) {
        // Turns in order, never more than --turns, each resending the conversation so far.
        assert.deepEqual(
          idx.map((i) => users(mine[i]).length),
          idx.map((_, k) => k + 1),
          'turns in order',
        );
        assert.ok(idx.length <= 3);
        for (let k = 1; k < idx.length; k++) {
          const prev = mine[idx[k - 1]].messages as unknown[];
          const cur = mine[idx[k]].messages as unknown[];
          assert.deepEqual(cur.slice(0, prev.length), prev, 'a turn resends the conversation so far');
        }
        const ids = idx.map((i) => headers[li * 12 + i]['x-session-id']);
        if (keyed) {
          assert.match(String(ids[0]), /^conversation-\d+$/);
          assert.ok(
            ids.every((x) => x === ids[0]),
            'one key per conversation',
          );
          distinctKeys.add(ids[0]);
        } else assert.ok(ids.every((x) => x === undefined));
      }
      if (keyed) assert.equal(distinctKeys.size, convs.size, 'a key per conversation');
      assert.ok(
        [...convs.values()].some((idx) => idx.length > 1),
        'some conversation had a second turn',
      );
      // The fake reports the longest word prefix shared with any earlier prompt as cached: every later turn
      // hits at least its previous turn's words, and the level's rate is the ratio of the sums.
      assert.ok(l.prefixCache.requests === 12 && l.prefixCache.cachedTokens > 0);
      assert.equal(l.prefixCache.hitRate, l.prefixCache.cachedTokens / l.prefixCache.promptTokens);
    }
    assert.match(html, /Responses by replica/);
    assert.match(html, /fake-a/);
  });

  test('the rate scenario counts responses by replica too', async (t) => {
    const fake = await startFake({ prefillMs: 1, tokenMs: 1, replica: 'fake-b' });
    t.after(() => fake.close());
    const { report } = await loadtest(fake.url, [
      '--duration',
      '10',
      '--max-requests',
      '5',
      '--concurrency',
      '1',
      '--scenarios',
      'rate',
      '--max-tokens',
      '2',
    ]);
    const l = report.levels[0];
    assert.equal(l.requests.ok, 5);
    assert.deepEqual(
      l.byReplica.map((r) => [r.replica, r.ok]),
      [['fake-b', 5]],
    );
    assert.equal(l.prefixCache.hitRate, null, 'no cached_tokens reported');
  });

  test('dense vs sparse: no comparison when the sparse requests ran dense; what ran is said either way', async (t) => {
    const args = ['--duration', '0.3', '--concurrency', '1', '--scenarios', 'short', '--max-tokens', '4'];
    // a sift whose contexts fit the budget: every request reports dense decode, whatever it asked for
    const siftSettings = {
      adapter: 'llvmpipe (LLVM 15.0.6, 256 bits)',
      attention: {
        mode: 'sparse',
        token_budget: 4096,
        page_size: 64,
        prefill_mode: 'dense',
        streaming_head_share: 0.25,
        sink: 4,
        local: 32,
      },
      prefix_cache: false,
    };
    const same = await startFake({ prefillMs: 5, tokenMs: 2, attentionRan: () => 'dense', siftSettings });
    t.after(() => same.close());
    const a = await loadtest(same.url, [...args, '--attention', 'dense,sparse']);
    // the server's attention settings and adapter are recorded with the run
    assert.deepEqual(a.report.target.settings, siftSettings);
    assert.ok(a.html.includes('llvmpipe (LLVM 15.0.6, 256 bits)'));
    assert.ok(
      a.html.includes(
        'default mode sparse, token budget 4096, pages of 64 tokens, dense prefill, 25% streaming heads (sink 4 + local 32), prefix cache off',
      ),
    );
    assert.deepEqual(a.report.levels.find((l) => l.attention === 'sparse')?.attentionRan.sparse, undefined);
    assert.ok((a.report.levels.find((l) => l.attention === 'sparse')?.attentionRan.dense ?? 0) > 0);
    assert.ok(a.html.includes('did identical work'), 'the report says the work was identical');
    assert.ok(!a.html.includes('TTFT p50: dense vs sparse'), 'and draws no comparison');
    assert.ok(a.report.notes.some((n) => /identical work/.test(n)));
    // a sift that did select pages: the comparison is drawn, and says what ran
    const diff = await startFake({
      prefillMs: 5,
      tokenMs: 2,
      attentionRan: (b) => (b.attention as { mode: string }).mode,
    });
    t.after(() => diff.close());
    const b = await loadtest(diff.url, [...args, '--attention', 'dense,sparse']);
    assert.equal(b.report.target.settings, null);
    assert.match(b.html, /<td>server attention<\/td><td>not reported<\/td>/);
    assert.ok(b.html.includes('TTFT p50: dense vs sparse'));
    assert.match(b.html, /Decode attention that ran in the sparse levels \(requests\): short c=1: \d+ sparse/);
  });

  test('a reused socket the server closed is retried once on a new connection, not counted as an error', async (t) => {
    const fake = await startFake({ prefillMs: 1, tokenMs: 1, behave: (i) => (i === 1 ? 'drop-reused' : 'ok') });
    t.after(() => fake.close());
    const client = new SseClient({ baseUrl: fake.url, concurrency: 1, timeoutMs: 5000 });
    t.after(() => client.close());
    const w = {
      api: 'chat' as const,
      model: 'fake-model',
      maxTokens: 3,
      longMaxTokens: 3,
      promptLens: [],
      attention: null,
      calibration: { overhead: 0, perWord: 1, measured: true },
      turns: 1,
      turnTokens: 8,
      conversations: 1,
    };
    const l = await runLevel(client, {
      scenario: 'short',
      attention: null,
      concurrency: 1,
      durationMs: 10000,
      maxRequests: 3,
      makeRequest: (i) => shortRequest(w, i),
    });
    assert.equal(l.requests.ok, 3);
    assert.equal(l.requests.errors, 0);
    assert.equal(l.requests.staleSocketRetries, 1);
  });

  test('Ctrl-C stops the run, which still writes its reports', async (t) => {
    const fake = await startFake({ prefillMs: 5, tokenMs: 5 });
    t.after(() => fake.close());
    const cli = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', 'cli', 'main.js');
    const dir = path.join(tmp, 'sigint');
    const child = spawn(
      process.execPath,
      [
        cli,
        'loadtest',
        '--url',
        fake.url,
        '--out',
        dir,
        '--duration',
        '30',
        '--concurrency',
        '2,4',
        '--scenarios',
        'short',
      ],
      {
        stdio: ['ignore', 'ignore', 'pipe'],
      },
    );
    let stderr = '';
    // Interrupt 1.5 s after the first level reports progress (the SIGINT handler is in place by then): a fixed delay
    // from spawn is not enough on a loaded machine, where node's start-up alone can take longer.
    let timer: NodeJS.Timeout | null = null;
    child.stderr.on('data', (b: Buffer) => {
      stderr += b.toString();
      if (!timer && stderr.includes('[1/2] short')) timer = setTimeout(() => child.kill('SIGINT'), 1500);
    });
    const t0 = Date.now();
    const code = await new Promise<number | null>((r) => child.on('exit', (c) => r(c)));
    assert.equal(code, 130, stderr);
    assert.ok(timer !== null, 'the run never reported its start');
    assert.ok(Date.now() - t0 < 30_000, 'Ctrl-C did not stop a 2 x 30 s run early');
    const report = JSON.parse(fs.readFileSync(path.join(dir, 'report.json'), 'utf8')) as Report;
    const why = `${stderr}\n${JSON.stringify(report.levels.map((l) => [l.requests, l.errorsByKind, l.errorExamples]))}`;
    assert.equal(report.interrupted, true, why);
    assert.equal(report.levels.length, 1, why);
    assert.ok(report.levels[0].requests.ok > 0, why);
    assert.equal(report.levels[0].requests.errors, 0, why);
    assert.ok(fs.existsSync(path.join(dir, 'report.html')));
  });
});
