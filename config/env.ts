/**
 * Every SIFT_* environment variable sift reads, in one list: the config sections' variables (SIFT_<SECTION>_<FIELD>,
 * from their specs) and the few others. A SIFT_* variable not in it does nothing, which is almost always a typo:
 * the CLI warns about it (unknownEnvWarnings), naming the closest known variable.
 */
import { ATTENTION_SPEC } from './attention.js';
import { ENGINE_SPEC } from './engine.js';
import { type SectionSpec, toEnvName } from './schema.js';
import { SERVER_SPEC } from './server.js';

/** The variables outside the config sections, with what they do (README "Other environment" lists them). */
export const OTHER_ENV: Readonly<Record<string, string>> = Object.freeze({
  SIFT_CONFIG: 'JSON config file, as --config FILE',
  SIFT_MODELS_DIR: "the models folder (default: a checkout's models/ folder, ~/.cache/sift/models when installed)",
  SIFT_NODE_VERSION: 'the Node version the setup installs when the machine has Node older than 22 (default 24.21.0)',
  SIFT_GPU_BACKEND: 'Dawn backend to open, e.g. vulkan (default: Dawn chooses)',
  SIFT_DISABLE_F16: '1 = use packed 16-bit words even where the adapter has shader-f16',
  SIFT_GPU_POLL_MS:
    "milliseconds between Dawn's event polls while GPU work is pending (default 1 on CPU adapters: its busy loop " +
    'would take cores from the kernels; 0 = the busy loop)',
  SIFT_DUMP_WGSL: '1 = print every generated shader to stderr',
  SIFT_GPU_DEBUG: '1 = print WebGPU validation errors to stderr',
  SIFT_DEBUG: '1 = print the stack of an unexpected error',
  SIFT_STDERR_FILTER: "off = show Dawn's two adapter warnings (sift also sets it in the child it runs)",
  SIFT_TEST_FILE_TIMEOUT_S: 'tests: seconds one test file may run (default 420)',
  SIFT_TEST_VERBOSE: 'tests: print kernel comparison details',
  SIFT_WRITE_RESULTS: '1 = the structured-output target and chat page tests write their results to bench/results',
  SIFT_SKIP_LAVAPIPE: '1 = scripts/ensure-webgpu.sh installs no lavapipe',
  SIFT_SKIP_NGINX: '1 = scripts/ensure-nginx.sh installs no nginx',
  SIFT_SKIP_BROWSER: '1 = the setup installs no Chromium (the chat page test then fails, never skips)',
  SIFT_CLUSTER_REPLICAS: 'cluster test: sift replicas behind nginx (default 3)',
  SIFT_CLUSTER_SESSION_REQUESTS: 'cluster test: requests of the affinity measurement (default 90)',
  SIFT_CLUSTER_RESULTS: 'cluster test: write the affinity measurement as JSON to this file',
});

/** Variables sift no longer reads, with what replaced them. */
const RENAMED: Readonly<Record<string, string>> = Object.freeze({
  SIFT_ADAPTER: 'SIFT_ENGINE_ADAPTER',
});

const SECTIONS: [string, SectionSpec][] = [
  ['ENGINE', ENGINE_SPEC],
  ['ATTENTION', ATTENTION_SPEC],
  ['SERVER', SERVER_SPEC],
];

/** Every SIFT_* variable sift reads. */
export function knownEnvNames(): string[] {
  const names = SECTIONS.flatMap(([section, spec]) => Object.keys(spec).map((k) => toEnvName(section, k)));
  return [...names, ...Object.keys(OTHER_ENV)];
}

function editDistance(a: string, b: string): number {
  const d = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let prev = d[0];
    d[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const t = d[j];
      d[j] = Math.min(d[j] + 1, d[j - 1] + 1, prev + (a[i - 1] === b[j - 1] ? 0 : 1));
      prev = t;
    }
  }
  return d[b.length];
}

/** One warning line (without "sift: warning: ") per SIFT_* variable in `env` that sift does not read. */
export function unknownEnvWarnings(env: NodeJS.ProcessEnv): string[] {
  const known = knownEnvNames();
  const out: string[] = [];
  for (const name of Object.keys(env).sort()) {
    if (!name.startsWith('SIFT_') || known.includes(name)) continue;
    const renamed = RENAMED[name];
    if (renamed) {
      out.push(`environment variable ${name} is no longer read; use ${renamed}`);
      continue;
    }
    const best = known
      .map((k) => ({ k, d: editDistance(name, k) }))
      .sort((a, b) => a.d - b.d || a.k.localeCompare(b.k))[0];
    const hint = best && best.d <= Math.max(2, Math.floor(name.length / 4)) ? `; did you mean ${best.k}?` : '';
    out.push(
      `unknown environment variable ${name} is ignored${hint} (sift reads SIFT_CONFIG, SIFT_MODELS_DIR, SIFT_ENGINE_*, SIFT_ATTENTION_*, SIFT_SERVER_*; see README)`,
    );
  }
  return out;
}
