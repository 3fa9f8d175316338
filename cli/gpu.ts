/** `sift gpu`: which WebGPU adapter sift would use and what it can do. */
import { ENGINE_SPEC } from '../config/engine.js';
import { describeSection } from '../config/schema.js';
import { Gpu } from '../shaders/runtime.js';
import { engineConfigFrom, parse } from './common.js';

const HELP = `usage: sift gpu [--adapter NAME] [--config FILE] [--json]

Prints the WebGPU adapter sift would use (the same choice as serve, generate and bench), its features and limits.
${describeSection('ENGINE', { adapter: ENGINE_SPEC.adapter }).join('\n')}
  --config FILE            JSON config file (its "engine" section's adapter applies)
  --json                   print JSON
`;

export async function main(argv: string[]): Promise<number> {
  const { values } = parse(
    argv,
    { adapter: { type: 'string' }, config: { type: 'string' }, json: { type: 'boolean' } },
    'gpu',
  );
  if (values.help) {
    process.stdout.write(HELP);
    return 0;
  }
  // the adapter resolves as for every command: default < config file < SIFT_ENGINE_ADAPTER < --adapter
  const { adapter } = engineConfigFrom({ adapter: values.adapter, config: values.config });
  const gpu = await Gpu.create({ adapter });
  if (values.json) process.stdout.write(`${JSON.stringify(gpu.caps, null, 2)}\n`);
  else for (const [k, v] of Object.entries(gpu.caps)) process.stdout.write(`${k.padEnd(34)} ${v}\n`);
  gpu.destroy();
  return 0;
}
