// Helpers for testing SignalManagerClient against a small scripted server
// that speaks real WebSocket and real frames (ws.js): the server only
// answers what each test tells it to.
import { startWsServer, NodeWebSocket } from './ws.js';
import {
  MessageType as T,
  PayloadType as P,
  SignalManagerClient,
  decodeClientMessage,
  encodeFrame,
  encodeJson,
  newMessageId,
} from '../signal-manager.js';

export const utf8 = new TextDecoder();

/** Waits until `pred()` is truthy, polling; fails after `ms`. */
export async function eventually(pred, ms = 3000, what = 'condition') {
  const end = Date.now() + ms;
  for (;;) {
    const v = pred();
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

export function nextEvent(client, type, ms = 3000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${type} event within ${ms} ms`));
    }, ms);
    const off = client.on(type, (d) => {
      clearTimeout(timer);
      off();
      resolve(d);
    });
  });
}

/**
 * A scripted server. Every decoded client frame is recorded in `frames`
 * (with its connection). `script(conn, msg, raw)` answers; the default one
 * acks CONNECT and echoes HEARTBEAT.
 */
export async function scriptedServer(script = defaultScript, opts = {}) {
  const frames = [];
  const server = await startWsServer((conn) => {
    conn.on('message', (raw, isBinary) => {
      if (!isBinary) return;
      const msg = decodeClientMessage(raw);
      frames.push({ conn, msg, raw });
      script(conn, msg, raw, opts);
    });
  });
  return { ...server, frames };
}

export function send(conn, messageType, fields, messageId = newMessageId()) {
  conn.send(encodeFrame({ messageType, messageId, payloadType: P.JSON, payload: encodeJson(messageType, fields) }));
  return messageId;
}

/** Answers a CONNECT; the 1.1 fields are sent only when given. */
export function ack(conn, msg, { heartbeat = 30000, node = 'node-t', session = 'sess-1', resumeToken, resumed, iceServers } = {}) {
  send(conn, T.CONNECT_ACK, {
    session_id: session,
    client_id: msg.clientId,
    node_id: node,
    heartbeat_interval_ms: heartbeat,
    resume_token: resumeToken,
    resumed,
    ice_servers: iceServers,
  }, msg.messageId);
}

export function defaultScript(conn, msg, raw, opts) {
  if (msg.messageType === T.CONNECT) ack(conn, msg, opts);
  else if (msg.messageType === T.HEARTBEAT) {
    conn.send(encodeFrame({ messageType: T.HEARTBEAT_ACK, messageId: msg.messageId, payloadType: msg.payloadType, payload: msg.payload }));
  } else if (msg.messageType === T.DISCONNECT) conn.close(1000);
}

export function disconnect(conn, reason, code) {
  send(conn, T.DISCONNECT, { reason, message: `test ${reason}` });
  conn.close(code);
}

export const newClient = (opts = {}) => new SignalManagerClient({ WebSocket: NodeWebSocket, initialDelayMs: 10, maxDelayMs: 50, ...opts });
