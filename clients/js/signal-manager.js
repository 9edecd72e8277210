// Signal Manager browser client: the wire format of PROTOCOL.md (frames and
// the JSON codec), a reconnecting session client, and a helper that wires an
// RTCPeerConnection to it. No dependencies; runs in browsers and Node >= 20.
//
// Layout:
//   constants       MessageType, PayloadType, error and reason codes
//   uuid            parse/format 16-byte ids, fresh v4 ids
//   frames          encodeFrame / decodeFrame (header checks only)
//   payloads        encodeJson / decodeMessage (structure and field checks)
//   client          SignalManagerClient (connect, heartbeat, reconnect, signal)
//   peer connection attachPeerConnection (perfect negotiation, ordered apply)

export const START_BYTE = 0xa5;
export const HEADER_SIZE = 21;
export const MAX_PAYLOAD_SIZE = 0xffff;
export const MAX_FRAME_SIZE = HEADER_SIZE + MAX_PAYLOAD_SIZE;
export const NIL_UUID = '00000000-0000-0000-0000-000000000000';

export const MessageType = Object.freeze({
  CONNECT: 0x01,
  CONNECT_ACK: 0x02,
  DISCONNECT: 0x03,
  HEARTBEAT: 0x04,
  HEARTBEAT_ACK: 0x05,
  SIGNAL_OFFER: 0x10,
  SIGNAL_ANSWER: 0x11,
  SIGNAL_ICE_CANDIDATE: 0x12,
  ERROR: 0xff,
});

export const PayloadType = Object.freeze({
  BINARY: 0x01,
  JSON: 0x02,
  TEXT: 0x03,
  PROTOBUF: 0x04,
  CBOR: 0x05,
});

/** ERROR codes of PROTOCOL.md. */
export const ErrorCode = Object.freeze({
  BAD_FRAME: 'BAD_FRAME',
  UNKNOWN_MESSAGE_TYPE: 'UNKNOWN_MESSAGE_TYPE',
  UNSUPPORTED_PAYLOAD_TYPE: 'UNSUPPORTED_PAYLOAD_TYPE',
  BAD_PAYLOAD: 'BAD_PAYLOAD',
  NOT_AUTHENTICATED: 'NOT_AUTHENTICATED',
  AUTH_FAILED: 'AUTH_FAILED',
  TOKEN_EXPIRED: 'TOKEN_EXPIRED',
  PEER_NOT_FOUND: 'PEER_NOT_FOUND',
  PEER_UNREACHABLE: 'PEER_UNREACHABLE',
  RATE_LIMITED: 'RATE_LIMITED',
  SERVER_BUSY: 'SERVER_BUSY',
  UNAVAILABLE: 'UNAVAILABLE',
  INTERNAL: 'INTERNAL',
  FORBIDDEN: 'FORBIDDEN', // 1.1: the token's peers claim does not allow that target
});

/** DISCONNECT reasons of PROTOCOL.md. */
export const DisconnectReason = Object.freeze({
  CLIENT_LEFT: 'CLIENT_LEFT',
  REPLACED: 'REPLACED',
  IDLE_TIMEOUT: 'IDLE_TIMEOUT',
  TOKEN_EXPIRED: 'TOKEN_EXPIRED',
  SERVER_SHUTDOWN: 'SERVER_SHUTDOWN',
  SLOW_CONSUMER: 'SLOW_CONSUMER',
  POLICY: 'POLICY',
  KICKED: 'KICKED', // 1.1: ended through the admin API
});

const MESSAGE_TYPES = new Set(Object.values(MessageType));
const PAYLOAD_TYPES = new Set(Object.values(PayloadType));
const SERVER_ONLY = new Set([MessageType.CONNECT_ACK, MessageType.HEARTBEAT_ACK, MessageType.ERROR]);
const CLIENT_ONLY = new Set([MessageType.CONNECT, MessageType.HEARTBEAT]);
const SIGNAL_TYPES = new Set([
  MessageType.SIGNAL_OFFER,
  MessageType.SIGNAL_ANSWER,
  MessageType.SIGNAL_ICE_CANDIDATE,
]);
const CLIENT_ID_RE = /^[A-Za-z0-9._:@-]{1,128}$/;

/** A frame or payload that breaks PROTOCOL.md; `code` is the ERROR code a server answers with. */
export class ProtocolError extends Error {
  /**
   * @param {string} code one of ErrorCode
   * @param {string} message
   * @param {string} messageId id of the offending frame, NIL_UUID when unreadable
   */
  constructor(code, message, messageId = NIL_UUID) {
    super(message);
    this.name = 'ProtocolError';
    this.code = code;
    this.messageId = messageId;
  }
}

/** True when `id` is a valid client id (1 to 128 bytes of [A-Za-z0-9._:@-]). */
export function isValidClientId(id) {
  return typeof id === 'string' && CLIENT_ID_RE.test(id);
}

// ---------------------------------------------------------------- uuid

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, '0'));
const UUID_RE = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/;

/** Formats 16 bytes as a lower-case hyphenated UUID. */
export function formatUuid(bytes, offset = 0) {
  let s = '';
  for (let i = 0; i < 16; i++) {
    if (i === 4 || i === 6 || i === 8 || i === 10) s += '-';
    s += HEX[bytes[offset + i]];
  }
  return s;
}

/** Parses a hyphenated UUID into 16 bytes (RFC 9562 byte order). */
export function parseUuid(text) {
  if (typeof text !== 'string' || !UUID_RE.test(text)) {
    throw new TypeError(`not a UUID: ${String(text)}`);
  }
  const hex = text.replace(/-/g, '');
  const out = new Uint8Array(16);
  for (let i = 0; i < 16; i++) out[i] = parseInt(hex.slice(i * 2, i * 2 + 2), 16);
  return out;
}

/**
 * A fresh random (version 4) message id. `crypto.randomUUID` exists only in
 * secure contexts, so pages served over plain http from a LAN address fall
 * back to `crypto.getRandomValues`, which exists everywhere.
 */
export function newMessageId() {
  const c = globalThis.crypto;
  if (c && typeof c.randomUUID === 'function') return c.randomUUID();
  const b = c.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  return formatUuid(b);
}

// ---------------------------------------------------------------- frames

const utf8Encoder = new TextEncoder();
const utf8Decoder = new TextDecoder('utf-8', { fatal: true });

function toBytes(data) {
  if (data instanceof Uint8Array) return data;
  if (data instanceof ArrayBuffer) return new Uint8Array(data);
  if (ArrayBuffer.isView(data)) return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
  throw new TypeError('frame data must be an ArrayBuffer or a typed array');
}

/**
 * Builds one frame.
 * @param {{messageType:number, messageId:string, payloadType:number, payload?:Uint8Array|string}} frame
 *   a string payload is encoded as UTF-8.
 * @returns {Uint8Array}
 */
export function encodeFrame({ messageType, messageId, payloadType, payload = new Uint8Array(0) }) {
  const body = typeof payload === 'string' ? utf8Encoder.encode(payload) : toBytes(payload);
  if (!Number.isInteger(messageType) || messageType < 0 || messageType > 0xff) {
    throw new RangeError(`message type out of range: ${messageType}`);
  }
  if (!Number.isInteger(payloadType) || payloadType < 0 || payloadType > 0xff) {
    throw new RangeError(`payload type out of range: ${payloadType}`);
  }
  if (body.length > MAX_PAYLOAD_SIZE) {
    throw new RangeError(`payload of ${body.length} bytes exceeds ${MAX_PAYLOAD_SIZE}`);
  }
  const out = new Uint8Array(HEADER_SIZE + body.length);
  out[0] = START_BYTE;
  out[1] = messageType;
  out.set(parseUuid(messageId), 2);
  out[18] = payloadType;
  out[19] = body.length >> 8;
  out[20] = body.length & 0xff;
  out.set(body, HEADER_SIZE);
  return out;
}

/**
 * Reads one frame and checks its header: size, start byte, exact length,
 * known message type and known payload type. The payload is not decoded.
 * @param {ArrayBuffer|Uint8Array} data one whole WebSocket binary message
 * @param {{sender?: 'client'|'server'}} [options] when given, also rejects
 *   message types that this sender may not send (UNKNOWN_MESSAGE_TYPE)
 * @throws {ProtocolError}
 */
export function decodeFrame(data, { sender } = {}) {
  const bytes = toBytes(data);
  if (bytes.length < HEADER_SIZE) {
    throw new ProtocolError(ErrorCode.BAD_FRAME, `frame of ${bytes.length} bytes is shorter than the header`);
  }
  if (bytes.length > MAX_FRAME_SIZE) {
    // The server refuses such a message in its WebSocket layer, before
    // reading any of it, so its ERROR carries the nil id as well.
    throw new ProtocolError(ErrorCode.BAD_FRAME, 'frame larger than 65556 bytes');
  }
  const messageId = formatUuid(bytes, 2);
  if (bytes[0] !== START_BYTE) {
    throw new ProtocolError(ErrorCode.BAD_FRAME, `bad start byte 0x${HEX[bytes[0]]}`, messageId);
  }
  const length = (bytes[19] << 8) | bytes[20];
  if (bytes.length !== HEADER_SIZE + length) {
    throw new ProtocolError(
      ErrorCode.BAD_FRAME,
      `payload length ${length} does not match the ${bytes.length - HEADER_SIZE} bytes received`,
      messageId,
    );
  }
  const messageType = bytes[1];
  if (!MESSAGE_TYPES.has(messageType)) {
    throw new ProtocolError(ErrorCode.UNKNOWN_MESSAGE_TYPE, `unknown message type 0x${HEX[messageType]}`, messageId);
  }
  if ((sender === 'client' && SERVER_ONLY.has(messageType)) || (sender === 'server' && CLIENT_ONLY.has(messageType))) {
    throw new ProtocolError(
      ErrorCode.UNKNOWN_MESSAGE_TYPE,
      `message type 0x${HEX[messageType]} may not be sent by a ${sender}`,
      messageId,
    );
  }
  const payloadType = bytes[18];
  if (!PAYLOAD_TYPES.has(payloadType)) {
    throw new ProtocolError(ErrorCode.UNSUPPORTED_PAYLOAD_TYPE, `unknown payload type 0x${HEX[payloadType]}`, messageId);
  }
  return { messageType, messageId, payloadType, payload: bytes.subarray(HEADER_SIZE) };
}

// ---------------------------------------------------------------- payloads

/**
 * Field lists in the order the server writes them. The JSON codec writes
 * fields in this order so that its bytes equal the server's (compact, no
 * spaces, as JSON.stringify and serde_json both write).
 */
const FIELDS = {
  connect: ['client_id', 'auth_token', 'resume_token'],
  connectAck: ['session_id', 'client_id', 'node_id', 'heartbeat_interval_ms', 'resume_token', 'resumed', 'ice_servers'],
  signal: ['target_client_id', 'source_client_id', 'signal_data'],
  error: ['code', 'message'],
  disconnect: ['reason', 'message'],
};

function schemaOf(messageType) {
  switch (messageType) {
    case MessageType.CONNECT: return 'connect';
    case MessageType.CONNECT_ACK: return 'connectAck';
    case MessageType.DISCONNECT: return 'disconnect';
    case MessageType.ERROR: return 'error';
    default: return SIGNAL_TYPES.has(messageType) ? 'signal' : null;
  }
}

/**
 * Encodes a structured payload as compact JSON with the protocol's field
 * order; fields that are undefined are left out.
 * @returns {Uint8Array}
 */
export function encodeJson(messageType, fields) {
  const schema = schemaOf(messageType);
  if (!schema) throw new TypeError(`message type 0x${HEX[messageType]} has no structured payload`);
  const ordered = {};
  for (const key of FIELDS[schema]) {
    if (fields[key] !== undefined) ordered[key] = fields[key];
  }
  return utf8Encoder.encode(JSON.stringify(ordered));
}

function requireString(body, key, id, { optional = false } = {}) {
  const v = body[key];
  if (v === undefined && optional) return undefined;
  if (typeof v !== 'string') {
    throw new ProtocolError(ErrorCode.BAD_PAYLOAD, `field ${key} must be a string`, id);
  }
  return v;
}

/**
 * An optional field added in version 1.1: absent, null (or, for a string,
 * empty, the protobuf default a translating server may carry over) means
 * none; any other value must have the right type.
 */
function optionalString(body, key, id) {
  const v = body[key];
  if (v === undefined || v === null || v === '') return undefined;
  if (typeof v !== 'string') throw new ProtocolError(ErrorCode.BAD_PAYLOAD, `field ${key} must be a string`, id);
  return v;
}

function optionalBool(body, key, id) {
  const v = body[key];
  if (v === undefined || v === null) return false;
  if (typeof v !== 'boolean') throw new ProtocolError(ErrorCode.BAD_PAYLOAD, `field ${key} must be a boolean`, id);
  return v;
}

/**
 * `ice_servers` as RTCIceServer objects: `{urls}` plus `username` and
 * `credential` when they are non-empty (STUN entries carry none).
 */
function iceServersOf(body, id) {
  const v = body.ice_servers;
  if (v === undefined || v === null) return [];
  const bad = () => new ProtocolError(ErrorCode.BAD_PAYLOAD, 'field ice_servers must be an array of {urls: string[], username?, credential?}', id);
  if (!Array.isArray(v)) throw bad();
  return v.map((entry) => {
    if (entry === null || typeof entry !== 'object' || Array.isArray(entry)) throw bad();
    if (!Array.isArray(entry.urls) || !entry.urls.every((u) => typeof u === 'string')) throw bad();
    const server = { urls: [...entry.urls] };
    for (const key of ['username', 'credential']) {
      const s = entry[key];
      if (s === undefined || s === null || s === '') continue;
      if (typeof s !== 'string') throw bad();
      server[key] = s;
    }
    return server;
  });
}

function requireClientId(body, key, id) {
  const v = requireString(body, key, id);
  if (!isValidClientId(v)) {
    throw new ProtocolError(ErrorCode.BAD_PAYLOAD, `field ${key} is not a valid client id`, id);
  }
  return v;
}

/**
 * Decodes the payload of a frame from decodeFrame into a message object.
 * Structured payloads must be JSON (the client speaks JSON); BINARY or
 * TEXT where a structure is required gives UNSUPPORTED_PAYLOAD_TYPE, a
 * payload that is not a JSON object or lacks a required field BAD_PAYLOAD.
 * Free-form payloads (HEARTBEAT, HEARTBEAT_ACK, empty DISCONNECT) are kept
 * as bytes.
 * @throws {ProtocolError}
 */
export function decodeMessage(frame) {
  const { messageType, messageId: id, payloadType, payload } = frame;
  const base = { messageType, messageId: id, payloadType };
  if (messageType === MessageType.HEARTBEAT || messageType === MessageType.HEARTBEAT_ACK) {
    return { ...base, payload };
  }
  if (messageType === MessageType.DISCONNECT && payload.length === 0) {
    return { ...base, reason: undefined, message: undefined };
  }
  if (payloadType === PayloadType.BINARY || payloadType === PayloadType.TEXT) {
    throw new ProtocolError(ErrorCode.UNSUPPORTED_PAYLOAD_TYPE, 'this message needs a structured payload', id);
  }
  if (payloadType !== PayloadType.JSON) {
    throw new ProtocolError(ErrorCode.UNSUPPORTED_PAYLOAD_TYPE, 'this client decodes only JSON payloads', id);
  }
  let body;
  try {
    body = JSON.parse(utf8Decoder.decode(payload));
  } catch {
    throw new ProtocolError(ErrorCode.BAD_PAYLOAD, 'payload is not UTF-8 JSON', id);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) {
    throw new ProtocolError(ErrorCode.BAD_PAYLOAD, 'payload is not a JSON object', id);
  }
  switch (schemaOf(messageType)) {
    case 'connect':
      return {
        ...base,
        clientId: requireClientId(body, 'client_id', id),
        authToken: requireString(body, 'auth_token', id),
        resumeToken: optionalString(body, 'resume_token', id),
      };
    case 'connectAck': {
      const interval = body.heartbeat_interval_ms;
      if (!Number.isInteger(interval) || interval < 0 || interval > 0xffffffff) {
        throw new ProtocolError(ErrorCode.BAD_PAYLOAD, 'field heartbeat_interval_ms must be a u32', id);
      }
      return {
        ...base,
        sessionId: requireString(body, 'session_id', id),
        clientId: requireString(body, 'client_id', id),
        nodeId: requireString(body, 'node_id', id),
        heartbeatIntervalMs: interval,
        resumeToken: optionalString(body, 'resume_token', id),
        resumed: optionalBool(body, 'resumed', id),
        iceServers: iceServersOf(body, id),
      };
    }
    case 'signal':
      return {
        ...base,
        targetClientId: requireClientId(body, 'target_client_id', id),
        sourceClientId: requireString(body, 'source_client_id', id, { optional: true }),
        signalData: requireString(body, 'signal_data', id),
      };
    case 'error':
      return { ...base, code: requireString(body, 'code', id), message: requireString(body, 'message', id) };
    case 'disconnect':
      return {
        ...base,
        reason: requireString(body, 'reason', id),
        message: requireString(body, 'message', id, { optional: true }),
      };
    default:
      throw new ProtocolError(ErrorCode.UNKNOWN_MESSAGE_TYPE, 'unexpected message type', id);
  }
}

/**
 * The checks a server applies to a frame it receives from a client, in
 * order: header, direction, payload. Returns the decoded message.
 * @throws {ProtocolError} whose code and messageId are what the ERROR carries
 */
export function decodeClientMessage(data) {
  return decodeMessage(decodeFrame(data, { sender: 'client' }));
}

/** Decodes a frame a server sent (header, direction, payload). */
export function decodeServerMessage(data) {
  return decodeMessage(decodeFrame(data, { sender: 'server' }));
}

// ---------------------------------------------------------------- client

const SIGNAL_EVENTS = {
  [MessageType.SIGNAL_OFFER]: 'offer',
  [MessageType.SIGNAL_ANSWER]: 'answer',
  [MessageType.SIGNAL_ICE_CANDIDATE]: 'ice',
};

/** DISCONNECT reasons after which the client reconnects by itself. */
const RECONNECT_REASONS = new Set([
  DisconnectReason.SERVER_SHUTDOWN,
  DisconnectReason.IDLE_TIMEOUT,
  DisconnectReason.SLOW_CONSUMER,
  DisconnectReason.TOKEN_EXPIRED, // only with a getToken callback, see #shouldReconnect
]);

/**
 * How a session may end and stay resumable (PROTOCOL.md 1.1, "Session
 * resume"): without the client's DISCONNECT, so a lost socket, the client's
 * own heartbeat timeout (the server sees a lost socket), IDLE_TIMEOUT or
 * SERVER_SHUTDOWN. After any other DISCONNECT (KICKED, REPLACED,
 * TOKEN_EXPIRED, POLICY, SLOW_CONSUMER, or one the client does not know) the
 * resume token is forgotten.
 */
const RESUMABLE_REASONS = new Set([
  'CONNECTION_LOST',
  'HEARTBEAT_TIMEOUT',
  DisconnectReason.IDLE_TIMEOUT,
  DisconnectReason.SERVER_SHUTDOWN,
]);

const EMPTY = new Uint8Array(0);

function makeEvent(type, detail) {
  if (typeof CustomEvent === 'function') return new CustomEvent(type, { detail });
  const e = new Event(type);
  e.detail = detail;
  return e;
}

function closeError(text, code) {
  const err = new Error(text);
  err.code = code;
  return err;
}

/** Reads `exp` (seconds) from a JWT without verifying it; undefined if absent. */
function jwtExpiry(token) {
  const part = typeof token === 'string' ? token.split('.')[1] : undefined;
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, '+').replace(/_/g, '/');
    const json = JSON.parse(atob(b64 + '='.repeat((4 - (b64.length % 4)) % 4)));
    return Number.isFinite(json.exp) ? json.exp : undefined;
  } catch {
    return undefined;
  }
}

/**
 * One signaling session with reconnects. Events (CustomEvent, data in
 * `event.detail`; or use `on(type, fn)` which passes the detail):
 *   connected    {sessionId, clientId, nodeId, heartbeatIntervalMs, url, reconnected, resumed}
 *   offer|answer|ice  {from, to, data, messageId, messageType}
 *   error        {code, message, messageId}   an ERROR from the server
 *   disconnect   {reason, message, closeCode, willReconnect, resumable}
 *   reconnecting {attempt, delayMs, url, reason, resume}
 *   heartbeat    {rttMs}
 *
 * Resume (protocol 1.1): the client keeps the resume token of the latest
 * CONNECT_ACK and offers it in the CONNECT of an automatic reconnect, so
 * that the node resumes the session and delivers the signals it held for
 * it. A fresh connect() offers none unless given one. The token is a
 * secret: it is in no event detail and no error message.
 */
export class SignalManagerClient extends EventTarget {
  /**
   * @param {object} [options]
   * @param {Function} [options.WebSocket] constructor to use (default globalThis.WebSocket)
   * @param {boolean} [options.reconnect=true]
   * @param {number} [options.initialDelayMs=250] first reconnect delay
   * @param {number} [options.maxDelayMs=30000]
   * @param {number} [options.backoffFactor=2]
   * @param {number} [options.maxAttempts=Infinity] reconnect attempts before giving up
   * @param {number} [options.connectTimeoutMs=10000] open + CONNECT_ACK deadline
   * @param {(info:{clientId:string, reason:string}) => string|Promise<string>} [options.getToken]
   *   called for a fresh token before each reconnect and before the token's `exp`
   * @param {number} [options.refreshMarginMs=60000] refresh this long before `exp`
   */
  constructor(options = {}) {
    super();
    this.options = {
      reconnect: true,
      initialDelayMs: 250,
      maxDelayMs: 30000,
      backoffFactor: 2,
      maxAttempts: Infinity,
      connectTimeoutMs: 10000,
      refreshMarginMs: 60000,
      ...options,
    };
    this.WebSocketImpl = options.WebSocket ?? globalThis.WebSocket;
    /** 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed' */
    this.state = 'idle';
    this.sessionId = undefined;
    this.nodeId = undefined;
    this.clientId = undefined;
    this.heartbeatIntervalMs = undefined;
    this.url = undefined;
    /** True when the latest (re)connect resumed the session (CONNECT_ACK `resumed`). */
    this.resumed = false;
    this.#urls = [];
    this.#urlIndex = 0;
  }

  #urls;
  #urlIndex;
  #token;
  #ws = null;
  #attempt = 0;
  #pending = null; // {id, resolve, reject, timer} for the CONNECT in flight
  #heartbeatTimer = null;
  #refreshTimer = null;
  #reconnectTimer = null;
  #lastInbound = 0;
  #heartbeatSent = new Map();
  #serverDisconnect = null; // the DISCONNECT the server sent on this socket
  #authFailed = null;
  #closing = null; // {resolve} while close() waits for the socket
  #forceCloseTimer = null; // gives up waiting for a close handshake
  #resumeToken = undefined; // from the latest CONNECT_ACK; a secret, never in an event
  #iceServers = []; // from the latest CONNECT_ACK; TURN credentials, so not in events either

  /**
   * The resume token of the latest CONNECT_ACK, while the session may still
   * be resumed; undefined after a DISCONNECT that ends it for good or
   * close(). For an application that must resume from another client
   * object (a reloaded page): pass it to connect() as `resumeToken`. Keep it
   * as secret as the auth token.
   */
  get resumeToken() {
    return this.#resumeToken;
  }

  /**
   * The STUN/TURN servers of the latest CONNECT_ACK (a refresh's too), as
   * RTCIceServer objects (a fresh copy on each read); empty before the
   * first ACK and from a node without `turn.urls` or `turn.stun_urls`.
   * TURN entries carry time-limited credentials: do not log them.
   */
  get iceServers() {
    return this.#iceServers.map((s) => ({ ...s, urls: [...s.urls] }));
  }

  /**
   * An RTCConfiguration for `new RTCPeerConnection(...)`: `overrides` with
   * `iceServers` set to this session's, unless `overrides.iceServers` is
   * given (then it is used as it is; spread `client.iceServers` into it to
   * add servers of your own). For example `{iceTransportPolicy: 'relay'}`
   * makes a relay-only call through the node's TURN servers.
   * @param {object} [overrides] any RTCConfiguration fields
   */
  rtcConfiguration(overrides = {}) {
    return { ...overrides, iceServers: overrides.iceServers ?? this.iceServers };
  }

  /** Subscribes `fn(detail)` to an event; returns a function that unsubscribes. */
  on(type, fn) {
    const listener = (e) => fn(e.detail);
    this.addEventListener(type, listener);
    return () => this.removeEventListener(type, listener);
  }

  #emit(type, detail) {
    this.dispatchEvent(makeEvent(type, detail));
  }

  /**
   * Opens a session. `url` may be a list of node URLs: reconnects try them in
   * turn, starting after the one that shut down (give one load-balancer URL
   * in production). Resolves with the CONNECT_ACK; rejects with an Error
   * whose `code` is the ERROR code (AUTH_FAILED, TOKEN_EXPIRED, ...) or
   * CONNECT_TIMEOUT / SOCKET_CLOSED. A failed first connect does not retry.
   *
   * A resume token is offered only when `options.resumeToken` is given (a
   * token of an earlier session of this client id, e.g. `client.resumeToken`
   * after the client gave up reconnecting); otherwise any token the client
   * still holds is forgotten and a new session starts.
   * @param {{resumeToken?: string}} [options]
   */
  connect(url, clientId, token, { resumeToken } = {}) {
    if (this.state !== 'idle' && this.state !== 'closed') {
      return Promise.reject(new Error(`connect() while ${this.state}`));
    }
    if (!isValidClientId(clientId)) {
      return Promise.reject(new TypeError(`invalid client id: ${clientId}`));
    }
    if (resumeToken !== undefined && typeof resumeToken !== 'string') {
      return Promise.reject(new TypeError('resumeToken must be a string'));
    }
    this.#urls = Array.isArray(url) ? [...url] : [url];
    if (this.#urls.length === 0) return Promise.reject(new TypeError('no URL given'));
    this.#urlIndex = 0;
    this.clientId = clientId;
    this.#token = token;
    this.#resumeToken = resumeToken || undefined;
    this.#iceServers = [];
    this.#attempt = 0;
    this.state = 'connecting';
    return this.#open(false).catch((err) => {
      this.state = 'closed';
      throw err;
    });
  }

  /** Opens a socket to the current URL and performs CONNECT. */
  #open(reconnected) {
    const url = this.#urls[this.#urlIndex % this.#urls.length];
    this.url = url;
    this.#serverDisconnect = null;
    this.#authFailed = null;
    return new Promise((resolve, reject) => {
      let ws;
      try {
        ws = new this.WebSocketImpl(url);
      } catch (err) {
        reject(err);
        return;
      }
      ws.binaryType = 'arraybuffer';
      this.#ws = ws;
      const id = newMessageId();
      const timer = setTimeout(() => {
        this.#failPending(closeError('no CONNECT_ACK in time', 'CONNECT_TIMEOUT'));
        this.#dropSocket();
      }, this.options.connectTimeoutMs);
      this.#pending = { id, resolve, reject, timer, reconnected };
      ws.onopen = () => {
        this.#lastInbound = Date.now();
        this.#sendStructured(MessageType.CONNECT, { client_id: this.clientId, auth_token: this.#token, resume_token: this.#resumeToken }, id);
      };
      ws.onmessage = (ev) => {
        if (ws === this.#ws) this.#onMessage(ev.data);
      };
      ws.onerror = () => { /* always followed by close */ };
      ws.onclose = (ev) => {
        if (ws === this.#ws) this.#onClose(ev.code);
      };
    });
  }

  #failPending(err) {
    const p = this.#pending;
    if (!p) return;
    this.#pending = null;
    clearTimeout(p.timer);
    p.reject(err);
  }

  #onMessage(data) {
    if (typeof data === 'string') return; // the server never sends text
    let msg;
    try {
      msg = decodeServerMessage(data);
    } catch (err) {
      this.#emit('error', { code: err.code ?? ErrorCode.BAD_FRAME, message: `bad frame from server: ${err.message}`, messageId: err.messageId, local: true });
      return;
    }
    this.#lastInbound = Date.now();
    switch (msg.messageType) {
      case MessageType.CONNECT_ACK: return this.#onConnectAck(msg);
      case MessageType.HEARTBEAT_ACK: {
        const sent = this.#heartbeatSent.get(msg.messageId);
        if (sent !== undefined) {
          this.#heartbeatSent.delete(msg.messageId);
          this.#emit('heartbeat', { rttMs: Date.now() - sent });
        }
        return;
      }
      case MessageType.ERROR: return this.#onError(msg);
      case MessageType.DISCONNECT:
        this.#serverDisconnect = { reason: msg.reason ?? DisconnectReason.CLIENT_LEFT, message: msg.message ?? '' };
        return;
      default:
        if (SIGNAL_EVENTS[msg.messageType]) {
          this.#emit(SIGNAL_EVENTS[msg.messageType], {
            from: msg.sourceClientId,
            to: msg.targetClientId,
            data: msg.signalData,
            messageId: msg.messageId,
            messageType: msg.messageType,
          });
        }
    }
  }

  #onConnectAck(msg) {
    const p = this.#pending;
    if (!p || p.id !== msg.messageId) return;
    this.#pending = null;
    clearTimeout(p.timer);
    const first = this.state !== 'connected'; // else a token refresh
    this.state = 'connected';
    this.sessionId = msg.sessionId;
    this.nodeId = msg.nodeId;
    this.heartbeatIntervalMs = msg.heartbeatIntervalMs;
    // Single-use: every ACK (a refresh's too) replaces the token, and an ACK
    // without one (resume off on that node) leaves none to offer.
    this.#resumeToken = msg.resumeToken;
    this.#iceServers = msg.iceServers;
    if (first) this.resumed = msg.resumed;
    this.#attempt = 0;
    if (first) this.#startHeartbeat();
    this.#scheduleRefresh();
    const info = {
      sessionId: msg.sessionId,
      clientId: msg.clientId,
      nodeId: msg.nodeId,
      heartbeatIntervalMs: msg.heartbeatIntervalMs,
      url: this.url,
      reconnected: p.reconnected,
      resumed: first && msg.resumed, // a refresh is not a resume
    };
    // Emitted before the signals that follow the ACK on this socket (those
    // the node held for a resumed session) are read, so handlers that set
    // up state for them run first.
    if (first) this.#emit('connected', info);
    p.resolve(info);
  }

  #onError(msg) {
    const p = this.#pending;
    // SERVER_BUSY comes with the nil id, before the node has read the CONNECT.
    if (p && (p.id === msg.messageId || msg.code === ErrorCode.SERVER_BUSY)) {
      if (msg.code === ErrorCode.AUTH_FAILED || msg.code === ErrorCode.TOKEN_EXPIRED) {
        // A failed refresh leaves the session running (PROTOCOL.md step 4).
        if (this.state !== 'connected') this.#authFailed = msg;
      }
      this.#failPending(Object.assign(new Error(msg.message), { code: msg.code, messageId: msg.messageId }));
    }
    this.#emit('error', { code: msg.code, message: msg.message, messageId: msg.messageId });
  }

  #startHeartbeat() {
    this.#stopHeartbeat();
    const interval = this.heartbeatIntervalMs;
    if (!interval) return;
    this.#heartbeatTimer = setInterval(() => {
      // Nothing heard for two intervals (a heartbeat unanswered): the link is
      // dead though the socket may not know yet.
      if (Date.now() - this.#lastInbound > 2 * interval + 1000) {
        this.#serverDisconnect = { reason: 'HEARTBEAT_TIMEOUT', message: 'no answer to heartbeats' };
        this.#dropSocket();
        return;
      }
      const id = newMessageId();
      this.#heartbeatSent.set(id, Date.now());
      if (this.#heartbeatSent.size > 8) this.#heartbeatSent.delete(this.#heartbeatSent.keys().next().value);
      this.#sendFrame({ messageType: MessageType.HEARTBEAT, messageId: id, payloadType: PayloadType.BINARY, payload: EMPTY });
    }, interval);
  }

  #stopHeartbeat() {
    clearInterval(this.#heartbeatTimer);
    this.#heartbeatTimer = null;
    this.#heartbeatSent.clear();
  }

  #scheduleRefresh() {
    clearTimeout(this.#refreshTimer);
    this.#refreshTimer = null;
    const exp = jwtExpiry(this.#token);
    if (!this.options.getToken || exp === undefined) return;
    const left = exp * 1000 - Date.now();
    const wait = Math.max(1000, Math.min(left - this.options.refreshMarginMs, left / 2));
    this.#refreshTimer = setTimeout(async () => {
      try {
        const token = await this.options.getToken({ clientId: this.clientId, reason: 'refresh' });
        await this.refreshToken(token);
      } catch (err) {
        this.#emit('error', { code: err.code ?? ErrorCode.INTERNAL, message: `token refresh failed: ${err.message}`, messageId: err.messageId, local: true });
      }
    }, Math.min(wait, 0x7fffffff));
  }

  /**
   * Sends a refresh CONNECT with a new token on the open session (PROTOCOL.md
   * step 4). Resolves with the new CONNECT_ACK; on rejection the session goes
   * on under its current token.
   */
  refreshToken(token) {
    if (this.state !== 'connected') return Promise.reject(closeError('not connected', 'NOT_CONNECTED'));
    if (this.#pending) return Promise.reject(new Error('a CONNECT is already in flight'));
    return new Promise((resolve, reject) => {
      const id = newMessageId();
      const timer = setTimeout(() => this.#failPending(closeError('no CONNECT_ACK in time', 'CONNECT_TIMEOUT')), this.options.connectTimeoutMs);
      this.#pending = {
        id,
        timer,
        reconnected: false,
        resolve: (ack) => { this.#token = token; this.#scheduleRefresh(); resolve(ack); },
        reject,
      };
      this.#sendStructured(MessageType.CONNECT, { client_id: this.clientId, auth_token: token }, id);
    });
  }

  #onClose(closeCode) {
    this.#ws = null;
    clearTimeout(this.#forceCloseTimer);
    this.#stopHeartbeat();
    clearTimeout(this.#refreshTimer);
    const wasConnected = this.state === 'connected';
    const disc = this.#serverDisconnect;
    if (this.#pending) {
      const auth = this.#authFailed;
      this.#failPending(auth
        ? Object.assign(new Error(auth.message), { code: auth.code, messageId: auth.messageId })
        : closeError(`socket closed (${closeCode}) before CONNECT_ACK`, 'SOCKET_CLOSED'));
    }
    if (this.#closing) {
      this.state = 'closed';
      const done = this.#closing;
      this.#closing = null;
      if (wasConnected) this.#emit('disconnect', { reason: DisconnectReason.CLIENT_LEFT, message: '', closeCode, willReconnect: false, resumable: false });
      done.resolve();
      return;
    }
    if (this.state === 'connecting' || this.state === 'closed') {
      // The first connect() failed: its promise says so; no reconnect.
      this.state = 'closed';
      return;
    }
    const authFailed = !disc && this.#authFailed;
    const reason = disc?.reason ?? (authFailed ? authFailed.code : 'CONNECTION_LOST');
    const willReconnect = !authFailed && this.#shouldReconnect(reason);
    // A failed reconnect attempt (no DISCONNECT) does not change whether the
    // session can be resumed; a DISCONNECT that ends it for good does.
    if (disc && !RESUMABLE_REASONS.has(disc.reason)) this.#resumeToken = undefined;
    const resumable = this.#resumeToken !== undefined;
    if (wasConnected) {
      this.#emit('disconnect', { reason, message: disc?.message ?? '', closeCode, willReconnect, resumable });
    }
    if (willReconnect) {
      // After a node shuts down, try the next URL first.
      if (reason === DisconnectReason.SERVER_SHUTDOWN || !wasConnected) this.#urlIndex++;
      this.#scheduleReconnect(reason);
    } else {
      this.state = 'closed';
      if (!wasConnected) {
        this.#emit('disconnect', { reason, message: disc?.message ?? '', closeCode, willReconnect: false, resumable });
      }
    }
  }

  #shouldReconnect(reason) {
    if (!this.options.reconnect) return false;
    if (this.#attempt >= this.options.maxAttempts) return false;
    if (reason === DisconnectReason.TOKEN_EXPIRED) return Boolean(this.options.getToken);
    if (reason === 'CONNECTION_LOST' || reason === 'HEARTBEAT_TIMEOUT') return true;
    return RECONNECT_REASONS.has(reason);
  }

  /** Jittered exponential backoff: a uniform delay in [d/2, d], d = initial × factor^attempt. */
  #backoffDelay() {
    const { initialDelayMs, backoffFactor, maxDelayMs } = this.options;
    const d = Math.min(maxDelayMs, initialDelayMs * backoffFactor ** this.#attempt);
    return d / 2 + Math.random() * (d / 2);
  }

  #scheduleReconnect(reason) {
    this.state = 'reconnecting';
    const delayMs = Math.round(this.#backoffDelay());
    this.#attempt++;
    const url = this.#urls[this.#urlIndex % this.#urls.length];
    this.#emit('reconnecting', { attempt: this.#attempt, delayMs, url, reason, resume: this.#resumeToken !== undefined });
    this.#reconnectTimer = setTimeout(async () => {
      this.#reconnectTimer = null;
      if (this.state !== 'reconnecting') return;
      try {
        if (this.options.getToken) {
          this.#token = await this.options.getToken({ clientId: this.clientId, reason });
        }
        if (this.state !== 'reconnecting') return;
        await this.#open(true);
      } catch (err) {
        // #onClose already scheduled the next try (or gave up) for socket
        // failures; a token callback failure has no socket to close.
        if (this.state === 'reconnecting' && !this.#ws && !this.#reconnectTimer) {
          if (this.#attempt < this.options.maxAttempts) this.#scheduleReconnect(reason);
          else this.state = 'closed';
        }
        this.#emit('error', { code: err.code ?? ErrorCode.INTERNAL, message: `reconnect failed: ${err.message}`, messageId: err.messageId, local: true });
      }
    }, delayMs);
  }

  #dropSocket() {
    const ws = this.#ws;
    if (!ws) return;
    try { ws.close(); } catch { /* already closing */ }
    // Some socket implementations wait for the peer's close frame; a dead
    // peer never sends it.
    clearTimeout(this.#forceCloseTimer);
    this.#forceCloseTimer = setTimeout(() => { if (this.#ws === ws) this.#onClose(1006); }, 2000);
  }

  #sendFrame(frame) {
    const ws = this.#ws;
    if (!ws || ws.readyState !== 1) throw closeError('not connected', 'NOT_CONNECTED');
    ws.send(encodeFrame(frame));
  }

  #sendStructured(messageType, fields, id = newMessageId()) {
    this.#sendFrame({ messageType, messageId: id, payloadType: PayloadType.JSON, payload: encodeJson(messageType, fields) });
    return id;
  }

  /**
   * Sends a SIGNAL_* frame; returns its message id (an ERROR about it, such
   * as PEER_NOT_FOUND, carries this id). Throws NOT_CONNECTED when the
   * session is not open.
   */
  sendSignal(messageType, target, data) {
    if (!SIGNAL_TYPES.has(messageType)) throw new TypeError('not a SIGNAL_* message type');
    if (this.state !== 'connected') throw closeError('not connected', 'NOT_CONNECTED');
    if (!isValidClientId(target)) throw new TypeError(`invalid target client id: ${target}`);
    if (typeof data !== 'string') throw new TypeError('signal data must be a string');
    return this.#sendStructured(messageType, { target_client_id: target, signal_data: data });
  }

  /** Sends SIGNAL_OFFER; returns the message id. */
  sendOffer(target, data) { return this.sendSignal(MessageType.SIGNAL_OFFER, target, data); }

  /** Sends SIGNAL_ANSWER; returns the message id. */
  sendAnswer(target, data) { return this.sendSignal(MessageType.SIGNAL_ANSWER, target, data); }

  /** Sends SIGNAL_ICE_CANDIDATE; returns the message id. */
  sendIceCandidate(target, data) { return this.sendSignal(MessageType.SIGNAL_ICE_CANDIDATE, target, data); }

  /**
   * Leaves: sends DISCONNECT (empty payload), stops reconnecting, and
   * resolves once the socket is closed (the server closes it; after
   * `timeoutMs` the client closes it itself).
   */
  close({ timeoutMs = 2000 } = {}) {
    // Leaving ends the session for good (not resumable).
    this.#resumeToken = undefined;
    clearTimeout(this.#reconnectTimer);
    this.#reconnectTimer = null;
    clearTimeout(this.#refreshTimer);
    this.#stopHeartbeat();
    const ws = this.#ws;
    if (!ws) {
      this.state = 'closed';
      return Promise.resolve();
    }
    return new Promise((resolve) => {
      this.#closing = { resolve };
      try {
        if (ws.readyState === 1) {
          this.#sendFrame({ messageType: MessageType.DISCONNECT, messageId: newMessageId(), payloadType: PayloadType.BINARY, payload: EMPTY });
        } else {
          ws.close();
        }
      } catch { /* closing anyway */ }
      clearTimeout(this.#forceCloseTimer);
      this.#forceCloseTimer = setTimeout(() => {
        if (this.#ws === ws) {
          try { ws.close(); } catch { /* ignore */ }
          this.#onClose(1000);
        }
      }, timeoutMs);
    });
  }
}

// ---------------------------------------------------------------- peer connection

/**
 * Wires an RTCPeerConnection to a client for one peer, with the "perfect
 * negotiation" pattern: either side may start negotiating; on an offer
 * collision the impolite side ignores the incoming offer and the polite
 * side rolls back. Local descriptions are sent as
 * `JSON.stringify(pc.localDescription)`, ICE candidates as
 * `JSON.stringify(candidate)`. Remote signals from `peerId` are applied
 * strictly one at a time, in arrival order, through a promise chain.
 *
 * What it sends while the client is reconnecting (an answer, candidates
 * gathered meanwhile) is held and sent in order after the reconnect, ahead
 * of anything the node held for a resumed session; if the session ends for
 * good instead, it is dropped and `onError` gets an Error with code
 * NOT_CONNECTED.
 *
 * Pass `null` as `pc` to have the helper create the RTCPeerConnection with
 * `client.rtcConfiguration(rtcConfig)`, so with the STUN/TURN servers of the
 * session's CONNECT_ACK (read at creation); the link's `pc` is it.
 *
 * @param {SignalManagerClient} client
 * @param {RTCPeerConnection|null} pc
 * @param {string} peerId
 * @param {{polite?: boolean, onError?: (err: Error) => void, rtcConfig?: object,
 *   RTCPeerConnection?: Function}} [options] `rtcConfig` and the
 *   `RTCPeerConnection` constructor (default the global one) are used only
 *   when `pc` is null
 * @returns {{pc: RTCPeerConnection, detach: () => void, idle: () => Promise<void>, receive: (signal: object) => void}}
 *   detach stops handling; idle resolves when every received signal has
 *   been applied; receive applies a signal event detail that arrived before
 *   this helper was attached (typically the offer that made you create it).
 */
export function attachPeerConnection(client, pc, peerId, { polite = false, onError, rtcConfig, RTCPeerConnection: Ctor } = {}) {
  if (pc == null) {
    const PeerConnection = Ctor ?? globalThis.RTCPeerConnection;
    if (typeof PeerConnection !== 'function') throw new TypeError('no RTCPeerConnection constructor');
    pc = new PeerConnection(client.rtcConfiguration(rtcConfig));
  }
  let makingOffer = false;
  let ignoreOffer = false;
  let chain = Promise.resolve();
  const report = (err) => {
    if (onError) onError(err);
    else console.error('signal-manager peer connection:', err);
  };

  // Signals this side produces while the client is between sockets (an
  // answer, candidates gathered meanwhile) wait here and go out in order
  // once it has reconnected: the node holds the peer's signals for a
  // resumable session, and this keeps ours, so a negotiation survives the
  // gap. They are dropped, with an error, if the session ends for good.
  const outbox = [];
  const send = (kind, data) => {
    if (outbox.length === 0) {
      try {
        client[kind](peerId, data);
        return;
      } catch (err) {
        if (err.code !== 'NOT_CONNECTED') throw err;
      }
    }
    // Between sockets: the socket is gone though the 'disconnect' event has
    // not come yet ('connected'), or a reconnect is under way. Otherwise
    // there is no session to wait for.
    if (client.state !== 'connected' && client.state !== 'reconnecting') {
      dropOutbox('the session ended');
      throw closeError('not connected', 'NOT_CONNECTED');
    }
    outbox.push([kind, data]);
  };
  const flush = () => {
    while (outbox.length > 0) {
      const [kind, data] = outbox[0];
      try {
        client[kind](peerId, data);
      } catch (err) {
        if (err.code === 'NOT_CONNECTED') return; // lost again: wait for the next reconnect
        report(err);
      }
      outbox.shift();
    }
  };
  const dropOutbox = (why) => {
    if (outbox.length === 0) return;
    report(Object.assign(new Error(`${outbox.length} signal(s) to ${peerId} not sent: ${why}`), { code: 'NOT_CONNECTED' }));
    outbox.length = 0;
  };
  // A reconnect flushes; a fresh connect() after the session ended does not
  // get the old session's signals.
  const onConnected = (info) => (info.reconnected ? flush() : dropOutbox('the session ended'));
  const onDisconnect = (d) => { if (!d.willReconnect) dropOutbox(`the session ended (${d.reason})`); };

  const onNegotiationNeeded = async () => {
    try {
      makingOffer = true;
      await pc.setLocalDescription();
      send('sendOffer', JSON.stringify(pc.localDescription));
    } catch (err) {
      report(err);
    } finally {
      makingOffer = false;
    }
  };

  const onIceCandidate = ({ candidate }) => {
    // A null candidate marks the end of gathering; nothing to send.
    if (!candidate) return;
    try {
      send('sendIceCandidate', JSON.stringify(candidate));
    } catch (err) {
      report(err);
    }
  };

  const applyDescription = async (description) => {
    const offerCollision = description.type === 'offer' && (makingOffer || pc.signalingState !== 'stable');
    ignoreOffer = !polite && offerCollision;
    if (ignoreOffer) return;
    await pc.setRemoteDescription(description);
    if (description.type === 'offer') {
      await pc.setLocalDescription();
      send('sendAnswer', JSON.stringify(pc.localDescription));
    }
  };

  const applyCandidate = async (candidate) => {
    try {
      await pc.addIceCandidate(candidate);
    } catch (err) {
      if (!ignoreOffer) throw err;
    }
  };

  const enqueue = (detail, apply) => {
    if (detail.from !== peerId) return;
    chain = chain.then(async () => {
      if (pc.signalingState === 'closed') return;
      let parsed;
      try {
        parsed = JSON.parse(detail.data);
      } catch {
        throw new Error(`peer ${peerId} sent signal data that is not JSON`);
      }
      await apply(parsed);
    }).catch(report);
  };

  const receive = (d) => enqueue(d, d.messageType === MessageType.SIGNAL_ICE_CANDIDATE ? applyCandidate : applyDescription);
  const offs = [
    client.on('offer', receive),
    client.on('answer', receive),
    client.on('ice', receive),
    client.on('connected', onConnected),
    client.on('disconnect', onDisconnect),
  ];
  pc.addEventListener('negotiationneeded', onNegotiationNeeded);
  pc.addEventListener('icecandidate', onIceCandidate);

  return {
    pc,
    detach() {
      outbox.length = 0;
      offs.forEach((off) => off());
      pc.removeEventListener('negotiationneeded', onNegotiationNeeded);
      pc.removeEventListener('icecandidate', onIceCandidate);
    },
    idle: () => chain,
    receive,
  };
}
