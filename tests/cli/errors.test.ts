/**
 * Every mistake a user can make on the command line ends as ONE line on stderr that says what is wrong and what
 * to do, with no stack trace and a non-zero exit status, and checks that need no model run before any model
 * loads. Each case runs `sift` as a child process, as a user would.
 */
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { assertOneLineError, linesOf, pooled, runCli } from './run.js';

const tmp = (name: string) => path.join(os.tmpdir(), `sift-cli-errors-${process.pid}-${name}`);

test('flag values: negative numbers, ranges, unknown options, missing values, stray arguments', async () => {
  const cases: [string[], RegExp][] = [
    [['generate', '--prompt', 'x', '--max-tokens', '-1'], /--max-tokens must be an integer >= 1 \(got -1\)/],
    [['generate', '--prompt', 'x', '--temperature', '-1'], /--temperature must be in \[0, 100\] \(got -1\)/],
    [['generate', '--prompt', 'x', '--top-k', '-3'], /--top-k must be an integer >= 0 \(got -3\)/],
    [['generate', '--prompt', 'x', '--top-p', '0'], /--top-p must be in \(0, 1\] \(got 0\)/],
    [['generate', '--prompt', 'x', '--max-tokens', 'many'], /--max-tokens must be an integer/],
    [['generate', '--prompt', 'x', '--foo'], /unknown option --foo \(see sift generate --help\)/],
    [['generate', '--prompt'], /--prompt needs a value/],
    [['generate', '--prompt', 'x', 'extra'], /unexpected argument "extra"/],
    [['generate'], /give exactly one of --prompt, --chat or --prompt-ids/],
    [['kv', '--streaming-fraction', '-0.5'], /--streaming-fraction must be in \[0, 1\] \(got -0.5\)/],
    [['loadtest', '--duration', '-3'], /--duration must be > 0/],
    [['frobnicate'], /unknown command "frobnicate"/],
  ];
  await pooled(cases, 3, async ([args, want]) => {
    const r = await runCli(args);
    assertOneLineError(r, want, args.join(' '));
    assert.equal(r.code, 2, `${args.join(' ')}: a wrong command line exits 2`);
  });
});

test('config values name the flag, the variable or the file key the user wrote, with the accepted values', async () => {
  const file = (name: string, v: unknown) => {
    const f = tmp(name);
    writeFileSync(f, JSON.stringify(v));
    return f;
  };
  const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [['--attention', 'medium'], {}, /--attention must be one of dense, sparse \(got "medium"\)/],
    [[], { SIFT_ATTENTION_MODE: 'medium' }, /environment variable SIFT_ATTENTION_MODE must be one of dense/],
    // one token-budget rule, stated the same way for every layer
    [['--token-budget', '64'], {}, /--token-budget must be an integer of at least 128 tokens/],
    [['--page-size', '32', '--token-budget', '63'], {}, /at least 64 tokens: 2 pages of 32/],
    [
      ['--config', file('a.json', { attn: { mode: 'dense' } })],
      {},
      /config file .*: unknown section "attn" \(sections: engine, attention, server\)/,
    ],
    [
      ['--config', file('b.json', { attention: { tokenBudgt: 1024 } })],
      {},
      /unknown key attention\.tokenBudgt \(known: mode, tokenBudget/,
    ],
    [
      ['--config', file('c.json', { attention: { tokenBudget: 10 } })],
      {},
      /config file .*: attention\.tokenBudget must be an integer of at least 128/,
    ],
    [[], { SIFT_CONFIG: tmp('missing.json') }, /cannot read config file/],
  ];
  await pooled(cases, 3, async ([args, env, want]) => {
    const r = await runCli(['generate', '--prompt', 'x', ...args], { env });
    assertOneLineError(r, want, `${args.join(' ')} ${JSON.stringify(env)}`);
  });
});

test('an unknown SIFT_* variable is a warning naming the closest known one; the command still runs', async () => {
  const r = await runCli(['kv', '--shape', 'llama3-8b'], {
    env: { SIFT_ATENTION_MODE: 'dense', SIFT_ADAPTER: 'x' },
  });
  assert.equal(r.code, 0, r.stderr);
  const lines = linesOf(r.stderr);
  assert.equal(lines.length, 2, r.stderr);
  assert.match(
    lines[0],
    /^sift: warning: environment variable SIFT_ADAPTER is no longer read; use SIFT_ENGINE_ADAPTER/,
  );
  assert.match(lines[1], /^sift: warning: unknown environment variable SIFT_ATENTION_MODE .*SIFT_ATTENTION_MODE\?/);
  assert.match(r.stdout, /bytes per token/);
});

test('serve: a port in use, a host that does not resolve, an adapter that matches nothing', async () => {
  const busy = net.createServer();
  await new Promise<void>((r) => busy.listen(0, '127.0.0.1', r));
  const port = (busy.address() as net.AddressInfo).port;
  try {
    const r = await runCli(['serve', '--port', String(port)]);
    assertOneLineError(r, new RegExp(`port ${port} on 127.0.0.1 is already in use: .*--port`), 'port in use');
  } finally {
    busy.close();
  }
  const host = await runCli(['serve', '--port', '0', '--host', 'no-such-host.invalid']);
  assertOneLineError(host, /--host "no-such-host\.invalid" does not resolve to an address: pass an IP address/, 'host');
  // the adapter, the model and the head pattern are checked before anything listens; the adapter's message lists
  // the adapters there are
  const badPattern = tmp('heads.tsv');
  writeFileSync(badPattern, '1 2 3\n');
  const cases: [string[], NodeJS.ProcessEnv, RegExp][] = [
    [
      ['serve', '--port', '0', '--adapter', 'no-such-gpu'],
      {},
      /no WebGPU adapter matches "no-such-gpu"; available: "[^"]+"/,
    ],
    [['gpu'], { SIFT_ENGINE_ADAPTER: 'no-such-gpu' }, /no WebGPU adapter matches "no-such-gpu"; available: "[^"]+"/],
    [
      ['generate', '--prompt', 'x', '--adapter', 'no-such-gpu'],
      {},
      /no WebGPU adapter matches "no-such-gpu"; available: "[^"]+"/,
    ],
    [['serve', '--port', '0', '--model', 'storie15M'], {}, /unknown model "storie15M": known models are stories15M/],
    [
      ['serve', '--port', '0', '--head-pattern', badPattern],
      {},
      /heads\.tsv:1: layer 0 has 3 scores; the model has 6 KV heads/,
    ],
  ];
  await pooled(cases, 2, async ([args, env, want]) => {
    const r = await runCli(args, { env });
    assertOneLineError(r, want, args.join(' '));
    assert.doesNotMatch(r.stdout, /listening/, 'serve checked it before it listened');
  });
});

test('--version and --help', async () => {
  const v = await runCli(['--version']);
  assert.equal(v.code, 0);
  assert.match(v.stdout, /^sift \d+\.\d+\.\d+\n$/);
  const h = await runCli(['--help']);
  assert.equal(h.code, 0);
  assert.match(h.stdout, /sift --version/);
});
