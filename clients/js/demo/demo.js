// The demo page: connect to a node, call a peer, chat over a data channel,
// and add camera and microphone when the browser has a camera. All signaling
// goes through SignalManagerClient and attachPeerConnection.
import { SignalManagerClient, attachPeerConnection } from '../signal-manager.js';

const $ = (id) => document.getElementById(id);
const ui = {
  form: $('session'), url: $('url'), clientId: $('client-id'), token: $('token'),
  connect: $('connect'), disconnect: $('disconnect'), status: $('status'), otherLink: $('other-link'),
  peerId: $('peer-id'), call: $('call'), video: $('video'), hangup: $('hangup'),
  chat: $('chat'), message: $('message'), send: $('send'), log: $('log'),
  videos: $('videos'), localVideo: $('local-video'), remoteVideo: $('remote-video'),
};

// Prefill from the query string: ?url=...&id=...&token=...&peer=...&relay=1
const params = new URLSearchParams(location.search);
for (const [param, input] of [['url', ui.url], ['id', ui.clientId], ['token', ui.token], ['peer', ui.peerId]]) {
  if (params.has(param)) input.value = params.get(param);
}
ui.otherLink.hidden = params.has('id');

// Calls use the STUN/TURN servers the node sends in CONNECT_ACK (none from a
// node without turn.* settings: then only direct paths work). relay=1 makes
// every call go through TURN, to try the TURN set-up.
const RELAY_ONLY = params.get('relay') === '1';
const RTC_CONFIG = RELAY_ONLY ? { iceTransportPolicy: 'relay' } : {};
if (RELAY_ONLY) ui.otherLink.href += '&relay=1';

let client = null;
/** The current call: {peer, pc, link, dc, localStream} or null. */
let call = null;

function log(text, kind = 'sys') {
  const line = document.createElement('div');
  line.className = kind;
  line.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  ui.log.append(line);
  ui.log.scrollTop = ui.log.scrollHeight;
}

function setStatus(state, text) {
  ui.status.dataset.state = state;
  ui.status.textContent = text;
}

function refreshButtons() {
  const connected = client?.state === 'connected';
  const open = call?.dc?.readyState === 'open';
  ui.connect.disabled = Boolean(client);
  ui.disconnect.disabled = !client;
  for (const input of [ui.url, ui.clientId, ui.token]) input.disabled = Boolean(client);
  ui.call.disabled = !connected || Boolean(call);
  ui.video.disabled = !connected || Boolean(call?.localStream);
  ui.hangup.disabled = !call;
  ui.message.disabled = !open;
  ui.send.disabled = !open;
}

/** Shows the video button only when the browser reports a camera. */
async function detectCamera() {
  try {
    const devices = await navigator.mediaDevices?.enumerateDevices?.();
    ui.video.hidden = !devices?.some((d) => d.kind === 'videoinput');
  } catch {
    ui.video.hidden = true;
  }
}

function wireDataChannel(dc) {
  const c = call;
  c.dc = dc;
  dc.onopen = () => {
    log(`data channel open with ${c.peer}`);
    refreshButtons();
    ui.message.focus();
  };
  dc.onmessage = (e) => log(`${c.peer}: ${e.data}`, 'peer');
  // Every call carries the chat channel, so its end is the end of the call
  // (the peer hung up or went away).
  dc.onclose = () => {
    if (call === c) endCall();
  };
}

/**
 * Creates the RTCPeerConnection for `peer`. The caller is impolite, the
 * callee polite, so an offer collision resolves without a deadlock.
 */
function startCall(peer, { polite }) {
  endCall({ quiet: true });
  // No pc given: the link creates it with the session's ICE servers.
  const link = attachPeerConnection(client, null, peer, {
    polite,
    rtcConfig: RTC_CONFIG,
    onError: (err) => log(`call: ${err.message}`, 'err'),
  });
  const { pc } = link;
  call = { peer, pc, link, dc: null, localStream: null };
  pc.ondatachannel = (e) => wireDataChannel(e.channel);
  pc.ontrack = (e) => {
    ui.videos.hidden = false;
    if (ui.remoteVideo.srcObject !== e.streams[0]) ui.remoteVideo.srcObject = e.streams[0];
  };
  pc.onconnectionstatechange = () => {
    log(`connection ${pc.connectionState}`);
    if (pc.connectionState === 'failed' || pc.connectionState === 'closed') endCall({ quiet: true });
  };
  refreshButtons();
  return call;
}

function endCall({ quiet = false } = {}) {
  if (!call) return;
  const { pc, link, localStream, peer } = call;
  call = null;
  link.detach();
  localStream?.getTracks().forEach((t) => t.stop());
  pc.close();
  ui.localVideo.srcObject = null;
  ui.remoteVideo.srcObject = null;
  ui.videos.hidden = true;
  if (!quiet) log(`call with ${peer} ended`);
  refreshButtons();
}

function onIncomingOffer(signal) {
  // A new call: no call yet, or the old one is gone on our side. Signals for
  // a live call are handled by its attachPeerConnection link.
  const stale = call && (call.peer !== signal.from || ['failed', 'closed'].includes(call.pc.connectionState));
  if (call && !stale) return;
  log(`incoming call from ${signal.from}`);
  ui.peerId.value = signal.from;
  startCall(signal.from, { polite: true }).link.receive(signal);
}

async function connect(event) {
  event.preventDefault();
  const urls = ui.url.value.split(',').map((u) => u.trim()).filter(Boolean);
  client = new SignalManagerClient();
  client.on('connected', (c) => {
    setStatus('connected', `Connected as ${c.clientId} to node ${c.nodeId} (${c.url}), session ${c.sessionId}.`);
    if (c.resumed) log(`resumed the session on node ${c.nodeId}`);
    else log(c.reconnected ? `reconnected to node ${c.nodeId} (new session)` : `connected to node ${c.nodeId}`);
    // URLs only: TURN entries carry credentials.
    const urls = client.iceServers.flatMap((s) => s.urls);
    log(urls.length ? `ICE servers: ${urls.join(', ')}${RELAY_ONLY ? ' (relay only)' : ''}` : 'no ICE servers from the node: direct paths only');
    refreshButtons();
  });
  client.on('disconnect', (d) => {
    const next = d.willReconnect ? (d.resumable ? ', resuming' : ', reconnecting') : '';
    log(`disconnected: ${d.reason}${d.message ? ` (${d.message})` : ''}${next}`, d.willReconnect ? 'sys' : 'err');
    if (!d.willReconnect) {
      setStatus('closed', `Disconnected: ${d.reason}.`);
      client = null;
    }
    refreshButtons();
  });
  client.on('reconnecting', (r) => setStatus('reconnecting', `Reconnecting to ${r.url} in ${r.delayMs} ms (attempt ${r.attempt})...`));
  client.on('error', (e) => log(`${e.code}: ${e.message}`, 'err'));
  client.on('offer', onIncomingOffer);
  setStatus('connecting', `Connecting to ${urls[0]}...`);
  refreshButtons();
  try {
    await client.connect(urls, ui.clientId.value.trim(), ui.token.value.trim());
  } catch (err) {
    setStatus('closed', `Could not connect: ${err.code ?? ''} ${err.message}`);
    log(`connect failed: ${err.code ?? ''} ${err.message}`, 'err');
    client = null;
    refreshButtons();
  }
}

async function disconnect() {
  endCall({ quiet: true });
  const c = client;
  client = null;
  await c?.close();
  setStatus('closed', 'Disconnected.');
  refreshButtons();
}

function placeCall() {
  const peer = ui.peerId.value.trim();
  if (!peer || !ui.peerId.checkValidity()) {
    log('enter a valid peer client id', 'err');
    return null;
  }
  log(`calling ${peer}...`);
  const c = startCall(peer, { polite: false });
  // Creating the channel fires negotiationneeded, which sends the offer.
  wireDataChannel(c.pc.createDataChannel('chat'));
  return c;
}

async function videoCall() {
  const c = call ?? placeCall();
  if (!c) return;
  try {
    const stream = await navigator.mediaDevices.getUserMedia({ video: true, audio: true });
    if (call !== c) {
      stream.getTracks().forEach((t) => t.stop());
      return;
    }
    c.localStream = stream;
    ui.localVideo.srcObject = stream;
    ui.videos.hidden = false;
    // Adding tracks renegotiates through the same link.
    stream.getTracks().forEach((t) => c.pc.addTrack(t, stream));
    refreshButtons();
  } catch (err) {
    log(`camera: ${err.message}`, 'err');
  }
}

function sendChat(event) {
  event.preventDefault();
  const text = ui.message.value;
  if (!text || call?.dc?.readyState !== 'open') return;
  call.dc.send(text);
  log(`me: ${text}`, 'me');
  ui.message.value = '';
}

ui.form.addEventListener('submit', connect);
ui.disconnect.addEventListener('click', disconnect);
ui.call.addEventListener('click', placeCall);
ui.video.addEventListener('click', videoCall);
ui.hangup.addEventListener('click', () => endCall());
ui.chat.addEventListener('submit', sendChat);
navigator.mediaDevices?.addEventListener?.('devicechange', detectCamera);
detectCamera();
refreshButtons();
