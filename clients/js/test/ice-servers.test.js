// ICE servers from CONNECT_ACK (protocol 1.1): exposed by the client, kept
// current by every ACK, and used for the RTCPeerConnection that
// attachPeerConnection creates. The real RTCPeerConnection runs in
// tests/browser; here a stand-in records its configuration.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import {
  eventually, nextEvent, scriptedServer, ack, defaultScript, newClient,
} from '../testing/scripted.js';
import { MessageType as T, attachPeerConnection } from '../signal-manager.js';

const STUN = { urls: ['stun:stun.example.org:3478'] };
const turn = (n) => ({
  urls: ['turn:turn.example.org:3478?transport=udp', 'turns:turn.example.org:5349'],
  username: `${1764000000 + n}:alice`,
  credential: `credential-${n}`,
});

/** A node whose n-th CONNECT_ACK carries the STUN entry and TURN credentials number n. */
async function turnServer() {
  let n = 0;
  return scriptedServer((conn, msg, raw, opts) => {
    if (msg.messageType !== T.CONNECT) return defaultScript(conn, msg, raw, opts);
    n++;
    ack(conn, msg, { iceServers: [STUN, turn(n)] });
  });
}

/** Records the configuration it was built with; enough of the API for the link. */
class RecordingPeerConnection extends EventTarget {
  static built = [];

  constructor(config) {
    super();
    this.config = config;
    this.signalingState = 'stable';
    this.localDescription = null;
    RecordingPeerConnection.built.push(this);
  }

  async setLocalDescription() {
    this.signalingState = 'have-local-offer';
    this.localDescription = { type: 'offer', sdp: 'sdp-offer' };
  }

  async setRemoteDescription() {}

  async addIceCandidate() {}
}

test('ice servers: from each CONNECT_ACK, a refresh\'s and a reconnect\'s too, as fresh copies', async (t) => {
  const server = await turnServer();
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  assert.deepEqual(client.iceServers, [], 'none before the first ACK');
  await client.connect(server.url, 'alice', 't');
  assert.deepEqual(client.iceServers, [STUN, turn(1)]);

  client.iceServers[1].credential = 'tampered';
  client.iceServers[0].urls.push('stun:evil');
  assert.deepEqual(client.iceServers, [STUN, turn(1)], 'a caller cannot change the client\'s copy');

  await client.refreshToken('t2');
  assert.deepEqual(client.iceServers, [STUN, turn(2)], 'the refresh ACK\'s credentials');

  const connected = nextEvent(client, 'connected');
  server.connections[0].drop();
  const info = await connected;
  assert.deepEqual(client.iceServers, [STUN, turn(3)], 'the reconnect ACK\'s credentials');
  assert.doesNotMatch(JSON.stringify(info), /credential-/, 'credentials stay out of event details');
});

test('ice servers: empty from a node that sends none, and a fresh connect() drops the old ones', async (t) => {
  const withTurn = await turnServer();
  const plain = await scriptedServer();
  t.after(() => Promise.all([withTurn.close(), plain.close()]));
  const client = newClient();
  t.after(() => client.close());
  await client.connect(withTurn.url, 'alice', 't');
  assert.equal(client.iceServers.length, 2);
  await client.close();
  await client.connect(plain.url, 'alice', 't');
  assert.deepEqual(client.iceServers, []);
  assert.deepEqual(client.rtcConfiguration(), { iceServers: [] });
});

test('rtcConfiguration: the session\'s ice servers with the application\'s settings', async (t) => {
  const server = await turnServer();
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  await client.connect(server.url, 'alice', 't');
  assert.deepEqual(client.rtcConfiguration(), { iceServers: [STUN, turn(1)] });
  assert.deepEqual(
    client.rtcConfiguration({ iceTransportPolicy: 'relay', bundlePolicy: 'max-bundle' }),
    { iceTransportPolicy: 'relay', bundlePolicy: 'max-bundle', iceServers: [STUN, turn(1)] },
  );
  const mine = { urls: ['stun:mine.example.org'] };
  assert.deepEqual(client.rtcConfiguration({ iceServers: [mine] }), { iceServers: [mine] }, 'given servers replace them');
  assert.deepEqual(
    client.rtcConfiguration({ iceServers: [...client.iceServers, mine] }).iceServers,
    [STUN, turn(1), mine],
    'or add to them',
  );
});

test('attachPeerConnection with no pc builds one with the session\'s ice servers and the given rtcConfig', async (t) => {
  const server = await turnServer();
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  await client.connect(server.url, 'alice', 't');
  RecordingPeerConnection.built = [];

  const link = attachPeerConnection(client, null, 'bob', {
    rtcConfig: { iceTransportPolicy: 'relay' },
    RTCPeerConnection: RecordingPeerConnection,
  });
  t.after(() => link.detach());
  assert.equal(RecordingPeerConnection.built.length, 1);
  assert.equal(link.pc, RecordingPeerConnection.built[0]);
  assert.deepEqual(link.pc.config, { iceTransportPolicy: 'relay', iceServers: [STUN, turn(1)] });

  // It is wired like a pc the application passed: negotiation sends an offer.
  link.pc.dispatchEvent(new Event('negotiationneeded'));
  await eventually(() => server.frames.some((f) => f.msg.messageType === T.SIGNAL_OFFER), 2000, 'the offer');
  const offer = server.frames.find((f) => f.msg.messageType === T.SIGNAL_OFFER).msg;
  assert.equal(offer.targetClientId, 'bob');
  assert.deepEqual(JSON.parse(offer.signalData), { type: 'offer', sdp: 'sdp-offer' });
});

test('attachPeerConnection uses the global RTCPeerConnection by default, and never replaces a given pc', async (t) => {
  const server = await turnServer();
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  await client.connect(server.url, 'alice', 't');
  RecordingPeerConnection.built = [];
  const saved = globalThis.RTCPeerConnection;
  globalThis.RTCPeerConnection = RecordingPeerConnection;
  try {
    const created = attachPeerConnection(client, null, 'bob');
    assert.deepEqual(created.pc.config, { iceServers: [STUN, turn(1)] });
    created.detach();

    const mine = new RecordingPeerConnection({ iceServers: [] });
    const given = attachPeerConnection(client, mine, 'bob', { rtcConfig: { iceTransportPolicy: 'relay' } });
    assert.equal(given.pc, mine);
    assert.deepEqual(mine.config, { iceServers: [] }, 'left as the application built it');
    assert.equal(RecordingPeerConnection.built.length, 2);
    given.detach();
  } finally {
    globalThis.RTCPeerConnection = saved;
  }
  if (saved === undefined) {
    assert.throws(() => attachPeerConnection(client, null, 'bob'), TypeError);
  }
});
