// The peregrine.json encoding: one JSON object per line, text frames.
import type { Codec, Command, Publication, ServerMessage } from './wire.js';
import { fromBase64, toBase64, utf8Length } from './payload.js';

/** At most this many commands in one frame (the protocol allows 1024). */
export const MAX_COMMANDS_PER_FRAME = 256;

function line(c: Command): string {
  const p = c.payload;
  if (!p) return JSON.stringify({ id: c.id, [c.type]: c.body });
  // The payload's JSON text goes in as it is: what the publisher wrote is what every
  // subscriber gets (keys in order, numbers with their digits).
  const data = p.b ? JSON.stringify(toBase64(p.b)) + ',"binary":true' : p.j;
  const fields = JSON.stringify(c.body).slice(1, -1);
  return '{"id":' + c.id + ',"' + c.type + '":{' + fields + ',"data":' + data + '}}';
}

const decoder = /* @__PURE__ */ new TextDecoder();

export const json: Codec = {
  name: 'peregrine.json',
  encode(commands, limit) {
    const frames: string[] = [];
    let lines: string[] = [];
    let size = 0;
    for (const c of commands) {
      const l = line(c);
      const n = utf8Length(l) + 1;
      if (lines.length && (size + n > limit || lines.length >= MAX_COMMANDS_PER_FRAME)) {
        frames.push(lines.join('\n'));
        lines = [];
        size = 0;
      }
      lines.push(l);
      size += n;
    }
    if (lines.length) frames.push(lines.join('\n'));
    return frames;
  },
  decode(frame) {
    const text = (typeof frame === 'string' ? frame : decoder.decode(frame)).trim();
    // JSON strings cannot hold a raw newline, so the lines of a frame are the elements of
    // one array: a single parse instead of one per line.
    return text.indexOf('\n') < 0
      ? [JSON.parse(text) as ServerMessage]
      : JSON.parse('[' + text.split(/\s*\n\s*/).join(',') + ']');
  },
  publication(p) {
    if (p.binary) p.data = fromBase64(p.data);
    return p as Publication;
  },
};
