// The bundle size budget (scripts/size.mjs): the JSON core with every feature and every
// transport, minified and gzipped, within 10 KB and well under socket.io-client and
// centrifuge-js bundled the same way.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '../..');

test('the JSON core bundle stays within its budget, well under socket.io-client and centrifuge-js', () => {
  // Exits non-zero over the budget; prints the table.
  const out = execFileSync(process.execPath, [join(root, 'scripts/size.mjs'), '--no-docs'], { encoding: 'utf8' });
  const gz = (name) => {
    const row = out.split('\n').find((l) => l.startsWith(`| ${name}`));
    assert.ok(row, `a row for ${name} in:\n${out}`);
    return parseFloat(row.split('|')[3]);
  };
  const ours = gz('peregrine JSON core');
  assert.ok(ours <= 10, `ours: ${ours} KB`);
  assert.ok(ours < 0.75 * gz('socket.io-client'), out);
  assert.ok(ours < 0.5 * gz('centrifuge-js'), out);
  console.log(out.split('\n').map((l) => '# ' + l).join('\n'));
});
