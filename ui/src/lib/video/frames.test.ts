import { describe, expect, test } from 'vitest';

import { FakeClock } from '../testing/fakeClock';
import { FramePage, HEADER_LEN, RECONNECT_MS, i420Length, parseBatch, parsePicture, type FeedHost, type Picture } from './frames';

function message(width: number, height: number, sequence: number, fill = 0): ArrayBuffer {
  const buffer = new ArrayBuffer(HEADER_LEN + (width && height ? i420Length(width, height) : 0));
  const view = new DataView(buffer);
  view.setUint32(0, width, true);
  view.setUint32(4, height, true);
  view.setUint32(8, sequence, true);
  view.setUint16(12, width * 2, true);
  view.setUint16(14, height * 2, true);
  new Uint8Array(buffer, HEADER_LEN).fill(fill);
  return buffer;
}

/** A batch: each tile's name before its message. */
function batch(...entries: [string, ArrayBuffer][]): ArrayBuffer {
  const parts = entries.flatMap(([tile, message]) => [new Uint8Array([tile.length, ...[...tile].map((c) => c.charCodeAt(0))]), new Uint8Array(message)]);
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const part of parts) {
    out.set(part, at);
    at += part.length;
  }
  return out.buffer;
}

describe('parseBatch', () => {
  test('reads each entry at its own length, a clear among them, and refuses a cut or empty batch', () => {
    const entries = parseBatch(batch(['alice', message(4, 2, 1, 5)], ['_self', message(0, 0, 2)], ['bob.x', message(3, 3, 7, 9)]));
    expect(entries).not.toBe('invalid');
    const read = entries as Exclude<typeof entries, 'invalid'>;
    expect(read.map((e) => [e.tile, e.picture?.width ?? 0, e.picture?.sequence ?? null])).toEqual([
      ['alice', 4, 1],
      ['_self', 0, null],
      ['bob.x', 3, 7],
    ]);
    expect([...(read[2].picture as Picture).planes].every((b) => b === 9)).toBe(true);
    const whole = batch(['alice', message(4, 2, 1)]);
    expect(parseBatch(whole.slice(0, whole.byteLength - 1))).toBe('invalid');
    expect(parseBatch(new ArrayBuffer(0))).toBe('invalid');
    expect(parseBatch(new Uint8Array([0, ...new Uint8Array(message(4, 2, 1))]).buffer)).toBe('invalid');
  });
});

describe('parsePicture', () => {
  test('reads a picture, a clear, and refuses what the socket never sends', () => {
    const picture = parsePicture(message(4, 2, 9, 7)) as Picture;
    expect([picture.width, picture.height, picture.sequence, picture.sourceWidth, picture.sourceHeight]).toEqual([4, 2, 9, 8, 4]);
    expect(picture.planes.length).toBe(4 * 2 + 2 * 2 * 1);
    expect([...picture.planes].every((b) => b === 7)).toBe(true);
    expect(parsePicture(message(0, 0, 3))).toBeNull();
    expect(parsePicture(new ArrayBuffer(3))).toBe('invalid');
    expect(parsePicture(message(4, 2, 1).slice(0, HEADER_LEN + 5))).toBe('invalid');
    const oddSides = parsePicture(message(3, 3, 1)) as Picture;
    expect(oddSides.planes.length).toBe(9 + 2 * 4);
  });
});

/** A socket the test drives. */
class FakeSocket {
  binaryType = 'blob';
  readyState = 0;
  sent: unknown[] = [];
  onopen: (() => void) | null = null;
  onmessage: ((message: { data: unknown }) => void) | null = null;
  onclose: (() => void) | null = null;
  constructor(readonly url: string) {}
  send(text: string) {
    this.sent.push(JSON.parse(text));
  }
  close() {
    this.readyState = 3;
  }
  open() {
    this.readyState = 1;
    this.onopen?.();
  }
  deliver(data: ArrayBuffer) {
    this.onmessage?.({ data });
  }
  drop() {
    this.readyState = 3;
    this.onclose?.();
  }
}

function rig() {
  const clock = new FakeClock();
  const sockets: FakeSocket[] = [];
  const repaints: (() => void)[] = [];
  const host: FeedHost = {
    open: (url) => {
      const socket = new FakeSocket(url);
      sockets.push(socket);
      return socket as unknown as WebSocket;
    },
    nextRepaint: (draw) => repaints.push(draw),
    setTimeout: (run, ms) => clock.setTimeout(run, ms),
    clearTimeout: (handle) => clock.clearTimeout(handle as number),
  };
  const shown: (Picture | null)[] = [];
  const repaint = () => repaints.splice(0).forEach((draw) => draw());
  return { clock, sockets, host, shown, repaint };
}

describe('FramePage', () => {
  test('one socket says each tile its size, draws a batch at the next repaint, then asks once for the next; a burst draws only the newest', () => {
    const { sockets, host, repaint } = rig();
    const page = new FramePage({ port: 4100, token: 'abc' }, host);
    expect(sockets).toHaveLength(1);
    expect(sockets[0].url).toBe('ws://127.0.0.1:4100/page?token=abc');
    expect(sockets[0].binaryType).toBe('arraybuffer');
    const shown: [string, number | null][] = [];
    const alice = page.watch('alice.x', (p) => shown.push(['alice.x', p?.sequence ?? null]));
    const bob = page.watch('bob', (p) => shown.push(['bob', p?.sequence ?? null]));
    alice.resize(639.6, 360.2, 'cover');
    sockets[0].open();
    expect(sockets[0].sent).toEqual([{ type: 'show', tile: 'alice.x', width: 640, height: 360, fit: 'cover' }]);
    alice.resize(640, 360, 'cover');
    bob.resize(320, 180, 'contain');
    expect(sockets[0].sent).toHaveLength(2);
    expect(sockets).toHaveLength(1);

    sockets[0].deliver(batch(['alice.x', message(4, 2, 1)]));
    sockets[0].deliver(batch(['alice.x', message(4, 2, 2)], ['bob', message(4, 2, 8)], ['carol', message(4, 2, 1)]));
    expect(shown).toHaveLength(0);
    repaint();
    expect(shown).toEqual([
      ['alice.x', 2],
      ['bob', 8],
    ]);
    expect(sockets[0].sent.filter((m) => (m as { type: string }).type === 'next')).toHaveLength(1);

    sockets[0].deliver(batch(['bob', message(0, 0, 9)]));
    repaint();
    expect(shown.at(-1)).toEqual(['bob', null]);
    expect(sockets[0].sent.filter((m) => (m as { type: string }).type === 'next')).toHaveLength(2);

    bob.close();
    expect(sockets[0].sent.at(-1)).toEqual({ type: 'hide', tile: 'bob' });
    sockets[0].deliver(batch(['bob', message(4, 2, 10)]));
    repaint();
    expect(shown).toHaveLength(3);
    // A side beyond the socket's limit is said at the limit, not refused.
    alice.resize(20000, 9000, 'contain');
    expect(sockets[0].sent.at(-1)).toEqual({ type: 'show', tile: 'alice.x', width: 8192, height: 8192, fit: 'contain' });
    alice.close();
    page.close();
  });

  test('a batch that is not what the socket sends closes the connection, which opens again and says its tiles', () => {
    const { clock, sockets, host, repaint } = rig();
    const page = new FramePage({ port: 1, token: 't' }, host);
    const shown: unknown[] = [];
    page.watch('bob', (p) => shown.push(p)).resize(64, 36, 'cover');
    sockets[0].open();
    sockets[0].deliver(new ArrayBuffer(2));
    repaint();
    expect(shown).toEqual([]);
    expect(sockets[0].readyState).toBe(3);
    sockets[0].drop();
    clock.advance(RECONNECT_MS);
    sockets[1].open();
    expect(sockets[1].sent).toEqual([{ type: 'show', tile: 'bob', width: 64, height: 36, fit: 'cover' }]);
    page.close();
  });

  test('a tile shown twice is said at its largest box, the second starts from the last picture, hidden when both go', () => {
    const { sockets, host, repaint } = rig();
    const page = new FramePage({ port: 1, token: 't' }, host);
    sockets[0].open();
    const first: (number | null)[] = [];
    const small = page.watch('_self', (p) => first.push(p?.sequence ?? null));
    const large = page.watch('_self', () => undefined);
    small.resize(160, 90, 'cover');
    large.resize(1280, 720, 'contain');
    small.resize(200, 112, 'cover');
    expect(sockets[0].sent).toEqual([
      { type: 'show', tile: '_self', width: 160, height: 90, fit: 'cover' },
      { type: 'show', tile: '_self', width: 1280, height: 720, fit: 'contain' },
    ]);
    sockets[0].deliver(batch(['_self', message(4, 2, 6)]));
    repaint();
    const nexts = () => sockets[0].sent.filter((m) => (m as { type: string }).type === 'next').length;
    expect(nexts()).toBe(1);
    const later: (number | null)[] = [];
    const third = page.watch('_self', (p) => later.push(p?.sequence ?? null));
    repaint();
    expect([first, later]).toEqual([[6, 6], [6]]);
    expect(nexts()).toBe(1); // no batch came: no second one let into flight
    third.close();
    large.close();
    expect(sockets[0].sent.at(-1)).toEqual({ type: 'show', tile: '_self', width: 200, height: 112, fit: 'cover' });
    small.close();
    expect(sockets[0].sent.at(-1)).toEqual({ type: 'hide', tile: '_self' });
    page.close();
  });

  test('a picture that fails to draw does not stop the other tiles, nor the next batch', () => {
    const { sockets, host, repaint } = rig();
    const page = new FramePage({ port: 1, token: 't' }, host);
    const drawn: string[] = [];
    page.watch('bob', () => {
      throw new Error('cannot draw');
    }).resize(64, 36, 'cover');
    page.watch('carol', () => drawn.push('carol')).resize(64, 36, 'cover');
    sockets[0].open();
    sockets[0].deliver(batch(['bob', message(4, 2, 1)], ['carol', message(4, 2, 1)]));
    expect(() => repaint()).toThrow('cannot draw');
    expect(drawn).toEqual(['carol']);
    expect(sockets[0].sent.at(-1)).toEqual({ type: 'next' });
    page.close();
  });

  test('a page closed while its socket connects closes it once open, and draws nothing', () => {
    const { sockets, host, repaint } = rig();
    const page = new FramePage({ port: 1, token: 't' }, host);
    const shown: unknown[] = [];
    page.watch('bob', (p) => shown.push(p)).resize(64, 36, 'cover');
    page.close();
    expect(sockets[0].readyState).toBe(0);
    sockets[0].open();
    expect(sockets[0].readyState).toBe(3);
    sockets[0].deliver(batch(['bob', message(4, 2, 1)]));
    repaint();
    expect(shown).toEqual([]);
  });

  test('a dropped socket is opened again after a second and says its tiles again; not after close', () => {
    const { clock, sockets, host } = rig();
    const page = new FramePage({ port: 1, token: 't' }, host);
    page.watch('_self', () => undefined).resize(320, 180, 'contain');
    sockets[0].open();
    sockets[0].drop();
    clock.advance(RECONNECT_MS - 1);
    expect(sockets).toHaveLength(1);
    clock.advance(1);
    expect(sockets).toHaveLength(2);
    sockets[1].open();
    expect(sockets[1].sent).toEqual([{ type: 'show', tile: '_self', width: 320, height: 180, fit: 'contain' }]);
    page.close();
    sockets[1].drop();
    clock.advance(RECONNECT_MS * 5);
    expect(sockets).toHaveLength(2);
  });
});
