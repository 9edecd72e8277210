// SignalManagerClient's state machine against a small scripted server that
// speaks real WebSocket and real frames (testing/ws.js). The scripted server
// only answers what each test tells it to; the real server is exercised by
// tests/browser.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { startWsServer } from '../testing/ws.js';
import {
  utf8, eventually, nextEvent, scriptedServer, send, ack, defaultScript, disconnect, newClient,
} from '../testing/scripted.js';
import {
  MessageType as T,
  PayloadType as P,
  ErrorCode,
  attachPeerConnection,
  encodeFrame,
} from '../signal-manager.js';

test('connect sends CONNECT and resolves on the CONNECT_ACK with its id only', async (t) => {
  const server = await scriptedServer((conn, msg, raw, opts) => {
    if (msg.messageType !== T.CONNECT) return defaultScript(conn, msg, raw, opts);
    // An ack for some other id first: the client must keep waiting.
    send(conn, T.CONNECT_ACK, { session_id: 'wrong', client_id: 'alice', node_id: 'x', heartbeat_interval_ms: 1 });
    ack(conn, msg, { node: 'node-7', session: 'sess-42' });
  });
  t.after(() => server.close());
  const client = newClient();
  const connected = nextEvent(client, 'connected');
  const info = await client.connect(server.url, 'alice', 'tok-1');
  assert.equal(info.sessionId, 'sess-42');
  assert.equal(info.nodeId, 'node-7');
  assert.equal(info.heartbeatIntervalMs, 30000);
  assert.equal(info.reconnected, false);
  assert.equal((await connected).sessionId, 'sess-42');
  assert.equal(client.state, 'connected');
  assert.equal(client.nodeId, 'node-7');

  const [{ msg, raw }] = server.frames;
  assert.equal(msg.messageType, T.CONNECT);
  assert.equal(msg.payloadType, P.JSON);
  assert.equal(utf8.decode(raw.subarray(21)), '{"client_id":"alice","auth_token":"tok-1"}');
  await client.close();
});

test('each connect uses a fresh message id', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const client = newClient();
  await client.connect(server.url, 'alice', 't');
  await client.close();
  await client.connect(server.url, 'alice', 't');
  await client.close();
  const ids = server.frames.filter((f) => f.msg.messageType === T.CONNECT).map((f) => f.msg.messageId);
  assert.equal(ids.length, 2);
  assert.notEqual(ids[0], ids[1]);
});

test('connect rejects on ERROR with the CONNECT id and does not retry', async (t) => {
  const server = await scriptedServer((conn, msg) => {
    if (msg.messageType !== T.CONNECT) return;
    send(conn, T.ERROR, { code: 'ERROR_FOR_SOMETHING_ELSE', message: 'not ours' });
    send(conn, T.ERROR, { code: 'AUTH_FAILED', message: 'token invalid' }, msg.messageId);
    conn.close(1008);
  });
  t.after(() => server.close());
  const client = newClient();
  const errors = [];
  client.on('error', (e) => errors.push(e));
  await assert.rejects(client.connect(server.url, 'alice', 'bad'), (err) => err.code === 'AUTH_FAILED');
  assert.equal(client.state, 'closed');
  await new Promise((r) => setTimeout(r, 200));
  assert.equal(server.connections.length, 1, 'no reconnect after an auth failure');
  assert.ok(errors.some((e) => e.code === 'AUTH_FAILED' && e.messageId === server.frames[0].msg.messageId));
});

test('connect rejects with SERVER_BUSY from a full node', async (t) => {
  const server = await startWsServer((conn) => {
    send(conn, T.ERROR, { code: 'SERVER_BUSY', message: 'full' }, '00000000-0000-0000-0000-000000000000');
    conn.close(1013);
  });
  t.after(() => server.close());
  const client = newClient();
  await assert.rejects(client.connect(server.url, 'alice', 't'), { code: 'SERVER_BUSY' });
  assert.equal(client.state, 'closed');
});

test('connect rejects when no CONNECT_ACK comes in time', async (t) => {
  const server = await scriptedServer(() => {});
  t.after(() => server.close());
  const client = newClient({ connectTimeoutMs: 150 });
  await assert.rejects(client.connect(server.url, 'alice', 't'), { code: 'CONNECT_TIMEOUT' });
  assert.equal(client.state, 'closed');
});

test('connect validates the client id before opening a socket', async () => {
  const client = newClient();
  await assert.rejects(client.connect('ws://127.0.0.1:9/', 'al ice', 't'), TypeError);
  assert.throws(() => client.sendOffer('bob', 'x'), { code: 'NOT_CONNECTED' });
});

test('heartbeats go out at the interval from CONNECT_ACK as empty BINARY frames', async (t) => {
  const server = await scriptedServer(defaultScript, { heartbeat: 40 });
  t.after(() => server.close());
  const client = newClient();
  const rtts = [];
  client.on('heartbeat', (h) => rtts.push(h.rttMs));
  const started = Date.now();
  await client.connect(server.url, 'alice', 't');
  await eventually(() => rtts.length >= 3, 2000, 'three heartbeat acks');
  const beats = server.frames.filter((f) => f.msg.messageType === T.HEARTBEAT);
  assert.ok(beats.length >= 3);
  assert.ok(Date.now() - started >= 3 * 40 - 5, 'not faster than the interval');
  for (const b of beats) {
    assert.equal(b.msg.payloadType, P.BINARY);
    assert.equal(b.msg.payload.length, 0);
  }
  assert.equal(new Set(beats.map((b) => b.msg.messageId)).size, beats.length, 'fresh id per heartbeat');
  await client.close();
});

test('a link that stops answering heartbeats is dropped and reconnected', async (t) => {
  let silent = false;
  const server = await scriptedServer((conn, msg, raw, opts) => {
    if (silent && msg.messageType === T.HEARTBEAT) return; // a dead peer
    defaultScript(conn, msg, raw, opts);
  }, { heartbeat: 50 });
  t.after(() => server.close());
  const client = newClient();
  await client.connect(server.url, 'alice', 't');
  silent = true;
  const disc = await nextEvent(client, 'disconnect', 4000);
  assert.equal(disc.reason, 'HEARTBEAT_TIMEOUT');
  assert.equal(disc.willReconnect, true);
  silent = false;
  const again = await nextEvent(client, 'connected', 3000);
  assert.equal(again.reconnected, true);
  await client.close();
});

test('signals: ids returned, exact payloads sent, deliveries and errors as events', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const client = newClient();
  await client.connect(server.url, 'alice', 't');
  const conn = server.connections[0];

  const offerId = client.sendOffer('bob', '{"type":"offer","sdp":"v=0\\r\\n"}');
  const answerId = client.sendAnswer('bob', '');
  const iceId = client.sendIceCandidate('bob', 'ü');
  await eventually(() => server.frames.length === 4, 2000, 'three signals');
  const sent = server.frames.slice(1);
  assert.deepEqual(sent.map((f) => f.msg.messageType), [T.SIGNAL_OFFER, T.SIGNAL_ANSWER, T.SIGNAL_ICE_CANDIDATE]);
  assert.deepEqual(sent.map((f) => f.msg.messageId), [offerId, answerId, iceId]);
  assert.equal(utf8.decode(sent[0].raw.subarray(21)), '{"target_client_id":"bob","signal_data":"{\\"type\\":\\"offer\\",\\"sdp\\":\\"v=0\\\\r\\\\n\\"}"}');
  assert.equal(utf8.decode(sent[2].raw.subarray(21)), '{"target_client_id":"bob","signal_data":"ü"}');

  const got = { offer: [], answer: [], ice: [] };
  for (const type of Object.keys(got)) client.on(type, (d) => got[type].push(d));
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const inOffer = send(conn, T.SIGNAL_OFFER, { target_client_id: 'alice', source_client_id: 'bob', signal_data: 'o' });
  send(conn, T.SIGNAL_ANSWER, { target_client_id: 'alice', source_client_id: 'bob', signal_data: 'a' });
  send(conn, T.SIGNAL_ICE_CANDIDATE, { target_client_id: 'alice', source_client_id: 'carol', signal_data: '' });
  send(conn, T.ERROR, { code: 'PEER_NOT_FOUND', message: 'bob is not online' }, offerId);
  await eventually(() => errors.length === 1, 2000, 'the error');
  assert.deepEqual(got.offer, [{ from: 'bob', to: 'alice', data: 'o', messageId: inOffer, messageType: T.SIGNAL_OFFER }]);
  assert.equal(got.answer[0].data, 'a');
  assert.equal(got.ice[0].from, 'carol');
  assert.equal(got.ice[0].data, '');
  assert.deepEqual(errors[0], { code: 'PEER_NOT_FOUND', message: 'bob is not online', messageId: offerId });

  assert.throws(() => client.sendOffer('b ob', 'x'), TypeError);
  assert.throws(() => client.sendOffer('bob', { not: 'a string' }), TypeError);
  await client.close();
});

test('FORBIDDEN (peers claim): an error event with the signal\'s id, and the session stays open', async (t) => {
  const server = await scriptedServer((conn, msg, raw, opts) => {
    if (msg.targetClientId === 'room-9:carol') {
      send(conn, T.ERROR, { code: 'FORBIDDEN', message: 'target not allowed by the token' }, msg.messageId);
      return;
    }
    defaultScript(conn, msg, raw, opts);
  });
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  await client.connect(server.url, 'alice', 't');
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const allowed = client.sendOffer('room-42:bob', 'o');
  const refused = client.sendOffer('room-9:carol', 'o');
  await eventually(() => errors.length === 1, 2000, 'the FORBIDDEN error');
  assert.deepEqual(errors[0], { code: ErrorCode.FORBIDDEN, message: 'target not allowed by the token', messageId: refused });
  assert.notEqual(errors[0].messageId, allowed);
  assert.equal(client.state, 'connected');
  client.sendAnswer('room-42:bob', 'still open');
  await eventually(() => server.frames.some((f) => f.msg.messageType === T.SIGNAL_ANSWER), 2000, 'a signal after the refusal');
});

test('frames the server should never send are reported, text messages ignored', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const client = newClient();
  await client.connect(server.url, 'alice', 't');
  const errors = [];
  client.on('error', (e) => errors.push(e));
  const conn = server.connections[0];
  conn.sendText('hello');
  conn.send(Uint8Array.from([0xa5, 0x01]));
  send(conn, T.CONNECT, { client_id: 'x', auth_token: 'y' });
  await eventually(() => errors.length === 2, 2000, 'two local errors');
  assert.deepEqual(errors.map((e) => [e.code, e.local]), [['BAD_FRAME', true], ['UNKNOWN_MESSAGE_TYPE', true]]);
  assert.equal(client.state, 'connected');
  await client.close();
});

test('SERVER_SHUTDOWN: reconnects to the next URL with a fresh token', async (t) => {
  const a = await scriptedServer(defaultScript, { node: 'node-a' });
  const b = await scriptedServer(defaultScript, { node: 'node-b' });
  t.after(() => Promise.all([a.close(), b.close()]));
  const asked = [];
  const client = newClient({
    getToken: async ({ clientId, reason }) => {
      asked.push([clientId, reason]);
      return `fresh-${asked.length}`;
    },
  });
  await client.connect([a.url, b.url], 'bob', 'first');
  const disc = nextEvent(client, 'disconnect');
  const reconnecting = nextEvent(client, 'reconnecting');
  const connected = nextEvent(client, 'connected');
  disconnect(a.connections[0], 'SERVER_SHUTDOWN', 1001);
  assert.deepEqual(
    { ...(await disc), message: undefined },
    { reason: 'SERVER_SHUTDOWN', message: undefined, closeCode: 1001, willReconnect: true, resumable: false },
  );
  assert.equal((await reconnecting).url, b.url);
  const info = await connected;
  assert.equal(info.nodeId, 'node-b');
  assert.equal(info.reconnected, true);
  assert.equal(client.url, b.url);
  assert.deepEqual(asked, [['bob', 'SERVER_SHUTDOWN']]);
  assert.equal(utf8.decode(b.frames[0].raw.subarray(21)), '{"client_id":"bob","auth_token":"fresh-1"}');
  client.sendOffer('alice', 'after reconnect');
  await eventually(() => b.frames.some((f) => f.msg.messageType === T.SIGNAL_OFFER), 2000, 'a signal on the new node');
  await client.close();
});

for (const reason of ['REPLACED', 'CLIENT_LEFT', 'POLICY', 'KICKED']) {
  test(`DISCONNECT ${reason}: no reconnect`, async (t) => {
    const server = await scriptedServer();
    t.after(() => server.close());
    const client = newClient();
    await client.connect(server.url, 'alice', 't');
    const disc = nextEvent(client, 'disconnect');
    disconnect(server.connections[0], reason, reason === 'POLICY' || reason === 'KICKED' ? 1008 : 1000);
    const d = await disc;
    assert.equal(d.reason, reason);
    assert.equal(d.willReconnect, false);
    await new Promise((r) => setTimeout(r, 200));
    assert.equal(server.connections.length, 1);
    assert.equal(client.state, 'closed');
  });
}

test('TOKEN_EXPIRED reconnects only when a token callback exists', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const plain = newClient();
  await plain.connect(server.url, 'alice', 't');
  const d1 = nextEvent(plain, 'disconnect');
  disconnect(server.connections[0], 'TOKEN_EXPIRED', 1008);
  assert.equal((await d1).willReconnect, false);

  const refreshing = newClient({ getToken: () => 'new-token' });
  await refreshing.connect(server.url, 'alice', 't');
  const d2 = nextEvent(refreshing, 'disconnect');
  const again = nextEvent(refreshing, 'connected');
  disconnect(server.connections[1], 'TOKEN_EXPIRED', 1008);
  assert.equal((await d2).willReconnect, true);
  await again;
  assert.equal(utf8.decode(server.frames.at(-1).raw.subarray(21)), '{"client_id":"alice","auth_token":"new-token"}');
  await refreshing.close();
});

test('an unexpected drop reconnects to the same URL', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const client = newClient();
  await client.connect(server.url, 'alice', 't');
  const disc = nextEvent(client, 'disconnect');
  const connected = nextEvent(client, 'connected');
  server.connections[0].drop();
  const d = await disc;
  assert.equal(d.reason, 'CONNECTION_LOST');
  assert.equal(d.willReconnect, true);
  await connected;
  assert.equal(server.connections.length, 2);
  await client.close();
});

test('an auth failure on reconnect stops reconnecting', async (t) => {
  let connects = 0;
  const server = await scriptedServer((conn, msg, raw, opts) => {
    if (msg.messageType === T.CONNECT && ++connects > 1) {
      send(conn, T.ERROR, { code: 'AUTH_FAILED', message: 'no' }, msg.messageId);
      conn.close(1008);
      return;
    }
    defaultScript(conn, msg, raw, opts);
  });
  t.after(() => server.close());
  const client = newClient();
  await client.connect(server.url, 'alice', 't');
  const events = [];
  client.on('disconnect', (d) => events.push(d));
  server.connections[0].drop();
  await eventually(() => events.length === 2, 3000, 'two disconnect events');
  assert.deepEqual(events.map((e) => [e.reason, e.willReconnect]), [['CONNECTION_LOST', true], ['AUTH_FAILED', false]]);
  await new Promise((r) => setTimeout(r, 150));
  assert.equal(connects, 2);
  assert.equal(client.state, 'closed');
});

test('reconnect delays grow exponentially with jitter up to the cap', async (t) => {
  const server = await scriptedServer();
  const client = newClient({ initialDelayMs: 20, maxDelayMs: 160, backoffFactor: 2 });
  await client.connect(server.url, 'alice', 't');
  const delays = [];
  client.on('reconnecting', (r) => delays.push(r));
  await server.close(); // drops the session and refuses new ones
  await eventually(() => delays.length >= 6, 5000, 'six reconnect attempts');
  await client.close();
  t.diagnostic(`delays: ${delays.map((d) => d.delayMs).join(', ')}`);
  delays.slice(0, 6).forEach((d, i) => {
    const cap = Math.min(160, 20 * 2 ** i);
    assert.equal(d.attempt, i + 1);
    assert.ok(d.delayMs >= cap / 2 - 1 && d.delayMs <= cap + 1, `attempt ${i + 1}: ${d.delayMs} not in [${cap / 2}, ${cap}]`);
  });
  assert.equal(client.state, 'closed');
});

test('maxAttempts bounds reconnecting', async () => {
  const server = await scriptedServer();
  const client = newClient({ maxAttempts: 2 });
  await client.connect(server.url, 'alice', 't');
  const events = [];
  client.on('reconnecting', (r) => events.push(r));
  await server.close();
  await eventually(() => client.state === 'closed', 3000, 'giving up');
  assert.equal(events.length, 2);
});

test('close() sends an empty DISCONNECT and does not reconnect', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const client = newClient();
  await client.connect(server.url, 'alice', 't');
  const disc = nextEvent(client, 'disconnect');
  await client.close();
  const last = server.frames.at(-1).msg;
  assert.equal(last.messageType, T.DISCONNECT);
  assert.equal(last.payloadType, P.BINARY);
  assert.equal(server.frames.at(-1).raw.length, 21);
  const d = await disc;
  assert.equal(d.reason, 'CLIENT_LEFT');
  assert.equal(d.closeCode, 1000);
  assert.equal(d.willReconnect, false);
  assert.equal(client.state, 'closed');
  await new Promise((r) => setTimeout(r, 100));
  assert.equal(server.connections.length, 1);
});

test('refreshToken: same client id, new token; a refused refresh keeps the session', async (t) => {
  let refuse = false;
  const server = await scriptedServer((conn, msg, raw, opts) => {
    if (refuse && msg.messageType === T.CONNECT) {
      send(conn, T.ERROR, { code: 'TOKEN_EXPIRED', message: 'expired' }, msg.messageId);
      return;
    }
    defaultScript(conn, msg, raw, opts);
  });
  t.after(() => server.close());
  const client = newClient();
  let connectedEvents = 0;
  client.on('connected', () => connectedEvents++);
  await client.connect(server.url, 'alice', 'one');
  const ack = await client.refreshToken('two');
  assert.equal(ack.sessionId, 'sess-1');
  assert.equal(utf8.decode(server.frames.at(-1).raw.subarray(21)), '{"client_id":"alice","auth_token":"two"}');
  refuse = true;
  await assert.rejects(client.refreshToken('three'), { code: 'TOKEN_EXPIRED' });
  assert.equal(client.state, 'connected');
  client.sendOffer('bob', 'still here');
  await eventually(() => server.frames.at(-1).msg.messageType === T.SIGNAL_OFFER, 2000, 'a signal after the refused refresh');
  assert.equal(connectedEvents, 1, 'a refresh is not a new connection');
  await client.close();
});

test('getToken refreshes a JWT before its exp', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const jwt = (exp) => `${b64({ alg: 'HS256' })}.${b64({ sub: 'alice', exp })}.sig`;
  const soon = Math.floor(Date.now() / 1000) + 3; // refreshed after max(1 s, min(3 s - margin, 1.5 s))
  const next = jwt(soon + 3600);
  const client = newClient({ getToken: () => next, refreshMarginMs: 60000 });
  await client.connect(server.url, 'alice', jwt(soon));
  await eventually(() => server.frames.filter((f) => f.msg.messageType === T.CONNECT).length === 2, 4000, 'a refresh CONNECT');
  assert.equal(server.frames.at(-1).msg.authToken, next);
  assert.equal(client.state, 'connected');
  await client.close();
});

// --- attachPeerConnection, with a stand-in whose async steps take time, so
// that applying signals out of order would show. The real RTCPeerConnection
// runs in tests/browser.
class SlowPeerConnection extends EventTarget {
  constructor() {
    super();
    this.signalingState = 'stable';
    this.log = [];
    this.localDescription = null;
    this.remoteDescription = null;
  }

  async setRemoteDescription(d) {
    this.log.push(`remote:${d.type}:start`);
    await new Promise((r) => setTimeout(r, 30));
    this.signalingState = d.type === 'offer' ? 'have-remote-offer' : 'stable';
    this.remoteDescription = d;
    this.log.push(`remote:${d.type}:done`);
  }

  async setLocalDescription() {
    await new Promise((r) => setTimeout(r, 5));
    const type = this.signalingState === 'have-remote-offer' ? 'answer' : 'offer';
    this.signalingState = type === 'answer' ? 'stable' : 'have-local-offer';
    this.localDescription = { type, sdp: `sdp-${type}`, toJSON() { return { type: this.type, sdp: this.sdp }; } };
    this.log.push(`local:${type}`);
  }

  async addIceCandidate(c) {
    // As in browsers: a candidate needs a remote description first.
    if (!this.remoteDescription) throw new Error('candidate before remote description');
    this.log.push(`ice:${c.candidate}`);
  }
}

test('attachPeerConnection applies remote signals strictly in order and answers offers', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const client = newClient();
  await client.connect(server.url, 'bob', 't');
  const pc = new SlowPeerConnection();
  const errors = [];
  const link = attachPeerConnection(client, pc, 'alice', { polite: true, onError: (e) => errors.push(e) });
  const conn = server.connections[0];
  send(conn, T.SIGNAL_OFFER, { target_client_id: 'bob', source_client_id: 'alice', signal_data: JSON.stringify({ type: 'offer', sdp: 'x' }) });
  for (const n of [1, 2, 3]) {
    send(conn, T.SIGNAL_ICE_CANDIDATE, { target_client_id: 'bob', source_client_id: 'alice', signal_data: JSON.stringify({ candidate: `c${n}` }) });
  }
  // From someone else: not for this peer connection.
  send(conn, T.SIGNAL_ICE_CANDIDATE, { target_client_id: 'bob', source_client_id: 'mallory', signal_data: JSON.stringify({ candidate: 'm' }) });
  await eventually(() => pc.log.length === 6, 3000, 'all signals applied');
  await link.idle();
  assert.deepEqual(pc.log, ['remote:offer:start', 'remote:offer:done', 'local:answer', 'ice:c1', 'ice:c2', 'ice:c3']);
  assert.deepEqual(errors, []);
  await eventually(() => server.frames.some((f) => f.msg.messageType === T.SIGNAL_ANSWER), 2000, 'the answer');
  const answer = server.frames.find((f) => f.msg.messageType === T.SIGNAL_ANSWER).msg;
  assert.equal(answer.targetClientId, 'alice');
  assert.deepEqual(JSON.parse(answer.signalData), { type: 'answer', sdp: 'sdp-answer' });

  // Local candidates and renegotiation go out to the peer.
  pc.dispatchEvent(Object.assign(new Event('icecandidate'), { candidate: { toJSON: () => ({ candidate: 'local-1', sdpMid: '0' }) } }));
  pc.dispatchEvent(Object.assign(new Event('icecandidate'), { candidate: null }));
  pc.dispatchEvent(new Event('negotiationneeded'));
  await eventually(() => server.frames.some((f) => f.msg.messageType === T.SIGNAL_OFFER), 2000, 'an offer');
  const ice = server.frames.filter((f) => f.msg.messageType === T.SIGNAL_ICE_CANDIDATE).map((f) => f.msg.signalData);
  assert.deepEqual(ice, ['{"candidate":"local-1","sdpMid":"0"}']);

  link.detach();
  send(conn, T.SIGNAL_ICE_CANDIDATE, { target_client_id: 'bob', source_client_id: 'alice', signal_data: JSON.stringify({ candidate: 'late' }) });
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(!pc.log.includes('ice:late'), 'detached');
  await client.close();
});

test('attachPeerConnection: the impolite side ignores a colliding offer', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const client = newClient();
  await client.connect(server.url, 'alice', 't');
  const pc = new SlowPeerConnection();
  pc.signalingState = 'have-local-offer';
  const errors = [];
  const link = attachPeerConnection(client, pc, 'bob', { polite: false, onError: (e) => errors.push(e) });
  send(server.connections[0], T.SIGNAL_OFFER, { target_client_id: 'alice', source_client_id: 'bob', signal_data: JSON.stringify({ type: 'offer', sdp: 'y' }) });
  send(server.connections[0], T.SIGNAL_ICE_CANDIDATE, { target_client_id: 'alice', source_client_id: 'bob', signal_data: '{"candidate":"c"}' });
  send(server.connections[0], T.SIGNAL_ICE_CANDIDATE, { target_client_id: 'alice', source_client_id: 'bob', signal_data: 'not json' });
  await eventually(() => errors.length === 1, 2000, 'the bad signal reported');
  await link.idle();
  assert.deepEqual(pc.log, [], 'offer and its candidates ignored');
  assert.match(errors[0].message, /not JSON/);
  link.detach();
  await client.close();
});

test('attachPeerConnection holds what it sends while the client reconnects, then sends it in order', async (t) => {
  const server = await scriptedServer((conn, msg, raw, opts) => {
    defaultScript(conn, msg, raw, opts);
    // The second socket: the node delivers what it held after the ACK.
    if (msg.messageType === T.CONNECT && server.connections.indexOf(conn) === 1) {
      send(conn, T.SIGNAL_OFFER, { target_client_id: 'bob', source_client_id: 'alice', signal_data: JSON.stringify({ type: 'offer', sdp: 'x' }) });
    }
  });
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  await client.connect(server.url, 'bob', 't');
  const pc = new SlowPeerConnection();
  const errors = [];
  const link = attachPeerConnection(client, pc, 'alice', { polite: true, onError: (e) => errors.push(e) });
  t.after(() => link.detach());
  const candidate = (c) => pc.dispatchEvent(Object.assign(new Event('icecandidate'), { candidate: { toJSON: () => ({ candidate: c }) } }));
  // Gathered while the socket is down: before and after the client knows.
  client.on('disconnect', () => candidate('l1'));
  client.on('reconnecting', () => candidate('l2'));
  const connected = nextEvent(client, 'connected');
  server.connections[0].drop();
  await connected;
  await eventually(() => server.frames.some((f) => f.msg.messageType === T.SIGNAL_ANSWER), 3000, 'the answer');
  await link.idle();
  const second = server.frames.filter((f) => f.conn === server.connections[1]).map((f) => f.msg);
  assert.deepEqual(
    second.map((m) => [m.messageType, m.signalData && JSON.parse(m.signalData)]),
    [
      [T.CONNECT, undefined],
      [T.SIGNAL_ICE_CANDIDATE, { candidate: 'l1' }],
      [T.SIGNAL_ICE_CANDIDATE, { candidate: 'l2' }],
      [T.SIGNAL_ANSWER, { type: 'answer', sdp: 'sdp-answer' }],
    ],
    'the held candidates first, then the answer to the held offer',
  );
  assert.deepEqual(errors, []);
});

test('attachPeerConnection drops what it holds, with an error, when the session ends for good', async (t) => {
  const server = await scriptedServer();
  t.after(() => server.close());
  const client = newClient({ maxAttempts: 1 });
  t.after(() => client.close());
  await client.connect(server.url, 'bob', 't');
  const pc = new SlowPeerConnection();
  const errors = [];
  const link = attachPeerConnection(client, pc, 'alice', { onError: (e) => errors.push(e) });
  t.after(() => link.detach());
  client.on('reconnecting', () => {
    pc.dispatchEvent(Object.assign(new Event('icecandidate'), { candidate: { toJSON: () => ({ candidate: 'lost' }) } }));
  });
  await server.close(); // drops the session and refuses the reconnect
  await eventually(() => client.state === 'closed', 3000, 'giving up');
  assert.equal(errors.length, 1);
  assert.equal(errors[0].code, 'NOT_CONNECTED');
  assert.match(errors[0].message, /1 signal\(s\) to alice not sent/);
  // Nothing is left to go out on a later session.
  const again = await scriptedServer();
  t.after(() => again.close());
  await client.connect(again.url, 'bob', 't');
  await new Promise((r) => setTimeout(r, 50));
  assert.ok(!again.frames.some((f) => f.msg.messageType === T.SIGNAL_ICE_CANDIDATE));
});
