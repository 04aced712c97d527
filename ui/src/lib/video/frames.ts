// The page's side of the frame socket (crates/frames): one WebSocket per page for all the tiles
// it shows, carrying the newest picture of each as I420, drawn on 2D canvases through
// `VideoFrame` (measured: about a third of what WebGL costs under software GL, and no conversion
// to RGBA in Rust or here).
//
// The page says how large it shows each tile (device pixels), so the app sends no more pixels
// than are shown, and asks for each batch once it drew the last one: a busy or hidden page (no
// animation frames) skips pictures instead of queueing them, and the tiles that moved meanwhile
// come in one message and are drawn in one repaint.

import type { FrameSocketInfo } from '../bindings/FrameSocketInfo';

/** Bytes before the planes: width, height, sequence (u32 each), source width and height (u16). */
export const HEADER_LEN = 16;
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
  /** Y, U and V, one after another. */
  planes: Uint8Array;
}

/** The length of an I420 picture's planes. */
export function i420Length(width: number, height: number): number {
  const chroma = Math.ceil(width / 2) * Math.ceil(height / 2);
  return width * height + 2 * chroma;
}

/**
 * Reads a picture's header and planes: a picture, `null` for "no picture now" (the person's
 * video ended), or `'invalid'` for anything that is not what the socket sends.
 */
export function parsePicture(data: ArrayBuffer, offset = 0, length = data.byteLength - offset): Picture | null | 'invalid' {
  if (length < HEADER_LEN) return 'invalid';
  const view = new DataView(data, offset, length);
  const width = view.getUint32(0, true);
  const height = view.getUint32(4, true);
  const sequence = view.getUint32(8, true);
  if (width === 0 && height === 0) return length === HEADER_LEN ? null : 'invalid';
  if (width === 0 || height === 0 || length !== HEADER_LEN + i420Length(width, height)) return 'invalid';
  return {
    width,
    height,
    sequence,
    sourceWidth: view.getUint16(12, true),
    sourceHeight: view.getUint16(14, true),
    planes: new Uint8Array(data, offset + HEADER_LEN, length - HEADER_LEN),
  };
}

/** One tile's news in a batch. */
export interface Entry {
  tile: string;
  picture: Picture | null;
}

/**
 * Reads a batch: entries one after another, each the tile's name (its length in one byte, then
 * ASCII), a header and the planes the header's size calls for; `'invalid'` if any part is not
 * what the socket sends.
 */
export function parseBatch(data: ArrayBuffer): Entry[] | 'invalid' {
  const bytes = new Uint8Array(data);
  const entries: Entry[] = [];
  let at = 0;
  while (at < bytes.length) {
    const nameEnd = at + 1 + bytes[at];
    if (bytes[at] === 0 || nameEnd + HEADER_LEN > bytes.length) return 'invalid';
    const tile = String.fromCharCode(...bytes.subarray(at + 1, nameEnd));
    const view = new DataView(data, nameEnd, HEADER_LEN);
    const [width, height] = [view.getUint32(0, true), view.getUint32(4, true)];
    const length = HEADER_LEN + (width && height ? i420Length(width, height) : 0);
    if (nameEnd + length > bytes.length) return 'invalid';
    const picture = parsePicture(data, nameEnd, length);
    if (picture === 'invalid') return 'invalid';
    entries.push({ tile, picture });
    at = nameEnd + length;
  }
  return entries.length > 0 ? entries : 'invalid';
}

/** What the feed needs of the page around it (real ones in the app, fakes in unit tests). */
export interface FeedHost {
  /** Opens a socket (the page's `WebSocket`). */
  open(url: string): WebSocket;
  /** Runs `draw` before the next repaint (`requestAnimationFrame`). */
  nextRepaint(draw: () => void): void;
  setTimeout(run: () => void, ms: number): unknown;
  clearTimeout(handle: unknown): void;
}

export const pageHost: FeedHost = {
  open: (url) => new WebSocket(url),
  nextRepaint: (draw) => requestAnimationFrame(draw),
  setTimeout: (run, ms) => setTimeout(run, ms),
  clearTimeout: (handle) => clearTimeout(handle as ReturnType<typeof setTimeout>),
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

/**
 * A page's pictures: one socket, the tiles it shows (each possibly shown by several parts of the
 * page, the largest box said), each batch handed out at the next repaint and then the next asked
 * for. Reconnects while open, saying again what it shows; `close()` ends it.
 */
export class FramePage {
  private socket: WebSocket | null = null;
  /** Each shown tile: who shows it, the box last said, the last picture handed out. */
  private readonly tiles = new Map<string, { watchers: Set<Watcher>; said: Size | null; last: Picture | null | undefined }>();
  private readonly pending = new Map<string, Picture | null>();
  private scheduled = false;
  /** A batch came since the last `next`: the socket waits for one. */
  private owed = false;
  private retry: unknown = null;
  private closed = false;

  constructor(
    private readonly info: FrameSocketInfo,
    private readonly host: FeedHost = pageHost,
  ) {
    this.connect();
  }

  /** Shows `tile` (a user id, or `SELF_TILE`): its pictures go to `show` from its first resize. */
  watch(tile: string, show: (picture: Picture | null) => void): TileWatch {
    const watcher: Watcher = { show, size: null };
    let state = this.tiles.get(tile);
    if (!state) {
      state = { watchers: new Set(), said: null, last: undefined };
      this.tiles.set(tile, state);
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
        this.tiles.delete(tile);
        this.pending.delete(tile);
        if (now.said) this.send({ type: 'hide', tile });
      },
    };
  }

  close(): void {
    this.closed = true;
    if (this.retry !== null) this.host.clearTimeout(this.retry);
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
    this.send({ type: 'show', tile, ...largest });
  }

  private connect(): void {
    const socket = this.host.open(`ws://127.0.0.1:${this.info.port}/page?token=${this.info.token}`);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    socket.onopen = () => {
      // A new connection starts with its credit: nothing is owed on it.
      this.owed = false;
      for (const tile of this.tiles.keys()) this.sayShown(tile, true);
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
      for (const { tile, picture } of entries) if (this.tiles.has(tile)) this.pending.set(tile, picture);
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
      if (state) state.last = picture;
      for (const watcher of state?.watchers ?? []) {
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
    if (this.owed) this.send({ type: 'next' });
    this.owed = false;
    if (failed !== null) throw failed;
  }

  private send(message: object): void {
    if (this.socket?.readyState === 1) this.socket.send(JSON.stringify(message));
  }
}

const pages = new Map<string, FramePage>();

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
  const context = canvas.getContext('2d');
  if (!context) return;
  const frame = new VideoFrame(picture.planes, {
    format: 'I420',
    codedWidth: picture.width,
    codedHeight: picture.height,
    timestamp: picture.sequence,
    // VP8 and the camera conversions are BT.601, limited range; without saying so a browser may
    // read the planes as BT.709 (reds turn orange).
    colorSpace: { primaries: 'smpte170m', transfer: 'smpte170m', matrix: 'smpte170m', fullRange: false },
  });
  try {
    context.drawImage(frame, 0, 0);
  } finally {
    frame.close();
  }
}
