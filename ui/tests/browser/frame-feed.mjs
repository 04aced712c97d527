// A stand-in for the app's frame socket (crates/frames) in the browser tests: the same wire
// format and the same rules (token, a size before anything is sent, one picture per `next`, the
// newest only), fed solid-colour I420 pictures the test chooses, so a test can check the pixels
// the page drew.

import { WebSocketServer } from 'ws';

const HEADER_LEN = 16;

/** A solid I420 picture of `width` x `height` with these Y, U and V values. */
export function solidPicture(width, height, [y, u, v]) {
  const chroma = Math.ceil(width / 2) * Math.ceil(height / 2);
  const planes = Buffer.alloc(width * height + 2 * chroma);
  planes.fill(y, 0, width * height);
  planes.fill(u, width * height, width * height + chroma);
  planes.fill(v, width * height + chroma);
  return { width, height, planes };
}

function message(picture, sequence) {
  const header = Buffer.alloc(HEADER_LEN);
  header.writeUInt32LE(picture?.width ?? 0, 0);
  header.writeUInt32LE(picture?.height ?? 0, 4);
  header.writeUInt32LE(sequence, 8);
  header.writeUInt16LE(picture?.width ?? 0, 12);
  header.writeUInt16LE(picture?.height ?? 0, 14);
  return picture ? Buffer.concat([header, picture.planes]) : header;
}

export async function startFrameFeed() {
  const token = 'test-token-' + Math.random().toString(16).slice(2);
  const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((done) => server.once('listening', done));
  /** @type {Map<string, any>} newest picture per tile */
  const latest = new Map();
  /** Every page connection: its tile, the sizes it said, how many pictures it asked for. */
  const pages = [];
  let sequence = 0;

  const flush = (page) => {
    if (!page.mayShow || !page.sized || !latest.has(page.tile) || page.sent === latest.get(page.tile).sequence) return;
    const { picture, sequence: number } = latest.get(page.tile);
    page.socket.send(message(picture, number));
    page.sent = number;
    page.mayShow = false;
  };

  server.on('connection', (socket, request) => {
    const url = new URL(request.url ?? '/', 'http://x');
    const tile = decodeURIComponent(url.pathname.replace(/^\/tiles\//, ''));
    if (url.searchParams.get('token') !== token) {
      socket.close(1008, 'wrong token');
      return;
    }
    const page = { socket, tile, sizes: [], nexts: 0, mayShow: true, sized: false, sent: -1, open: true };
    pages.push(page);
    socket.on('message', (data) => {
      const said = JSON.parse(data.toString());
      if (said.type === 'size') {
        page.sizes.push({ width: said.width, height: said.height, fit: said.fit });
        page.sized = true;
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
      for (const page of pages) if (page.tile === tile && page.open) flush(page);
    },
    openPages(tile) {
      return pages.filter((p) => p.tile === tile && p.open);
    },
    stop: () => new Promise((done) => server.close(done)),
  };
}
