import { describe, expect, test } from 'vitest';

import { FakeClock } from '../testing/fakeClock';
import {
  EntryKind,
  FramePage,
  HEADER_LEN,
  MAX_DECODE_QUEUE,
  MAX_DECODER_FAILURES,
  RECONNECT_MS,
  SELF_TILE,
  i420Length,
  parseBatch,
  parsePicture,
  type Encoded,
  type FeedHost,
  type Picture,
  type Vp8Decoder,
} from './frames';

/** An entry's header and payload as the socket writes them (crates/frames' wire_header). */
function entry(kind: number, width: number, height: number, sequence: number, payload: Uint8Array): ArrayBuffer {
  const buffer = new ArrayBuffer(HEADER_LEN + payload.length);
  const view = new DataView(buffer);
  view.setUint16(0, width, true);
  view.setUint16(2, height, true);
  view.setUint16(4, width * 2, true);
  view.setUint16(6, height * 2, true);
  view.setUint32(8, sequence, true);
  view.setUint8(12, kind);
  view.setUint32(16, payload.length, true);
  new Uint8Array(buffer, HEADER_LEN).set(payload);
  return buffer;
}

function message(width: number, height: number, sequence: number, fill = 0): ArrayBuffer {
  return entry(EntryKind.I420, width, height, sequence, new Uint8Array(width && height ? i420Length(width, height) : 0).fill(fill));
}

/** A VP8 frame's entry (the payload is whatever the fake decoder is told it is). */
function vp8(key: boolean, sequence: number, payload = [sequence]): ArrayBuffer {
  return entry(key ? EntryKind.Vp8Key : EntryKind.Vp8Delta, 64, 36, sequence, new Uint8Array(payload));
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
    expect([...(read[2].picture as Picture).planes!].every((b) => b === 9)).toBe(true);
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
    expect(picture.planes!.length).toBe(4 * 2 + 2 * 2 * 1);
    expect([...picture.planes!].every((b) => b === 7)).toBe(true);
    expect(parsePicture(message(0, 0, 3))).toBeNull();
    expect(parsePicture(new ArrayBuffer(3))).toBe('invalid');
    expect(parsePicture(message(4, 2, 1).slice(0, HEADER_LEN + 5))).toBe('invalid');
    const oddSides = parsePicture(message(3, 3, 1)) as Picture;
    expect(oddSides.planes!.length).toBe(9 + 2 * 4);
    // A size whose planes the length does not match, an unknown kind, an empty VP8 frame.
    const wrong = new Uint8Array(message(4, 2, 1));
    new DataView(wrong.buffer).setUint16(0, 5, true);
    expect(parsePicture(wrong.buffer)).toBe('invalid');
    expect(parsePicture(entry(7, 4, 2, 1, new Uint8Array(3)))).toBe('invalid');
    expect(parseBatch(batch(['bob', entry(EntryKind.Vp8Key, 64, 36, 1, new Uint8Array(0))]))).toBe('invalid');
  });

  test('reads VP8 entries with their kind, and a VP8 entry is not a picture', () => {
    const read = parseBatch(batch(['bob', vp8(true, 4, [1, 2, 3])], ['bob', vp8(false, 5)]));
    expect(read).not.toBe('invalid');
    const [key, delta] = read as Exclude<typeof read, 'invalid'>;
    expect([key.picture, key.encoded?.key, key.encoded?.sequence, [...(key.encoded?.data ?? [])]]).toEqual([null, true, 4, [1, 2, 3]]);
    expect([delta.encoded?.key, delta.encoded?.width, delta.encoded?.height]).toEqual([false, 64, 36]);
    expect(parsePicture(vp8(true, 1))).toBe('invalid');
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

/** A decoder the test drives: what it was given, and the pictures and failures it reports. */
class FakeDecoder implements Vp8Decoder {
  decoded: number[] = [];
  closed = false;
  decodeQueueSize = 0;
  constructor(
    readonly output: (frame: VideoFrame) => void,
    readonly error: (error: unknown) => void,
  ) {}
  decode(frame: Encoded) {
    if (this.closed) throw new Error('closed');
    this.decoded.push(frame.sequence);
  }
  close() {
    this.closed = true;
  }
  /** Reports a picture for the frame numbered `sequence`; returns the frame, to see it closed. */
  picture(sequence: number) {
    const frame = { displayWidth: 64, displayHeight: 36, timestamp: sequence, closed: false, close() { this.closed = true; } };
    this.output(frame as unknown as VideoFrame);
    return frame;
  }
}

function vp8Rig(supported: boolean | Promise<boolean> = true) {
  const base = rig();
  const decoders: FakeDecoder[] = [];
  base.host.vp8 = {
    supported: () => supported,
    decoder: (output, error) => {
      const decoder = new FakeDecoder(output, error);
      decoders.push(decoder);
      return decoder;
    },
  };
  const sent = (socket: FakeSocket) => socket.sent as { type: string; tile?: string; codec?: string }[];
  return { ...base, decoders, sent };
}

describe('FramePage decoding VP8', () => {
  test('asks for VP8, decodes each frame in order from a keyframe, and hands out only the newest picture', () => {
    const { sockets, host, repaint, decoders, sent } = vp8Rig();
    const page = new FramePage({ port: 1, token: 't' }, host);
    const shown: (number | null)[] = [];
    const frames: VideoFrame[] = [];
    page.watch('bob', (p) => {
      shown.push(p?.sequence ?? null);
      if (p?.frame) frames.push(p.frame);
    }).resize(640, 360, 'cover');
    sockets[0].open();
    expect(sent(sockets[0])).toEqual([{ type: 'show', tile: 'bob', width: 640, height: 360, fit: 'cover', codec: 'vp8' }]);
    // The decoder is ready before the first frame; a delta before any keyframe (a leftover) is
    // not decoded.
    expect(decoders).toHaveLength(1);
    sockets[0].deliver(batch(['bob', vp8(false, 1)]));
    expect(decoders[0].decoded).toEqual([]);
    sockets[0].deliver(batch(['bob', vp8(true, 2)], ['bob', vp8(false, 3)], ['bob', vp8(false, 4)]));
    expect(decoders).toHaveLength(1);
    expect(decoders[0].decoded).toEqual([2, 3, 4]);
    const [first, second] = [decoders[0].picture(2), decoders[0].picture(3)];
    expect(first.closed).toBe(true); // replaced before it was drawn
    repaint();
    expect(shown).toEqual([3]);
    expect(sent(sockets[0]).filter((m) => m.type === 'next')).toHaveLength(1);
    decoders[0].picture(4);
    repaint();
    expect(second.closed).toBe(true); // the next one is out: the last one is done with
    expect(shown).toEqual([3, 4]);
    // The video ends: the decoder goes, the tile clears, the next stream starts at its keyframe.
    sockets[0].deliver(batch(['bob', message(0, 0, 5)]));
    repaint();
    expect([decoders[0].closed, shown.at(-1)]).toEqual([true, null]);
    expect((frames.at(-1) as unknown as { closed: boolean }).closed).toBe(true); // cleared: nothing holds it
    sockets[0].deliver(batch(['bob', vp8(true, 6)]));
    expect(decoders).toHaveLength(2);
    page.close();
    expect(decoders[1].closed).toBe(true);
  });

  test('a failed decoder asks for a keyframe; failing again and again, the tile goes back to pictures', () => {
    const { sockets, host, repaint, decoders, sent } = vp8Rig();
    const page = new FramePage({ port: 1, token: 't' }, host);
    const shown: (number | null)[] = [];
    page.watch('bob', (p) => shown.push(p?.sequence ?? null)).resize(64, 36, 'contain');
    sockets[0].open();
    for (let n = 1; n <= MAX_DECODER_FAILURES; n++) {
      sockets[0].deliver(batch(['bob', vp8(true, n)]));
      expect(decoders).toHaveLength(n);
      decoders[n - 1].error(new Error('broken'));
      expect(decoders[n - 1].closed).toBe(true);
      // Frames after a failure, before the new keyframe, are not decoded.
      sockets[0].deliver(batch(['bob', vp8(false, n + 100)]));
      expect(decoders).toHaveLength(n);
    }
    const tail = sent(sockets[0]).filter((m) => m.type !== 'next');
    expect(tail.slice(1)).toEqual([
      ...Array.from({ length: MAX_DECODER_FAILURES - 1 }, () => ({ type: 'keyframe', tile: 'bob' })),
      { type: 'show', tile: 'bob', width: 64, height: 36, fit: 'contain' },
    ]);
    // Pictures from the app now; VP8 that was already on its way is dropped.
    sockets[0].deliver(batch(['bob', vp8(true, 50)], ['bob', message(4, 2, 51)]));
    repaint();
    expect([decoders.length, shown]).toEqual([MAX_DECODER_FAILURES, [51]]);
    page.close();
  });

  test('a decoder that falls behind holds the next batch until it catches up', () => {
    const { sockets, host, repaint, decoders, sent } = vp8Rig();
    const page = new FramePage({ port: 1, token: 't' }, host);
    page.watch('bob', () => undefined).resize(64, 36, 'contain');
    page.watch(SELF_TILE, () => undefined).resize(64, 36, 'contain');
    expect(decoders).toHaveLength(1); // none for our own tile, which never comes encoded
    sockets[0].open();
    sockets[0].deliver(batch(['bob', vp8(true, 1)]));
    decoders[0].decodeQueueSize = MAX_DECODE_QUEUE + 1;
    repaint();
    const nexts = () => sent(sockets[0]).filter((m) => m.type === 'next').length;
    expect(nexts()).toBe(0);
    decoders[0].decodeQueueSize = 0;
    decoders[0].picture(1);
    expect(nexts()).toBe(1);
    page.close();
  });

  test('without VP8 in the page (or before it is known) tiles are asked for as pictures', async () => {
    const none = vp8Rig(false);
    new FramePage({ port: 1, token: 't' }, none.host).watch('bob', () => undefined).resize(64, 36, 'contain');
    none.sockets[0].open();
    expect(none.sent(none.sockets[0])).toEqual([{ type: 'show', tile: 'bob', width: 64, height: 36, fit: 'contain' }]);

    let answer: (supported: boolean) => void = () => undefined;
    const later = vp8Rig(new Promise<boolean>((resolve) => (answer = resolve)));
    new FramePage({ port: 1, token: 't' }, later.host).watch('bob', () => undefined).resize(64, 36, 'contain');
    expect(later.sockets).toHaveLength(0); // no socket until it is known what to ask for
    answer(true);
    await Promise.resolve();
    later.sockets[0].open();
    expect(later.sent(later.sockets[0])).toEqual([{ type: 'show', tile: 'bob', width: 64, height: 36, fit: 'contain', codec: 'vp8' }]);
  });

  test('after a reconnect the app starts each decoded tile again from a keyframe', () => {
    const { clock, sockets, host, decoders } = vp8Rig();
    const page = new FramePage({ port: 1, token: 't' }, host);
    page.watch('bob', () => undefined).resize(64, 36, 'contain');
    sockets[0].open();
    sockets[0].deliver(batch(['bob', vp8(true, 1)]));
    sockets[0].drop();
    clock.advance(RECONNECT_MS);
    sockets[1].open();
    sockets[1].deliver(batch(['bob', vp8(false, 2)]));
    sockets[1].deliver(batch(['bob', vp8(true, 3)]));
    expect(decoders).toHaveLength(1); // a keyframe resets a VP8 decoder: the one there is kept
    expect(decoders[0].decoded).toEqual([1, 3]);
    page.close();
  });
});

describe('FramePage.warm', () => {
  test('makes and drops one decoder once VP8 is known to work, and none where it does not', async () => {
    let answer: (supported: boolean) => void = () => undefined;
    const later = vp8Rig(new Promise<boolean>((resolve) => (answer = resolve)));
    const warmed = new FramePage({ port: 1, token: 't' }, later.host).warm();
    expect(later.decoders).toHaveLength(0);
    answer(true);
    await warmed;
    expect(later.decoders.map((d) => d.closed)).toEqual([true]);

    const none = vp8Rig(false);
    await new FramePage({ port: 1, token: 't' }, none.host).warm();
    expect(none.decoders).toHaveLength(0);
  });
});
