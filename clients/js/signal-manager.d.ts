// Type declarations for signal-manager.js (the Signal Manager browser client).

export declare const START_BYTE: 0xa5;
export declare const HEADER_SIZE: 21;
export declare const MAX_PAYLOAD_SIZE: 65535;
export declare const MAX_FRAME_SIZE: 65556;
export declare const NIL_UUID: '00000000-0000-0000-0000-000000000000';

export declare const MessageType: Readonly<{
  CONNECT: 0x01;
  CONNECT_ACK: 0x02;
  DISCONNECT: 0x03;
  HEARTBEAT: 0x04;
  HEARTBEAT_ACK: 0x05;
  SIGNAL_OFFER: 0x10;
  SIGNAL_ANSWER: 0x11;
  SIGNAL_ICE_CANDIDATE: 0x12;
  ERROR: 0xff;
}>;
export type MessageTypeCode = (typeof MessageType)[keyof typeof MessageType];
export type SignalMessageType = 0x10 | 0x11 | 0x12;

export declare const PayloadType: Readonly<{
  BINARY: 0x01;
  JSON: 0x02;
  TEXT: 0x03;
  PROTOBUF: 0x04;
  CBOR: 0x05;
}>;
export type PayloadTypeCode = (typeof PayloadType)[keyof typeof PayloadType];

export type ErrorCodeName =
  | 'BAD_FRAME' | 'UNKNOWN_MESSAGE_TYPE' | 'UNSUPPORTED_PAYLOAD_TYPE' | 'BAD_PAYLOAD'
  | 'NOT_AUTHENTICATED' | 'AUTH_FAILED' | 'TOKEN_EXPIRED' | 'PEER_NOT_FOUND'
  | 'PEER_UNREACHABLE' | 'RATE_LIMITED' | 'SERVER_BUSY' | 'UNAVAILABLE' | 'INTERNAL'
  /** 1.1: the token's peers claim does not allow the signal's target. */
  | 'FORBIDDEN';
export declare const ErrorCode: Readonly<{ [K in ErrorCodeName]: K }>;

export type DisconnectReasonName =
  | 'CLIENT_LEFT' | 'REPLACED' | 'IDLE_TIMEOUT' | 'TOKEN_EXPIRED'
  | 'SERVER_SHUTDOWN' | 'SLOW_CONSUMER' | 'POLICY'
  /** 1.1: ended through the admin API; not resumable, no reconnect. */
  | 'KICKED';
export declare const DisconnectReason: Readonly<{ [K in DisconnectReasonName]: K }>;

/** A frame or payload that breaks the protocol; `code` is the ERROR code a server answers with. */
export declare class ProtocolError extends Error {
  constructor(code: ErrorCodeName, message: string, messageId?: string);
  readonly name: 'ProtocolError';
  readonly code: ErrorCodeName;
  /** The offending frame's id; the nil UUID when the header was unreadable. */
  readonly messageId: string;
}

export declare function isValidClientId(id: unknown): id is string;
export declare function formatUuid(bytes: Uint8Array, offset?: number): string;
export declare function parseUuid(text: string): Uint8Array;
/** A fresh random (v4) UUID, also outside secure contexts. */
export declare function newMessageId(): string;

export interface Frame {
  messageType: number;
  messageId: string;
  payloadType: number;
  payload: Uint8Array;
}

export declare function encodeFrame(frame: {
  messageType: number;
  messageId: string;
  payloadType: number;
  /** A string is encoded as UTF-8. Default: empty. */
  payload?: Uint8Array | string;
}): Uint8Array;

/** Checks the header (size, start byte, exact length, known types); throws ProtocolError. */
export declare function decodeFrame(data: ArrayBuffer | ArrayBufferView, options?: { sender?: 'client' | 'server' }): Frame;

/** Compact JSON in the protocol's field order; undefined fields are left out. */
export declare function encodeJson(messageType: number, fields: Record<string, unknown>): Uint8Array;

interface MessageBase {
  messageType: number;
  messageId: string;
  payloadType: number;
}
/** An ICE server as CONNECT_ACK carries it (1.1), ready for `new RTCPeerConnection({iceServers})`. */
export interface IceServer {
  urls: string[];
  /** TURN only: `<expiry>:<client_id>`. Absent for STUN. */
  username?: string;
  /** TURN only: the time-limited credential. Absent for STUN. */
  credential?: string;
}
export interface ConnectMessage extends MessageBase {
  clientId: string;
  authToken: string;
  /** 1.1: asks to resume the session this token was issued for; undefined when absent or empty. */
  resumeToken?: string;
}
export interface ConnectAckMessage extends MessageBase {
  sessionId: string;
  clientId: string;
  nodeId: string;
  heartbeatIntervalMs: number;
  /** 1.1: single-use secret for resuming this session; undefined when absent or empty. */
  resumeToken?: string;
  /** 1.1: true when the CONNECT resumed an existing session; false when absent. */
  resumed: boolean;
  /** 1.1: STUN/TURN servers; empty when absent. Empty username/credential are left out. */
  iceServers: IceServer[];
}
export interface SignalMessage extends MessageBase { targetClientId: string; sourceClientId?: string; signalData: string }
export interface ErrorMessage extends MessageBase { code: string; message: string }
/** reason and message are undefined for an empty DISCONNECT. */
export interface DisconnectMessage extends MessageBase { reason?: string; message?: string }
export interface RawMessage extends MessageBase { payload: Uint8Array }
export type Message = ConnectMessage | ConnectAckMessage | SignalMessage | ErrorMessage | DisconnectMessage | RawMessage;

/** Decodes a frame's payload (JSON for structured messages); throws ProtocolError. */
export declare function decodeMessage(frame: Frame): Message;
/** Header, direction and payload checks as a server applies them to a client's frame. */
export declare function decodeClientMessage(data: ArrayBuffer | ArrayBufferView): Message;
/** Header, direction and payload checks for a frame a server sent. */
export declare function decodeServerMessage(data: ArrayBuffer | ArrayBufferView): Message;

export interface ConnectedInfo {
  sessionId: string;
  clientId: string;
  nodeId: string;
  heartbeatIntervalMs: number;
  /** The node URL this session is on. */
  url: string;
  /** True when this session replaced a lost one automatically. */
  reconnected: boolean;
  /**
   * 1.1: true when the node resumed the session (same sessionId; the signals
   * it held follow this event). False for a new session, a node without
   * resume, and a token refresh.
   */
  resumed: boolean;
}

export interface SignalEventDetail {
  /** The sender's authenticated client id. */
  from: string;
  /** This client's id. */
  to: string;
  /** signal_data: for the peer connection helper, a JSON text. */
  data: string;
  /** The id the sender chose. */
  messageId: string;
  messageType: SignalMessageType;
}

export interface ErrorEventDetail {
  code: string;
  message: string;
  /** The id of the frame this error answers (for a signal: the id sendOffer & co. returned). */
  messageId?: string;
  /** True for a problem found by the client itself rather than an ERROR frame. */
  local?: boolean;
}

export interface DisconnectEventDetail {
  /** A DISCONNECT reason, AUTH_FAILED / TOKEN_EXPIRED (refused reconnect), CONNECTION_LOST or HEARTBEAT_TIMEOUT. */
  reason: DisconnectReasonName | 'AUTH_FAILED' | 'CONNECTION_LOST' | 'HEARTBEAT_TIMEOUT' | string;
  message: string;
  /** The WebSocket close code. */
  closeCode: number;
  willReconnect: boolean;
  /**
   * 1.1: true while the client holds a resume token for the session, i.e. it
   * ended without a DISCONNECT that rules out resuming (KICKED, REPLACED,
   * TOKEN_EXPIRED, POLICY, SLOW_CONSUMER, close()). A reconnect offers it.
   */
  resumable: boolean;
}

export interface ReconnectingEventDetail {
  attempt: number;
  delayMs: number;
  url: string;
  reason: string;
  /** 1.1: true when this attempt offers a resume token. */
  resume: boolean;
}

export interface SignalManagerEventMap {
  connected: ConnectedInfo;
  offer: SignalEventDetail;
  answer: SignalEventDetail;
  ice: SignalEventDetail;
  error: ErrorEventDetail;
  disconnect: DisconnectEventDetail;
  reconnecting: ReconnectingEventDetail;
  heartbeat: { rttMs: number };
}

export interface SignalManagerClientOptions {
  /** WebSocket constructor (default: globalThis.WebSocket). */
  WebSocket?: new (url: string) => WebSocket;
  /** Reconnect after SERVER_SHUTDOWN, IDLE_TIMEOUT, SLOW_CONSUMER, a lost link (default true). */
  reconnect?: boolean;
  /** First reconnect delay, ms (default 250). Delays are uniform in [d/2, d], d = initial x factor^attempt. */
  initialDelayMs?: number;
  /** Cap on the reconnect delay, ms (default 30000). */
  maxDelayMs?: number;
  /** Default 2. */
  backoffFactor?: number;
  /** Reconnect attempts before giving up (default Infinity). */
  maxAttempts?: number;
  /** Deadline for open + CONNECT_ACK, ms (default 10000). */
  connectTimeoutMs?: number;
  /**
   * Supplies a fresh token before each reconnect (reason: the disconnect
   * reason) and before the current JWT's exp (reason: 'refresh').
   */
  getToken?: (info: { clientId: string; reason: string }) => string | Promise<string>;
  /** Refresh this long before exp, ms (default 60000). */
  refreshMarginMs?: number;
}

export interface ConnectOptions {
  /**
   * 1.1: resume the session this token came from (e.g. `client.resumeToken`
   * saved before a page reload, or after the client gave up reconnecting).
   * An unknown, used or expired token is not an error: a new session starts
   * (`resumed: false`).
   */
  resumeToken?: string;
}

export type ClientState = 'idle' | 'connecting' | 'connected' | 'reconnecting' | 'closed';

export declare class SignalManagerClient extends EventTarget {
  constructor(options?: SignalManagerClientOptions);
  readonly state: ClientState;
  readonly sessionId?: string;
  readonly nodeId?: string;
  readonly clientId?: string;
  readonly heartbeatIntervalMs?: number;
  /** The URL of the current or last socket. */
  readonly url?: string;
  /** 1.1: whether the latest connect or reconnect resumed the session (CONNECT_ACK `resumed`). */
  readonly resumed: boolean;
  /**
   * 1.1: the resume token of the latest CONNECT_ACK while the session may
   * still be resumed; undefined after a DISCONNECT that ends it for good or
   * close(). Only for connect(..., {resumeToken}) from elsewhere (a reloaded
   * page); it is a secret like the auth token, single-use, and the client
   * offers it on its own reconnects without help.
   */
  readonly resumeToken?: string;
  /**
   * 1.1: the STUN/TURN servers of the latest CONNECT_ACK (a refresh's too),
   * a fresh copy on each read; empty before it and from a node without TURN
   * or STUN configured. TURN credentials are time-limited: do not log them.
   */
  readonly iceServers: IceServer[];

  /**
   * An RTCConfiguration: `overrides` plus `iceServers` from the session,
   * unless `overrides.iceServers` is given (used as it is). E.g.
   * `rtcConfiguration({iceTransportPolicy: 'relay'})` for a relay-only call.
   */
  rtcConfiguration(overrides?: RTCConfiguration): RTCConfiguration & { iceServers: RTCIceServer[] };

  /** Subscribes to an event's detail; returns an unsubscribe function. */
  on<K extends keyof SignalManagerEventMap>(type: K, fn: (detail: SignalManagerEventMap[K]) => void): () => void;

  /**
   * Opens a session; a list of URLs is tried in turn on reconnects. Rejects
   * with an Error whose `code` is an ERROR code, CONNECT_TIMEOUT or SOCKET_CLOSED.
   * Offers a resume token only when `options.resumeToken` is given; any
   * token the client still holds from an earlier session is forgotten.
   */
  connect(url: string | string[], clientId: string, token: string, options?: ConnectOptions): Promise<ConnectedInfo>;
  /** Refresh CONNECT on the open session; a refusal leaves the session as it was. */
  refreshToken(token: string): Promise<ConnectedInfo>;
  /** Returns the message id; throws an Error with code NOT_CONNECTED when not connected. */
  sendSignal(messageType: SignalMessageType, target: string, data: string): string;
  sendOffer(target: string, data: string): string;
  sendAnswer(target: string, data: string): string;
  sendIceCandidate(target: string, data: string): string;
  /** Sends DISCONNECT, stops reconnecting, resolves when the socket is closed. */
  close(options?: { timeoutMs?: number }): Promise<void>;
}

export interface PeerConnectionLink {
  /** The peer connection: the one passed in, or the one the helper created. */
  readonly pc: RTCPeerConnection;
  /** Stops handling signals and peer connection events. */
  detach(): void;
  /** Resolves when every received signal has been applied. */
  idle(): Promise<void>;
  /** Applies a signal that arrived before the link existed (e.g. the offer that started a call). */
  receive(signal: SignalEventDetail): void;
}

/**
 * Wires an RTCPeerConnection to the client for one peer (perfect
 * negotiation). Descriptions are sent as JSON.stringify(pc.localDescription),
 * candidates as JSON.stringify(candidate); remote signals are applied one at
 * a time in arrival order. What it sends while the client reconnects is held
 * and sent in order after the reconnect (dropped, with an onError of code
 * NOT_CONNECTED, if the session ends for good).
 */
export declare function attachPeerConnection(
  client: SignalManagerClient,
  /** null: the helper creates it with `client.rtcConfiguration(options.rtcConfig)`. */
  pc: RTCPeerConnection | null,
  peerId: string,
  options?: AttachOptions,
): PeerConnectionLink;

export interface AttachOptions {
  /** The polite side rolls back on an offer collision; give the two sides different values. */
  polite?: boolean;
  /** Receives negotiation errors (default: console.error). */
  onError?: (err: unknown) => void;
  /**
   * When `pc` is null: RTCConfiguration fields merged with the session's ICE
   * servers (see SignalManagerClient.rtcConfiguration), e.g.
   * `{iceTransportPolicy: 'relay'}`.
   */
  rtcConfig?: RTCConfiguration;
  /** When `pc` is null: the constructor to use (default globalThis.RTCPeerConnection). */
  RTCPeerConnection?: new (config?: RTCConfiguration) => RTCPeerConnection;
}
