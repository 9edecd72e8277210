import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  MessageType as T,
  PayloadType as P,
  ErrorCode,
  DisconnectReason,
  NIL_UUID,
  HEADER_SIZE,
  MAX_PAYLOAD_SIZE,
  ProtocolError,
  encodeFrame,
  decodeFrame,
  encodeJson,
  decodeMessage,
  decodeClientMessage,
  decodeServerMessage,
  formatUuid,
  parseUuid,
  newMessageId,
  isValidClientId,
} from '../signal-manager.js';

const utf8 = (s) => new TextEncoder().encode(s);

test('header layout matches PROTOCOL.md byte for byte', () => {
  const id = '00112233-4455-6677-8899-aabbccddeeff';
  const frame = encodeFrame({ messageType: T.SIGNAL_ANSWER, messageId: id, payloadType: P.TEXT, payload: 'hi' });
  assert.equal(frame.length, HEADER_SIZE + 2);
  assert.deepEqual(
    [...frame],
    [0xa5, 0x11, 0x00, 0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88, 0x99, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x03, 0x00, 0x02, 0x68, 0x69],
  );
});

test('round trip for every message type and payload type', () => {
  for (const messageType of Object.values(T)) {
    for (const payloadType of Object.values(P)) {
      for (const payload of [new Uint8Array(0), Uint8Array.from([0, 0xa5, 0xff]), new Uint8Array(300).fill(7)]) {
        const messageId = newMessageId();
        const decoded = decodeFrame(encodeFrame({ messageType, messageId, payloadType, payload }));
        assert.equal(decoded.messageType, messageType);
        assert.equal(decoded.messageId, messageId);
        assert.equal(decoded.payloadType, payloadType);
        assert.deepEqual([...decoded.payload], [...payload]);
      }
    }
  }
});

test('largest payload round-trips and a larger one is refused by the encoder', () => {
  const big = new Uint8Array(MAX_PAYLOAD_SIZE).fill(0x41);
  const frame = encodeFrame({ messageType: T.HEARTBEAT, messageId: NIL_UUID, payloadType: P.BINARY, payload: big });
  assert.equal(frame.length, 65556);
  assert.equal(frame[19], 0xff);
  assert.equal(frame[20], 0xff);
  assert.equal(decodeFrame(frame).payload.length, MAX_PAYLOAD_SIZE);
  assert.throws(
    () => encodeFrame({ messageType: T.HEARTBEAT, messageId: NIL_UUID, payloadType: P.BINARY, payload: new Uint8Array(65536) }),
    RangeError,
  );
});

test('decoder rejects an oversized message with BAD_FRAME', () => {
  const bytes = new Uint8Array(65557);
  bytes.set(encodeFrame({ messageType: T.HEARTBEAT, messageId: NIL_UUID, payloadType: P.BINARY, payload: new Uint8Array(MAX_PAYLOAD_SIZE) }));
  assert.throws(() => decodeFrame(bytes), (e) => e instanceof ProtocolError && e.code === 'BAD_FRAME' && e.messageId === NIL_UUID);
});

test('decoder accepts ArrayBuffer and views with an offset', () => {
  const frame = encodeFrame({ messageType: T.HEARTBEAT, messageId: NIL_UUID, payloadType: P.BINARY, payload: Uint8Array.from([9]) });
  const padded = new Uint8Array(frame.length + 3);
  padded.set(frame, 3);
  assert.deepEqual([...decodeFrame(padded.subarray(3)).payload], [9]);
  assert.deepEqual([...decodeFrame(frame.slice().buffer).payload], [9]);
});

test('uuid parse and format are inverse, lower case', () => {
  const id = 'A1B2C3D4-E5F6-4789-8abc-DEF012345678';
  assert.equal(formatUuid(parseUuid(id)), id.toLowerCase());
  assert.throws(() => parseUuid('not-a-uuid'), TypeError);
  assert.throws(() => parseUuid('a1b2c3d4e5f647898abcdef012345678'), TypeError);
});

test('newMessageId gives distinct version-4 ids', () => {
  const ids = new Set(Array.from({ length: 1000 }, newMessageId));
  assert.equal(ids.size, 1000);
  for (const id of ids) assert.match(id, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
});

test('newMessageId falls back to getRandomValues without randomUUID', () => {
  const saved = Object.getOwnPropertyDescriptor(globalThis, 'crypto');
  const real = globalThis.crypto;
  Object.defineProperty(globalThis, 'crypto', { value: { getRandomValues: (a) => real.getRandomValues(a) }, configurable: true });
  try {
    assert.match(newMessageId(), /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  } finally {
    Object.defineProperty(globalThis, 'crypto', saved);
  }
});

test('JSON codec writes fields in protocol order, compact, and skips undefined', () => {
  const bytes = encodeJson(T.SIGNAL_OFFER, { signal_data: 'x', source_client_id: undefined, target_client_id: 'bob' });
  assert.equal(new TextDecoder().decode(bytes), '{"target_client_id":"bob","signal_data":"x"}');
  const ack = encodeJson(T.CONNECT_ACK, { heartbeat_interval_ms: 30000, node_id: 'n', client_id: 'c', session_id: 's', extra: 1 });
  assert.equal(new TextDecoder().decode(ack), '{"session_id":"s","client_id":"c","node_id":"n","heartbeat_interval_ms":30000}');
  assert.throws(() => encodeJson(T.HEARTBEAT, {}), TypeError);
});

test('decodeMessage reads each structured payload', () => {
  const frame = (messageType, body) => decodeFrame(encodeFrame({
    messageType, messageId: NIL_UUID, payloadType: P.JSON, payload: utf8(JSON.stringify(body)),
  }));
  assert.deepEqual(
    decodeMessage(frame(T.CONNECT_ACK, { session_id: 's', client_id: 'alice', node_id: 'n1', heartbeat_interval_ms: 5, more: true })),
    {
      messageType: T.CONNECT_ACK, messageId: NIL_UUID, payloadType: P.JSON, sessionId: 's', clientId: 'alice', nodeId: 'n1', heartbeatIntervalMs: 5,
      // A version 1 ACK: no resume token, not resumed, no ICE servers.
      resumeToken: undefined, resumed: false, iceServers: [],
    },
  );
  const sig = decodeMessage(frame(T.SIGNAL_ICE_CANDIDATE, { target_client_id: 'bob', source_client_id: 'alice', signal_data: '' }));
  assert.equal(sig.targetClientId, 'bob');
  assert.equal(sig.sourceClientId, 'alice');
  assert.equal(sig.signalData, '');
  const err = decodeMessage(frame(T.ERROR, { code: 'PEER_NOT_FOUND', message: 'gone' }));
  assert.equal(err.code, 'PEER_NOT_FOUND');
  const disc = decodeMessage(frame(T.DISCONNECT, { reason: 'REPLACED' }));
  assert.equal(disc.reason, 'REPLACED');
  assert.equal(disc.message, undefined);
});

test('version 1.1 fields: resume_token in CONNECT, resume_token, resumed and ice_servers in CONNECT_ACK', () => {
  const text = (b) => new TextDecoder().decode(b);
  assert.equal(
    text(encodeJson(T.CONNECT, { resume_token: 'r', auth_token: 't', client_id: 'alice' })),
    '{"client_id":"alice","auth_token":"t","resume_token":"r"}',
  );
  const ice = [{ urls: ['stun:stun.example.org:3478'] }, { urls: ['turn:turn.example.org:3478?transport=udp'], username: '1764000000:alice', credential: 'c2VjcmV0' }];
  const ackBody = {
    ice_servers: ice, resumed: true, resume_token: 'rt', heartbeat_interval_ms: 1, node_id: 'n', client_id: 'alice', session_id: 's',
  };
  const ackBytes = encodeJson(T.CONNECT_ACK, ackBody);
  assert.equal(
    text(ackBytes),
    `{"session_id":"s","client_id":"alice","node_id":"n","heartbeat_interval_ms":1,"resume_token":"rt","resumed":true,"ice_servers":${JSON.stringify(ice)}}`,
  );
  const ack = decodeServerMessage(encodeFrame({ messageType: T.CONNECT_ACK, messageId: NIL_UUID, payloadType: P.JSON, payload: ackBytes }));
  assert.equal(ack.resumeToken, 'rt');
  assert.equal(ack.resumed, true);
  assert.deepEqual(ack.iceServers, ice);

  const connect = decodeClientMessage(encodeFrame({
    messageType: T.CONNECT, messageId: NIL_UUID, payloadType: P.JSON, payload: '{"client_id":"alice","auth_token":"t","resume_token":"r"}',
  }));
  assert.equal(connect.resumeToken, 'r');
});

test('version 1.1 CONNECT_ACK fields: empty or null means none, wrong types are BAD_PAYLOAD', () => {
  const base = '"session_id":"s","client_id":"a","node_id":"n","heartbeat_interval_ms":1';
  const decode = (extra) => decodeServerMessage(encodeFrame({
    messageType: T.CONNECT_ACK, messageId: NIL_UUID, payloadType: P.JSON, payload: `{${base}${extra}}`,
  }));
  // What a server translating from protobuf defaults may send.
  const none = decode(',"resume_token":"","resumed":null,"ice_servers":[{"urls":["stun:s"],"username":"","credential":""}]');
  assert.equal(none.resumeToken, undefined);
  assert.equal(none.resumed, false);
  assert.deepEqual(none.iceServers, [{ urls: ['stun:s'] }]);
  assert.deepEqual(decode(',"ice_servers":null').iceServers, []);
  for (const bad of [
    ',"resume_token":5', ',"resumed":"true"', ',"resumed":1', ',"ice_servers":{}', ',"ice_servers":[{}]',
    ',"ice_servers":["stun:s"]', ',"ice_servers":[{"urls":"stun:s"}]', ',"ice_servers":[{"urls":[1]}]',
    ',"ice_servers":[{"urls":["turn:t"],"username":1,"credential":"c"}]',
  ]) {
    assert.throws(() => decode(bad), { code: 'BAD_PAYLOAD' }, bad);
  }
});

test('the 1.1 vocabulary: FORBIDDEN and KICKED', () => {
  assert.equal(ErrorCode.FORBIDDEN, 'FORBIDDEN');
  assert.equal(DisconnectReason.KICKED, 'KICKED');
});

test('an empty DISCONNECT of any payload type has no body', () => {
  for (const payloadType of Object.values(P)) {
    const msg = decodeClientMessage(encodeFrame({ messageType: T.DISCONNECT, messageId: NIL_UUID, payloadType }));
    assert.equal(msg.reason, undefined);
  }
});

test('ConnectAck with a non-integer heartbeat interval is BAD_PAYLOAD', () => {
  const f = encodeFrame({
    messageType: T.CONNECT_ACK, messageId: NIL_UUID, payloadType: P.JSON,
    payload: '{"session_id":"s","client_id":"a","node_id":"n","heartbeat_interval_ms":"30000"}',
  });
  assert.throws(() => decodeServerMessage(f), { code: 'BAD_PAYLOAD' });
});

test('direction checks: a server never sends CONNECT or HEARTBEAT', () => {
  for (const messageType of [T.CONNECT, T.HEARTBEAT]) {
    const f = encodeFrame({ messageType, messageId: NIL_UUID, payloadType: P.BINARY });
    assert.throws(() => decodeFrame(f, { sender: 'server' }), { code: 'UNKNOWN_MESSAGE_TYPE' });
    assert.doesNotThrow(() => decodeFrame(f, { sender: 'client' }));
  }
});

test('client ids: 1 to 128 bytes of [A-Za-z0-9._:@-]', () => {
  for (const ok of ['a', 'A-z_0.9:@', 'x'.repeat(128), 'user@example.com']) assert.ok(isValidClientId(ok), ok);
  for (const bad of ['', 'x'.repeat(129), 'al ice', 'é', 'a/b', 'a\n', 42, null]) assert.ok(!isValidClientId(bad), String(bad));
});
