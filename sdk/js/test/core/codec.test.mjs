// The encodings: JSON lines (built in) and MessagePack (opt-in), payloads of both kinds.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decode as unpack, encode as pack } from '@msgpack/msgpack';
import { json } from '../../dist/index.js';
import { msgpack } from '../../dist/msgpack.js';

const publish = (id, payload) => ({ id, type: 'publish', body: { channel: 'ch', idempotency_key: 'k' + id }, payload });

test('JSON: a publish carries its JSON text as written (key order, digits)', () => {
  const [frame] = json.encode([publish(1, { j: '{"b":1,"a":12345678901234567890123,"c":1.10}' })], 65536);
  assert.equal(frame, '{"id":1,"publish":{"channel":"ch","idempotency_key":"k1","data":{"b":1,"a":12345678901234567890123,"c":1.10}}}');
});

test('JSON: a binary payload goes as base64 with binary: true, and comes back as bytes', () => {
  const [frame] = json.encode([publish(1, { b: new Uint8Array([0, 1, 254, 255]) })], 65536);
  assert.deepEqual(JSON.parse(frame).publish, { channel: 'ch', idempotency_key: 'k1', data: 'AAH+/w==', binary: true });
  const p = json.publication({ offset: 1, data: 'AAH+/w==', binary: true });
  assert.deepEqual(p.data, new Uint8Array([0, 1, 254, 255]));
});

test('JSON: commands batch into frames of at most 256 commands and under the size limit', () => {
  const commands = Array.from({ length: 600 }, (_, i) => ({ id: i + 1, type: 'ping', body: {} }));
  const frames = json.encode(commands, 65536);
  assert.deepEqual(frames.map((f) => f.split('\n').length), [256, 256, 88]);
  const big = Array.from({ length: 10 }, (_, i) => publish(i + 1, { j: JSON.stringify('é'.repeat(3000)) }));
  const split = json.encode(big, 20000);
  for (const f of split) assert.ok(Buffer.byteLength(f) <= 20000, `frame of ${Buffer.byteLength(f)} bytes`);
  assert.deepEqual(split.flatMap((f) => f.split('\n').map((l) => JSON.parse(l).id)), big.map((c) => c.id));
});

test('JSON: a frame of several lines decodes in order; blank lines and CRLF are tolerated', () => {
  const frame = '{"id":1,"ping":{}}\r\n\n{"push":{"message":{"data":1}}}\n';
  assert.deepEqual(json.decode(frame), [{ id: 1, ping: {} }, { push: { message: { data: 1 } } }]);
  assert.deepEqual(json.decode(new TextEncoder().encode('{"id":2,"ping":{}}')), [{ id: 2, ping: {} }]);
  assert.throws(() => json.decode('{"id":1'));
});

test('MessagePack: one array of maps per frame, data as bin (JSON text or bytes)', () => {
  const [frame] = msgpack.encode([publish(1, { j: '{"a":1}' }), publish(2, { b: new Uint8Array([9]) }), { id: 3, type: 'ping', body: {} }], 65536);
  const [a, b, c] = unpack(frame);
  assert.deepEqual(a.publish.data, new TextEncoder().encode('{"a":1}'));
  assert.equal(a.publish.binary, undefined);
  assert.deepEqual([b.publish.data, b.publish.binary], [new Uint8Array([9]), true]);
  assert.deepEqual(c, { id: 3, ping: {} });
});

test('MessagePack: replies decode, publications give JSON values or bytes', () => {
  const frame = pack([{ id: 1, ping: {} }, { push: { publication: { channel: 'ch', publication: { offset: 1, data: new TextEncoder().encode('[1,2]') } } } }]);
  const [reply, push] = msgpack.decode(frame);
  assert.deepEqual(reply, { id: 1, ping: {} });
  assert.deepEqual(msgpack.publication(push.push.publication.publication).data, [1, 2]);
  assert.deepEqual(msgpack.publication({ offset: 2, data: new Uint8Array([7]), binary: true }).data, new Uint8Array([7]));
  assert.throws(() => msgpack.decode('text'), /text frame/);
});

test('MessagePack: large batches split under the size limit', () => {
  const big = Array.from({ length: 8 }, (_, i) => publish(i + 1, { b: new Uint8Array(5000) }));
  const frames = msgpack.encode(big, 12000);
  assert.ok(frames.length >= 4);
  for (const f of frames) assert.ok(f.length <= 12000);
  assert.deepEqual(frames.flatMap((f) => unpack(f).map((m) => m.id)), [1, 2, 3, 4, 5, 6, 7, 8]);
});
