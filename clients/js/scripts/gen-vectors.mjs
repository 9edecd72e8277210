// Writes crates/signal-manager-protocol/vectors/frames.json and crates/signal-manager-protocol/vectors/invalid.json with this
// client's encoder. Both files are committed; the JS and Rust test suites
// check their codecs against them byte for byte. Run after a deliberate
// change to the vectors: `node clients/js/scripts/gen-vectors.mjs`.
import { createHash } from 'node:crypto';
import { writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  MessageType as T,
  PayloadType as P,
  NIL_UUID,
  encodeFrame,
  encodeJson,
  formatUuid,
} from '../signal-manager.js';

const outDir = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'crates', 'signal-manager-protocol', 'vectors');

/** A stable version-4 UUID derived from a name, so vectors do not churn. */
function idFor(name) {
  const b = createHash('sha256').update(name).digest().subarray(0, 16);
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return formatUuid(b);
}

const hex = (bytes) => Buffer.from(bytes).toString('hex');
const utf8 = (s) => new TextEncoder().encode(s);

const TOKEN = 'eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiJhbGljZSIsImV4cCI6MTc2NDAwMDAwMH0.c2lnbmF0dXJlLW5vdC1jaGVja2Vk';
const SDP = JSON.stringify({ type: 'offer', sdp: 'v=0\r\no=- 4611731400430051336 2 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n' });
const CANDIDATE = JSON.stringify({
  candidate: 'candidate:1 1 udp 2122260223 127.0.0.1 54400 typ host generation 0',
  sdpMid: '0',
  sdpMLineIndex: 0,
  usernameFragment: 'abcd',
});

// [name, message type, payload type, JSON object | raw bytes, message id?]
const valid = [
  ['CONNECT', T.CONNECT, P.JSON, { client_id: 'alice', auth_token: TOKEN }],
  ['CONNECT with development token', T.CONNECT, P.JSON, { client_id: 'test_client_1', auth_token: 'test_token_1' }],
  ['CONNECT_ACK', T.CONNECT_ACK, P.JSON, {
    session_id: '5f0c6f5e-3d2b-4c1a-9e8f-7a6b5c4d3e2f', client_id: 'alice', node_id: 'node-1', heartbeat_interval_ms: 30000,
  }],
  ['SIGNAL_OFFER sent by a client', T.SIGNAL_OFFER, P.JSON, { target_client_id: 'bob', signal_data: SDP }],
  ['SIGNAL_OFFER delivered', T.SIGNAL_OFFER, P.JSON, { target_client_id: 'bob', source_client_id: 'alice', signal_data: SDP }],
  ['SIGNAL_ANSWER sent by a client', T.SIGNAL_ANSWER, P.JSON, { target_client_id: 'alice', signal_data: '{"type":"answer","sdp":"v=0\\r\\n"}' }],
  ['SIGNAL_ANSWER delivered', T.SIGNAL_ANSWER, P.JSON, { target_client_id: 'alice', source_client_id: 'bob', signal_data: '{"type":"answer","sdp":"v=0\\r\\n"}' }],
  ['SIGNAL_ICE_CANDIDATE sent by a client', T.SIGNAL_ICE_CANDIDATE, P.JSON, { target_client_id: 'bob', signal_data: CANDIDATE }],
  ['SIGNAL_ICE_CANDIDATE delivered', T.SIGNAL_ICE_CANDIDATE, P.JSON, { target_client_id: 'bob', source_client_id: 'alice', signal_data: CANDIDATE }],
  ['SIGNAL_OFFER with non-ASCII UTF-8 signal_data', T.SIGNAL_OFFER, P.JSON, {
    target_client_id: 'user@example.com', signal_data: 'héllo wörld — 你好 😀',
  }],
  ['SIGNAL_OFFER delivered with non-ASCII and escaped signal_data', T.SIGNAL_OFFER, P.JSON, {
    target_client_id: 'user@example.com', source_client_id: 'room:42.guest_7', signal_data: 'tab\tquote"backslash\\nul\u0000bell\u0007é😀',
  }],
  ['SIGNAL_ICE_CANDIDATE with empty signal_data', T.SIGNAL_ICE_CANDIDATE, P.JSON, { target_client_id: 'bob', signal_data: '' }],
  ['SIGNAL_ICE_CANDIDATE delivered with empty signal_data', T.SIGNAL_ICE_CANDIDATE, P.JSON, { target_client_id: 'bob', source_client_id: 'alice', signal_data: '' }],
  ['ERROR PEER_NOT_FOUND', T.ERROR, P.JSON, { code: 'PEER_NOT_FOUND', message: 'target client is not online' }],
  ['ERROR SERVER_BUSY with nil id', T.ERROR, P.JSON, { code: 'SERVER_BUSY', message: 'server is at capacity' }, NIL_UUID],
  ['DISCONNECT SERVER_SHUTDOWN', T.DISCONNECT, P.JSON, { reason: 'SERVER_SHUTDOWN', message: 'node is shutting down' }],
  ['DISCONNECT CLIENT_LEFT with body', T.DISCONNECT, P.JSON, { reason: 'CLIENT_LEFT', message: '' }],
  ['DISCONNECT empty', T.DISCONNECT, P.BINARY, new Uint8Array(0)],
  ['HEARTBEAT empty', T.HEARTBEAT, P.BINARY, new Uint8Array(0)],
  ['HEARTBEAT with binary payload', T.HEARTBEAT, P.BINARY, Uint8Array.from([0x00, 0x01, 0xa5, 0xff, 0x80, 0x7f])],
  ['HEARTBEAT_ACK with binary payload', T.HEARTBEAT_ACK, P.BINARY, Uint8Array.from([0x00, 0x01, 0xa5, 0xff, 0x80, 0x7f]), idFor('HEARTBEAT with binary payload')],
  ['HEARTBEAT with TEXT payload', T.HEARTBEAT, P.TEXT, utf8('ping 1 ✓')],
  ['HEARTBEAT_ACK with TEXT payload', T.HEARTBEAT_ACK, P.TEXT, utf8('ping 1 ✓'), idFor('HEARTBEAT with TEXT payload')],
];

const frames = valid.map(([name, messageType, payloadType, body, id]) => {
  const messageId = id ?? idFor(name);
  const raw = body instanceof Uint8Array;
  const payload = raw ? body : encodeJson(messageType, body);
  const frame = encodeFrame({ messageType, messageId, payloadType, payload });
  return {
    name,
    message_type: messageType,
    message_id: messageId,
    payload_type: payloadType,
    payload: raw ? null : body,
    payload_hex: hex(payload),
    frame_hex: hex(frame),
  };
});

/** A frame with explicit header bytes, for the invalid cases. */
function rawFrame(messageType, messageId, payloadType, payload, { start = 0xa5, length } = {}) {
  const body = typeof payload === 'string' ? utf8(payload) : payload;
  const f = encodeFrame({ messageType, messageId, payloadType, payload: body });
  f[0] = start;
  if (length !== undefined) {
    f[19] = length >> 8;
    f[20] = length & 0xff;
  }
  return f;
}

const connectJson = '{"client_id":"alice","auth_token":"test_token_1"}';
const inv = (name, code, frame, messageId) => ({ name, frame_hex: hex(frame), code, message_id: messageId });
const invalid = [];
const add = (name, code, build) => {
  const id = idFor(name);
  const frame = build(id);
  invalid.push(inv(name, code, frame, frame.length < 21 ? NIL_UUID : id));
};

add('empty message', 'BAD_FRAME', () => new Uint8Array(0));
add('20 bytes: one short of a header', 'BAD_FRAME', (id) => rawFrame(T.HEARTBEAT, id, P.BINARY, new Uint8Array(0)).subarray(0, 20));
add('wrong start byte', 'BAD_FRAME', (id) => rawFrame(T.HEARTBEAT, id, P.BINARY, new Uint8Array(0), { start: 0x5a }));
add('length field larger than the payload', 'BAD_FRAME', (id) => rawFrame(T.CONNECT, id, P.JSON, connectJson, { length: connectJson.length + 1 }));
add('length field smaller than the payload', 'BAD_FRAME', (id) => rawFrame(T.CONNECT, id, P.JSON, connectJson, { length: connectJson.length - 1 }));
add('header only, length field 1', 'BAD_FRAME', (id) => rawFrame(T.HEARTBEAT, id, P.BINARY, new Uint8Array(0), { length: 1 }));
add('message type 0x7E', 'UNKNOWN_MESSAGE_TYPE', (id) => rawFrame(0x7e, id, P.BINARY, new Uint8Array(0)));
add('message type 0x00', 'UNKNOWN_MESSAGE_TYPE', (id) => rawFrame(0x00, id, P.JSON, '{}'));
add('CONNECT_ACK sent by a client', 'UNKNOWN_MESSAGE_TYPE', (id) => rawFrame(T.CONNECT_ACK, id, P.JSON, encodeJson(T.CONNECT_ACK, {
  session_id: '5f0c6f5e-3d2b-4c1a-9e8f-7a6b5c4d3e2f', client_id: 'alice', node_id: 'node-1', heartbeat_interval_ms: 30000,
})));
add('ERROR sent by a client', 'UNKNOWN_MESSAGE_TYPE', (id) => rawFrame(T.ERROR, id, P.JSON, '{"code":"INTERNAL","message":"x"}'));
add('HEARTBEAT_ACK sent by a client', 'UNKNOWN_MESSAGE_TYPE', (id) => rawFrame(T.HEARTBEAT_ACK, id, P.BINARY, new Uint8Array(0)));
add('payload type 0x09 on HEARTBEAT', 'UNSUPPORTED_PAYLOAD_TYPE', (id) => rawFrame(T.HEARTBEAT, id, 0x09, new Uint8Array(0)));
add('payload type 0x09 on CONNECT', 'UNSUPPORTED_PAYLOAD_TYPE', (id) => rawFrame(T.CONNECT, id, 0x09, connectJson));
add('payload type 0x00 on CONNECT', 'UNSUPPORTED_PAYLOAD_TYPE', (id) => rawFrame(T.CONNECT, id, 0x00, connectJson));
add('CONNECT as BINARY', 'UNSUPPORTED_PAYLOAD_TYPE', (id) => rawFrame(T.CONNECT, id, P.BINARY, connectJson));
add('CONNECT as TEXT', 'UNSUPPORTED_PAYLOAD_TYPE', (id) => rawFrame(T.CONNECT, id, P.TEXT, connectJson));
add('SIGNAL_OFFER as TEXT', 'UNSUPPORTED_PAYLOAD_TYPE', (id) => rawFrame(T.SIGNAL_OFFER, id, P.TEXT, '{"target_client_id":"bob","signal_data":""}'));
add('DISCONNECT with a TEXT body', 'UNSUPPORTED_PAYLOAD_TYPE', (id) => rawFrame(T.DISCONNECT, id, P.TEXT, 'bye'));
add('CONNECT JSON missing auth_token', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, '{"client_id":"alice"}'));
add('CONNECT JSON missing client_id', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, '{"auth_token":"test_token_1"}'));
add('CONNECT invalid JSON', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, '{"client_id":"alice","auth_token":'));
add('CONNECT empty JSON payload', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, new Uint8Array(0)));
add('CONNECT JSON array', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, '["alice","test_token_1"]'));
add('CONNECT auth_token not a string', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, '{"client_id":"alice","auth_token":42}'));
add('CONNECT invalid UTF-8', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, Uint8Array.from([
  ...utf8('{"client_id":"al'), 0xc3, 0x28, ...utf8('ice","auth_token":"test_token_1"}'),
])));
add('CONNECT client_id with a space', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, '{"client_id":"al ice","auth_token":"test_token_1"}'));
add('CONNECT empty client_id', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, '{"client_id":"","auth_token":"test_token_1"}'));
add('CONNECT client_id of 129 bytes', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, `{"client_id":"${'a'.repeat(129)}","auth_token":"test_token_1"}`));
add('CONNECT client_id with non-ASCII', 'BAD_PAYLOAD', (id) => rawFrame(T.CONNECT, id, P.JSON, '{"client_id":"alicé","auth_token":"test_token_1"}'));
add('SIGNAL_OFFER JSON missing target_client_id', 'BAD_PAYLOAD', (id) => rawFrame(T.SIGNAL_OFFER, id, P.JSON, '{"signal_data":"x"}'));

mkdirSync(outDir, { recursive: true });
writeFileSync(join(outDir, 'frames.json'), JSON.stringify(frames, null, 2) + '\n');
writeFileSync(join(outDir, 'invalid.json'), JSON.stringify(invalid, null, 2) + '\n');
console.log(`wrote ${frames.length} valid and ${invalid.length} invalid vectors to ${outDir}`);
