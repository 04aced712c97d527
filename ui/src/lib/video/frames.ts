// The page's side of the frame socket (crates/frames): one WebSocket per page for all the tiles
// it shows, carrying the newest picture of each as I420, drawn on 2D canvases through
// `VideoFrame` (measured: about a third of what WebGL costs under software GL, and no conversion
// to RGBA in Rust or here).
//
// Where WebCodecs can decode VP8, a remote person's video comes as it was sent and is decoded
// here, one `VideoDecoder` per tile: about a hundredth of the bytes cross, and the app decodes
// nothing for this page (measured, docs/BENCHMARKS.md). A decoder that fails asks for a
// keyframe; one that keeps failing gives the tile back to I420.
//
// The page says how large it shows each tile (device pixels), so the app sends no more pixels
// than are shown, and asks for each batch once it drew the last one: a busy or hidden page (no
// animation frames) skips pictures instead of queueing them, and the tiles that moved meanwhile
// come in one message and are drawn in one repaint.

import type { FrameSocketInfo } from '../bindings/FrameSocketInfo';

/**
 * Bytes before an entry's payload: width, height, source width and height (u16 each), sequence
 * (u32), kind (u8, `EntryKind`), three zero bytes, the payload's length (u32).
 */
export const HEADER_LEN = 20;
/** What an entry carries (crates/frames' EntryKind). */
export const EntryKind = { I420: 0, Vp8Key: 1, Vp8Delta: 2 } as const;
/** A decoder that failed this many times in a row gives its tile back to I420. */
export const MAX_DECODER_FAILURES = 3;
/** Frames waiting in a decoder beyond which the page stops asking for more until it catches up. */
export const MAX_DECODE_QUEUE = 4;
/** How long a closed socket waits before it tries again (the app is still there; a page reload is not). */
export const RECONNECT_MS = 1000;
/** The largest side a tile's box is said at (the socket's limit; far beyond any picture a call carries). */
export const MAX_SIDE = 8192;

export type Fit = 'contain' | 'cover';

/** Our own camera's tile (crates/frames' SELF_TILE: no user id starts with `_`). */
export const SELF_TILE = '_self';

export interface Picture {
  width: number;
  height: number;
  sequence: number;
  /** The size the picture had before it was scaled to the tile. */
  sourceWidth: number;
  sourceHeight: number;
  /** Y, U and V, one after another (a picture the app decoded)... */
  planes?: Uint8Array;
  /** ...or a picture this page decoded, owned by the page (never closed by whoever draws it). */
  frame?: VideoFrame;
}

/** A VP8 frame as it came. */
export interface Encoded {
  key: boolean;
  width: number;
  height: number;
  sequence: number;
  data: Uint8Array;
}

/** The length of an I420 picture's planes. */
export function i420Length(width: number, height: number): number {
  const chroma = Math.ceil(width / 2) * Math.ceil(height / 2);
  return width * height + 2 * chroma;
}

/** One tile's news in a batch: a picture the app decoded (`null`: no picture now), or VP8. */
export interface Entry {
  tile: string;
  picture: Picture | null;
  encoded?: Encoded;
}

/**
 * Reads one entry's header and payload at `offset`: its news and length, or `'invalid'` for
 * anything that is not what the socket sends.
 */
export function parseEntry(data: ArrayBuffer, offset: number): { entry: Omit<Entry, 'tile'>; length: number } | 'invalid' {
  if (offset + HEADER_LEN > data.byteLength) return 'invalid';
  const view = new DataView(data, offset, HEADER_LEN);
  const [width, height] = [view.getUint16(0, true), view.getUint16(2, true)];
  const [sourceWidth, sourceHeight] = [view.getUint16(4, true), view.getUint16(6, true)];
  const sequence = view.getUint32(8, true);
  const kind = view.getUint8(12);
  const payload = view.getUint32(16, true);
  const length = HEADER_LEN + payload;
  if (offset + length > data.byteLength) return 'invalid';
  const bytes = new Uint8Array(data, offset + HEADER_LEN, payload);
  if (kind === EntryKind.I420) {
    if (width === 0 && height === 0) return payload === 0 ? { entry: { picture: null }, length } : 'invalid';
    if (width === 0 || height === 0 || payload !== i420Length(width, height)) return 'invalid';
    return { entry: { picture: { width, height, sequence, sourceWidth, sourceHeight, planes: bytes } }, length };
  }
  if ((kind === EntryKind.Vp8Key || kind === EntryKind.Vp8Delta) && payload > 0) {
    return { entry: { picture: null, encoded: { key: kind === EntryKind.Vp8Key, width, height, sequence, data: bytes } }, length };
  }
  return 'invalid';
}

/** Reads a lone entry with no name (the unit tests' and the bench's form). */
export function parsePicture(data: ArrayBuffer): Picture | null | 'invalid' {
  const read = parseEntry(data, 0);
  if (read === 'invalid' || read.length !== data.byteLength || read.entry.encoded) return 'invalid';
  return read.entry.picture;
}

/**
 * Reads a batch: entries one after another, each the tile's name (its length in one byte, then
 * ASCII), a header and the payload the header's length says; `'invalid'` if any part is not
 * what the socket sends.
 */
export function parseBatch(data: ArrayBuffer): Entry[] | 'invalid' {
  const bytes = new Uint8Array(data);
  const entries: Entry[] = [];
  let at = 0;
  while (at < bytes.length) {
    const nameEnd = at + 1 + bytes[at];
    if (bytes[at] === 0 || nameEnd > bytes.length) return 'invalid';
    const tile = String.fromCharCode(...bytes.subarray(at + 1, nameEnd));
    const read = parseEntry(data, nameEnd);
    if (read === 'invalid') return 'invalid';
    entries.push({ tile, ...read.entry });
    at = nameEnd + read.length;
  }
  return entries.length > 0 ? entries : 'invalid';
}

/** A VP8 decoder as the page needs it (WebCodecs' `VideoDecoder` in the app). */
export interface Vp8Decoder {
  decode(frame: Encoded): void;
  close(): void;
  readonly decodeQueueSize: number;
}

/** Decoding VP8 in the page. */
export interface Vp8Decoding {
  /** Whether it can (`VideoDecoder.isConfigSupported`). */
  supported(): Promise<boolean> | boolean;
  /** A decoder whose pictures go to `output` and whose failure (it is closed then) to `error`. */
  decoder(output: (frame: VideoFrame) => void, error: (error: unknown) => void): Vp8Decoder;
}

/** What the feed needs of the page around it (real ones in the app, fakes in unit tests). */
export interface FeedHost {
  /** Opens a socket (the page's `WebSocket`). */
  open(url: string): WebSocket;
  /** Runs `draw` before the next repaint (`requestAnimationFrame`). */
  nextRepaint(draw: () => void): void;
  setTimeout(run: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
  /** Decoding VP8 here; absent: pictures come decoded, I420. */
  vp8?: Vp8Decoding;
}

/** The colours of the engine's pictures and of VP8 as it codes them: BT.601, limited range. */
const BT601: VideoColorSpaceInit = { primaries: 'smpte170m', transfer: 'smpte170m', matrix: 'smpte170m', fullRange: false };

let vp8Support: Promise<boolean> | null = null;

/** WebCodecs' VP8 decoder, when this webview has one (WebKitGTK decodes with GStreamer's vp8dec). */
const webCodecsVp8: Vp8Decoding = {
  supported: () =>
    (vp8Support ??=
      typeof VideoDecoder === 'undefined'
        ? Promise.resolve(false)
        : VideoDecoder.isConfigSupported({ codec: 'vp8' }).then(
            (answer) => answer.supported === true,
            () => false,
          )),
  decoder: (output, error) => {
    const decoder = new VideoDecoder({ output, error: (e) => error(e) });
    // VP8 says nothing of its colours, and a decoder left to guess may read them as BT.709
    // (Chromium's does: reds turn orange); the engine codes BT.601, limited range.
    decoder.configure({ codec: 'vp8', optimizeForLatency: true, colorSpace: BT601 });
    return {
      decode: (frame) => decoder.decode(new EncodedVideoChunk({ type: frame.key ? 'key' : 'delta', timestamp: frame.sequence, data: frame.data })),
      close: () => {
        if (decoder.state !== 'closed') decoder.close();
      },
      get decodeQueueSize() {
        return decoder.decodeQueueSize;
      },
    };
  },
};

export const pageHost: FeedHost = {
  open: (url) => new WebSocket(url),
  nextRepaint: (draw) => requestAnimationFrame(draw),
  setTimeout: (run, ms) => setTimeout(run, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
  vp8: webCodecsVp8,
};

type Size = { width: number; height: number; fit: Fit };

/** One tile's box, as one part of the page shows it; `close()` when that part goes. */
export interface TileWatch {
  /** The tile's box in device pixels (0 x 0 while hidden) and how the picture fits it. */
  resize(width: number, height: number, fit: Fit): void;
  close(): void;
}

interface Watcher {
  show: (picture: Picture | null) => void;
  size: Size | null;
}

/** One shown tile. */
interface TileState {
  watchers: Set<Watcher>;
  /** The box last said. */
  said: Size | null;
  /** The last picture handed out; a frame this page decoded stays open while it is. */
  last: Picture | null | undefined;
  /** How the app sends it: VP8 while this page decodes it. */
  codec: 'vp8' | 'i420';
  decoder: Vp8Decoder | null;
  /** Whether the decoder got its keyframe (it is made before, so that it is ready for it). */
  started: boolean;
  /** Decoder failures since its last picture. */
  failures: number;
}

/** Closes a picture this page decoded. */
function release(picture: Picture | null | undefined): void {
  picture?.frame?.close();
}

/**
 * A page's pictures: one socket, the tiles it shows (each possibly shown by several parts of the
 * page, the largest box said), each batch handed out at the next repaint and then the next asked
 * for. Reconnects while open, saying again what it shows; `close()` ends it.
 */
export class FramePage {
  private socket: WebSocket | null = null;
  private readonly tiles = new Map<string, TileState>();
  private readonly pending = new Map<string, Picture | null>();
  private scheduled = false;
  /** A batch came since the last `next`: the socket waits for one. */
  private owed = false;
  /** A `next` held back while a decoder catches up. */
  private deferred = false;
  private retry: unknown = null;
  private closed = false;
  /** Whether this page decodes VP8 (known before the socket opens). */
  private vp8 = false;
  /** Settles once that is known. */
  private readonly known: Promise<void>;

  constructor(
    private readonly info: FrameSocketInfo,
    private readonly host: FeedHost = pageHost,
  ) {
    const supported = host.vp8?.supported() ?? false;
    if (typeof supported === 'boolean') {
      this.vp8 = supported;
      this.known = Promise.resolve();
      this.connect();
      return;
    }
    const start = (vp8: boolean) => {
      this.vp8 = vp8;
      for (const state of this.tiles.values()) if (state.failures < MAX_DECODER_FAILURES) state.codec = vp8 ? 'vp8' : 'i420';
      if (!this.closed) this.connect();
    };
    this.known = supported.then(start, () => start(false));
  }

  /**
   * Makes (and drops) one decoder once it is known that this page decodes: the first a web
   * process makes loads GStreamer's decoder, measured at a few hundred milliseconds, which would
   * otherwise delay the first picture of the first video call.
   */
  warm(): Promise<void> {
    return this.known.then(() => {
      if (this.vp8 && this.host.vp8 && !this.closed) this.host.vp8.decoder(() => undefined, () => undefined).close();
    });
  }

  /** Shows `tile` (a user id, or `SELF_TILE`): its pictures go to `show` from its first resize. */
  watch(tile: string, show: (picture: Picture | null) => void): TileWatch {
    const watcher: Watcher = { show, size: null };
    let state = this.tiles.get(tile);
    if (!state) {
      state = { watchers: new Set(), said: null, last: undefined, codec: this.vp8 ? 'vp8' : 'i420', decoder: null, started: false, failures: 0 };
      this.tiles.set(tile, state);
      // A remote person's decoder is made now, not at their first keyframe: setting one up (a
      // GStreamer pipeline in WebKitGTK) takes tens of milliseconds, which would delay the first
      // picture of a call. Our own tile never comes encoded.
      if (state.codec === 'vp8' && tile !== SELF_TILE) this.makeDecoder(tile, state);
    } else if (state.last !== undefined && !this.pending.has(tile)) {
      // Another part of the page shows it already (a tile moving from the large view to the
      // small one mounts the new before the old goes): the new one starts from its picture.
      this.pending.set(tile, state.last);
      this.schedule();
    }
    state.watchers.add(watcher);
    return {
      resize: (width, height, fit) => {
        const side = (n: number) => Math.min(MAX_SIDE, Math.max(0, Math.round(n)));
        watcher.size = { width: side(width), height: side(height), fit };
        this.sayShown(tile);
      },
      close: () => {
        const now = this.tiles.get(tile);
        if (!now?.watchers.delete(watcher)) return;
        // Still shown elsewhere: perhaps smaller now, and no more pixels than shown should come.
        if (now.watchers.size > 0) return this.sayShown(tile);
        this.forget(tile, now);
        if (now.said) this.send({ type: 'hide', tile });
      },
    };
  }

  close(): void {
    this.closed = true;
    if (this.retry !== null) this.host.clearTimeout(this.retry);
    for (const [tile, state] of [...this.tiles]) this.forget(tile, state);
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    socket.onmessage = null;
    // A socket closed while it connects makes the browser warn: close it once it is open.
    if (socket.readyState === 0) socket.onopen = () => socket.close();
    else socket.close();
  }

  /** Tells the app the tile's largest box, if it changed (or `again` after a reconnect). */
  private sayShown(tile: string, again = false): void {
    const state = this.tiles.get(tile);
    if (!state) return;
    const sizes = [...state.watchers].flatMap((w) => (w.size ? [w.size] : []));
    if (sizes.length === 0) return;
    const largest = sizes.reduce((a, b) => (b.width * b.height > a.width * a.height ? b : a));
    const said = state.said;
    if (!again && said && said.width === largest.width && said.height === largest.height && said.fit === largest.fit) return;
    state.said = largest;
    // I420 is the socket's default: said only when it is not that.
    this.send({ type: 'show', tile, ...largest, ...(state.codec === 'vp8' ? { codec: 'vp8' } : {}) });
  }

  private connect(): void {
    const socket = this.host.open(`ws://127.0.0.1:${this.info.port}/page?token=${this.info.token}`);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    socket.onopen = () => {
      // A new connection starts with its credit: nothing is owed on it, and the app sends each
      // decoded tile again from a keyframe (which resets the decoder: it is kept).
      this.owed = false;
      this.deferred = false;
      for (const [tile, state] of this.tiles) {
        state.started = false;
        this.sayShown(tile, true);
      }
    };
    socket.onmessage = (message) => {
      if (!(message.data instanceof ArrayBuffer)) return;
      const entries = parseBatch(message.data);
      if (entries === 'invalid') {
        // Not what the socket sends: start again on a new connection (its close brings the
        // reconnect) rather than wait for a batch the socket will not send before a `next`.
        socket.close();
        return;
      }
      for (const entry of entries) this.take(entry);
      this.owed = true;
      this.schedule();
    };
    socket.onclose = () => {
      if (this.socket !== socket || this.closed) return;
      this.socket = null;
      this.retry = this.host.setTimeout(() => {
        this.retry = null;
        if (!this.closed) this.connect();
      }, RECONNECT_MS);
    };
  }

  /** One entry of a batch: a picture to hand out, or a frame to decode. */
  private take({ tile, picture, encoded }: Entry): void {
    const state = this.tiles.get(tile);
    if (!state) return;
    if (!encoded) {
      // The video ended (or the app sends pictures): a decoder starts again at the next keyframe.
      if (picture === null) this.dropDecoder(state);
      this.hand(tile, state, picture);
      return;
    }
    if (state.codec !== 'vp8') return;
    if (!state.started) {
      // The app starts a decoding page at a keyframe; anything else is a leftover.
      if (!encoded.key) return;
      state.started = true;
    }
    const decoder = state.decoder ?? this.makeDecoder(tile, state);
    if (!decoder) return;
    try {
      decoder.decode(encoded);
    } catch {
      this.failed(tile, state, decoder);
    }
  }

  private makeDecoder(tile: string, state: TileState): Vp8Decoder | null {
    if (!this.host.vp8) return null;
    const decoder: Vp8Decoder = this.host.vp8.decoder(
      (frame) => this.decoded(tile, state, decoder, frame),
      () => this.failed(tile, state, decoder),
    );
    state.decoder = decoder;
    return decoder;
  }

  /** Puts a picture out for the next repaint, closing a decoded one that never got out. */
  private hand(tile: string, state: TileState, picture: Picture | null): void {
    const before = this.pending.get(tile);
    if (before !== state.last) release(before);
    this.pending.set(tile, picture);
  }

  private decoded(tile: string, state: TileState, decoder: Vp8Decoder, frame: VideoFrame): void {
    if (this.closed || this.tiles.get(tile) !== state || state.decoder !== decoder) {
      frame.close();
      return;
    }
    state.failures = 0;
    const [width, height] = [frame.displayWidth, frame.displayHeight];
    this.hand(tile, state, { width, height, sequence: frame.timestamp, sourceWidth: width, sourceHeight: height, frame });
    this.schedule();
    this.releaseNext();
  }

  /** A decoder failed: ask for a keyframe, or, after too many failures, for pictures instead. */
  private failed(tile: string, state: TileState, decoder: Vp8Decoder): void {
    if (state.decoder !== decoder) return;
    this.dropDecoder(state);
    if (this.tiles.get(tile) !== state) return;
    state.failures += 1;
    if (state.failures >= MAX_DECODER_FAILURES) {
      state.codec = 'i420';
      this.sayShown(tile, true);
    } else {
      this.send({ type: 'keyframe', tile });
    }
  }

  /**
   * Sends the `next` held back for a decoder that was behind, once none is: after a picture,
   * and whenever a decoder goes (it will never catch up, and the socket sends nothing more to
   * this page until it hears `next`).
   */
  private releaseNext(): void {
    if (this.deferred && !this.backedUp()) {
      this.deferred = false;
      this.send({ type: 'next' });
    }
  }

  private dropDecoder(state: TileState): void {
    const decoder = state.decoder;
    state.decoder = null;
    state.started = false;
    decoder?.close();
    this.releaseNext();
  }

  /** A tile nobody on the page shows any more. */
  private forget(tile: string, state: TileState): void {
    this.dropDecoder(state);
    const pending = this.pending.get(tile);
    if (pending !== state.last) release(pending);
    release(state.last);
    this.tiles.delete(tile);
    this.pending.delete(tile);
  }

  /** Whether a decoder has more waiting than it should: the next batch waits for it. */
  private backedUp(): boolean {
    for (const state of this.tiles.values()) if ((state.decoder?.decodeQueueSize ?? 0) > MAX_DECODE_QUEUE) return true;
    return false;
  }

  private schedule(): void {
    if (this.scheduled) return;
    this.scheduled = true;
    this.host.nextRepaint(() => this.repaint());
  }

  private repaint(): void {
    this.scheduled = false;
    if (this.closed) return;
    const drawn = [...this.pending];
    this.pending.clear();
    let failed: unknown = null;
    for (const [tile, picture] of drawn) {
      const state = this.tiles.get(tile);
      if (!state) {
        release(picture);
        continue;
      }
      if (state.last !== picture) release(state.last);
      state.last = picture;
      for (const watcher of state.watchers) {
        try {
          watcher.show(picture);
        } catch (error) {
          // One bad picture must not stop the other tiles, nor the next batch.
          failed ??= error;
        }
      }
    }
    // Only for a batch received: a repaint for a newly shown tile's last picture must not let a
    // second batch into flight.
    if (this.owed) {
      if (this.backedUp()) this.deferred = true;
      else this.send({ type: 'next' });
    }
    this.owed = false;
    if (failed !== null) throw failed;
  }

  private send(message: object): void {
    if (this.socket?.readyState === 1) this.socket.send(JSON.stringify(message));
  }
}

const pages = new Map<string, FramePage>();
let sharedInfo: Promise<FrameSocketInfo | null> | null = null;

/** The socket's port and token, asked (with `ask`, the `frame_socket` command) once per page. */
export function frameSocketInfo(ask: () => Promise<FrameSocketInfo>): Promise<FrameSocketInfo | null> {
  // `ask` runs on a later tick, so a failing one (a test's backend without the command) only
  // means no video, never a throw into the caller.
  sharedInfo ??= Promise.resolve()
    .then(ask)
    .catch(() => {
      sharedInfo = null;
      return null;
    });
  return sharedInfo;
}

/**
 * Gets the page's frame connection and its VP8 decoding ready while a video call rings or is
 * placed, so that the first picture does not wait for them.
 */
export function prepareVideo(ask: () => Promise<FrameSocketInfo>): void {
  void frameSocketInfo(ask).then((info) => info && framePage(info).warm());
}

/** The page's one connection to the socket `info` names, made at first use. */
export function framePage(info: FrameSocketInfo): FramePage {
  const key = `${info.port}/${info.token}`;
  let page = pages.get(key);
  if (!page) {
    page = new FramePage(info);
    pages.set(key, page);
  }
  return page;
}

/** Draws a picture on a 2D canvas, sized to the picture (CSS scales it to the tile). */
export function drawPicture(canvas: HTMLCanvasElement, picture: Picture): void {
  if (canvas.width !== picture.width) canvas.width = picture.width;
  if (canvas.height !== picture.height) canvas.height = picture.height;
  // Which path the picture took, for the end-to-end test and for whoever debugs a tile.
  canvas.dataset.decodedBy = picture.frame ? 'page' : 'app';
  const context = canvas.getContext('2d');
  if (!context) return;
  if (picture.frame) {
    // The page's own decoder's picture: it owns the frame, and may hand it out again. Drawn at
    // its size and scaled by the page's repaint: scaling it to the tile here instead cost the
    // same in WebKit (docs/BENCHMARKS.md).
    context.drawImage(picture.frame, 0, 0);
    return;
  }
  if (!picture.planes) return;
  const frame = new VideoFrame(picture.planes, {
    format: 'I420',
    codedWidth: picture.width,
    codedHeight: picture.height,
    timestamp: picture.sequence,
    // VP8 and the camera conversions are BT.601, limited range; without saying so a browser may
    // read the planes as BT.709 (reds turn orange).
    colorSpace: BT601,
  });
  try {
    context.drawImage(frame, 0, 0);
  } finally {
    frame.close();
  }
}
