// The page's side of the frame socket (crates/frames): one WebSocket per tile, carrying the newest
// picture of one person as I420, drawn on a 2D canvas through `VideoFrame` (measured: about a
// third of what WebGL costs under software GL, and no conversion to RGBA in Rust or here).
//
// The page says how large it shows the tile (device pixels), so the app sends no more pixels than
// are shown, and asks for each picture once it drew the last one: a busy or hidden page (no
// animation frames) skips pictures instead of queueing them.

import type { FrameSocketInfo } from '../bindings/FrameSocketInfo';

/** Bytes before the planes: width, height, sequence (u32 each), source width and height (u16). */
export const HEADER_LEN = 16;
/** How long a closed socket waits before it tries again (the app is still there; a page reload is not). */
export const RECONNECT_MS = 1000;

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
 * Reads a message: a picture, `null` for "no picture now" (the person's video ended), or
 * `'invalid'` for anything that is not what the socket sends.
 */
export function parsePicture(data: ArrayBuffer): Picture | null | 'invalid' {
  if (data.byteLength < HEADER_LEN) return 'invalid';
  const view = new DataView(data);
  const width = view.getUint32(0, true);
  const height = view.getUint32(4, true);
  const sequence = view.getUint32(8, true);
  if (width === 0 && height === 0) return data.byteLength === HEADER_LEN ? null : 'invalid';
  if (width === 0 || height === 0 || data.byteLength !== HEADER_LEN + i420Length(width, height)) return 'invalid';
  return {
    width,
    height,
    sequence,
    sourceWidth: view.getUint16(12, true),
    sourceHeight: view.getUint16(14, true),
    planes: new Uint8Array(data, HEADER_LEN),
  };
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

/**
 * One tile's pictures: connects, says the tile's size, hands each picture to `show` at the next
 * repaint and then asks for another. Reconnects while open; `close()` ends it.
 */
export class FrameFeed {
  private socket: WebSocket | null = null;
  private size: { width: number; height: number; fit: Fit } | null = null;
  private pending: Picture | null | undefined = undefined;
  private retry: unknown = null;
  private closed = false;

  constructor(
    private readonly info: FrameSocketInfo,
    private readonly tile: string,
    private readonly show: (picture: Picture | null) => void,
    private readonly host: FeedHost = pageHost,
  ) {
    this.connect();
  }

  /** The tile's box in device pixels (0 x 0 while hidden) and how the picture fits it. */
  resize(width: number, height: number, fit: Fit): void {
    const size = { width: Math.max(0, Math.round(width)), height: Math.max(0, Math.round(height)), fit };
    if (this.size && this.size.width === size.width && this.size.height === size.height && this.size.fit === fit) return;
    this.size = size;
    this.send({ type: 'size', ...size });
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

  private connect(): void {
    const url = `ws://127.0.0.1:${this.info.port}/tiles/${encodeURIComponent(this.tile)}?token=${this.info.token}`;
    const socket = this.host.open(url);
    socket.binaryType = 'arraybuffer';
    this.socket = socket;
    socket.onopen = () => {
      if (this.size) this.send({ type: 'size', ...this.size });
    };
    socket.onmessage = (message) => {
      if (!(message.data instanceof ArrayBuffer)) return;
      const picture = parsePicture(message.data);
      if (picture === 'invalid') return;
      const scheduled = this.pending !== undefined;
      this.pending = picture;
      if (!scheduled) this.host.nextRepaint(() => this.repaint());
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

  private repaint(): void {
    const picture = this.pending;
    this.pending = undefined;
    if (picture === undefined || this.closed) return;
    try {
      this.show(picture);
    } finally {
      // Asked for even when drawing failed: one bad picture must not stop the tile.
      this.send({ type: 'next' });
    }
  }

  private send(message: object): void {
    if (this.socket?.readyState === 1) this.socket.send(JSON.stringify(message));
  }
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
