/** `sift gpu`: which WebGPU adapter sift would use and what it can do. */
import { Gpu } from '../shaders/runtime.js';
import { parse } from './common.js';

export async function main(argv: string[]): Promise<number> {
  const { values } = parse(argv, { adapter: { type: 'string' }, json: { type: 'boolean' } });
  if (values.help) {
    process.stdout.write('usage: sift gpu [--adapter NAME] [--json]\n  Prints the adapter, its features and limits.\n');
    return 0;
  }
  const gpu = await Gpu.create({ adapter: values.adapter as string | undefined });
  if (values.json) process.stdout.write(`${JSON.stringify(gpu.caps, null, 2)}\n`);
  else for (const [k, v] of Object.entries(gpu.caps)) process.stdout.write(`${k.padEnd(34)} ${v}\n`);
  gpu.destroy();
  return 0;
}
