/**
 * deploy/: the fields of the Kubernetes manifests and of the nginx configuration that must agree with sift's own
 * flags and behaviour: the port the container listens on (read from its args through sift's own option parser)
 * against containerPort, probes, Services and the balancer's replica list; the grace period against preStop and
 * --shutdown-grace-ms; the body limit against --max-body-bytes; the autoscaled metric against what sift exports
 * and the adapter's rename; the balancer's mounts against the relative includes of sift.conf.
 */
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { engineOptionDefs, parse } from '../../cli/common.js';
import { serverConfigFrom } from '../../cli/serve.js';
import { toFlagName } from '../../config/schema.js';
import { SERVER_SPEC, type ServerConfig, serverConfig } from '../../config/server.js';
import { buildApp } from '../../server/app.js';
import { ServerMetrics } from '../../server/metrics.js';
import { REPLICA_HEADER } from '../../server/replica.js';
import { parseYamlDocuments } from './yaml-subset.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..', '..');
const K8S = path.join(ROOT, 'deploy', 'kubernetes');
const NGINX = path.join(ROOT, 'deploy', 'nginx');

// biome-ignore lint/suspicious/noExplicitAny: manifests are checked field by field below
type Obj = Record<string, any>;

function manifests(): Obj[] {
  const out: Obj[] = [];
  // Helm values files (*-values.yaml) are not manifests.
  for (const f of readdirSync(K8S).filter((f) => f.endsWith('.yaml') && !f.endsWith('-values.yaml'))) {
    for (const d of parseYamlDocuments(readFileSync(path.join(K8S, f), 'utf8'))) {
      out.push({ ...(d as Obj), __file: f });
    }
  }
  return out;
}

const find = (docs: Obj[], kind: string, name: string): Obj => {
  const d = docs.find((x) => x.kind === kind && x.metadata?.name === name);
  assert.ok(d, `${kind}/${name} in deploy/kubernetes/`);
  return d as Obj;
};

/** The values of an nginx directive in a config text (comments removed). */
function directive(conf: string, name: string): string[] {
  const text = conf.replace(/#.*$/gm, '');
  return [...text.matchAll(new RegExp(`(?:^|[;{}\\s])${name}\\s+([^;]+);`, 'g'))].map((m) => m[1].trim());
}

/** nginx size ("8m", "1k", "512") in bytes. */
function nginxSize(s: string): number {
  const m = /^(\d+)([kKmMgG]?)$/.exec(s);
  assert.ok(m, `nginx size ${s}`);
  return Number(m[1]) * { '': 1, k: 1024, m: 2 ** 20, g: 2 ** 30 }[m[2].toLowerCase() as '' | 'k' | 'm' | 'g'];
}

/** The server config a container's args give `sift serve` (sift's own parser; env from the manifest). */
function serveConfigOf(container: Obj): ServerConfig {
  const args = container.args as string[];
  assert.equal(args[0], 'serve');
  const defs = engineOptionDefs();
  for (const k of Object.keys(SERVER_SPEC)) defs[toFlagName(k)] = { type: 'string' };
  defs['api-key'] = { type: 'string', multiple: true };
  const { values, positionals } = parse(args.slice(1), defs, 'serve');
  assert.deepEqual(positionals, []);
  const saved = { ...process.env };
  try {
    for (const k of Object.keys(process.env)) if (k.startsWith('SIFT_')) delete process.env[k];
    for (const e of container.env ?? []) if (typeof e.value === 'string') process.env[e.name] = e.value;
    return serverConfigFrom(values);
  } finally {
    for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
    Object.assign(process.env, saved);
  }
}

const portOf = (container: Obj, port: string | number): number => {
  if (typeof port === 'number') return port;
  const p = (container.ports as Obj[]).find((x) => x.name === port);
  assert.ok(p, `container port named ${port}`);
  return p.containerPort;
};

test('YAML subset: block maps and sequences, scalars, block literals; the rest is refused with its line', () => {
  const [a, b] = parseYamlDocuments(
    [
      '# comment',
      'kind: Deployment   # trailing comment',
      'spec:',
      '  ports:',
      '    - name: http',
      '      containerPort: 8000',
      '    - name: "metrics #1"',
      "      value: 'it''s'",
      '  args:',
      '  - serve',
      '  - "8000"',
      '  empty:',
      '  flag: true',
      '  ratio: 0.5',
      '---',
      'script: |',
      '  line one',
      '',
      '    indented',
      'after: ~',
    ].join('\n'),
  );
  assert.deepEqual(a, {
    kind: 'Deployment',
    spec: {
      ports: [
        { name: 'http', containerPort: 8000 },
        { name: 'metrics #1', value: "it's" },
      ],
      args: ['serve', '8000'],
      empty: null,
      flag: true,
      ratio: 0.5,
    },
  });
  assert.deepEqual(b, { script: 'line one\n\n  indented\n', after: null });
  for (const [bad, why] of [
    ['a: [1, 2]', /line 1: outside the subset/],
    ['a: &x 1', /line 1: outside the subset/],
    ['a:\n  b: 1\n c: 2', /line 3/],
    ['a: 1\na: 2', /line 2: duplicate key a/],
    ['a: b\n  continued', /line 2: unexpected indentation/],
    ['a: "open', /line 1: unterminated/],
    ['a:\n\t- 1', /line 2: tabs/],
  ] as const) {
    assert.throws(() => parseYamlDocuments(bad), why, bad);
  }
});

test('kubernetes: the sift Deployment agrees with sift serve (port, probes, grace period, body limit, GPU, model)', () => {
  const docs = manifests();
  for (const d of docs) {
    assert.equal(typeof d.apiVersion, 'string', d.__file);
    assert.equal(typeof d.kind, 'string', d.__file);
    assert.equal(typeof d.metadata?.name, 'string', d.__file);
  }
  const dep = find(docs, 'Deployment', 'sift');
  const pod = dep.spec.template.spec;
  assert.deepEqual(
    dep.spec.selector.matchLabels,
    pick(dep.spec.template.metadata.labels, dep.spec.selector.matchLabels),
  );
  const c = (pod.containers as Obj[]).find((x) => x.name === 'sift') as Obj;
  const cfg = serveConfigOf(c);
  assert.equal(cfg.host, '0.0.0.0', 'listens on the pod address, not loopback');
  assert.equal(portOf(c, 'http'), cfg.port, 'containerPort "http" = --port');

  // Probes: GET /health on sift's port (503 while loading or after a lost GPU, 200 when serving).
  for (const probe of ['startupProbe', 'readinessProbe', 'livenessProbe']) {
    const p = c[probe];
    assert.ok(p?.httpGet, `${probe} is an HTTP probe`);
    assert.equal(p.httpGet.path, '/health', probe);
    assert.equal(portOf(c, p.httpGet.port), cfg.port, `${probe} port`);
  }
  // The startup probe covers a model load of minutes.
  assert.ok(c.startupProbe.periodSeconds * c.startupProbe.failureThreshold >= 300);

  // Termination: preStop sleep, then SIGTERM: sift drains for --shutdown-grace-ms, then allows itself 2 s more
  // (server/server.ts) before exiting; Kubernetes must not SIGKILL before that.
  const pre = c.lifecycle.preStop.exec.command as string[];
  assert.equal(pre[0], 'sleep');
  const preStopS = Number(pre[1]);
  assert.ok(preStopS > 0 && preStopS <= 30);
  const graceS = cfg.shutdownGraceMs / 1000;
  assert.ok(graceS >= 10, 'in-flight streams get a real drain');
  assert.ok(
    pod.terminationGracePeriodSeconds >= preStopS + graceS + 2 + 1,
    `terminationGracePeriodSeconds ${pod.terminationGracePeriodSeconds} < preStop ${preStopS} + grace ${graceS} + 3`,
  );

  // The balancer's body limit is sift's.
  const conf = readFileSync(path.join(NGINX, 'sift.conf'), 'utf8');
  assert.equal(nginxSize(directive(conf, 'client_max_body_size')[0]), cfg.maxBodyBytes);

  // GPU and the Vulkan driver inside the container; the model on a mounted volume.
  assert.equal(c.resources.limits['nvidia.com/gpu'], 1);
  const env = Object.fromEntries((c.env as Obj[]).map((e) => [e.name, e.value ?? e.valueFrom]));
  assert.match(env.NVIDIA_DRIVER_CAPABILITIES, /\bgraphics\b/, 'Vulkan needs the graphics capability');
  assert.deepEqual(env.SIFT_SERVER_REPLICA_ID, { fieldRef: { fieldPath: 'metadata.name' } });
  const mount = (c.volumeMounts as Obj[]).find((m) => m.name === 'models') as Obj;
  assert.ok(mount, 'the models volume is mounted');
  assert.ok(cfg.model.startsWith(`${mount.mountPath}/`), `--model ${cfg.model} lies on the volume`);
  assert.equal(env.SIFT_MODELS_DIR, mount.mountPath);
  const vol = (pod.volumes as Obj[]).find((v) => v.name === 'models') as Obj;
  find(docs, 'PersistentVolumeClaim', vol.persistentVolumeClaim.claimName);

  // Scrape annotations point at sift's port and path.
  const ann = dep.spec.template.metadata.annotations;
  assert.equal(Number(ann['prometheus.io/port']), cfg.port);
  assert.equal(ann['prometheus.io/path'], '/metrics');
});

/** The entries of `labels` named in `like`. */
function pick(labels: Obj, like: Obj): Obj {
  return Object.fromEntries(Object.keys(like).map((k) => [k, labels[k]]));
}

const selects = (selector: Obj, labels: Obj) => Object.entries(selector).every(([k, v]) => labels?.[k] === v);

test('kubernetes: Services, ServiceMonitor, HPA and the adapter rule point at what sift serves and exports', async () => {
  const docs = manifests();
  const dep = find(docs, 'Deployment', 'sift');
  const podLabels = dep.spec.template.metadata.labels;
  const c = (dep.spec.template.spec.containers as Obj[])[0];
  const port = serveConfigOf(c).port;
  for (const name of ['sift', 'sift-replicas']) {
    const svc = find(docs, 'Service', name);
    assert.ok(selects(svc.spec.selector, podLabels), `${name} selects the sift pods`);
    const p = (svc.spec.ports as Obj[])[0];
    assert.equal(portOf(c, p.targetPort), port, `${name} targetPort`);
  }
  assert.equal(find(docs, 'Service', 'sift-replicas').spec.clusterIP, 'None', 'headless: one address per pod');

  // The ServiceMonitor scrapes the pods of exactly one Service (not both: every replica once).
  const sm = find(docs, 'ServiceMonitor', 'sift');
  const scraped = docs.filter((d) => d.kind === 'Service' && selects(sm.spec.selector.matchLabels, d.metadata.labels));
  assert.deepEqual(
    scraped.map((d) => d.metadata.name),
    ['sift'],
  );
  const ep = (sm.spec.endpoints as Obj[])[0];
  assert.ok((scraped[0].spec.ports as Obj[]).some((p) => p.name === ep.port));
  assert.equal(ep.path, '/metrics');

  // The HPA scales the Deployment on the adapter's name for sift:num_requests_waiting, which sift exports.
  const hpa = find(docs, 'HorizontalPodAutoscaler', 'sift');
  assert.deepEqual(hpa.spec.scaleTargetRef, { apiVersion: 'apps/v1', kind: 'Deployment', name: 'sift' });
  assert.ok(hpa.spec.minReplicas >= 1 && hpa.spec.maxReplicas >= hpa.spec.minReplicas);
  const metricName = hpa.spec.metrics[0].pods.metric.name as string;
  const [adapter] = parseYamlDocuments(readFileSync(path.join(K8S, 'prometheus-adapter-values.yaml'), 'utf8')) as Obj[];
  const rule = (adapter.rules.custom as Obj[]).find((r) =>
    String(r.seriesQuery).startsWith('sift:num_requests_waiting{'),
  );
  assert.ok(rule, 'an adapter rule for sift:num_requests_waiting');
  const renamed = 'sift:num_requests_waiting'.replace(
    new RegExp(rule.name.matches),
    rule.name.as.replace(/\$\{(\d+)\}/g, '$$$1'),
  );
  assert.equal(renamed, metricName);
  assert.deepEqual(Object.keys(rule.resources.overrides).sort(), ['namespace', 'pod']);
  const exported = new ServerMetrics(() => null).registry.getSingleMetric('sift:num_requests_waiting');
  assert.ok(exported, 'sift exports sift:num_requests_waiting');
});

test('kubernetes: the in-cluster balancer mounts the shipped nginx config where its includes look', () => {
  const docs = manifests();
  const bal = find(docs, 'Deployment', 'sift-balancer');
  const c = (bal.spec.template.spec.containers as Obj[])[0];
  const vols = Object.fromEntries((bal.spec.template.spec.volumes as Obj[]).map((v) => [v.name, v]));
  const mounts = Object.fromEntries((c.volumeMounts as Obj[]).map((m) => [m.mountPath, vols[m.name]]));
  const files = (v: Obj) => (v.configMap.items as Obj[]).map((i) => i.path);
  // sift.conf goes where nginx's own nginx.conf includes conf.d/*.conf; its `include sift/...` resolve next to it.
  assert.deepEqual(files(mounts['/etc/nginx/conf.d']), ['sift.conf']);
  const conf = readFileSync(path.join(NGINX, 'sift.conf'), 'utf8');
  const includes = directive(conf, 'include').map((i) => path.basename(i));
  assert.deepEqual(files(mounts['/etc/nginx/sift']).sort(), [...new Set(includes)].sort());
  for (const i of directive(conf, 'include')) assert.ok(i.startsWith('sift/'), i);

  // The Kubernetes site files: listen on the containerPort; the replicas are the headless Service's pods on
  // sift's port, re-resolved (`resolve` needs the upstream zones sift.conf declares).
  const listen = readFileSync(path.join(K8S, 'nginx', 'listen.conf'), 'utf8');
  assert.equal(Number(directive(listen, 'listen')[0]), portOf(c, 'http'));
  const replicas = readFileSync(path.join(K8S, 'nginx', 'replicas.conf'), 'utf8');
  const server = directive(replicas, 'server')[0].split(/\s+/);
  const sift = find(docs, 'Deployment', 'sift');
  const siftPort = serveConfigOf((sift.spec.template.spec.containers as Obj[])[0]).port;
  assert.match(server[0], new RegExp(`^sift-replicas\\.[a-z0-9-]+\\.svc\\.cluster\\.local:${siftPort}$`));
  assert.ok(server.includes('resolve'));
  assert.equal(directive(conf, 'zone').length, 2, 'both upstream groups have a zone');
  const svc = find(docs, 'Service', 'sift-balancer');
  assert.equal(portOf(c, (svc.spec.ports as Obj[])[0].targetPort), portOf(c, 'http'));
});

test('nginx: keep-alive, timeouts and replica parameters fit sift', async (t) => {
  const conf = readFileSync(path.join(NGINX, 'sift.conf'), 'utf8');
  // nginx closes an idle upstream connection before sift would (else a request can meet a closing socket).
  const app = await buildApp({ engine: null, text: null, config: serverConfig() });
  t.after(() => app.close());
  const siftKeepAliveS = app.server.keepAliveTimeout / 1000;
  for (const v of directive(conf, 'keepalive_timeout')) assert.ok(Number.parseInt(v, 10) < siftKeepAliveS, v);
  // Streams are never buffered, and idle streams outlive sift's SSE keep-alive comments by far.
  assert.deepEqual(directive(conf, 'proxy_buffering'), ['off']);
  const readS = Number.parseInt(directive(conf, 'proxy_read_timeout')[0], 10);
  assert.ok(readS * 1000 > 10 * serverConfig().keepAliveMs);
  // Routing: the session key goes to the hashed group, the rest to least_conn; both list the same replicas.
  assert.match(conf, /map \$http_x_session_id \$sift_upstream \{\s*""\s+sift_least_conn;\s*default\s+sift_session;/);
  assert.match(conf, /upstream sift_session \{\s*hash \$http_x_session_id consistent;/);
  assert.match(conf, /upstream sift_least_conn \{\s*least_conn;/);
  assert.deepEqual(directive(conf, 'proxy_pass').slice(0, 1), ['http://$sift_upstream']);
  // Retries only for what has not started; never for a stream that has (nginx cannot replay those anyway).
  assert.deepEqual(directive(conf, 'proxy_next_upstream')[0].split(/\s+/), [
    'error',
    'timeout',
    'http_503',
    'http_429',
    'non_idempotent',
  ]);
  // The shipped replica list: the same passive failure detection on every line.
  const example = readFileSync(path.join(NGINX, 'sift', 'replicas.conf'), 'utf8');
  const params = new Set(directive(example, 'server').map((s) => s.split(/\s+/).slice(1).join(' ')));
  assert.deepEqual([...params], ['max_fails=2 fail_timeout=10s']);
  assert.equal(REPLICA_HEADER, 'x-sift-replica');
  assert.match(conf, /\$upstream_http_x_sift_replica/, 'the access log format names the replica');
});
