// Session resume (protocol 1.1) as the client does it: which resume token
// it keeps, when it offers it, when it forgets it, and what it tells the
// application. The scripted node below resumes a session when, and only
// when, a CONNECT offers the latest token it issued.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { inspect } from 'node:util';
import {
  utf8, eventually, nextEvent, scriptedServer, send, ack, defaultScript, disconnect, newClient,
} from '../testing/scripted.js';
import { MessageType as T } from '../signal-manager.js';

/**
 * A node that issues `rt-1`, `rt-2`, ... (one per CONNECT_ACK, refreshes
 * included) and resumes a session for a CONNECT that offers the latest one,
 * unless `resume` is false; while `server.node.refuse` is set it drops
 * every CONNECT unanswered. `onAck(conn, msg, resumed)` runs right after
 * each ACK (to send held signals).
 */
async function resumingServer({ resume = true, onAck = () => {} } = {}) {
  const node = { issued: 0, latest: undefined, sessions: 0, session: undefined, refuse: false };
  const server = await scriptedServer((conn, msg, raw, opts) => {
    if (msg.messageType !== T.CONNECT) return defaultScript(conn, msg, raw, opts);
    if (node.refuse) return conn.drop(); // a node that fails before answering
    const refresh = node.conn === conn;
    const resumed = !refresh && resume && msg.resumeToken !== undefined && msg.resumeToken === node.latest;
    if (!refresh && !resumed) node.session = `sess-${++node.sessions}`;
    node.conn = conn;
    node.latest = `rt-${++node.issued}`;
    ack(conn, msg, { session: node.session, resumeToken: node.latest, resumed });
    onAck(conn, msg, resumed);
  });
  server.node = node;
  return server;
}

const connects = (server) => server.frames.filter((f) => f.msg.messageType === T.CONNECT);
const lastConnect = (server) => connects(server).at(-1);

test('every CONNECT_ACK replaces the resume token, a refresh\'s too; a reconnect after a drop offers the latest', async (t) => {
  const server = await resumingServer();
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());

  const info = await client.connect(server.url, 'alice', 'tok-1');
  assert.equal(info.resumed, false);
  assert.equal(client.resumed, false);
  assert.equal(client.resumeToken, 'rt-1');
  assert.equal(utf8.decode(lastConnect(server).raw.subarray(21)), '{"client_id":"alice","auth_token":"tok-1"}', 'a first connect offers no token');

  await client.refreshToken('tok-2');
  assert.equal(utf8.decode(lastConnect(server).raw.subarray(21)), '{"client_id":"alice","auth_token":"tok-2"}', 'a refresh offers no token');
  assert.equal(client.resumeToken, 'rt-2', 'the refresh ACK\'s token replaced the first');

  const disc = nextEvent(client, 'disconnect');
  const reconnecting = nextEvent(client, 'reconnecting');
  const connected = nextEvent(client, 'connected');
  server.connections[0].drop();
  const d = await disc;
  assert.equal(d.reason, 'CONNECTION_LOST');
  assert.equal(d.resumable, true);
  assert.equal((await reconnecting).resume, true);
  const again = await connected;
  assert.equal(lastConnect(server).msg.resumeToken, 'rt-2');
  assert.equal(
    utf8.decode(lastConnect(server).raw.subarray(21)),
    '{"client_id":"alice","auth_token":"tok-2","resume_token":"rt-2"}',
  );
  assert.equal(again.reconnected, true);
  assert.equal(again.resumed, true);
  assert.equal(again.sessionId, 'sess-1');
  assert.equal(client.resumed, true);
  assert.equal(client.resumeToken, 'rt-3');

  // Single-use: the next reconnect offers the token of the resumed ACK.
  const connected2 = nextEvent(client, 'connected');
  server.connections[1].drop();
  assert.equal((await connected2).resumed, true);
  assert.deepEqual(connects(server).map((f) => f.msg.resumeToken), [undefined, undefined, 'rt-2', 'rt-3']);
  assert.equal(client.resumeToken, 'rt-4');
});

test('a reconnect the node does not resume: resumed false, a new session, and its token kept', async (t) => {
  const server = await resumingServer({ resume: false });
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  await client.connect(server.url, 'alice', 't');
  const connected = nextEvent(client, 'connected');
  server.connections[0].drop();
  const info = await connected;
  assert.equal(lastConnect(server).msg.resumeToken, 'rt-1', 'offered');
  assert.equal(info.resumed, false);
  assert.equal(info.reconnected, true);
  assert.equal(info.sessionId, 'sess-2');
  assert.equal(client.resumed, false);
  assert.equal(client.resumeToken, 'rt-2');
});

test('an ACK without a resume token (resume off on that node) leaves none to offer', async (t) => {
  let withToken = true;
  const server = await scriptedServer((conn, msg, raw, opts) => {
    if (msg.messageType !== T.CONNECT) return defaultScript(conn, msg, raw, opts);
    ack(conn, msg, withToken ? { resumeToken: 'rt-only' } : {});
  });
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  await client.connect(server.url, 'alice', 't');
  withToken = false;
  await client.refreshToken('t2');
  assert.equal(client.resumeToken, undefined);
  const connected = nextEvent(client, 'connected');
  server.connections[0].drop();
  await connected;
  assert.equal(lastConnect(server).msg.resumeToken, undefined);
});

for (const [reason, code] of [['SERVER_SHUTDOWN', 1001], ['IDLE_TIMEOUT', 1000]]) {
  test(`DISCONNECT ${reason} leaves the session resumable: the reconnect offers the token`, async (t) => {
    const server = await resumingServer();
    t.after(() => server.close());
    const client = newClient();
    t.after(() => client.close());
    await client.connect(server.url, 'alice', 't');
    const disc = nextEvent(client, 'disconnect');
    const connected = nextEvent(client, 'connected');
    disconnect(server.connections[0], reason, code);
    const d = await disc;
    assert.equal(d.reason, reason);
    assert.equal(d.willReconnect, true);
    assert.equal(d.resumable, true);
    assert.equal((await connected).resumed, true);
    assert.equal(lastConnect(server).msg.resumeToken, 'rt-1');
  });
}

test('a heartbeat timeout leaves the session resumable', async (t) => {
  let silent = false;
  const server = await scriptedServer((conn, msg, raw, opts) => {
    if (silent && msg.messageType === T.HEARTBEAT) return;
    if (msg.messageType === T.CONNECT) return ack(conn, msg, { heartbeat: 50, resumeToken: `rt-${server.frames.length}` });
    defaultScript(conn, msg, raw, opts);
  });
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  await client.connect(server.url, 'alice', 't');
  const offered = client.resumeToken;
  silent = true;
  const disc = nextEvent(client, 'disconnect', 4000);
  const connected = nextEvent(client, 'connected', 4000);
  const d = await disc;
  silent = false;
  assert.equal(d.reason, 'HEARTBEAT_TIMEOUT');
  assert.equal(d.resumable, true);
  await connected;
  assert.equal(lastConnect(server).msg.resumeToken, offered);
});

for (const reason of ['KICKED', 'REPLACED', 'POLICY', 'CLIENT_LEFT']) {
  test(`DISCONNECT ${reason} is not resumable: the token is forgotten and no reconnect follows`, async (t) => {
    const server = await resumingServer();
    t.after(() => server.close());
    const client = newClient();
    t.after(() => client.close());
    await client.connect(server.url, 'alice', 't');
    assert.equal(client.resumeToken, 'rt-1');
    const disc = nextEvent(client, 'disconnect');
    disconnect(server.connections[0], reason, reason === 'KICKED' || reason === 'POLICY' ? 1008 : 1000);
    const d = await disc;
    assert.equal(d.reason, reason);
    assert.equal(d.willReconnect, false);
    assert.equal(d.resumable, false);
    assert.equal(client.resumeToken, undefined);
    await new Promise((r) => setTimeout(r, 150));
    assert.equal(server.connections.length, 1);
    assert.equal(client.state, 'closed');
    // A later connect() by the application starts a new session.
    await client.connect(server.url, 'alice', 't');
    assert.equal(lastConnect(server).msg.resumeToken, undefined);
  });
}

for (const reason of ['SLOW_CONSUMER', 'TOKEN_EXPIRED']) {
  test(`DISCONNECT ${reason}: a reconnect follows, as a new session without the token`, async (t) => {
    const server = await resumingServer();
    t.after(() => server.close());
    const client = newClient({ getToken: () => 'fresh' });
    t.after(() => client.close());
    await client.connect(server.url, 'alice', 't');
    const disc = nextEvent(client, 'disconnect');
    const reconnecting = nextEvent(client, 'reconnecting');
    const connected = nextEvent(client, 'connected');
    disconnect(server.connections[0], reason, reason === 'TOKEN_EXPIRED' ? 1008 : 1000);
    const d = await disc;
    assert.equal(d.willReconnect, true);
    assert.equal(d.resumable, false);
    assert.equal((await reconnecting).resume, false);
    const info = await connected;
    assert.equal(lastConnect(server).msg.resumeToken, undefined);
    assert.equal(utf8.decode(lastConnect(server).raw.subarray(21)), '{"client_id":"alice","auth_token":"fresh"}');
    assert.equal(info.resumed, false);
    assert.equal(info.sessionId, 'sess-2');
  });
}

test('close() forgets the token; a fresh connect() offers one only when given it', async (t) => {
  const server = await resumingServer();
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  await client.connect(server.url, 'alice', 't');
  assert.equal(client.resumeToken, 'rt-1');
  await client.close();
  assert.equal(client.resumeToken, undefined);
  await client.connect(server.url, 'alice', 't');
  assert.equal(lastConnect(server).msg.resumeToken, undefined);
  const held = client.resumeToken;
  assert.equal(held, 'rt-2');

  // Another client object (a reloaded page) resumes with the token it was given.
  const other = newClient();
  t.after(() => other.close());
  await assert.rejects(other.connect(server.url, 'alice', 't', { resumeToken: 42 }), TypeError);
  const info = await other.connect(server.url, 'alice', 't', { resumeToken: held });
  assert.equal(lastConnect(server).msg.resumeToken, 'rt-2');
  assert.equal(info.resumed, true);
  assert.equal(info.reconnected, false);
  assert.equal(other.resumed, true);
});

test('after giving up reconnecting the token stays readable, for a connect() that asks to resume', async (t) => {
  const server = await resumingServer();
  t.after(() => server.close());
  const client = newClient({ maxAttempts: 1 });
  t.after(() => client.close());
  await client.connect(server.url, 'alice', 't');
  server.node.refuse = true;
  const events = [];
  client.on('disconnect', (d) => events.push(d));
  server.connections[0].drop();
  await eventually(() => client.state === 'closed', 3000, 'giving up');
  assert.equal(connects(server).at(-1).msg.resumeToken, 'rt-1', 'the failed attempt offered it');
  assert.deepEqual(events.map((d) => [d.willReconnect, d.resumable]), [[true, true], [false, true]]);
  assert.equal(client.resumeToken, 'rt-1');
  server.node.refuse = false;
  const info = await client.connect(server.url, 'alice', 't', { resumeToken: client.resumeToken });
  assert.equal(info.resumed, true);
  assert.equal(info.sessionId, 'sess-1');
});

test('signals the node sends right after the resumed CONNECT_ACK are all delivered, in order', async (t) => {
  const held = ['h1', 'h2', 'h3', 'h4', 'h5'];
  const server = await resumingServer({
    onAck: (conn, msg, resumed) => {
      // In the same tick as the ACK, as a node flushing what it held.
      if (!resumed) return;
      for (const data of held) send(conn, T.SIGNAL_ICE_CANDIDATE, { target_client_id: 'bob', source_client_id: 'alice', signal_data: data });
      send(conn, T.SIGNAL_OFFER, { target_client_id: 'bob', source_client_id: 'alice', signal_data: 'o' });
    },
  });
  t.after(() => server.close());
  const client = newClient();
  t.after(() => client.close());
  await client.connect(server.url, 'bob', 't');
  const got = [];
  let connectedFirst = false;
  client.on('connected', () => { connectedFirst = got.length === 0; });
  client.on('ice', (d) => got.push(d.data));
  // Answering a held offer at once must work: the session is open by then.
  client.on('offer', (d) => { got.push(d.data); client.sendAnswer(d.from, 'a'); });
  server.connections[0].drop();
  await eventually(() => got.length === held.length + 1, 3000, 'the held signals');
  assert.deepEqual(got, [...held, 'o']);
  assert.ok(connectedFirst, 'connected is emitted before the held signals');
  await eventually(() => server.frames.some((f) => f.msg.messageType === T.SIGNAL_ANSWER), 2000, 'the answer');
});

test('the resume token is in no event detail and does not show when the client is inspected', async (t) => {
  const server = await resumingServer();
  t.after(() => server.close());
  const client = newClient({ getToken: () => 'fresh' });
  t.after(() => client.close());
  const seen = [];
  for (const type of ['connected', 'disconnect', 'reconnecting', 'error', 'heartbeat']) client.on(type, (d) => seen.push(d));
  seen.push(await client.connect(server.url, 'alice', 't'));
  seen.push(await client.refreshToken('t2'));
  const connected = nextEvent(client, 'connected');
  server.connections[0].drop();
  await connected;
  assert.equal(lastConnect(server).msg.resumeToken, 'rt-2');
  const text = JSON.stringify(seen) + inspect(client, { depth: 10, showHidden: true });
  assert.doesNotMatch(text, /rt-\d/);
});
