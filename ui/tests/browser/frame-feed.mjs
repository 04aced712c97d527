// A stand-in for the app's frame socket (crates/frames) in the browser tests: the same wire
// format and the same rules (token, one connection per page, a tile's size before anything of it
// is sent, one batch per `next` with the newest picture of each tile that moved), fed
// solid-colour I420 pictures the test chooses, so a test can check the pixels the page drew.
// A page that asks for VP8 gets I420 here, as the app's socket sends a tile that has no encoded
// frames (our own camera's), unless the test sends VP8 frames (`showVp8`), which go only to pages
// that asked for VP8, as the app's do.

import { WebSocketServer } from 'ws';

const HEADER_LEN = 20;

/** A solid I420 picture of `width` x `height` with these Y, U and V values. */
export function solidPicture(width, height, [y, u, v]) {
  const chroma = Math.ceil(width / 2) * Math.ceil(height / 2);
  const planes = Buffer.alloc(width * height + 2 * chroma);
  planes.fill(y, 0, width * height);
  planes.fill(u, width * height, width * height + chroma);
  planes.fill(v, width * height + chroma);
  return { width, height, planes };
}

/**
 * A batch entry: the tile's name, the header (crates/frames' wire_header; kind 0 for I420, 1 and 2
 * for a VP8 keyframe and delta), the planes or the VP8 frame.
 */
function entry(tile, picture, sequence) {
  const payload = picture?.vp8?.data ?? picture?.planes;
  const header = Buffer.alloc(HEADER_LEN);
  header.writeUInt16LE(picture?.width ?? 0, 0);
  header.writeUInt16LE(picture?.height ?? 0, 2);
  header.writeUInt16LE(picture?.width ?? 0, 4);
  header.writeUInt16LE(picture?.height ?? 0, 6);
  header.writeUInt32LE(sequence, 8);
  header.writeUInt8(picture?.vp8 ? (picture.vp8.key ? 1 : 2) : 0, 12);
  header.writeUInt32LE(payload?.length ?? 0, 16);
  const name = Buffer.from(tile, 'ascii');
  return Buffer.concat([Buffer.from([name.length]), name, header, ...(payload ? [payload] : [])]);
}

export async function startFrameFeed() {
  const token = 'test-token-' + Math.random().toString(16).slice(2);
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((done) => server.once('listening', done));
  /** @type {Map<string, any>} newest picture per tile */
  const latest = new Map();
  /** Every page connection: the tiles it shows (the sizes it said for each), how many batches it asked for. */
  const pages = [];
  let sequence = 0;

  const flush = (page) => {
    if (!page.mayShow) return;
    const moved = [...page.tiles].filter(
      ([tile, shown]) => shown.on && latest.has(tile) && shown.sent !== latest.get(tile).sequence && (!latest.get(tile).picture?.vp8 || shown.codec === 'vp8'),
    );
    if (moved.length === 0) return;
    page.socket.send(
      Buffer.concat(
        moved.map(([tile, shown]) => {
          const { picture, sequence: number } = latest.get(tile);
          shown.sent = number;
          return entry(tile, picture, number);
        }),
      ),
    );
    page.mayShow = false;
  };

  server.on('connection', (socket, request) => {
    const url = new URL(request.url ?? '/', 'http://x');
    if (url.pathname !== '/page' || url.searchParams.get('token') !== token) {
      socket.close(1008, 'wrong path or token');
      return;
    }
    const page = { socket, tiles: new Map(), nexts: 0, mayShow: true, open: true };
    pages.push(page);
    socket.on('message', (data) => {
      let said;
      try {
        said = JSON.parse(data.toString());
      } catch {
        said = {};
      }
      // The app's socket closes a page that says what it never should (policy, 1008).
      const validTile = typeof said.tile === 'string' && /^[A-Za-z0-9._-]{1,64}$/.test(said.tile);
      const validCodec = said.type !== 'show' || said.codec === undefined || ['i420', 'vp8'].includes(said.codec);
      if (!['show', 'hide', 'keyframe', 'next'].includes(said.type) || (said.type !== 'next' && !validTile) || !validCodec) {
        socket.close(1008, 'unknown message');
        return;
      }
      if (said.type === 'show') {
        const shown = page.tiles.get(said.tile) ?? { sizes: [], sent: -1 };
        // Shown anew (after a hide): its current picture goes first, as the app's socket does.
        if (!shown.on) shown.sent = -1;
        shown.on = true;
        shown.sizes.push({ width: said.width, height: said.height, fit: said.fit });
        shown.codec = said.codec ?? 'i420';
        page.tiles.set(said.tile, shown);
      } else if (said.type === 'hide') {
        const shown = page.tiles.get(said.tile);
        if (shown) shown.on = false;
      } else if (said.type === 'next') {
        page.nexts += 1;
        page.mayShow = true;
      }
      flush(page);
    });
    socket.on('close', () => (page.open = false));
  });

  return {
    info: { port: /** @type {any} */ (server.address()).port, token },
    pages,
    /** Shows `picture` (null: no picture now) on `tile`, to every page showing it. */
    show(tile, picture) {
      latest.set(tile, { picture, sequence: sequence++ });
      for (const page of pages) if (page.open) flush(page);
    },
    /** Sends a VP8 frame (`{ width, height, key, data }`) of `tile` to every page that decodes it. */
    showVp8(tile, { width, height, key, data }) {
      this.show(tile, { width, height, vp8: { key, data: Buffer.from(data) } });
    },
    /** The open pages showing `tile`: the sizes and codec they said for it, and how many batches they asked for. */
    openPages(tile) {
      return pages.filter((p) => p.open && p.tiles.get(tile)?.on).map((p) => ({ sizes: p.tiles.get(tile).sizes, codec: p.tiles.get(tile).codec, nexts: p.nexts }));
    },
    stop: () => new Promise((done) => server.close(done)),
  };
}
