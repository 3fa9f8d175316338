/**
 * The chat page at / in a real browser: Debian's headless Chromium (installed by scripts/setup.sh) driven by
 * playwright-core. The test serves the real default model (stories15M) with an API key, opens the page, enters the
 * key and the settings, sends a message, and checks that the reply streamed in (several updates of the reply text
 * before the end) and that the usage line with the server's figures appeared. With SIFT_WRITE_RESULTS=1 a screenshot goes to
 * bench/results/chat-page.png. Chromium's outbound connections are refused on these machines, so it runs with
 * networking extras off and a fresh profile.
 */
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import type { FastifyInstance } from 'fastify';
import { chromium } from 'playwright-core';
import { engineConfig } from '../../config/engine.js';
import { projectRoot } from '../../config/paths.js';
import { EngineCore } from '../../engine/core.js';
import { ModelRunner } from '../../model/runner.js';
import { buildApp } from '../../server/app.js';
import { listen } from '../../server/server.js';
import { loadText } from '../../text/text.js';
import { storiesDir } from '../helpers/stories.js';
import { cfg } from '../server/helpers.js';

const CHROMIUM = '/usr/bin/chromium';
const KEY = 'sk-browser-test';

let app: FastifyInstance;
let engine: EngineCore;
let url = '';

before(async () => {
  const dir = await storiesDir();
  engine = EngineCore.create(await ModelRunner.load(dir, engineConfig({ flags: { maxContext: 256 } })));
  app = await buildApp({ engine, text: loadText(dir), config: cfg({ apiKeys: KEY }), modelName: 'stories15M' });
  ({ url } = await listen(app, { host: '127.0.0.1', port: 0 }));
});

after(async () => {
  await app?.close();
  await engine?.shutdown(0);
});

test('chat page: a message streams a reply and shows the usage line (with --api-key)', async () => {
  assert.ok(existsSync(CHROMIUM), `${CHROMIUM} is missing: run \`npm run setup\` (installs Debian's chromium)`);
  const profile = mkdtempSync(path.join(os.tmpdir(), 'sift-chromium-'));
  // a fresh profile: playwright passes it as --user-data-dir
  const browser = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    viewport: { width: 1200, height: 760 },
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
  });
  try {
    const page = await browser.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${url}/`);
    assert.equal(await page.title(), 'sift chat');
    await page.fill('#api-key', KEY);
    await page.dispatchEvent('#api-key', 'change');
    // a locator wait (Playwright's own injected script): a string predicate is an eval, which the page's CSP refuses
    // whenever the wait has to poll
    await page
      .locator('#model')
      .filter({ hasText: /^stories15M/ })
      .waitFor({ timeout: 60_000 });
    await page.fill('#system', 'You tell short stories.');
    await page.fill('#temperature', '0');
    await page.fill('#max-tokens', '40');
    await page.selectOption('#mode', 'dense');
    await page.fill('#prompt', 'Once upon a time');
    await page.click('#send');
    const usage = page.locator('.msg.assistant .usage');
    await usage.waitFor({ timeout: 120_000 });
    const line = await usage.textContent();
    assert.match(
      line ?? '',
      /\d+ prompt tokens · 40 completion tokens · dense attention, [\d.]+ tokens attended per step/,
    );
    assert.match(line ?? '', /first token \d+ ms · [\d.]+ tokens\/s · length/);
    const reply = page.locator('.msg.assistant .text');
    const text = (await reply.textContent()) ?? '';
    assert.ok(text.trim().length > 20, `reply: ${JSON.stringify(text)}`);
    const updates = Number(await reply.getAttribute('data-updates'));
    assert.ok(updates >= 5, `the reply arrived in ${updates} updates; a streamed one takes many`);
    assert.deepEqual(errors, []);
    const out = path.join(projectRoot(), 'bench', 'results');
    mkdirSync(out, { recursive: true });
    if (process.env.SIFT_WRITE_RESULTS === '1') await page.screenshot({ path: path.join(out, 'chat-page.png') });
  } finally {
    await browser.close();
    rmSync(profile, { recursive: true, force: true });
  }
});
