/**
 * The chat page sift serves at `/`: one self-contained HTML document (inline CSS and script, no build step, no
 * external requests) that talks to this server's own OpenAI API. It streams replies
 * (POST /v1/chat/completions with stream_options.include_usage), keeps the conversation, and lets a person set
 * the system prompt, temperature, max tokens, the attention mode and token budget (sift's `attention` field) and
 * an API key (sent as a Bearer token, kept in the browser's localStorage). Under each reply it shows what the
 * server reported back: prompt and completion tokens, the attention mode and mean tokens attended per step, and
 * time to first token and tokens per second as the page measured them.
 */

export const CHAT_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>sift chat</title>
<style>
  :root { --bg: #f6f7f9; --fg: #1d2330; --muted: #6a7385; --line: #d9dde5; --me: #e3ecff; --accent: #2f5bd3; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 15px/1.45 system-ui, -apple-system, "DejaVu Sans", sans-serif; color: var(--fg); background: var(--bg);
         display: grid; grid-template-columns: 290px 1fr; height: 100vh; }
  aside { border-right: 1px solid var(--line); padding: 16px; overflow-y: auto; background: #fff; }
  aside h1 { font-size: 18px; margin: 0 0 4px; }
  aside .model { color: var(--muted); font-size: 13px; margin-bottom: 14px; }
  label { display: block; font-size: 12px; font-weight: 600; color: var(--muted); margin: 12px 0 4px; text-transform: uppercase; letter-spacing: .03em; }
  input, select, textarea { width: 100%; font: inherit; padding: 6px 8px; border: 1px solid var(--line); border-radius: 6px; background: #fff; color: inherit; }
  textarea { resize: vertical; }
  .row { display: flex; gap: 8px; } .row > div { flex: 1; }
  main { display: flex; flex-direction: column; height: 100vh; min-width: 0; }
  #log { flex: 1; overflow-y: auto; padding: 20px 28px; }
  .msg { max-width: 820px; margin: 0 0 14px; }
  .msg .who { font-size: 12px; color: var(--muted); margin-bottom: 2px; }
  .msg .text { white-space: pre-wrap; word-wrap: break-word; padding: 10px 12px; border-radius: 8px; background: #fff; border: 1px solid var(--line); }
  .msg.user .text { background: var(--me); border-color: #c9d7fb; }
  .msg .usage { font-size: 12px; color: var(--muted); margin-top: 4px; font-variant-numeric: tabular-nums; }
  .msg.error .text { border-color: #e7a1a1; background: #fff3f3; }
  form { display: flex; gap: 8px; padding: 12px 28px 18px; border-top: 1px solid var(--line); background: #fff; }
  form textarea { flex: 1; min-height: 44px; max-height: 200px; }
  button { font: inherit; padding: 8px 16px; border: 0; border-radius: 6px; background: var(--accent); color: #fff; cursor: pointer; }
  button.secondary { background: #eef0f4; color: var(--fg); }
  button:disabled { opacity: .5; cursor: default; }
</style>
</head>
<body>
<aside>
  <h1>sift</h1>
  <div class="model" id="model">connecting...</div>
  <label for="system">System prompt</label>
  <textarea id="system" rows="4" placeholder="You are a helpful assistant."></textarea>
  <div class="row">
    <div><label for="temperature">Temperature</label><input id="temperature" type="number" min="0" max="2" step="0.1" value="0.7"></div>
    <div><label for="max-tokens">Max tokens</label><input id="max-tokens" type="number" min="1" step="1" value="128"></div>
  </div>
  <div class="row">
    <div><label for="mode">Attention</label>
      <select id="mode"><option value="">server default</option><option value="sparse">sparse</option><option value="dense">dense</option></select></div>
    <div><label for="budget">Token budget</label><input id="budget" type="number" min="1" step="1" placeholder="default"></div>
  </div>
  <label for="api-key">API key</label>
  <input id="api-key" type="password" placeholder="only if the server has --api-key" autocomplete="off">
  <label>&nbsp;</label>
  <button class="secondary" id="clear" type="button">New conversation</button>
</aside>
<main>
  <div id="log"></div>
  <form id="form">
    <textarea id="prompt" rows="2" placeholder="Write a message (Enter sends, Shift+Enter for a new line)"></textarea>
    <button id="send" type="submit">Send</button>
  </form>
</main>
<script>
(() => {
  const $ = (id) => document.getElementById(id);
  const log = $('log');
  const history = [];
  let modelId = null;
  const key = $('api-key');
  key.value = localStorage.getItem('sift.apiKey') || '';
  key.addEventListener('change', () => { localStorage.setItem('sift.apiKey', key.value); loadModel(); });
  const headers = () => {
    const h = { 'content-type': 'application/json' };
    if (key.value) h.authorization = 'Bearer ' + key.value;
    return h;
  };
  async function loadModel() {
    try {
      const r = await fetch('/v1/models', { headers: headers() });
      const b = await r.json();
      if (!r.ok) throw new Error(b.error ? b.error.message : r.statusText);
      modelId = b.data[0].id;
      $('model').textContent = modelId + ' - context ' + b.data[0].max_model_len + ' tokens';
      $('max-tokens').max = b.data[0].max_model_len;
    } catch (e) {
      $('model').textContent = 'not connected: ' + e.message;
    }
  }
  function add(role, text) {
    const div = document.createElement('div');
    div.className = 'msg ' + role;
    const who = document.createElement('div');
    who.className = 'who';
    who.textContent = role === 'user' ? 'you' : role === 'error' ? 'error' : 'assistant';
    const body = document.createElement('div');
    body.className = 'text';
    body.textContent = text;
    div.append(who, body);
    log.append(div);
    log.scrollTop = log.scrollHeight;
    return div;
  }
  function usageLine(u, ttftMs, seconds) {
    const parts = [u.prompt_tokens + ' prompt tokens', u.completion_tokens + ' completion tokens'];
    if (u.attention) parts.push(u.attention.mode + ' attention, ' + u.attention.mean_tokens_attended + ' tokens attended per step');
    if (ttftMs !== null) parts.push('first token ' + Math.round(ttftMs) + ' ms');
    if (seconds > 0 && u.completion_tokens > 1) parts.push(((u.completion_tokens - 1) / seconds).toFixed(1) + ' tokens/s');
    return parts.join(' \\u00b7 ');
  }
  async function send(text) {
    if (!modelId) await loadModel();
    const sys = $('system').value.trim();
    history.push({ role: 'user', content: text });
    add('user', text);
    const out = add('assistant', '');
    const body = out.querySelector('.text');
    body.dataset.updates = '0';
    const req = {
      model: modelId,
      messages: (sys ? [{ role: 'system', content: sys }] : []).concat(history),
      stream: true,
      stream_options: { include_usage: true },
      temperature: Number($('temperature').value),
      max_tokens: Number($('max-tokens').value),
    };
    if ($('mode').value) {
      req.attention = { mode: $('mode').value };
      if ($('budget').value) req.attention.token_budget = Number($('budget').value);
    }
    const t0 = performance.now();
    let first = null;
    let usage = null;
    let reply = '';
    let finish = null;
    const r = await fetch('/v1/chat/completions', { method: 'POST', headers: headers(), body: JSON.stringify(req) });
    if (!r.ok) {
      const b = await r.json().catch(() => ({}));
      throw new Error(b.error ? b.error.message : r.status + ' ' + r.statusText);
    }
    const reader = r.body.getReader();
    const dec = new TextDecoder();
    let buf = '';
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let i;
      while ((i = buf.indexOf('\\n\\n')) >= 0) {
        const event = buf.slice(0, i);
        buf = buf.slice(i + 2);
        if (!event.startsWith('data: ')) continue;
        const data = event.slice(6);
        if (data === '[DONE]') continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        for (const c of chunk.choices) {
          const piece = c.delta && c.delta.content;
          if (piece) {
            if (first === null) first = performance.now();
            reply += piece;
            body.textContent = reply;
            body.dataset.updates = String(Number(body.dataset.updates) + 1);
            log.scrollTop = log.scrollHeight;
          }
          if (c.finish_reason) finish = c.finish_reason;
        }
      }
    }
    history.push({ role: 'assistant', content: reply });
    const line = document.createElement('div');
    line.className = 'usage';
    line.id = 'usage-' + history.length;
    const end = performance.now();
    line.textContent = usage
      ? usageLine(usage, first === null ? null : first - t0, first === null ? 0 : (end - first) / 1000) + (finish ? ' \\u00b7 ' + finish : '')
      : 'finished: ' + finish;
    out.append(line);
  }
  $('form').addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const text = $('prompt').value.trim();
    if (!text) return;
    $('prompt').value = '';
    $('send').disabled = true;
    try {
      await send(text);
    } catch (e) {
      add('error', e.message);
    } finally {
      $('send').disabled = false;
      $('prompt').focus();
    }
  });
  $('prompt').addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey) { ev.preventDefault(); $('form').requestSubmit(); }
  });
  $('clear').addEventListener('click', () => { history.length = 0; log.textContent = ''; });
  loadModel();
})();
</script>
</body>
</html>
`;
