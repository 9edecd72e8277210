// End-to-end: two headless Chromium pages call each other over WebRTC, with
// signaling through two real Signal Manager nodes sharing a real Redis.
//
//   alice (page A) on node-1, bob (page B) on node-2 -> cross-node call,
//   data channel, a message each way. Then erin (node-1) and frank (node-2)
//   make a call relayed through coturn, with iceTransportPolicy "relay" and
//   only the ice_servers of their CONNECT_ACKs. Then a drain in the middle of
//   a negotiation: alice offers, bob's page has the offer but has not
//   answered when node-2 gets SIGTERM; bob answers while between sockets,
//   alice's candidates sent meanwhile are held on node-2, bob resumes on
//   node-1 (same session, the held candidates handed over), the channel
//   opens with one offer and one answer, node-2 exits 0. A second call on
//   node-1 follows; then the demo page's own UI makes a call on node-1.
//
// Run through scripts/browser-test.sh, which provides Chromium, npm packages
// and a loopback-only network namespace. Environment:
//   SM_BIN       the signal-manager-service binary (required)
//   SM_E2E_TOPOLOGY=single   alice, bob, erin and frank start on node-2
//                and the nodes run without Redis (checks shutdown and
//                reconnect between two calls on a build without cluster
//                mode; no resume across nodes); default: cluster
//   SM_E2E_KEEP_LOGS=1       print node logs even when everything passed
//   SM_E2E_TURN_PORT, SM_E2E_TURN_SECRET  the turnserver browser-test.sh
//                started on loopback (the relayed call fails without them)
import { spawn, execFile } from 'node:child_process';
import { createServer, connect as netConnect } from 'node:net';
import { mkdtempSync, readFileSync, rmSync, createWriteStream, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve, dirname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { chromium } from 'playwright-core';
import { startStaticServer } from '../../clients/js/serve.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const JS_ROOT = resolve(HERE, '../../clients/js');
const SM_BIN = process.env.SM_BIN ? resolve(process.env.SM_BIN) : null;
const TOPOLOGY = process.env.SM_E2E_TOPOLOGY === 'single' ? 'single' : 'cluster';
const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
const OVERALL_TIMEOUT_MS = 180_000;
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--allow-loopback-in-peer-connection',
];

const started = Date.now();
const elapsed = () => `${((Date.now() - started) / 1000).toFixed(1)}s`;
const logDir = mkdtempSync(join(tmpdir(), 'sm-browser-e2e-'));
const children = new Map(); // name -> ChildProcess
const results = [];
let browser = null;
let mediaBrowser = null; // the demo pages' browser, with a synthetic camera
let staticServer = null;

// ------------------------------------------------------------ processes

function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

function startChild(name, cmd, args, env = {}) {
  const out = createWriteStream(join(logDir, `${name}.log`));
  const child = spawn(cmd, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout.pipe(out);
  child.stderr.pipe(out);
  child.exited = new Promise((res) => child.on('exit', (code, signal) => res({ code, signal })));
  child.on('error', (err) => out.write(`spawn error: ${err.message}\n`));
  children.set(name, child);
  return child;
}

function logTail(name, lines = 25) {
  try {
    const text = readFileSync(join(logDir, `${name}.log`), 'utf8').trimEnd().split('\n');
    return text.slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

async function stopChildren() {
  for (const [name, child] of children) {
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGTERM');
      const done = await Promise.race([child.exited, new Promise((r) => setTimeout(() => r(null), 3000))]);
      if (!done) child.kill('SIGKILL');
    }
    children.delete(name);
  }
}

async function until(what, fn, timeoutMs = 20_000, everyMs = 50) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

function redisPing(port) {
  return new Promise((res) => {
    const s = netConnect(port, '127.0.0.1');
    let buf = '';
    s.on('connect', () => s.write('PING\r\n'));
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\r\n')) {
        s.destroy();
        res(buf.startsWith('+PONG'));
      }
    });
    s.on('error', () => res(false));
  });
}

async function readyz(adminPort) {
  const r = await fetch(`http://127.0.0.1:${adminPort}/readyz`);
  return r.status === 200;
}

function mintToken(clientId, env) {
  return new Promise((res, rej) => {
    execFile(SM_BIN, ['token', '--client-id', clientId], { env: { ...process.env, ...env }, timeout: 20_000 }, (err, stdout, stderr) => {
      if (err) return rej(new Error(`token --client-id ${clientId} failed: ${err.message} ${stderr}`));
      const token = stdout.trim().split('\n').pop();
      if (!/^[\w-]+\.[\w-]+\.[\w-]+$/.test(token)) return rej(new Error(`token output is not a JWT: ${stdout}`));
      res(token);
    });
  });
}

// ------------------------------------------------------------ checks

async function check(name, fn) {
  const t0 = Date.now();
  try {
    const note = await fn();
    results.push({ name, ok: true });
    console.log(`ok   ${name} (${Date.now() - t0} ms)${note ? ` - ${note}` : ''}`);
  } catch (err) {
    results.push({ name, ok: false });
    console.log(`FAIL ${name} (${Date.now() - t0} ms): ${err.message}`);
    throw Object.assign(err, { reported: true });
  }
}

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

// ------------------------------------------------------------ in-page harness

/** Runs in each page: loads the client and keeps one client and one call. */
async function pageInit() {
  // Keep every JSON CONNECT_ACK as it came off the wire, whatever the JS
  // client exposes of it (its ice_servers are what the relayed call uses).
  // Count every frame by message type as it crosses the socket, both ways
  // (what the page really sent and received, whatever the client did).
  const NativeWebSocket = window.WebSocket;
  window.__acks = [];
  window.__wire = { out: {}, in: {} };
  const tally = (side, data) => {
    const b = data instanceof ArrayBuffer ? new Uint8Array(data) : ArrayBuffer.isView(data) ? new Uint8Array(data.buffer, data.byteOffset, data.byteLength) : null;
    if (b && b.length >= 21 && b[0] === 0xa5) side[b[1]] = (side[b[1]] ?? 0) + 1;
    return b;
  };
  window.WebSocket = class extends NativeWebSocket {
    constructor(...args) {
      super(...args);
      this.addEventListener('message', (e) => {
        const b = tally(window.__wire.in, e.data);
        // start byte, CONNECT_ACK, JSON payload
        if (b && b.length > 21 && b[1] === 0x02 && b[18] === 0x02) {
          try {
            window.__acks.push(JSON.parse(new TextDecoder().decode(b.subarray(21))));
          } catch { /* not ours to judge here */ }
        }
      });
    }

    send(data) {
      super.send(data);
      tally(window.__wire.out, data);
    }
  };
  const gate = () => {
    let open;
    const promise = new Promise((r) => { open = r; });
    return { promise, open };
  };
  const sm = await import('/signal-manager.js');
  const h = {
    sm,
    client: null,
    call: null,
    events: [],
    messages: [],
    errors: [],
    /** While set (a gate), a reconnect waits for it: the application
     *  fetches a token before every reconnect, and the test decides when
     *  that fetch answers. */
    tokenFetch: null,
    /** While set (a list), ICE candidates the page gathers wait in it
     *  instead of going out, as if gathering were slow. */
    heldIce: null,
    connect(urls, clientId, token) {
      const client = new sm.SignalManagerClient({
        initialDelayMs: 100,
        maxDelayMs: 2000,
        getToken: async () => {
          if (h.tokenFetch) await h.tokenFetch.promise;
          return token;
        },
      });
      const sendIce = client.sendIceCandidate.bind(client);
      client.sendIceCandidate = (peer, data) => {
        if (!h.heldIce) return sendIce(peer, data);
        h.heldIce.push([peer, data]);
        return undefined;
      };
      h.client = client;
      for (const type of ['connected', 'disconnect', 'reconnecting', 'error']) {
        client.on(type, (d) => h.events.push({ type, ...d }));
      }
      return client.connect(urls, clientId, token);
    },
    /** Ends the current call, if any: its helper stops handling signals. */
    hangUp() {
      if (!h.call) return;
      h.call.link.detach();
      h.call.detachIce();
      h.call.pc.close();
      h.call = null;
    },
    holdReconnect() {
      h.tokenFetch = gate();
    },
    releaseReconnect() {
      h.tokenFetch?.open();
      h.tokenFetch = null;
    },
    holdIce() {
      h.heldIce = [];
    },
    /** Sends the held candidates in order; returns how many went out. */
    releaseIce() {
      const held = h.heldIce ?? [];
      h.heldIce = null;
      for (const [peer, data] of held) h.client.sendIceCandidate(peer, data);
      return held.length;
    },
    /** Frames of `type` this page sent and received so far. */
    wire(type) {
      return { out: window.__wire.out[type] ?? 0, in: window.__wire.in[type] ?? 0 };
    },
    /** An incoming call that rings: `peer`'s signals wait (in order) until
     *  accept() creates the peer connection and hands them to it. */
    ring(peer, options) {
      h.hangUp();
      const waiting = [];
      const offs = ['offer', 'answer', 'ice'].map((type) => h.client.on(type, (d) => { if (d.from === peer) waiting.push(d); }));
      h.ringing = {
        waiting,
        accept() {
          // One synchronous step: nothing can arrive between the last
          // buffered signal and the helper's own subscription.
          offs.forEach((off) => off());
          h.prepare(peer, options);
          h.call.iceIn += waiting.filter((d) => d.messageType === sm.MessageType.SIGNAL_ICE_CANDIDATE).length;
          for (const d of waiting) h.call.link.receive(d);
          h.ringing = null;
        },
      };
    },
    /** A fresh RTCPeerConnection for `peer`; the caller also opens the channel. */
    prepare(peer, { polite, open, rtc }) {
      h.hangUp();
      const pc = new RTCPeerConnection(rtc);
      const call = { pc, dc: null, peer, iceIn: 0, iceOut: 0 };
      call.link = sm.attachPeerConnection(h.client, pc, peer, { polite, onError: (e) => h.errors.push(String(e)) });
      const iceIn = h.client.on('ice', (d) => { if (d.from === peer && h.call === call) call.iceIn++; });
      pc.addEventListener('icecandidate', (e) => { if (e.candidate) call.iceOut++; });
      const wire = (dc) => {
        call.dc = dc;
        dc.onmessage = (e) => h.messages.push(e.data);
      };
      pc.ondatachannel = (e) => wire(e.channel);
      call.detachIce = iceIn;
      h.call = call;
      if (open) wire(pc.createDataChannel('chat'));
    },
    channelOpen() {
      return h.call?.dc?.readyState === 'open';
    },
    /** The ice_servers of the latest CONNECT_ACK: as the JS client exposes
     *  them (`iceServers`), else as read off the wire. */
    ackIceServers() {
      const exposed = h.client?.iceServers;
      if (Array.isArray(exposed) && exposed.length > 0) return exposed;
      return window.__acks.at(-1)?.ice_servers ?? [];
    },
    /** Candidate types of the selected pair, from getStats(). */
    async selectedPair() {
      const stats = await h.call.pc.getStats();
      let pair = null;
      stats.forEach((r) => {
        if (r.type === 'transport' && r.selectedCandidatePairId) pair = stats.get(r.selectedCandidatePairId);
      });
      if (!pair) stats.forEach((r) => { if (r.type === 'candidate-pair' && r.nominated && r.state === 'succeeded') pair = r; });
      if (!pair) return null;
      return {
        local: stats.get(pair.localCandidateId)?.candidateType,
        remote: stats.get(pair.remoteCandidateId)?.candidateType,
      };
    },
  };
  window.__e2e = h;
}

async function newPage(name, inBrowser = browser) {
  const context = await inBrowser.newContext({ permissions: ['camera', 'microphone'] });
  const page = await context.newPage();
  page.on('pageerror', (err) => console.log(`  [${name} page error] ${err.message}`));
  page.on('console', (msg) => {
    if (msg.type() === 'error') console.log(`  [${name} console] ${msg.text()}`);
  });
  await page.goto(`${staticServer.url}demo/`);
  await page.evaluate(pageInit);
  return page;
}

const waitInPage = (page, what, fn, arg, timeout = 15_000) =>
  page.waitForFunction(fn, arg, { timeout, polling: 20 }).catch((err) => {
    throw new Error(`${what}: ${err.message.split('\n')[0]}`);
  });

/** What a page saw go wrong: ERROR events from the server and helper errors. */
async function pageTrouble(page, name) {
  const t = await page.evaluate(() => ({
    errors: window.__e2e.events.filter((e) => e.type !== 'connected'),
    helper: window.__e2e.errors,
    pc: window.__e2e.call && { connection: window.__e2e.call.pc.connectionState, signaling: window.__e2e.call.pc.signalingState },
  })).catch((err) => ({ unavailable: err.message }));
  return `${name} saw ${JSON.stringify(t)}`;
}

/** Caller `a` calls `b`: fresh peer connections, channel open both sides, a message each way. */
async function callAndChat(label, a, b, aName, bName) {
  await check(`${label}: ${aName} calls ${bName}, the data channel opens on both sides`, async () => {
    const t0 = Date.now();
    await b.evaluate((peer) => window.__e2e.prepare(peer, { polite: true, open: false }), aName);
    await a.evaluate((peer) => window.__e2e.prepare(peer, { polite: false, open: true }), bName);
    try {
      await waitInPage(a, `${aName}'s channel`, () => window.__e2e.channelOpen());
      await waitInPage(b, `${bName}'s channel`, () => window.__e2e.channelOpen());
    } catch (err) {
      throw new Error(`${err.message}\n  ${await pageTrouble(a, aName)}\n  ${await pageTrouble(b, bName)}`);
    }
    const ice = await Promise.all([a, b].map((p) => p.evaluate(() => ({ in: window.__e2e.call.iceIn, out: window.__e2e.call.iceOut }))));
    assert(ice[0].in > 0 && ice[1].in > 0, `ICE candidates did not cross the service: ${JSON.stringify(ice)}`);
    return `${Date.now() - t0} ms, ICE candidates ${aName}->${bName} ${ice[1].in}, ${bName}->${aName} ${ice[0].in}`;
  });
  for (const [from, to, fromName, toName] of [[a, b, aName, bName], [b, a, bName, aName]]) {
    await check(`${label}: a message from ${fromName} reaches ${toName}`, async () => {
      const text = `hello ${toName} from ${fromName} ${randomBytes(4).toString('hex')} ✓`;
      await from.evaluate((t) => window.__e2e.call.dc.send(t), text);
      await waitInPage(to, `message at ${toName}`, (t) => window.__e2e.messages.includes(t), text, 10_000);
    });
  }
}

function turnLogTail(lines = 15) {
  try {
    return readFileSync(process.env.SM_E2E_TURN_LOG, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no turnserver log)';
  }
}

/** erin and frank call through the TURN server only: relay candidates, from their CONNECT_ACKs. */
async function relayCall(e, f, turnPort) {
  const servers = {};
  await check('relayed call: each CONNECT_ACK carries the TURN server with REST API credentials', async () => {
    assert(turnPort, 'SM_E2E_TURN_PORT is not set: run through tests/browser/scripts/browser-test.sh');
    for (const [page, who] of [[e, 'erin'], [f, 'frank']]) {
      const list = await page.evaluate(() => window.__e2e.ackIceServers());
      const turn = list.find((s) => s.urls.some((u) => u.startsWith('turn:')));
      assert(turn, `${who}'s CONNECT_ACK has no TURN entry: ${JSON.stringify(list)}`);
      const [expiry, id] = turn.username.split(':');
      assert(id === who && Number(expiry) > Date.now() / 1000, `username ${turn.username}`);
      assert(typeof turn.credential === 'string' && turn.credential.length === 28, 'credential is not a base64 HMAC-SHA1');
      servers[who] = list;
    }
  });
  await check('relayed call: erin calls frank with iceTransportPolicy "relay"; the channel opens', async () => {
    await f.evaluate((s) => window.__e2e.prepare('erin', { polite: true, open: false, rtc: { iceServers: s, iceTransportPolicy: 'relay' } }), servers.frank);
    await e.evaluate((s) => window.__e2e.prepare('frank', { polite: false, open: true, rtc: { iceServers: s, iceTransportPolicy: 'relay' } }), servers.erin);
    try {
      await waitInPage(e, "erin's channel", () => window.__e2e.channelOpen(), undefined, 20_000);
      await waitInPage(f, "frank's channel", () => window.__e2e.channelOpen(), undefined, 20_000);
    } catch (err) {
      throw new Error(`${err.message}\n  ${await pageTrouble(e, 'erin')}\n  ${await pageTrouble(f, 'frank')}\n${turnLogTail()}`);
    }
  });
  await check('relayed call: the selected candidate pair is relay on both sides, and a message crosses', async () => {
    for (const [page, who] of [[e, 'erin'], [f, 'frank']]) {
      const pair = await until(`${who}'s selected pair`, () => page.evaluate(() => window.__e2e.selectedPair()), 10_000);
      assert(pair.local === 'relay', `${who}'s selected local candidate is ${pair.local}, not relay`);
    }
    const text = `relayed ${randomBytes(4).toString('hex')}`;
    await e.evaluate((t) => window.__e2e.call.dc.send(t), text);
    await waitInPage(f, 'relayed message', (t) => window.__e2e.messages.includes(t), text, 10_000);
  });
}

// ------------------------------------------------------------ a drain in the middle of a negotiation

const OFFER = 0x10;
const ANSWER = 0x11;
const ICE = 0x12;

async function metric(adminPort, name) {
  const text = await (await fetch(`http://127.0.0.1:${adminPort}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${name} `));
  return line === undefined ? undefined : Number(line.slice(name.length + 1));
}

const wireCounts = (page) => page.evaluate(([o, a, i]) => ({
  offer: window.__e2e.wire(o), answer: window.__e2e.wire(a), ice: window.__e2e.wire(i),
}), [OFFER, ANSWER, ICE]);

/**
 * Cluster topology: alice (node-1) offers; bob (node-2) has the offer but has
 * not answered when node-2 is SIGTERMed. Bob's page answers while it is
 * between sockets (attachPeerConnection holds the answer and its
 * candidates); alice's candidates, held back in her page until bob's session
 * is parked on node-2, are held there and handed over when bob resumes on
 * node-1. The call opens without a second offer. The test orders each step:
 * bob's reconnect waits for his page's token fetch, which the test answers.
 */
async function drainMidNegotiation(pageA, pageB, nodes, bobSession) {
  const node2 = nodes['node-2'];
  const before = { alice: await wireCounts(pageA), bob: await wireCounts(pageB) };
  await check('mid-negotiation drain: alice offers; bob\'s page has the offer and has not answered', async () => {
    await pageB.evaluate(() => {
      window.__e2e.holdReconnect();
      window.__e2e.ring('alice', { polite: true, open: false });
    });
    await pageA.evaluate(() => {
      window.__e2e.holdIce();
      window.__e2e.prepare('bob', { polite: false, open: true });
    });
    await waitInPage(pageB, 'the offer at bob', () => window.__e2e.ringing?.waiting.some((d) => d.messageType === 0x10));
    // Her candidates are gathered (held in her page), none sent yet.
    await waitInPage(pageA, 'alice gathers candidates', () => window.__e2e.call.iceOut > 0 && window.__e2e.call.pc.iceGatheringState === 'complete');
    const b = await wireCounts(pageB);
    assert(b.answer.out === before.bob.answer.out, 'bob answered already');
  });

  await check('mid-negotiation drain: SIGTERM to node-2: bob gets DISCONNECT SERVER_SHUTDOWN (1001), resumable; node-2 parks his session', async () => {
    node2.child.kill('SIGTERM');
    await waitInPage(pageB, 'disconnect event', () => window.__e2e.events.some((e) => e.type === 'disconnect'), undefined, 15_000);
    const d = await pageB.evaluate(() => window.__e2e.events.find((e) => e.type === 'disconnect'));
    assert(d.reason === 'SERVER_SHUTDOWN' && d.willReconnect === true && d.resumable === true, `disconnect ${JSON.stringify(d)}`);
    assert(d.closeCode === 1001, `close code ${d.closeCode}, expected 1001`);
    await until('node-2 counts bob resumable', async () => (await metric(node2.admin, 'signal_manager_resumable_sessions')) === 1, 10_000);
  });

  let aliceIce;
  await check('mid-negotiation drain: alice\'s candidates, sent while bob moves, are held on node-2', async () => {
    const received = await metric(node2.admin, 'signal_manager_cross_node_signals_received_total');
    aliceIce = await pageA.evaluate(() => window.__e2e.releaseIce());
    const gathered = await pageA.evaluate(() => window.__e2e.call.iceOut);
    assert(aliceIce > 0 && aliceIce === gathered, `alice sent ${aliceIce} of ${gathered} candidates`);
    await until(`node-2 receives alice's ${aliceIce} candidate(s)`, async () => (await metric(node2.admin, 'signal_manager_cross_node_signals_received_total')) === received + aliceIce, 10_000);
  });

  await check('mid-negotiation drain: bob\'s page answers while between sockets; the answer waits in the page', async () => {
    await pageB.evaluate(() => window.__e2e.ringing.accept());
    await waitInPage(pageB, 'bob has a local answer', () => window.__e2e.call.pc.signalingState === 'stable' && window.__e2e.call.pc.localDescription?.type === 'answer');
    const b = await pageB.evaluate(() => ({ state: window.__e2e.client.state, errors: window.__e2e.errors }));
    assert(b.state === 'reconnecting', `bob's client is ${b.state}`);
    assert(b.errors.length === 0, `bob's helper reported ${JSON.stringify(b.errors)}`);
  });

  await check('mid-negotiation drain: bob resumes on node-1 (handed over from node-2): resumed, same session id', async () => {
    const remote = 'signal_manager_resumes_total{where="remote"}';
    const handedOver = (await metric(nodes['node-1'].admin, remote)) ?? 0;
    await pageB.evaluate(() => window.__e2e.releaseReconnect());
    await waitInPage(pageB, 'reconnect', () => window.__e2e.events.some((e) => e.type === 'connected' && e.reconnected), undefined, 15_000);
    const c = await pageB.evaluate(() => window.__e2e.events.find((e) => e.type === 'connected' && e.reconnected));
    assert(c.nodeId === 'node-1', `reconnected to ${c.nodeId}`);
    assert(c.resumed === true, `not resumed: ${JSON.stringify(c)}`);
    assert(c.sessionId === bobSession, `resumed under session ${c.sessionId}, not ${bobSession}`);
    const client = await pageB.evaluate(() => ({ resumed: window.__e2e.client.resumed, sessionId: window.__e2e.client.sessionId }));
    assert(client.resumed === true && client.sessionId === bobSession, `client ${JSON.stringify(client)}`);
    const after = await metric(nodes['node-1'].admin, remote);
    assert(after === handedOver + 1, `node-1 counts ${after} resumes from another node, expected ${handedOver + 1}`);
  });

  await check('mid-negotiation drain: the data channel opens on both sides and a message crosses each way', async () => {
    try {
      await waitInPage(pageA, "alice's channel", () => window.__e2e.channelOpen());
      await waitInPage(pageB, "bob's channel", () => window.__e2e.channelOpen());
    } catch (err) {
      throw new Error(`${err.message}\n  ${await pageTrouble(pageA, 'alice')}\n  ${await pageTrouble(pageB, 'bob')}`);
    }
    for (const [from, to, fromName, toName] of [[pageA, pageB, 'alice', 'bob'], [pageB, pageA, 'bob', 'alice']]) {
      const text = `after the drain, ${fromName} to ${toName} ${randomBytes(4).toString('hex')}`;
      await from.evaluate((t) => window.__e2e.call.dc.send(t), text);
      await waitInPage(to, `message at ${toName}`, (t) => window.__e2e.messages.includes(t), text, 10_000);
    }
  });

  await check('mid-negotiation drain: every candidate arrived once; one offer, one answer (never renegotiated)', async () => {
    const a = await wireCounts(pageA);
    const b = await wireCounts(pageB);
    const d = (now, then) => ({ out: now.out - then.out, in: now.in - then.in });
    const n = {
      aliceOffer: d(a.offer, before.alice.offer), aliceAnswer: d(a.answer, before.alice.answer), aliceIce: d(a.ice, before.alice.ice),
      bobOffer: d(b.offer, before.bob.offer), bobAnswer: d(b.answer, before.bob.answer), bobIce: d(b.ice, before.bob.ice),
    };
    const counts = JSON.stringify(n);
    assert(n.aliceOffer.out === 1 && n.bobOffer.in === 1 && n.bobOffer.out === 0 && n.aliceOffer.in === 0, `offers: ${counts}`);
    assert(n.bobAnswer.out === 1 && n.aliceAnswer.in === 1 && n.aliceAnswer.out === 0, `answers: ${counts}`);
    assert(n.aliceIce.out === aliceIce && n.bobIce.in === aliceIce, `alice's candidates: sent ${aliceIce}, ${counts}`);
    const bobGathered = await pageB.evaluate(() => window.__e2e.call.iceOut);
    assert(n.bobIce.out === bobGathered && n.aliceIce.in === bobGathered, `bob's candidates: gathered ${bobGathered}, ${counts}`);
    const held = await pageB.evaluate(() => window.__e2e.call.iceIn);
    assert(held === aliceIce, `bob's peer connection was given ${held} of alice's ${aliceIce} candidates`);
    return `alice->bob ${aliceIce} candidate(s) held on node-2 and handed over, bob->alice ${bobGathered} queued in his page`;
  });

  await check('mid-negotiation drain: node-2 hands bob\'s session over, drains and exits 0', async () => {
    const { code, signal } = await Promise.race([
      node2.child.exited,
      new Promise((_, rej) => setTimeout(() => rej(new Error('node-2 still running 15 s after SIGTERM')), 15_000)),
    ]);
    assert(code === 0, `node-2 exited with code ${code} signal ${signal}:\n${logTail('node-2')}`);
  });
}

/** Single topology (no Redis): SIGTERM node-2 between two calls; alice and
 *  bob reconnect to node-1 (nowhere to resume: a new session, or a resumed
 *  one if the node kept it). */
async function drainBetweenCalls(pageA, pageB, nodes, bobSession) {
  await check('SIGTERM to node-2: bob receives DISCONNECT SERVER_SHUTDOWN', async () => {
    nodes['node-2'].child.kill('SIGTERM');
    await waitInPage(pageB, 'disconnect event', () => window.__e2e.events.some((e) => e.type === 'disconnect'), undefined, 15_000);
    const d = await pageB.evaluate(() => window.__e2e.events.find((e) => e.type === 'disconnect'));
    assert(d.reason === 'SERVER_SHUTDOWN' && d.willReconnect === true, `disconnect ${JSON.stringify(d)}`);
    assert(d.closeCode === 1001, `close code ${d.closeCode}, expected 1001`);
  });

  await check('node-2 drains and exits 0', async () => {
    const { code, signal } = await Promise.race([
      nodes['node-2'].child.exited,
      new Promise((_, rej) => setTimeout(() => rej(new Error('node-2 still running 15 s after SIGTERM')), 15_000)),
    ]);
    assert(code === 0, `node-2 exited with code ${code} signal ${signal}:\n${logTail('node-2')}`);
  });

  await check('bob reconnects to node-1: his session resumed (same id), or a new one', async () => {
    await waitInPage(pageB, 'reconnect', () => window.__e2e.events.some((e) => e.type === 'connected' && e.reconnected), undefined, 15_000);
    const c = await pageB.evaluate(() => window.__e2e.events.find((e) => e.type === 'connected' && e.reconnected));
    assert(c.nodeId === 'node-1', `reconnected to ${c.nodeId}`);
    // SERVER_SHUTDOWN leaves the session resumable (protocol 1.1).
    if (c.resumed) assert(c.sessionId === bobSession, 'resumed under another session id');
    else assert(c.sessionId !== bobSession, 'session id did not change');
  });
  await check('alice reconnects to node-1', async () => {
    await waitInPage(pageA, 'reconnect', () => window.__e2e.events.some((e) => e.type === 'connected' && e.reconnected && e.nodeId === 'node-1'), undefined, 15_000);
  });
}

// ------------------------------------------------------------ scenario

async function scenario() {
  assert(SM_BIN && existsSync(SM_BIN), `SM_BIN is not an executable file: ${SM_BIN ?? '(unset)'}`);
  assert(existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install -y chromium)`);
  const secret = randomBytes(32).toString('hex');
  const prefix = `e2e-${process.pid}-${randomBytes(4).toString('hex')}`;
  const env = { SIGNAL_MANAGER_AUTH_TOKEN_SECRET: secret, SIGNAL_MANAGER_CLUSTER_KEY_PREFIX: prefix };
  const turnPort = process.env.SM_E2E_TURN_PORT;
  if (turnPort && process.env.SM_E2E_TURN_SECRET) {
    env.SIGNAL_MANAGER_TURN_URLS = `turn:127.0.0.1:${turnPort}?transport=udp`;
    env.SIGNAL_MANAGER_TURN_SECRET = process.env.SM_E2E_TURN_SECRET;
    env.SIGNAL_MANAGER_TURN_TTL = '600';
  }
  const cluster = TOPOLOGY === 'cluster';
  console.log(`# topology ${TOPOLOGY}; logs in ${logDir}`);

  let redisPort;
  if (cluster) {
    redisPort = await freePort();
    await check('redis-server starts and answers PING', async () => {
      startChild('redis', 'redis-server', ['--port', String(redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no']);
      await until('redis PING', () => redisPing(redisPort), 10_000);
    });
  }

  const nodes = {};
  for (const id of ['node-1', 'node-2']) {
    const port = await freePort();
    const admin = await freePort();
    const args = ['--port', String(port), '--admin-port', String(admin), '--node-id', id];
    if (cluster) args.push('--redis-url', `redis://127.0.0.1:${redisPort}`);
    nodes[id] = { port, admin, url: `ws://127.0.0.1:${port}`, child: startChild(id, SM_BIN, args, env) };
  }
  for (const id of Object.keys(nodes)) {
    await check(`${id} starts and /readyz answers 200`, async () => {
      const { child, admin } = nodes[id];
      await until(`${id} /readyz`, async () => {
        if (child.exitCode !== null) throw new Error(`${id} exited with ${child.exitCode}:\n${logTail(id)}`);
        return readyz(admin);
      }, 30_000);
    });
  }

  const tokens = {};
  await check('the token subcommand mints JWTs for alice, bob, carol, dave, erin and frank', async () => {
    for (const who of ['alice', 'bob', 'carol', 'dave', 'erin', 'frank']) tokens[who] = await mintToken(who, env);
  });

  staticServer = await startStaticServer({ port: 0 });
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true, timeout: 30_000 });
  const [pageA, pageB] = await Promise.all([newPage('alice'), newPage('bob')]);

  const n1 = nodes['node-1'].url;
  const n2 = nodes['node-2'].url;
  const aliceUrls = cluster ? [n1] : [n2, n1];
  const bobUrls = [n2, n1];
  const aliceNode = cluster ? 'node-1' : 'node-2';

  await check(`alice connects to ${aliceNode}`, async () => {
    const ack = await pageA.evaluate(([u, t]) => window.__e2e.connect(u, 'alice', t), [aliceUrls, tokens.alice]);
    assert(ack.nodeId === aliceNode && ack.clientId === 'alice', `CONNECT_ACK ${JSON.stringify(ack)}`);
  });
  let bobSession;
  await check('bob connects to node-2', async () => {
    const ack = await pageB.evaluate(([u, t]) => window.__e2e.connect(u, 'bob', t), [bobUrls, tokens.bob]);
    assert(ack.nodeId === 'node-2' && ack.clientId === 'bob', `CONNECT_ACK ${JSON.stringify(ack)}`);
    bobSession = ack.sessionId;
  });

  await check('a signal to a client that is not online gets ERROR PEER_NOT_FOUND with its message id', async () => {
    const id = await pageA.evaluate(() => window.__e2e.client.sendOffer('nobody-here', '{}'));
    await waitInPage(pageA, 'PEER_NOT_FOUND', (mid) => window.__e2e.events.some((e) => e.type === 'error' && e.code === 'PEER_NOT_FOUND' && e.messageId === mid), id, 10_000);
  });

  await callAndChat(cluster ? 'first call, across nodes' : 'first call', pageA, pageB, 'alice', 'bob');

  const [pageE, pageF] = await Promise.all([newPage('erin'), newPage('frank')]);
  // Without Redis the nodes cannot reach each other: both on node-2 then.
  await check(`erin connects to ${cluster ? 'node-1' : 'node-2'} and frank to node-2`, async () => {
    await pageE.evaluate(([u, t]) => window.__e2e.connect(u, 'erin', t), [[cluster ? n1 : n2], tokens.erin]);
    await pageF.evaluate(([u, t]) => window.__e2e.connect(u, 'frank', t), [[n2], tokens.frank]);
  });
  await relayCall(pageE, pageF, turnPort);
  await Promise.all([pageE, pageF].map((p) => p.evaluate(() => {
    window.__e2e.call.pc.close();
    return window.__e2e.client.close();
  })));

  if (cluster) {
    await drainMidNegotiation(pageA, pageB, nodes, bobSession);
  } else {
    await drainBetweenCalls(pageA, pageB, nodes, bobSession);
  }

  await callAndChat('second call, after the reconnect', pageA, pageB, 'alice', 'bob');

  await check('alice refreshes her token on the open session: same session id', async () => {
    const fresh = await mintToken('alice', env);
    const r = await pageA.evaluate(async (t) => {
      const before = window.__e2e.client.sessionId;
      const ack = await window.__e2e.client.refreshToken(t);
      return { before, after: ack.sessionId, state: window.__e2e.client.state };
    }, fresh);
    assert(r.before === r.after && r.state === 'connected', JSON.stringify(r));
  });

  await check('a second alice on node-1 replaces the first: DISCONNECT REPLACED, no reconnect', async () => {
    const pageA2 = await newPage('alice-2');
    const ack = await pageA2.evaluate(([u, t]) => window.__e2e.connect(u, 'alice', t), [[n1], tokens.alice]);
    assert(ack.clientId === 'alice', JSON.stringify(ack));
    await waitInPage(pageA, 'REPLACED', () => window.__e2e.events.some((e) => e.type === 'disconnect' && e.reason === 'REPLACED'), undefined, 10_000);
    const d = await pageA.evaluate(() => ({ ev: window.__e2e.events.find((e) => e.reason === 'REPLACED'), state: window.__e2e.client.state }));
    assert(d.ev.willReconnect === false && d.state === 'closed', JSON.stringify(d));
    await pageA2.evaluate(() => window.__e2e.client.close());
    await pageA2.context().close();
  });

  await check('alice and bob leave with DISCONNECT', async () => {
    await Promise.all([pageA, pageB].map((p) => p.evaluate(async () => {
      await window.__e2e.client.close();
      return window.__e2e.client.state;
    }).then((s) => assert(s === 'closed', `state ${s}`))));
  });

  // The demo page, driven through its own form and buttons, in a browser
  // with a synthetic camera and microphone so that the video call shows.
  mediaBrowser = await chromium.launch({
    executablePath: CHROMIUM, args: [...CHROMIUM_ARGS, '--use-fake-device-for-media-stream'], headless: true, timeout: 30_000,
  });
  const [pageC, pageD] = await Promise.all([newPage('carol', mediaBrowser), newPage('dave', mediaBrowser)]);
  await check('demo page: carol and dave connect to node-1 through the form', async () => {
    for (const [page, who, peer] of [[pageC, 'carol', 'dave'], [pageD, 'dave', 'carol']]) {
      await page.fill('#url', n1);
      await page.fill('#client-id', who);
      await page.fill('#token', tokens[who]);
      await page.fill('#peer-id', peer);
      await page.click('#connect');
    }
    for (const page of [pageC, pageD]) {
      await waitInPage(page, 'connected status', () => document.querySelector('#status').dataset.state === 'connected');
    }
  });
  await check('demo page: carol calls dave and they chat both ways', async () => {
    await pageC.click('#call');
    for (const page of [pageC, pageD]) {
      await waitInPage(page, 'chat enabled', () => !document.querySelector('#message').disabled);
    }
    for (const [from, to, text] of [[pageC, pageD, 'hi dave, carol here'], [pageD, pageC, 'hello carol ☺']]) {
      await from.fill('#message', text);
      await from.click('#send');
      await waitInPage(to, `"${text}" shown`, (t) => [...document.querySelectorAll('#log .peer')].some((e) => e.textContent.endsWith(t)), text, 10_000);
    }
  });
  await check('demo page: both press "Video call" at once and each sees the other\'s video', async () => {
    for (const page of [pageC, pageD]) {
      await waitInPage(page, 'video button shown', () => !document.querySelector('#video').hidden && !document.querySelector('#video').disabled);
    }
    // Both renegotiate at the same moment: perfect negotiation must resolve the collision.
    await Promise.all([pageC.click('#video'), pageD.click('#video')]);
    for (const page of [pageC, pageD]) {
      await waitInPage(page, 'remote video playing', () => {
        const v = document.querySelector('#remote-video');
        return v.srcObject && v.videoWidth > 0 && v.srcObject.getAudioTracks().length > 0;
      });
    }
  });
  await check('demo page: hanging up ends the call on both sides', async () => {
    await pageC.click('#hangup');
    for (const page of [pageC, pageD]) {
      await waitInPage(page, 'call ended', () => !document.querySelector('#call').disabled && document.querySelector('#message').disabled);
    }
  });
}

// ------------------------------------------------------------ main

async function cleanup() {
  await browser?.close().catch(() => {});
  browser = null;
  await mediaBrowser?.close().catch(() => {});
  mediaBrowser = null;
  await staticServer?.close().catch(() => {});
  staticServer = null;
  await stopChildren();
}

let interrupted = false;
for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) {
  process.on(sig, async () => {
    if (interrupted) return;
    interrupted = true;
    console.log(`# ${sig}: cleaning up`);
    await cleanup();
    process.exit(130);
  });
}
process.on('exit', () => {
  for (const child of children.values()) child.kill('SIGKILL');
});

const watchdog = setTimeout(async () => {
  console.log(`FAIL the whole run exceeded ${OVERALL_TIMEOUT_MS / 1000} s`);
  results.push({ name: 'overall time limit', ok: false });
  await cleanup();
  finish();
}, OVERALL_TIMEOUT_MS);

function finish() {
  const passed = results.filter((r) => r.ok).length;
  const failed = results.length - passed;
  if (failed > 0 || process.env.SM_E2E_KEEP_LOGS) {
    for (const name of ['redis', 'node-1', 'node-2']) {
      if (existsSync(join(logDir, `${name}.log`))) console.log(`# --- last lines of ${name}.log ---\n${logTail(name)}`);
    }
  }
  if (failed === 0) rmSync(logDir, { recursive: true, force: true });
  else console.log(`# logs kept in ${logDir}`);
  console.log(`# finished in ${elapsed()}`);
  console.log(`browser e2e: ${passed} passed, ${failed} failed`);
  process.exit(failed === 0 && passed > 0 ? 0 : 1);
}

try {
  await scenario();
} catch (err) {
  if (!err.reported) {
    console.log(`FAIL ${err.message}`);
    results.push({ name: 'setup', ok: false });
  }
} finally {
  clearTimeout(watchdog);
  await cleanup();
}
finish();
