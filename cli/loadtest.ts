/**
 * `sift loadtest`: load levels (scenario x attention mode x concurrency) against any OpenAI-compatible server, or
 * against a `sift serve` it starts itself; report.json and a self-contained report.html in --out.
 */
import { setMaxListeners } from 'node:events';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { SiftError } from '../config/errors.js';
import { intFlag, numFlag } from '../config/flags.js';
import { calibrate } from '../loadtest/calibrate.js';
import { type LevelPlan, type LevelResult, runLevel } from '../loadtest/level.js';
import { runRateLevel } from '../loadtest/rate.js';
import {
  denseSparseNote,
  hasReplicas,
  hostInfo,
  type LoadtestConfig,
  markdownTable,
  PERCENTILE_NOTE,
  type Report,
  replicaTable,
  settingsAdapter,
  settingsAttention,
  sparseRanDense,
  summaryTable,
  writeReports,
} from '../loadtest/report.js';
import { SESSION_REPLY, SessionPool } from '../loadtest/sessions.js';
import { runSoak, type SoakPlan, soakTable } from '../loadtest/soak.js';
import { SseClient } from '../loadtest/sse-client.js';
import { normalizeBaseUrl, probeTarget, type SpawnedServer, spawnSift, type TargetInfo } from '../loadtest/target.js';
import {
  type AttentionMode,
  type Calibration,
  requestFor,
  SCENARIOS,
  type Scenario,
  type WorkloadOptions,
} from '../loadtest/workload.js';
import { parse, progressLine } from './common.js';

const HELP = `usage: sift loadtest [--url BASE] [options]

Puts streaming chat completions on an OpenAI-compatible server at fixed concurrency levels and reports TTFT,
inter-token latency, end-to-end latency (p50/p90/p99, mean), output tokens/s (per stream and aggregate),
requests/s and errors by kind. Every response is checked to be a complete, well-formed stream.
Writes report.json and report.html (self-contained, open it in any browser) into --out.
Behind a balancer over sift replicas, responses are also counted by replica (the X-Sift-Replica header), with
the prefix-cache hit rate each replica gave (usage.prompt_tokens_details.cached_tokens).

  --url BASE             server to load, e.g. http://127.0.0.1:8000 (default: start \`sift serve\` on a free port
                         with the default model, wait for GET /health, stop it afterwards)
  --model NAME           model to request (default: the first of GET /v1/models; passed to sift serve when started)
  --duration SECONDS     per level (default 30)
  --concurrency LIST     concurrent streams per level (default 1,4,16)
  --scenarios LIST       of ${SCENARIOS.join(', ')} (default short,long,mixed):
                           short  one-line prompt, max_tokens --max-tokens
                           long   prompts of --prompt-lens tokens, cycled, max_tokens --long-max-tokens
                           mixed  short and long alternately
                           rate   the short request driven by autocannon over fixed connections:
                                  requests/s and e2e latency only (no per-token timing)
                           sessions        multi-turn conversations, each turn resending the conversation so
                                  far (--turns, --turn-tokens, max_tokens --max-tokens), with an X-Session-Id
                                  header naming the conversation (what a balancer routes on); each request
                                  sends the next turn of a random conversation not in flight, so a
                                  conversation's turns come from different streams at no fixed rhythm
                           sessions-nokey  the same conversations without the header
  --prompt-lens LIST     prompt lengths in tokens for long/mixed (default 64,128,200; clamped so that
                         prompt + --long-max-tokens fits the server's context when it reports it)
  --max-tokens N         max_tokens of short requests and session turns (default 64)
  --turns N              turns per conversation in the sessions scenarios (default 4)
  --turn-tokens N        tokens per user message in the sessions scenarios (default 40; clamped so that the
                         last turn fits the server's context when it reports it)
  --conversations N      conversations kept going in the sessions scenarios (default 2 x the concurrency)
  --long-max-tokens N    max_tokens of long requests (default 32)
  --attention LIST       dense,sparse: run every level once per mode with the extra body field
                         attention: {mode} (default dense,sparse when the target is sift, else none;
                         "none" sends no attention field)
  --max-requests N       at most N requests per level (default: bounded by --duration only)
  --timeout SECONDS      per request, send to end of stream (default 120)
  --api chat|completions endpoint: /v1/chat/completions (default) or /v1/completions
  --api-key KEY          sent as Authorization: Bearer KEY
  --out DIR              where the reports go (default loadtest-out/<timestamp>)

Soak mode (a long run that checks what must stay at zero or flat):
  --soak SECONDS         instead of the levels: mixed streaming traffic (chat and completions, short and
                         --prompt-lens prompts, max_tokens 8..--max-tokens) at one --concurrency (default 16)
                         for SECONDS after a warm-up; writes soak.json and soak.md; exits 1 unless every target
                         is met: 0 errors on requests the client did not cut, 0 KV pages held once the server is
                         idle (sift:kv_cache_pages_used), RSS at the end within 10% of its value after the warm-up
  --disconnect SHARE     share of soak requests the client cuts at a random moment (default 0.3)
  --warmup SECONDS       soak traffic before the measured part (default min(60, SECONDS / 10))
  --seed N               soak request mix and cut times (default 1)

Progress goes to stderr; Ctrl-C stops the run and still writes the reports (a second Ctrl-C quits at once).
`;

const listOf = (v: unknown, name: string, def: number[]): number[] =>
  v === undefined
    ? def
    : String(v)
        .split(',')
        .map((x) => intFlag(x.trim(), name, 0, 1));

function namesOf<T extends string>(v: unknown, name: string, known: readonly T[], def: T[]): T[] {
  if (v === undefined) return def;
  const xs = String(v)
    .split(',')
    .map((x) => x.trim())
    .filter(Boolean);
  for (const x of xs) {
    if (!known.includes(x as T))
      throw new SiftError('INVALID_ARGUMENT', `--${name}: unknown "${x}" (known: ${known.join(', ')})`, {
        param: name,
      });
  }
  return [...new Set(xs)] as T[];
}

const stamp = () => new Date().toISOString().replace(/[:.]/g, '-').replace('T', '_').slice(0, 19);

export async function main(argv: string[]): Promise<number> {
  const { values } = parse(
    argv,
    {
      url: { type: 'string' },
      model: { type: 'string' },
      duration: { type: 'string' },
      concurrency: { type: 'string' },
      scenarios: { type: 'string' },
      'prompt-lens': { type: 'string' },
      'max-tokens': { type: 'string' },
      'long-max-tokens': { type: 'string' },
      turns: { type: 'string' },
      'turn-tokens': { type: 'string' },
      conversations: { type: 'string' },
      attention: { type: 'string' },
      'max-requests': { type: 'string' },
      timeout: { type: 'string' },
      api: { type: 'string' },
      'api-key': { type: 'string' },
      out: { type: 'string' },
      soak: { type: 'string' },
      disconnect: { type: 'string' },
      warmup: { type: 'string' },
      seed: { type: 'string' },
    },
    'loadtest',
  );
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  const durationS = numFlag(values.duration, 'duration', 30);
  if (!(durationS > 0)) throw new SiftError('INVALID_ARGUMENT', '--duration must be > 0', { param: 'duration' });
  const timeoutS = numFlag(values.timeout, 'timeout', 120);
  if (!(timeoutS > 0)) throw new SiftError('INVALID_ARGUMENT', '--timeout must be > 0', { param: 'timeout' });
  const api = namesOf(values.api, 'api', ['chat', 'completions'] as const, ['chat'])[0] ?? 'chat';
  const attentionArg =
    values.attention === undefined
      ? undefined
      : namesOf(values.attention, 'attention', ['dense', 'sparse', 'none'] as const, []);
  const config: LoadtestConfig = {
    api,
    durationS,
    concurrency: [...new Set(listOf(values.concurrency, 'concurrency', [1, 4, 16]))],
    scenarios: namesOf<Scenario>(values.scenarios, 'scenarios', SCENARIOS, ['short', 'long', 'mixed']),
    promptLens: [],
    promptLensRequested: listOf(values['prompt-lens'], 'prompt-lens', [64, 128, 200]),
    maxTokens: intFlag(values['max-tokens'], 'max-tokens', 64, 1),
    longMaxTokens: intFlag(values['long-max-tokens'], 'long-max-tokens', 32, 1),
    attention: [],
    maxRequests: values['max-requests'] === undefined ? null : intFlag(values['max-requests'], 'max-requests', 0, 1),
    timeoutS,
    turns: intFlag(values.turns, 'turns', 4, 1),
    turnTokens: 0,
    turnTokensRequested: intFlag(values['turn-tokens'], 'turn-tokens', 40, 1),
    conversations: values.conversations === undefined ? null : intFlag(values.conversations, 'conversations', 0, 1),
  };
  if (config.scenarios.length === 0)
    throw new SiftError('INVALID_ARGUMENT', '--scenarios is empty', { param: 'scenarios' });
  const apiKey = values['api-key'] as string | undefined;
  const outDir = path.resolve((values.out as string | undefined) ?? path.join('loadtest-out', stamp()));
  mkdirSync(outDir, { recursive: true });

  const progress = progressLine();
  const stop = new AbortController();
  setMaxListeners(0, stop.signal); // every request in flight listens for Ctrl-C
  const onSigint = () => {
    if (stop.signal.aborted) process.exit(130);
    progress.done('sift loadtest: stopping (writing what ran so far; Ctrl-C again to quit at once)');
    stop.abort();
  };
  process.on('SIGINT', onSigint);

  let server: SpawnedServer | null = null;
  try {
    let target: TargetInfo;
    if (values.url !== undefined) {
      target = await probeTarget(normalizeBaseUrl(String(values.url)), {
        apiKey,
        model: values.model as string | undefined,
      });
    } else {
      server = await spawnSift({
        model: values.model as string | undefined,
        logFile: path.join(outDir, 'server.log'),
        readyTimeoutMs: 600_000,
        signal: stop.signal,
        onWait: (ms) =>
          progress.update(
            `starting sift serve (log: ${path.join(outDir, 'server.log')}) ... ${(ms / 1000).toFixed(0)} s`,
          ),
      });
      progress.done(`sift serve is up at ${server.baseUrl}`);
      target = await probeTarget(server.baseUrl, { apiKey, model: values.model as string | undefined, spawned: true });
    }
    if (target.settings) {
      progress.done(
        `sift loadtest: server adapter ${settingsAdapter(target.settings)}; attention ${settingsAttention(target.settings)}`,
      );
    }
    const notes: string[] = [];
    const warn = (s: string) => {
      notes.push(s);
      progress.done(`sift loadtest: ${s}`);
    };
    if (attentionArg === undefined) config.attention = target.isSift ? ['dense', 'sparse'] : [];
    else config.attention = attentionArg.filter((m): m is AttentionMode => m !== 'none');
    if (config.attention.length > 0 && !target.isSift) {
      warn(
        `the target does not say it is sift (server: ${target.serverKind}); sending attention: {mode} anyway, as asked`,
      );
    }
    // Prompt lengths: prompt + long max_tokens must fit the context.
    config.promptLens = [...config.promptLensRequested];
    if (target.contextLength !== null) {
      const cap = target.contextLength - config.longMaxTokens;
      if (cap < 8) {
        throw new SiftError(
          'INVALID_ARGUMENT',
          `--long-max-tokens ${config.longMaxTokens} leaves no room for a prompt in the context of ${target.contextLength}`,
        );
      }
      const clamped = [...new Set(config.promptLens.map((n) => Math.min(n, cap)))];
      if (clamped.some((n, i) => n !== config.promptLens[i]) || clamped.length !== config.promptLens.length) {
        warn(
          `prompt lengths ${config.promptLens.join(',')} clamped to ${clamped.join(',')} (context ${target.contextLength} - long max_tokens ${config.longMaxTokens})`,
        );
      }
      config.promptLens = clamped;
      if (config.maxTokens + 40 > target.contextLength)
        warn(`--max-tokens ${config.maxTokens} nearly fills the context (${target.contextLength})`);
    }

    const report: Report = {
      tool: 'sift loadtest',
      version: 1,
      date: new Date().toISOString(),
      command: ['sift', 'loadtest', ...argv].join(' '),
      host: hostInfo(),
      config,
      target,
      calibration: null,
      notes,
      interrupted: false,
      levels: [],
    };
    const modes: (AttentionMode | null)[] = config.attention.length
      ? config.attention.map((m) => m as AttentionMode)
      : [null];
    const workload = (attention: AttentionMode | null, calibration: Calibration, concurrency = 1): WorkloadOptions => ({
      api,
      model: target.model,
      maxTokens: config.maxTokens,
      longMaxTokens: config.longMaxTokens,
      promptLens: config.promptLens,
      attention,
      calibration,
      turns: config.turns,
      turnTokens: config.turnTokens,
      conversations: config.conversations ?? 2 * concurrency,
    });

    let calibration: Calibration = { overhead: 0, perWord: 1, measured: false };
    const sessions = config.scenarios.some((s) => s.startsWith('sessions'));
    if (values.soak !== undefined || sessions || config.scenarios.some((s) => s === 'long' || s === 'mixed')) {
      progress.update('calibrating prompt length (2 one-token requests) ...');
      const c = new SseClient({ baseUrl: target.baseUrl, concurrency: 1, apiKey, timeoutMs: timeoutS * 1000 });
      try {
        calibration = await calibrate(c, workload(modes[0], calibration), stop.signal);
      } finally {
        c.close();
      }
      report.calibration = calibration;
      if (!calibration.measured) warn('the server sent no usage: prompt lengths are estimates (1.35 tokens/word)');
    }
    config.turnTokens = config.turnTokensRequested;
    if (sessions && target.contextLength !== null) {
      // The last turn: template overhead + turns user messages + (turns - 1) replies (+ a little role markup
      // each), then max_tokens.
      const reply = Math.ceil(SESSION_REPLY.split(' ').length * calibration.perWord) + 8;
      const room = target.contextLength - config.maxTokens - calibration.overhead - (config.turns - 1) * reply;
      const fit = Math.floor(room / config.turns);
      if (fit < 8) {
        throw new SiftError(
          'INVALID_ARGUMENT',
          `${config.turns} turns with max_tokens ${config.maxTokens} do not fit the context of ${target.contextLength}; lower --turns or --max-tokens`,
          { param: 'turns' },
        );
      }
      if (fit < config.turnTokens) {
        warn(`--turn-tokens ${config.turnTokens} clamped to ${fit} so that the last turn fits the context`);
        config.turnTokens = fit;
      }
    }

    if (values.soak !== undefined) {
      const soak = soakPlanFrom(values, config, target.contextLength);
      const w = workload(modes[modes.length - 1], calibration);
      return await soakMode({ ...soak, apiKey, outDir, target, workload: w, signal: stop.signal, progress, argv });
    }

    const plans: { scenario: Scenario; attention: AttentionMode | null; concurrency: number }[] = [];
    for (const scenario of config.scenarios)
      for (const concurrency of config.concurrency)
        for (const attention of modes) plans.push({ scenario, attention, concurrency });
    const files = { json: path.join(outDir, 'report.json'), html: path.join(outDir, 'report.html') };
    for (const [i, p] of plans.entries()) {
      if (stop.signal.aborted) break;
      const w = workload(p.attention, calibration, p.concurrency);
      const seedBase = (i + 1) * 1_000_000;
      const sessions = p.scenario.startsWith('sessions')
        ? new SessionPool(w, p.scenario === 'sessions', seedBase)
        : null;
      const plan: LevelPlan = {
        ...p,
        durationMs: durationS * 1000,
        maxRequests: config.maxRequests,
        makeRequest: (n) => sessions?.next() ?? requestFor(p.scenario, w, n, seedBase),
        onOutcome: sessions ? (spec) => sessions.done(spec) : undefined,
      };
      const name = `[${i + 1}/${plans.length}] ${p.scenario}${p.attention ? ` ${p.attention}` : ''} c=${p.concurrency}`;
      const onProgress = (s: { elapsedMs: number; done: number; errors: number; inFlight: number }) =>
        progress.update(
          `${name}  ${(s.elapsedMs / 1000).toFixed(1)}/${durationS} s  done ${s.done}  errors ${s.errors}  in flight ${s.inFlight}`,
        );
      let level: LevelResult;
      if (p.scenario === 'rate') {
        level = await runRateLevel(target.baseUrl, plan, {
          apiKey,
          timeoutMs: timeoutS * 1000,
          signal: stop.signal,
          onProgress,
        });
      } else {
        const client = new SseClient({
          baseUrl: target.baseUrl,
          concurrency: p.concurrency,
          apiKey,
          timeoutMs: timeoutS * 1000,
        });
        try {
          level = await runLevel(client, plan, { signal: stop.signal, onProgress });
        } finally {
          client.close();
        }
      }
      report.levels.push(level);
      progress.done(levelLine(name, level));
      if (level.errorsByKind.context_length_exceeded) {
        warn(
          `${name}: ${level.errorsByKind.context_length_exceeded} requests exceeded the server's context ` +
            `(${level.errorExamples.context_length_exceeded}); lower --prompt-lens or --long-max-tokens`,
        );
      }
      report.interrupted = stop.signal.aborted;
      writeReports(outDir, report);
    }
    report.interrupted = stop.signal.aborted;
    if (config.attention.includes('dense') && config.attention.includes('sparse')) {
      const same = sparseRanDense(report.levels);
      if (same !== false) warn(denseSparseNote(report.levels));
    }
    writeReports(outDir, report);
    const byReplica = hasReplicas(report.levels)
      ? `\n\nby replica:\n${markdownTable(replicaTable(report.levels))}`
      : '';
    process.stdout.write(
      `${markdownTable(summaryTable(report.levels))}${byReplica}\n\n${PERCENTILE_NOTE}\n\nreports: ${files.json}\n         ${files.html}\n`,
    );
    if (report.interrupted) return 130;
    return report.levels.some((l) => l.requests.ok > 0) ? 0 : 1;
  } finally {
    process.off('SIGINT', onSigint);
    if (server) await server.stop();
  }
}

function levelLine(name: string, l: LevelResult): string {
  const f = (v: number | null, d = 0) => (v === null ? '-' : v.toFixed(d));
  const errs = Object.entries(l.errorsByKind)
    .map(([k, n]) => `${k} ${n}`)
    .join(', ');
  return (
    `${name}: ${l.requests.ok} ok, ${l.requests.errors} errors${errs ? ` (${errs})` : ''}, ${l.requestsPerS.toFixed(2)} req/s, ` +
    `${l.outputTokensPerS.toFixed(1)} out tok/s, TTFT p50 ${f(l.ttftMs.p50)} ms, ITL p50 ${f(l.itlMs.p50, 1)} ms, e2e p50 ${f(l.e2eMs.p50)} ms` +
    (l.prefixCache.hitRate === null ? '' : `, prompt cached ${(100 * l.prefixCache.hitRate).toFixed(1)}%`) +
    (l.byReplica.some((r) => r.replica !== null)
      ? `, by replica ${l.byReplica.map((r) => `${r.replica ?? '(none)'} ${r.ok}`).join(' ')}`
      : '')
  );
}

/** The soak plan from --soak, --warmup, --disconnect, --seed, --concurrency (one value), --prompt-lens, --max-tokens. */
function soakPlanFrom(
  values: Record<string, unknown>,
  config: LoadtestConfig,
  contextLength: number | null,
): { plan: SoakPlan } {
  const durationS = numFlag(values.soak, 'soak', 0);
  if (!(durationS > 0)) throw new SiftError('INVALID_ARGUMENT', '--soak must be > 0 seconds', { param: 'soak' });
  const disconnectShare = numFlag(values.disconnect, 'disconnect', 0.3);
  if (!(disconnectShare >= 0 && disconnectShare <= 1))
    throw new SiftError('INVALID_ARGUMENT', '--disconnect must be in [0, 1]', { param: 'disconnect' });
  const warmupS = numFlag(values.warmup, 'warmup', Math.min(60, durationS / 10));
  if (!(warmupS >= 0)) throw new SiftError('INVALID_ARGUMENT', '--warmup must be >= 0', { param: 'warmup' });
  const concurrency = values.concurrency === undefined ? 16 : config.concurrency[0];
  if (config.concurrency.length > 1 && values.concurrency !== undefined)
    throw new SiftError('INVALID_ARGUMENT', '--soak takes one --concurrency', { param: 'concurrency' });
  return {
    plan: {
      durationMs: durationS * 1000,
      warmupMs: warmupS * 1000,
      concurrency,
      disconnectShare,
      // prompt lengths are estimates (calibrated words): keep 16 tokens of margin under the context
      promptLens: [
        ...new Set(
          config.promptLensRequested.map((n) =>
            contextLength === null ? n : Math.max(8, Math.min(n, contextLength - config.maxTokens - 16)),
          ),
        ),
      ],
      minTokens: Math.min(8, config.maxTokens),
      maxTokens: config.maxTokens,
      seed: intFlag(values.seed, 'seed', 1, 0),
      sampleMs: 10_000,
      idleTimeoutMs: 60_000,
    },
  };
}

/** Runs the soak, writes soak.json and soak.md into outDir, prints the table; 0 when every target is met. */
async function soakMode(o: {
  plan: SoakPlan;
  apiKey?: string;
  outDir: string;
  target: TargetInfo;
  workload: WorkloadOptions;
  signal: AbortSignal;
  progress: ReturnType<typeof progressLine>;
  argv: string[];
}): Promise<number> {
  const client = new SseClient({
    baseUrl: o.target.baseUrl,
    concurrency: o.plan.concurrency,
    apiKey: o.apiKey,
    timeoutMs: 600_000,
  });
  const mib = (b: number | null | undefined) => (b == null ? '-' : `${(b / 2 ** 20).toFixed(0)} MiB`);
  let result: Awaited<ReturnType<typeof runSoak>>;
  try {
    result = await runSoak(
      client,
      o.target.baseUrl,
      o.plan,
      { model: o.workload.model, attention: o.workload.attention, calibration: o.workload.calibration },
      {
        signal: o.signal,
        apiKey: o.apiKey,
        onProgress: (p) =>
          o.progress.update(
            `soak ${p.phase} ${(p.elapsedMs / 1000).toFixed(0)} s: ok ${p.ok}, cut ${p.cut}, errors ${p.errors}, ` +
              `RSS ${mib(p.last?.rssBytes)}, KV pages ${p.last?.kvPagesUsed ?? '-'}, running ${p.last?.running ?? '-'}`,
          ),
      },
    );
  } finally {
    client.close();
  }
  o.progress.done('soak finished');
  const report = {
    tool: 'sift loadtest --soak',
    version: 1,
    date: new Date().toISOString(),
    command: ['sift', 'loadtest', ...o.argv].join(' '),
    host: hostInfo(),
    target: o.target,
    plan: o.plan,
    interrupted: o.signal.aborted,
    result,
  };
  const table = soakTable(result);
  writeFileSync(path.join(o.outDir, 'soak.json'), `${JSON.stringify(report, null, 2)}\n`);
  writeFileSync(path.join(o.outDir, 'soak.md'), `# Soak run ${report.date}\n\n\`${report.command}\`\n\n${table}\n`);
  process.stdout.write(`${table}\n\nreport: ${path.join(o.outDir, 'soak.json')}\n`);
  if (o.signal.aborted) return 130;
  return result.pass.all ? 0 : 1;
}
