// The peregrine.msgpack encoding, opt-in so the core bundle stays small:
//   import { msgpack } from '@peregrine/client/msgpack';
//   new Client(url, { codec: msgpack });
// A frame is one MessagePack array of messages (maps with the JSON keys); `data` is bin:
// the JSON text of a JSON payload, or the bytes of a binary one.
import { decode, encode } from '@msgpack/msgpack';
import { MAX_COMMANDS_PER_FRAME } from './json.js';
import type { Codec, Command, Publication, ServerMessage } from './wire.js';

const utf8 = new TextEncoder();
const text = new TextDecoder();

function message(c: Command): unknown {
  const p = c.payload;
  if (!p) return { id: c.id, [c.type]: c.body };
  const data = p.b || utf8.encode(p.j);
  return { id: c.id, [c.type]: { ...c.body, data, binary: p.b ? true : undefined } };
}

function frames(messages: unknown[], limit: number): Uint8Array[] {
  const frame = encode(messages, { ignoreUndefined: true });
  if ((frame.length <= limit && messages.length <= MAX_COMMANDS_PER_FRAME) || messages.length < 2) return [frame];
  const half = messages.length >> 1;
  return frames(messages.slice(0, half), limit).concat(frames(messages.slice(half), limit));
}

export const msgpack: Codec = {
  name: 'peregrine.msgpack',
  encode: (commands, limit) => frames(commands.map(message), limit),
  decode(frame) {
    if (typeof frame === 'string') throw new Error('a text frame on peregrine.msgpack');
    const messages = decode(frame);
    if (!Array.isArray(messages)) throw new Error('a MessagePack frame must be an array of messages');
    return messages as ServerMessage[];
  },
  publication(p) {
    if (!p.binary) p.data = JSON.parse(text.decode(p.data));
    return p as Publication;
  },
};
