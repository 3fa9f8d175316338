/**
 * The run's reports: report.json (every figure, the config, the target) and report.html, one self-contained file
 * (inline CSS and SVG, no scripts, fonts or anything fetched) with the plots and tables.
 */
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import type { LevelResult } from './level.js';
import { MIN_SAMPLES, type Summary, shownPercentile } from './stats.js';
import { barChart, esc, fmtNum, lineChart, PALETTE, type Series } from './svg.js';
import type { TargetInfo } from './target.js';
import type { Calibration, Scenario } from './workload.js';

export interface LoadtestConfig {
  api: 'chat' | 'completions';
  durationS: number;
  concurrency: number[];
  scenarios: Scenario[];
  promptLens: number[];
  /** Prompt lengths asked for, before clamping to the context. */
  promptLensRequested: number[];
  maxTokens: number;
  longMaxTokens: number;
  attention: string[];
  maxRequests: number | null;
  timeoutS: number;
  /** Sessions scenarios: turns per conversation and tokens per user message (after clamping to the context). */
  turns: number;
  turnTokens: number;
  turnTokensRequested: number;
  /** Conversations kept going per level; null = twice the level's concurrency. */
  conversations: number | null;
}

export interface Report {
  tool: 'sift loadtest';
  version: 1;
  date: string;
  command: string;
  host: {
    hostname: string;
    platform: string;
    arch: string;
    cpus: number;
    cpuModel: string;
    memGiB: number;
    node: string;
  };
  config: LoadtestConfig;
  target: TargetInfo;
  calibration: Calibration | null;
  notes: string[];
  interrupted: boolean;
  levels: LevelResult[];
}

export function hostInfo(): Report['host'] {
  return {
    hostname: os.hostname(),
    platform: `${os.type()} ${os.release()}`,
    arch: os.arch(),
    cpus: os.cpus().length,
    cpuModel: os.cpus()[0]?.model ?? '',
    memGiB: Math.round((os.totalmem() / 2 ** 30) * 10) / 10,
    node: process.version,
  };
}

export function writeReports(dir: string, r: Report): { json: string; html: string } {
  const json = path.join(dir, 'report.json');
  const html = path.join(dir, 'report.html');
  writeFileSync(json, `${JSON.stringify(r, null, 2)}\n`);
  writeFileSync(html, renderHtml(r));
  return { json, html };
}

const f = (v: number | null | undefined, digits = 1) =>
  v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(digits);
const levelName = (l: LevelResult) => `${l.scenario}${l.attention ? ` ${l.attention}` : ''}`;
/** p50 / p90 / p99, each shown only from enough samples (stats.ts MIN_SAMPLES), with n when some are left out. */
const pct = (s: Summary) => {
  const cut = s.n > 0 && s.n < MIN_SAMPLES.p99;
  return `${f(shownPercentile(s, 'p50'))} / ${f(shownPercentile(s, 'p90'))} / ${f(shownPercentile(s, 'p99'))}${cut ? ` (n=${s.n})` : ''}`;
};

/** Says which percentiles a report leaves out for want of samples. */
export const PERCENTILE_NOTE =
  `p90 is shown from ${MIN_SAMPLES.p90} samples and p99 from ${MIN_SAMPLES.p99} on ("–" below that, with the ` +
  'sample count n): from fewer they are the largest values, not percentiles. report.json keeps every figure.';

/** One row per level: the figures people compare. */
export function summaryTable(levels: LevelResult[]): string[][] {
  const head = [
    'scenario',
    'attention',
    'conc.',
    'ok',
    'errors',
    'req/s',
    'out tok/s',
    'TTFT ms p50/p90/p99',
    'ITL ms p50/p90/p99',
    'TPOT ms mean',
    'e2e ms p50/p90/p99',
    'tok/s per stream (mean)',
    'out tok (mean)',
    'prompt tok cached %',
  ];
  return [
    head,
    ...levels.map((l) => [
      l.scenario,
      l.attention ?? 'default',
      String(l.concurrency),
      String(l.requests.ok),
      String(l.requests.errors),
      f(l.requestsPerS, 2),
      f(l.outputTokensPerS),
      pct(l.ttftMs),
      pct(l.itlMs),
      f(l.tpotMs.mean),
      pct(l.e2eMs),
      f(l.streamTokensPerS.mean),
      f(l.outputTokens.mean),
      l.prefixCache.hitRate === null ? '–' : f(l.prefixCache.hitRate * 100),
    ]),
  ];
}

/** Whether any response named its replica (X-Sift-Replica): the target is a balancer over sift replicas. */
export const hasReplicas = (levels: LevelResult[]) => levels.some((l) => l.byReplica.some((r) => r.replica !== null));

/** One row per level and replica: how the balancer spread the requests, and the prefix-cache hits on each. */
export function replicaTable(levels: LevelResult[]): string[][] {
  const head = [
    'scenario',
    'attention',
    'conc.',
    'replica',
    'ok',
    'errors',
    'share of ok %',
    'prompt tok',
    'cached tok',
    'cached %',
  ];
  const rows = levels.flatMap((l) =>
    l.byReplica.map((r) => [
      l.scenario,
      l.attention ?? 'default',
      String(l.concurrency),
      r.replica ?? '(no header)',
      String(r.ok),
      String(r.errors),
      f(l.requests.ok > 0 ? (100 * r.ok) / l.requests.ok : null),
      String(r.promptTokens),
      r.cachedTokens === null ? '–' : String(r.cachedTokens),
      f(r.promptTokens > 0 && r.cachedTokens !== null ? (100 * r.cachedTokens) / r.promptTokens : null),
    ]),
  );
  return [head, ...rows];
}

export function markdownTable(rows: string[][]): string {
  const [head, ...body] = rows;
  return [
    `| ${head.join(' | ')} |`,
    `|${head.map(() => '---').join('|')}|`,
    ...body.map((r) => `| ${r.join(' | ')} |`),
  ].join('\n');
}

/** An HTML table; columns in `left` (default the first two) are text, aligned left; the rest are numbers. */
function htmlTable(rows: string[][], left: number[] = [0, 1]): string {
  const [head, ...body] = rows;
  const cls = (i: number) => (left.includes(i) ? ' class="t"' : '');
  return `<div class="scroll"><table><thead><tr>${head.map((h, i) => `<th${cls(i)}>${esc(h)}</th>`).join('')}</tr></thead><tbody>${body
    .map((r) => `<tr>${r.map((c, i) => `<td${cls(i)}>${esc(c)}</td>`).join('')}</tr>`)
    .join('')}</tbody></table></div>`;
}

const CSS = `
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:24px;color:#222;background:#fafafa}
h1{font-size:22px;margin:0 0 6px}h2{font-size:18px;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
h3{font-size:15px;margin:16px 0 6px}
table{border-collapse:collapse;margin:6px 0 12px;background:#fff;font-size:12px}
.scroll{overflow-x:auto}
th,td{border:1px solid #d4d4d4;padding:3px 8px;text-align:right;white-space:nowrap}
th{background:#f0f0f0;white-space:normal;vertical-align:bottom}td.t,th.t{text-align:left}
.meta td{text-align:left;white-space:normal}.meta td:first-child{font-weight:600;width:160px}
.charts{display:flex;flex-wrap:wrap;gap:12px}
.chart{border:1px solid #ddd;background:#fff}
.chart .title{font-size:14px;font-weight:600;fill:#222}
.chart .tick{font-size:11px;fill:#555}.chart .label{font-size:12px;fill:#333}
.chart .legend{font-size:12px;fill:#333}.chart .val{font-size:10px;fill:#333}
.chart .grid{stroke:#eee}.chart .axis{stroke:#888}
.warn{color:#a33}.note{color:#555}
code{background:#eee;padding:0 3px;border-radius:3px}
dl{display:grid;grid-template-columns:max-content auto;gap:2px 12px}dt{font-weight:600}dd{margin:0}
`;

/** One palette colour per distinct key (dense and sparse of one scenario share a colour; sparse is dashed). */
function colorBy(keys: string[]): (k: string) => string {
  const distinct = [...new Set(keys)];
  return (k) => PALETTE[distinct.indexOf(k) % PALETTE.length];
}

const MODE_DASH: Record<string, boolean> = { sparse: true };

function perScenarioCharts(r: Report): string {
  const out: string[] = [];
  const scenarios = [...new Set(r.levels.map((l) => l.scenario))];
  for (const sc of scenarios) {
    const ls = r.levels.filter((l) => l.scenario === sc);
    const modes = [...new Set(ls.map((l) => l.attention))];
    const metric = (pick: (l: LevelResult) => Summary): Series[] =>
      modes.flatMap((m) =>
        (['p50', 'p90', 'p99'] as const).map((p, pi) => ({
          name: `${m ? `${m} ` : ''}${p}`,
          color: ['#1f77b4', '#ff7f0e', '#d62728'][pi],
          dashed: m !== null && MODE_DASH[m] === true,
          points: ls
            .filter((l) => l.attention === m)
            .map((l) => ({ x: l.concurrency, y: shownPercentile(pick(l), p) })),
        })),
      );
    const charts: string[] = [];
    const hasTtft = ls.some((l) => l.ttftMs.n > 0);
    if (hasTtft)
      charts.push(
        lineChart({
          title: `${sc}: TTFT percentiles vs concurrency`,
          xLabel: 'concurrency',
          yLabel: 'TTFT (ms)',
          logX: true,
          series: metric((l) => l.ttftMs),
        }),
      );
    if (ls.some((l) => l.itlMs.n > 0))
      charts.push(
        lineChart({
          title: `${sc}: inter-token latency percentiles vs concurrency`,
          xLabel: 'concurrency',
          yLabel: 'ITL (ms)',
          logX: true,
          series: metric((l) => l.itlMs),
        }),
      );
    charts.push(
      lineChart({
        title: `${sc}: end-to-end latency percentiles vs concurrency`,
        xLabel: 'concurrency',
        yLabel: 'e2e latency (ms)',
        logX: true,
        series: metric((l) => l.e2eMs),
      }),
    );
    out.push(
      `<h3>${esc(sc)}${ls[0].driver === 'autocannon' ? ' (autocannon: no per-token timing)' : ''}</h3><div class="charts">${charts.join('')}</div>`,
    );
  }
  return out.join('');
}

function throughputCharts(r: Report): string {
  const keys = [...new Set(r.levels.map(levelName))];
  const color = colorBy(r.levels.map((l) => l.scenario));
  const series = (pick: (l: LevelResult) => number): Series[] =>
    keys.map((k) => {
      const ls = r.levels.filter((l) => levelName(l) === k);
      return {
        name: k,
        color: color(ls[0].scenario),
        dashed: ls[0].attention === 'sparse',
        points: ls.map((l) => ({ x: l.concurrency, y: l.requests.ok > 0 ? pick(l) : null })),
      };
    });
  return `<div class="charts">${lineChart({ title: 'Aggregate output tokens/s vs concurrency', xLabel: 'concurrency', yLabel: 'output tokens/s', logX: true, series: series((l) => l.outputTokensPerS) })}${lineChart(
    {
      title: 'Requests/s vs concurrency',
      xLabel: 'concurrency',
      yLabel: 'requests/s',
      logX: true,
      series: series((l) => l.requestsPerS),
    },
  )}${lineChart({ title: 'Output tokens/s per stream (mean) vs concurrency', xLabel: 'concurrency', yLabel: 'tokens/s per stream', logX: true, series: series((l) => l.streamTokensPerS.mean ?? Number.NaN) })}</div>`;
}

function promptLenCharts(r: Report): string {
  const ls = r.levels.filter((l) => l.byPromptLen.length > 0 && l.ttftMs.n > 0);
  if (ls.length === 0) return '<p class="note">No long-prompt levels ran (scenarios long or mixed).</p>';
  const color = colorBy(ls.map((l) => `${l.scenario} c=${l.concurrency}`));
  const series = (p: 'p50' | 'p90'): Series[] =>
    ls.map((l) => ({
      name: `${levelName(l)} c=${l.concurrency}`,
      color: color(`${l.scenario} c=${l.concurrency}`),
      dashed: l.attention === 'sparse',
      points: l.byPromptLen.map((g) => ({ x: g.promptTokens ?? g.promptLen, y: shownPercentile(g.ttftMs, p) })),
    }));
  const rows = [
    [
      'scenario',
      'attention',
      'conc.',
      'target prompt tok',
      'measured prompt tok',
      'n',
      'TTFT ms p50/p90/p99',
      'e2e ms p50',
    ],
    ...ls.flatMap((l) =>
      l.byPromptLen.map((g) => [
        l.scenario,
        l.attention ?? 'default',
        String(l.concurrency),
        String(g.promptLen),
        f(g.promptTokens),
        String(g.n),
        pct(g.ttftMs),
        f(g.e2eMs.p50),
      ]),
    ),
  ];
  return `<div class="charts">${lineChart({ title: 'TTFT p50 vs prompt length', xLabel: 'prompt tokens (server usage)', yLabel: 'TTFT p50 (ms)', series: series('p50') })}${lineChart(
    {
      title: 'TTFT p90 vs prompt length',
      xLabel: 'prompt tokens (server usage)',
      yLabel: 'TTFT p90 (ms)',
      series: series('p90'),
    },
  )}</div>${htmlTable(rows)}`;
}

/**
 * Whether the sparse levels did the dense levels' work: every request of every sparse level reports (sift's
 * usage.attention.mode) that decode ran dense, as when the contexts fit the token budget. null when the server did
 * not say.
 */
export function sparseRanDense(levels: LevelResult[]): boolean | null {
  const sparse = levels.filter((l) => l.attention === 'sparse' && l.requests.ok > 0);
  const reported = sparse.filter((l) => Object.keys(l.attentionRan ?? {}).length > 0);
  if (sparse.length === 0 || reported.length < sparse.length) return null;
  return reported.every((l) => !l.attentionRan.sparse);
}

/** The note on the dense vs sparse levels: what ran, and whether a comparison means anything. */
export function denseSparseNote(levels: LevelResult[]): string {
  const same = sparseRanDense(levels);
  if (same === true) {
    return (
      'Every request of the sparse levels ran dense decode attention (usage.attention.mode: their contexts fit the ' +
      'token budget), so dense and sparse did identical work: differences between them are noise, and no ' +
      'comparison is drawn. Longer prompts, or a smaller token budget, make sparse attention select pages.'
    );
  }
  if (same === null) return 'The server did not report which attention ran (usage.attention.mode).';
  const ran = levels
    .filter((l) => l.attention === 'sparse')
    .map(
      (l) =>
        `${l.scenario} c=${l.concurrency}: ${Object.entries(l.attentionRan)
          .map(([m, n]) => `${n} ${m}`)
          .join(', ')}`,
    );
  return `Decode attention that ran in the sparse levels (requests): ${ran.join('; ')}.`;
}

function denseSparseCharts(r: Report): string {
  const modes = [...new Set(r.levels.map((l) => l.attention))];
  if (!(modes.includes('dense') && modes.includes('sparse'))) return '';
  const note = `<p class="note">The same scenarios with <code>attention: {mode}</code> in every request body. ${esc(denseSparseNote(r.levels))}</p>`;
  if (sparseRanDense(r.levels) === true) return `<h2>Dense vs sparse attention</h2>${note}`;
  const groups = [...new Set(r.levels.map((l) => `${l.scenario} c=${l.concurrency}`))];
  const find = (g: string, m: string) =>
    r.levels.find((l) => `${l.scenario} c=${l.concurrency}` === g && l.attention === m);
  const chart = (title: string, yLabel: string, pick: (l: LevelResult) => number | null) =>
    barChart({
      title,
      yLabel,
      seriesNames: ['dense', 'sparse'],
      groups: groups.map((g) => ({
        label: g,
        values: ['dense', 'sparse'].map((m) => {
          const l = find(g, m);
          return l && l.requests.ok > 0 ? pick(l) : null;
        }),
      })),
    });
  return `<h2>Dense vs sparse attention</h2>${note}<div class="charts">${[
    chart('TTFT p50: dense vs sparse', 'ms', (l) => l.ttftMs.p50),
    chart('Inter-token latency p50: dense vs sparse', 'ms', (l) => l.itlMs.p50),
    chart('End-to-end latency p50: dense vs sparse', 'ms', (l) => l.e2eMs.p50),
    chart('Aggregate output tokens/s: dense vs sparse', 'tokens/s', (l) => l.outputTokensPerS),
  ].join('')}</div>`;
}

function errorTable(r: Report): string {
  const rows = [['scenario', 'attention', 'conc.', 'kind', 'count', 'first message']];
  for (const l of r.levels) {
    for (const [k, n] of Object.entries(l.errorsByKind)) {
      rows.push([
        l.scenario,
        l.attention ?? 'default',
        String(l.concurrency),
        k,
        String(n),
        (l.errorExamples[k] ?? '').slice(0, 200),
      ]);
    }
  }
  const retries = r.levels.reduce((s, l) => s + l.requests.staleSocketRetries, 0);
  const note = `<p class="note">Stale keep-alive sockets retried once on a new connection (not errors): ${retries}.</p>`;
  return rows.length > 1 ? htmlTable(rows, [0, 1, 3, 5]) + note : `<p>No errors.</p>${note}`;
}

/** The adapter the server reports (sift: the WebGPU adapter), or "not reported". */
export function settingsAdapter(s: Record<string, unknown> | null | undefined): string {
  return typeof s?.adapter === 'string' ? s.adapter : 'not reported';
}

/** The server's attention defaults in one line, e.g. "sparse, token budget 4096, pages of 64, dense prefill, ...". */
export function settingsAttention(s: Record<string, unknown> | null | undefined): string {
  const a = s?.attention as Record<string, unknown> | undefined;
  if (!a || typeof a !== 'object') return 'not reported';
  const share = Number(a.streaming_head_share ?? 0);
  const parts = [
    `default mode ${a.mode}`,
    `token budget ${a.token_budget}`,
    `pages of ${a.page_size} tokens`,
    `${a.prefill_mode} prefill`,
    share > 0
      ? `${Math.round(share * 100)}% streaming heads (sink ${a.sink} + local ${a.local})`
      : 'no streaming heads',
  ];
  if (typeof s?.prefix_cache === 'boolean') parts.push(`prefix cache ${s.prefix_cache ? 'on' : 'off'}`);
  return parts.join(', ');
}

export function renderHtml(r: Report): string {
  const t = r.target;
  const meta: [string, string][] = [
    ['target', `${esc(t.baseUrl)}${t.spawned ? ' (started by this run)' : ''}`],
    ['model', esc(t.model)],
    ['server', `${esc(t.serverKind)}${t.serverHeader ? ` (Server: ${esc(t.serverHeader)})` : ''}`],
    ['context', t.contextLength === null ? 'not reported' : `${t.contextLength} tokens`],
    ['adapter', esc(settingsAdapter(t.settings))],
    ['server attention', esc(settingsAttention(t.settings))],
    ['date', esc(r.date)],
    [
      'host',
      esc(
        `${r.host.hostname}: ${r.host.cpus} × ${r.host.cpuModel}, ${r.host.memGiB} GiB, ${r.host.platform} ${r.host.arch}, node ${r.host.node}`,
      ),
    ],
    ['command', `<code>${esc(r.command)}</code>`],
    [
      'load',
      esc(
        `${r.config.api} API, ${r.config.durationS} s per level, concurrency ${r.config.concurrency.join(',')}, scenarios ${r.config.scenarios.join(',')}, ` +
          `max_tokens ${r.config.maxTokens} (long: ${r.config.longMaxTokens}), prompt lengths ${r.config.promptLens.join(',')}` +
          `${r.config.maxRequests !== null ? `, at most ${r.config.maxRequests} requests per level` : ''}, request timeout ${r.config.timeoutS} s, ` +
          `attention ${r.config.attention.length ? r.config.attention.join(',') : 'server default'}` +
          `${r.config.scenarios.some((s) => s.startsWith('sessions')) ? `, sessions of ${r.config.turns} turns with user messages of ${r.config.turnTokens} tokens` : ''}`,
      ),
    ],
    [
      'prompt calibration',
      r.calibration
        ? esc(
            `${r.calibration.measured ? 'measured' : 'guessed (no usage from the server)'}: ${fmtNum(r.calibration.perWord)} tokens/word + ${fmtNum(r.calibration.overhead)}`,
          )
        : 'not needed',
    ],
  ];
  const notes = [...r.notes, ...(r.interrupted ? ['Interrupted (Ctrl-C): the figures cover what ran before.'] : [])];
  const html = `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>sift loadtest: ${esc(t.model)}</title><style>${CSS}</style></head>
<body>
<h1>sift loadtest report</h1>
<table class="meta"><tbody>${meta.map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v}</td></tr>`).join('')}</tbody></table>
${notes.map((n) => `<p class="warn">${esc(n)}</p>`).join('')}
<h2>Summary</h2>
${htmlTable(summaryTable(r.levels))}
<p class="note">${esc(PERCENTILE_NOTE)}</p>
<h2>Latency percentiles vs concurrency</h2>
<p class="note">p50 blue, p90 orange, p99 red${r.config.attention.includes('sparse') ? '; solid: dense (or server default), dashed: sparse' : ''}. Concurrency on a log scale.</p>
${perScenarioCharts(r)}
<h2>Throughput vs concurrency</h2>
${throughputCharts(r)}
<h2>TTFT vs prompt length</h2>
${promptLenCharts(r)}
${denseSparseCharts(r)}
${
  hasReplicas(r.levels)
    ? `<h2>Responses by replica</h2><p class="note">Counted by the <code>X-Sift-Replica</code> response header: which replica behind the balancer answered. Cached: prompt tokens the replica's prefix cache supplied (<code>usage.prompt_tokens_details.cached_tokens</code>).</p>${htmlTable(replicaTable(r.levels), [0, 1, 3])}`
    : ''
}
<h2>Errors</h2>
${errorTable(r)}
<h2>Definitions</h2>
<dl>
<dt>TTFT</dt><dd>request sent → first SSE chunk with non-empty content</dd>
<dt>ITL</dt><dd>gap between consecutive content chunks of a stream, pooled over all streams</dd>
<dt>TPOT</dt><dd>per request (e2e − TTFT) / (output tokens − 1)</dd>
<dt>e2e</dt><dd>request sent → <code>data: [DONE]</code></dd>
<dt>output tokens</dt><dd><code>usage.completion_tokens</code> of the final usage chunk (content chunks when absent)</dd>
<dt>out tok/s</dt><dd>output tokens of all successful requests / level wall time (start → last request's end)</dd>
<dt>req/s</dt><dd>successful requests / level wall time</dd>
<dt>percentiles</dt><dd>linear interpolation between closest ranks, over successful requests; p90 from ${MIN_SAMPLES.p90} samples on, p99 from ${MIN_SAMPLES.p99} on</dd>
<dt>prompt tok cached %</dt><dd>Σ <code>usage.prompt_tokens_details.cached_tokens</code> / Σ <code>usage.prompt_tokens</code> over successful requests (the prefix-cache hit rate); – when the server reports no cached tokens</dd>
<dt>errors</dt><dd>http_&lt;status&gt;, context_length_exceeded, connection, timeout, stream_error (an error object inside the stream), malformed (bad JSON, no role, no finish_reason, no usage chunk, no <code>[DONE]</code>, data after it, wrong content type)</dd>
</dl>
</body></html>
`;
  // Text that quotes a URL (the target, the command, a server's error message) gets its scheme's colon as an
  // entity: it reads the same, and the file holds no http(s):// string that anything could fetch.
  return html.replace(/(https?):\/\//gi, '$1&#58;//');
}
