// The shared vectors in crates/signal-manager-protocol/vectors/ are the byte-level contract between
// this client and the Rust server; both test suites read the same files.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import {
  MessageType as T,
  PayloadType as P,
  HEADER_SIZE,
  NIL_UUID,
  ProtocolError,
  encodeFrame,
  decodeFrame,
  encodeJson,
  decodeMessage,
  decodeClientMessage,
  decodeServerMessage,
} from '../signal-manager.js';

const load = (name) => JSON.parse(readFileSync(fileURLToPath(new URL(`../../../crates/signal-manager-protocol/vectors/${name}`, import.meta.url)), 'utf8'));
const frames = load('frames.json');
const invalid = load('invalid.json');
const fromHex = (h) => Uint8Array.from(Buffer.from(h, 'hex'));
const toHex = (b) => Buffer.from(b).toString('hex');

const SERVER_SENT = new Set([T.CONNECT_ACK, T.HEARTBEAT_ACK, T.ERROR]);
const CLIENT_SENT = new Set([T.CONNECT, T.HEARTBEAT]);

test('frames.json covers the cases the contract names', () => {
  const names = frames.map((v) => v.name);
  const types = new Set(frames.map((v) => v.message_type));
  for (const t of Object.values(T)) assert.ok(types.has(t), `no vector for message type ${t}`);
  for (const t of [T.SIGNAL_OFFER, T.SIGNAL_ANSWER, T.SIGNAL_ICE_CANDIDATE]) {
    const of = frames.filter((v) => v.message_type === t && v.payload);
    assert.ok(of.some((v) => !('source_client_id' in v.payload)), `no client-sent vector for ${t}`);
    assert.ok(of.some((v) => 'source_client_id' in v.payload), `no delivered vector for ${t}`);
  }
  assert.ok(frames.some((v) => v.message_type === T.DISCONNECT && v.payload_hex === ''));
  assert.ok(frames.some((v) => v.message_type === T.DISCONNECT && v.payload));
  assert.ok(frames.some((v) => v.message_type === T.HEARTBEAT && v.payload_type === P.BINARY && v.payload_hex.length > 0));
  assert.ok(frames.some((v) => v.message_type === T.HEARTBEAT_ACK && v.payload_type === P.TEXT));
  assert.ok(frames.some((v) => v.payload && v.payload.signal_data === ''));
  assert.ok(frames.some((v) => v.payload && /[^\x00-\x7f]/.test(v.payload.signal_data ?? '')));
  assert.equal(new Set(names).size, names.length, 'vector names are unique');
});

for (const v of frames) {
  test(`frames.json: ${v.name}`, () => {
    const payload = v.payload === null ? fromHex(v.payload_hex) : encodeJson(v.message_type, v.payload);
    assert.equal(toHex(payload), v.payload_hex, 'payload bytes');
    const frame = encodeFrame({ messageType: v.message_type, messageId: v.message_id, payloadType: v.payload_type, payload });
    assert.equal(toHex(frame), v.frame_hex, 'frame bytes');

    const bytes = fromHex(v.frame_hex);
    assert.equal(bytes.length, HEADER_SIZE + payload.length);
    const decoded = decodeFrame(bytes);
    assert.equal(decoded.messageType, v.message_type);
    assert.equal(decoded.messageId, v.message_id);
    assert.equal(decoded.payloadType, v.payload_type);
    assert.equal(toHex(decoded.payload), v.payload_hex);

    if (v.payload !== null) {
      assert.deepEqual(JSON.parse(new TextDecoder().decode(decoded.payload)), v.payload);
    }
    // Each vector passes the direction checks for whoever sends it.
    const msg = SERVER_SENT.has(v.message_type)
      ? decodeServerMessage(bytes)
      : CLIENT_SENT.has(v.message_type)
        ? decodeClientMessage(bytes)
        : decodeMessage(decoded);
    assert.equal(msg.messageId, v.message_id);
    if (v.payload?.signal_data !== undefined) assert.equal(msg.signalData, v.payload.signal_data);
  });
}

test('invalid.json entries are well formed', () => {
  const codes = new Set(['BAD_FRAME', 'UNKNOWN_MESSAGE_TYPE', 'UNSUPPORTED_PAYLOAD_TYPE', 'BAD_PAYLOAD']);
  for (const v of invalid) {
    assert.ok(codes.has(v.code), `${v.name}: code ${v.code}`);
    assert.match(v.message_id, /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/);
    const bytes = fromHex(v.frame_hex);
    if (bytes.length < HEADER_SIZE) assert.equal(v.message_id, NIL_UUID, v.name);
    else assert.equal(toHex(bytes.subarray(2, 18)), v.message_id.replace(/-/g, ''), `${v.name}: id is the frame's`);
  }
});

for (const v of invalid) {
  test(`invalid.json: ${v.name} -> ${v.code}`, () => {
    assert.throws(
      () => decodeClientMessage(fromHex(v.frame_hex)),
      (err) => {
        assert.ok(err instanceof ProtocolError, `threw ${err}`);
        assert.equal(err.code, v.code);
        assert.equal(err.messageId, v.message_id);
        return true;
      },
    );
  });
}
