// Builds dist/: ESM modules with type declarations (tsc), and single-file minified bundles
// (esbuild): peregrine.min.js for a <script> tag (global `Peregrine`, works from file://),
// peregrine.min.mjs for `import`, and peregrine-msgpack.min.mjs with @msgpack/msgpack.
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';
import { bundle } from './bundle-options.mjs';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
rmSync(join(root, 'dist'), { recursive: true, force: true });
execFileSync(process.execPath, [join(root, 'node_modules/typescript/bin/tsc'), '-p', root], { stdio: 'inherit' });


await Promise.all([
  esbuild.build({ ...bundle, entryPoints: [join(root, 'src/index.ts')], format: 'iife', globalName: 'Peregrine', outfile: join(root, 'dist/peregrine.min.js') }),
  esbuild.build({ ...bundle, entryPoints: [join(root, 'src/index.ts')], format: 'esm', outfile: join(root, 'dist/peregrine.min.mjs') }),
  esbuild.build({ ...bundle, entryPoints: [join(root, 'src/msgpack.ts')], format: 'iife', globalName: 'PeregrineMsgpack', outfile: join(root, 'dist/peregrine-msgpack.min.js') }),
]);
