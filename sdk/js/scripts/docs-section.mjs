import { readFileSync, writeFileSync } from 'node:fs';

/**
 * Replaces the section of the Markdown file `path` that starts with the heading line of
 * `section` (up to the next `## `), or appends it: how the measuring scripts write their
 * results into docs/benchmarks.md.
 */
export function writeSection(path, section) {
  const heading = section.slice(0, section.indexOf('\n'));
  const text = readFileSync(path, 'utf8');
  const start = text.indexOf(heading + '\n');
  let updated;
  if (start < 0) updated = text.trimEnd() + '\n\n' + section;
  else {
    const next = text.indexOf('\n## ', start + 1);
    updated = text.slice(0, start) + section + (next < 0 ? '' : text.slice(next));
  }
  writeFileSync(path, updated);
}
