// What the interop test and the video benchmark both stand on: a real hark-server and hark-cli
// processes from a build folder, the page that loads protocol-peer.js, and the Chromium switches
// for a fake camera playing a Y4M file.

import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));

/** `name` in the build folder `dir`, or an error saying how to build it. */
export function binaryIn(dir, name) {
  const path = join(dir, name);
  if (!existsSync(path)) throw new Error(`${path} is missing: build it first (cargo build -p ${name})`);
  return path;
}

/** Starts hark-server on a free loopback port (with `config`, a TOML file, if given); resolves to its base URL and the process. */
export async function startServer(bin, dataDir, config) {
  const args = ['serve', '--listen', '127.0.0.1:0', '--data-dir', dataDir, ...(config ? ['--config', config] : [])];
  const server = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let log = '';
  server.stderr.on('data', (chunk) => (log += chunk));
  const base = await new Promise((done, fail) => {
    let seen = '';
    server.stdout.on('data', (chunk) => {
      seen += chunk;
      const found = /listening on (http:\/\/\S+)/.exec(seen);
      if (found) done(found[1]);
    });
    server.on('exit', (code) => fail(new Error(`hark-server exited (${code}): ${seen}${log}`)));
  });
  return { base, server };
}

export async function post(base, path, body) {
  const response = await fetch(`${base}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });
  return { status: response.status, body: await response.json() };
}

/**
 * A hark-cli process. Its stdout lines are kept with the time each arrived (`performance.now()`);
 * `line(needle, after)` resolves with the first line containing `needle` that arrived at or
 * after `after` (ms), `at(needle, after)` with its arrival time; its log (stderr) is kept for a
 * failure's message.
 */
export function spawnCli(bin, args) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  /** @type {{ at: number, line: string }[]} */
  const lines = [];
  const log = [];
  child.stderr.on('data', (chunk) => log.push(chunk));
  const waiters = [];
  let buffered = '';
  child.stdout.on('data', (chunk) => {
    buffered += chunk;
    const complete = buffered.split('\n');
    buffered = complete.pop() ?? '';
    for (const line of complete) {
      const seen = { at: performance.now(), line };
      lines.push(seen);
      for (const waiter of waiters.filter((w) => !w.done && line.includes(w.needle) && seen.at >= w.after)) {
        waiter.done = true;
        waiter.resolve(seen);
      }
    }
  });
  const exited = new Promise((done) => child.on('exit', (code) => done(code)));
  const first = (needle, after = 0) => {
    const seen = lines.find((l) => l.line.includes(needle) && l.at >= after);
    return seen ? Promise.resolve(seen) : new Promise((resolve) => waiters.push({ needle, after, resolve, done: false }));
  };
  return {
    pid: child.pid,
    exited,
    kill: () => child.kill(),
    /** Its stdout so far, a string per line. */
    texts: () => lines.map((l) => l.line),
    line: async (needle, after = 0) => (await first(needle, after)).line,
    at: async (needle, after = 0) => (await first(needle, after)).at,
    /** Its events and log, for a failure's message. */
    report: () => `events:\n${lines.map((l) => l.line).join('\n')}\nlog:\n${Buffer.concat(log).toString().slice(-20_000)}`,
  };
}

/** Serves a page that loads protocol-peer.js (as `window.HarkPeer`), on loopback: a secure context for the camera. */
export async function servePeerPage() {
  const page = '<!doctype html><title>Hark peer</title><script type="module">import { HarkPeer } from "./protocol-peer.js"; window.HarkPeer = HarkPeer;</script>';
  const server = createServer((request, response) => {
    if (request.url === '/protocol-peer.js') {
      response.writeHead(200, { 'content-type': 'text/javascript' }).end(readFileSync(join(here, 'protocol-peer.js')));
    } else {
      response.writeHead(200, { 'content-type': 'text/html' }).end(page);
    }
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  return { url: `http://127.0.0.1:${port}/`, stop: () => new Promise((done) => server.close(done)) };
}

/** Chromium switches: camera and microphone allowed without asking, the camera playing `y4m`, loopback ICE candidates. */
export function fakeCameraArgs(y4m) {
  return [
    '--use-fake-ui-for-media-stream',
    '--use-fake-device-for-media-stream',
    `--use-file-for-fake-video-capture=${y4m}`,
    '--allow-loopback-in-peer-connection',
    '--autoplay-policy=no-user-gesture-required',
  ];
}

/** Signs a page (already on servePeerPage's URL) in as the holder of `token`, with its camera at `width`x`height`. */
export async function signInPage(page, base, token, width = 640, height = 360, readStamps = true, clock = false) {
  await page.waitForFunction(() => 'HarkPeer' in window);
  return page.evaluate(
    async ({ ws, token, width, height, readStamps, clock }) => {
      window.peer = new window.HarkPeer(ws, token);
      window.peer.readStamps = readStamps;
      window.peer.clock = clock;
      const user = await window.peer.signIn();
      await window.peer.openCamera(width, height);
      return user;
    },
    { ws: `${base.replace('http', 'ws')}/v1/ws`, token, width, height, readStamps, clock },
  );
}
