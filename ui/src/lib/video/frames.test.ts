import { describe, expect, test } from 'vitest';

import { FakeClock } from '../testing/fakeClock';
import { FrameFeed, HEADER_LEN, RECONNECT_MS, i420Length, parsePicture, type FeedHost, type Picture } from './frames';

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

describe('FrameFeed', () => {
  test('says the size, draws at the next repaint, then asks for the next picture; a burst draws only the newest', () => {
    const { sockets, host, shown, repaint } = rig();
    const feed = new FrameFeed({ port: 4100, token: 'abc' }, 'alice.x', (p) => shown.push(p), host);
    expect(sockets[0].url).toBe('ws://127.0.0.1:4100/tiles/alice.x?token=abc');
    expect(sockets[0].binaryType).toBe('arraybuffer');
    feed.resize(639.6, 360.2, 'cover');
    sockets[0].open();
    expect(sockets[0].sent).toEqual([{ type: 'size', width: 640, height: 360, fit: 'cover' }]);
    feed.resize(640, 360, 'cover');
    expect(sockets[0].sent).toHaveLength(1);

    sockets[0].deliver(message(4, 2, 1));
    expect(shown).toHaveLength(0);
    expect(sockets[0].sent).toHaveLength(1);
    sockets[0].deliver(message(4, 2, 2));
    repaint();
    expect(shown.map((p) => p?.sequence)).toEqual([2]);
    expect(sockets[0].sent.at(-1)).toEqual({ type: 'next' });
    expect(sockets[0].sent.filter((m) => (m as { type: string }).type === 'next')).toHaveLength(1);

    sockets[0].deliver(message(0, 0, 3));
    repaint();
    expect(shown.at(-1)).toBeNull();
    sockets[0].deliver(new ArrayBuffer(2));
    repaint();
    expect(shown).toHaveLength(2);
    feed.close();
  });

  test('a picture that fails to draw still asks for the next one', () => {
    const { sockets, host, repaint } = rig();
    const feed = new FrameFeed({ port: 1, token: 't' }, 'bob', () => {
      throw new Error('cannot draw');
    }, host);
    feed.resize(64, 36, 'cover');
    sockets[0].open();
    sockets[0].deliver(message(4, 2, 1));
    expect(() => repaint()).toThrow('cannot draw');
    expect(sockets[0].sent.at(-1)).toEqual({ type: 'next' });
    feed.close();
  });

  test('a tile gone while its socket connects closes it once open, and draws nothing', () => {
    const { sockets, host, shown, repaint } = rig();
    const feed = new FrameFeed({ port: 1, token: 't' }, 'bob', (p) => shown.push(p), host);
    feed.close();
    expect(sockets[0].readyState).toBe(0);
    sockets[0].open();
    expect(sockets[0].readyState).toBe(3);
    sockets[0].deliver(message(4, 2, 1));
    repaint();
    expect(shown).toEqual([]);
  });

  test('a dropped socket is opened again after a second, and not after close', () => {
    const { clock, sockets, host } = rig();
    const feed = new FrameFeed({ port: 1, token: 't' }, 'self', () => undefined, host);
    feed.resize(320, 180, 'contain');
    sockets[0].open();
    sockets[0].drop();
    clock.advance(RECONNECT_MS - 1);
    expect(sockets).toHaveLength(1);
    clock.advance(1);
    expect(sockets).toHaveLength(2);
    sockets[1].open();
    expect(sockets[1].sent).toEqual([{ type: 'size', width: 320, height: 180, fit: 'contain' }]);
    feed.close();
    sockets[1].drop();
    clock.advance(RECONNECT_MS * 5);
    expect(sockets).toHaveLength(2);
  });
});
