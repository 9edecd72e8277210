// A minimal RFC 6455 WebSocket server and client for the tests, on node:http
// and node:net only. Enough for one unfragmented message at a time, close
// handshakes and abrupt drops; not a general-purpose implementation.
import { createHash, randomBytes } from 'node:crypto';
import { createServer } from 'node:http';
import { connect as netConnect } from 'node:net';
import { EventEmitter } from 'node:events';

const GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11';
const acceptFor = (key) => createHash('sha1').update(key + GUID).digest('base64');

const OP_TEXT = 0x1;
const OP_BINARY = 0x2;
const OP_CLOSE = 0x8;
const OP_PING = 0x9;
const OP_PONG = 0xa;

function encodeWsFrame(opcode, payload, masked) {
  const len = payload.length;
  const head = [0x80 | opcode];
  const maskBit = masked ? 0x80 : 0;
  if (len < 126) head.push(maskBit | len);
  else if (len < 65536) head.push(maskBit | 126, len >> 8, len & 0xff);
  else {
    head.push(maskBit | 127, 0, 0, 0, 0);
    head.push((len >>> 24) & 0xff, (len >>> 16) & 0xff, (len >>> 8) & 0xff, len & 0xff);
  }
  if (!masked) return Buffer.concat([Buffer.from(head), payload]);
  const mask = randomBytes(4);
  const body = Buffer.alloc(len);
  for (let i = 0; i < len; i++) body[i] = payload[i] ^ mask[i & 3];
  return Buffer.concat([Buffer.from(head), mask, body]);
}

/** Splits a byte stream into WebSocket frames; calls onFrame(opcode, payload). */
class FrameParser {
  constructor(onFrame) {
    this.buf = Buffer.alloc(0);
    this.onFrame = onFrame;
  }

  push(chunk) {
    this.buf = Buffer.concat([this.buf, chunk]);
    for (;;) {
      if (this.buf.length < 2) return;
      const opcode = this.buf[0] & 0x0f;
      const masked = (this.buf[1] & 0x80) !== 0;
      let len = this.buf[1] & 0x7f;
      let off = 2;
      if (len === 126) {
        if (this.buf.length < 4) return;
        len = this.buf.readUInt16BE(2);
        off = 4;
      } else if (len === 127) {
        if (this.buf.length < 10) return;
        len = Number(this.buf.readBigUInt64BE(2));
        off = 10;
      }
      const maskOff = off;
      if (masked) off += 4;
      if (this.buf.length < off + len) return;
      let payload = Buffer.from(this.buf.subarray(off, off + len));
      if (masked) {
        const mask = this.buf.subarray(maskOff, maskOff + 4);
        for (let i = 0; i < len; i++) payload[i] ^= mask[i & 3];
      }
      this.buf = this.buf.subarray(off + len);
      this.onFrame(opcode, payload);
    }
  }
}

function closePayload(code, reason = '') {
  const r = Buffer.from(reason);
  const b = Buffer.alloc(2 + r.length);
  b.writeUInt16BE(code, 0);
  r.copy(b, 2);
  return b;
}

/**
 * Server side of one connection. Events: 'message' (Buffer, isBinary),
 * 'close' (code). Methods: send(bytes), sendText(str), close(code), drop().
 */
class ServerConnection extends EventEmitter {
  constructor(socket) {
    super();
    this.socket = socket;
    this.closed = false;
    this.closeSent = false;
    this.parser = new FrameParser((op, payload) => this.#onFrame(op, payload));
    socket.on('data', (d) => this.parser.push(d));
    socket.on('close', () => this.#finish(1006));
    socket.on('error', () => {});
  }

  #onFrame(op, payload) {
    if (op === OP_BINARY) this.emit('message', payload, true);
    else if (op === OP_TEXT) this.emit('message', payload, false);
    else if (op === OP_PING) this.socket.write(encodeWsFrame(OP_PONG, payload, false));
    else if (op === OP_CLOSE) {
      const code = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      if (!this.closeSent) this.socket.write(encodeWsFrame(OP_CLOSE, payload.subarray(0, 2), false));
      this.socket.end();
      this.#finish(code);
    }
  }

  #finish(code) {
    if (this.closed) return;
    this.closed = true;
    this.emit('close', code);
  }

  send(bytes) {
    if (!this.closed) this.socket.write(encodeWsFrame(OP_BINARY, Buffer.from(bytes), false));
  }

  sendText(text) {
    if (!this.closed) this.socket.write(encodeWsFrame(OP_TEXT, Buffer.from(text), false));
  }

  /** Sends a close frame and ends the TCP stream. */
  close(code = 1000) {
    if (this.closed || this.closeSent) return;
    this.closeSent = true;
    this.socket.write(encodeWsFrame(OP_CLOSE, closePayload(code), false));
    this.socket.end();
  }

  /** Destroys the TCP connection without a close frame (a crash). */
  drop() {
    this.socket.destroy();
  }
}

/**
 * Starts a WebSocket server on 127.0.0.1 and a free port; `onConnection`
 * receives each ServerConnection. Resolves to {url, port, connections, close()}.
 */
export async function startWsServer(onConnection) {
  const connections = [];
  const server = createServer((req, res) => {
    res.writeHead(426).end();
  });
  server.on('upgrade', (req, socket) => {
    const key = req.headers['sec-websocket-key'];
    if (!key) {
      socket.destroy();
      return;
    }
    socket.write(
      'HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n' +
        `Sec-WebSocket-Accept: ${acceptFor(key)}\r\n\r\n`,
    );
    socket.setNoDelay(true);
    const conn = new ServerConnection(socket);
    connections.push(conn);
    onConnection(conn);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address();
  return {
    url: `ws://127.0.0.1:${port}/`,
    port,
    connections,
    async close() {
      for (const c of connections) c.drop();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * A client with the browser WebSocket interface the SignalManagerClient uses:
 * readyState, binaryType, onopen/onmessage/onerror/onclose, send, close.
 */
export class NodeWebSocket {
  static CONNECTING = 0;
  static OPEN = 1;
  static CLOSING = 2;
  static CLOSED = 3;

  constructor(url) {
    const u = new URL(url);
    this.url = url;
    this.readyState = 0;
    this.binaryType = 'blob';
    this.onopen = null;
    this.onmessage = null;
    this.onerror = null;
    this.onclose = null;
    this.closeCode = 1006;
    const key = randomBytes(16).toString('base64');
    const socket = netConnect(Number(u.port || 80), u.hostname);
    this.socket = socket;
    let handshake = Buffer.alloc(0);
    const parser = new FrameParser((op, payload) => this.#onFrame(op, payload));
    socket.on('connect', () => {
      socket.setNoDelay(true);
      socket.write(
        `GET ${u.pathname || '/'} HTTP/1.1\r\nHost: ${u.host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
          `Sec-WebSocket-Key: ${key}\r\nSec-WebSocket-Version: 13\r\n\r\n`,
      );
    });
    socket.on('data', (chunk) => {
      if (this.readyState !== 0) {
        parser.push(chunk);
        return;
      }
      handshake = Buffer.concat([handshake, chunk]);
      const end = handshake.indexOf('\r\n\r\n');
      if (end < 0) return;
      const head = handshake.subarray(0, end).toString();
      if (!/^HTTP\/1\.1 101/.test(head) || !head.includes(acceptFor(key))) {
        socket.destroy();
        return;
      }
      this.readyState = 1;
      this.onopen?.({ type: 'open' });
      const rest = handshake.subarray(end + 4);
      if (rest.length) parser.push(rest);
    });
    socket.on('error', () => this.onerror?.({ type: 'error' }));
    socket.on('close', () => {
      const wasOpen = this.readyState;
      this.readyState = 3;
      if (wasOpen !== 3) this.onclose?.({ type: 'close', code: this.closeCode });
    });
  }

  #onFrame(op, payload) {
    if (op === OP_BINARY) {
      const data = this.binaryType === 'arraybuffer'
        ? payload.buffer.slice(payload.byteOffset, payload.byteOffset + payload.length)
        : payload;
      this.onmessage?.({ type: 'message', data });
    } else if (op === OP_TEXT) {
      this.onmessage?.({ type: 'message', data: payload.toString() });
    } else if (op === OP_PING) {
      this.socket.write(encodeWsFrame(OP_PONG, payload, true));
    } else if (op === OP_CLOSE) {
      this.closeCode = payload.length >= 2 ? payload.readUInt16BE(0) : 1005;
      if (this.readyState === 1) this.socket.write(encodeWsFrame(OP_CLOSE, payload.subarray(0, 2), true));
      this.readyState = 2;
      this.socket.end();
    }
  }

  send(data) {
    if (this.readyState !== 1) throw new Error('WebSocket is not open');
    const bytes = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength);
    this.socket.write(encodeWsFrame(typeof data === 'string' ? OP_TEXT : OP_BINARY, bytes, true));
  }

  close(code = 1000) {
    if (this.readyState >= 2) return;
    if (this.readyState === 0) {
      this.socket.destroy();
      return;
    }
    this.readyState = 2;
    this.closeCode = code;
    this.socket.write(encodeWsFrame(OP_CLOSE, closePayload(code), true));
  }
}
