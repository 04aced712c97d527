// What the real-browser UI tests stand on: a static server for `dist/` with the app's CSP, Debian's
// Chromium through playwright-core, the IPC harness built for the page, and `Scenario`, which plays
// the Rust side (answers commands, records them) so each test can drive the app with engine events.

import { createServer } from 'node:http';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, extname, join, normalize, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';
import { build } from 'vite';

const here = dirname(fileURLToPath(import.meta.url));
export const uiDir = resolve(here, '../..');
const distDir = join(uiDir, 'dist');
export const screensDir = resolve(uiDir, '../target/ui-screens');

/** Roughly what Tauri applies; a violation shows up as a console error and fails the test. */
const CSP = "default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'";

const TYPES = { '.html': 'text/html', '.js': 'text/javascript', '.css': 'text/css', '.svg': 'image/svg+xml', '.png': 'image/png', '.ico': 'image/x-icon' };

/**
 * Serves `dist/` on 127.0.0.1 at a free port; resolves to its base URL and a stop function.
 * `connect` adds sources the page may connect to (the frame socket, as the app's CSP names it).
 */
export async function serveDist(connect = []) {
  const csp = connect.length ? `${CSP}; connect-src 'self' ${connect.join(' ')}` : CSP;
  if (!existsSync(join(distDir, 'index.html'))) throw new Error('dist/index.html is missing: run `vite build` first');
  const server = createServer((request, response) => {
    const path = normalize(decodeURIComponent(new URL(request.url ?? '/', 'http://x').pathname)).replace(/^([/\\])+/, '');
    const file = join(distDir, path === '' ? 'index.html' : path);
    if (!file.startsWith(distDir) || !existsSync(file)) {
      response.writeHead(404).end();
      return;
    }
    response.writeHead(200, { 'content-type': TYPES[extname(file)] ?? 'application/octet-stream', 'content-security-policy': csp });
    response.end(readFileSync(file));
  });
  await new Promise((done) => server.listen(0, '127.0.0.1', done));
  const { port } = /** @type {import('node:net').AddressInfo} */ (server.address());
  return { url: `http://127.0.0.1:${port}/`, stop: () => new Promise((done) => server.close(done)) };
}

/** The harness (Tauri's IPC mocks + hooks), bundled into one script for `page.addInitScript`. */
export async function buildHarness() {
  const result = await build({
    configFile: false,
    root: uiDir,
    logLevel: 'warn',
    build: {
      write: false,
      minify: false,
      lib: { entry: join(here, 'harness.ts'), formats: ['iife'], name: 'HarkHarness', fileName: 'harness' },
    },
  });
  const output = Array.isArray(result) ? result[0] : result;
  return /** @type {{ output: { code: string }[] }} */ (output).output[0].code;
}

/**
 * Debian's Chromium, headless. Playwright gives every launch a fresh temporary profile of its own
 * (and refuses a `--user-data-dir` argument), so no state leaks between runs. `extraArgs` go on
 * the command line too (a fake camera, for the interop test).
 */
export async function launchChromium(extraArgs = [], { headless = true } = {}) {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM ?? '/usr/bin/chromium',
    headless,
    args: [
      ...(headless ? ['--headless'] : []),
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-sync',
      '--disable-quic',
      ...extraArgs,
    ],
  });
  return { browser, close: () => browser.close() };
}

export const ACCOUNT = { user: 'me', nickname: 'Mia', avatar: null, server: 'http://127.0.0.1:7000', embedded: true };

export const SETTINGS = {
  server: null,
  proxy: '',
  incoming: 'banner',
  ringtone: { kind: 'bundled', name: 'classic' },
  ringtone_volume: 80,
  ringtone_muted: false,
  echo_cancellation: true,
  noise_suppression: true,
  microphone: null,
  speaker: null,
  language: 'en',
  theme: 'light',
  tel_links: false,
};

/** No policy file: everything allowed, nothing locked (`app_info.policy` without /etc/hark/policy.toml). */
export const POLICY = {
  file: null,
  reason: null,
  server_locked: false,
  server: null,
  builtin_server: true,
  video: true,
  invite_more: true,
  relay_only: false,
  custom_ringtones: true,
  default_incoming: null,
  incoming_locked: false,
  problems: [],
};

/**
 * The Rust side for one test: `replies` maps a command to its answer (a value, or a function of
 * the arguments that returns one or throws `{code, message}`); every command is recorded.
 * `policy` changes the administrator's policy `app_info` tells (from none, `POLICY`).
 */
export class Scenario {
  /** @param {{ account?: object | null, settings?: object, policy?: object, replies?: Record<string, unknown> }} options */
  constructor({ account = ACCOUNT, settings = {}, policy = {}, replies = {} } = {}) {
    this.settings = { ...SETTINGS, ...settings };
    this.policy = { ...POLICY, ...policy };
    /** @type {{ cmd: string, args: any }[]} */
    this.calls = [];
    this.replies = {
      app_info: () => ({ version: '0.1.0', embedded_server: 'http://127.0.0.1:7000', account, last_user: 'me', settings: this.settings, policy: this.policy }),
      policy: () => this.policy,
      sign_in: ({ request }) => ({ ...ACCOUNT, user: request.user, nickname: request.nickname ?? request.user }),
      sign_out: null,
      set_profile: null,
      contacts: [],
      add_contact: null,
      remove_contact: null,
      profiles: ({ users }) => users.map((user) => ({ user, nickname: user[0].toUpperCase() + user.slice(1), avatar: null })),
      place_call: null,
      accept_call: null,
      reject_call: null,
      hang_up: null,
      invite_more: null,
      join_call: null,
      incoming_call: null,
      take_link: null,
      take_crash_report: null,
      diagnostics: 'Hark: 0.1.0\nServer: built into this app (http://127.0.0.1:7000)\n',
      open_log_folder: null,
      active_calls: [],
      history: [],
      delete_history: null,
      clear_history: null,
      mute_microphone: null,
      mute_speaker: null,
      set_camera: null,
      audio_only: null,
      cameras: [],
      preview_camera: null,
      // No video layer unless a test says so: the page draws its pictures.
      video_layer: false,
      place_video: null,
      // No frame socket unless a test brings one (`frame-feed.mjs`): tiles show avatars.
      frame_socket: () => {
        throw { code: 'internal', message: 'no frame socket in this test' };
      },
      call_replay: { me: 'me', events: [], mutes: { microphone: false, speaker: false }, camera_on: true },
      show_main: null,
      devices: [
        { id: 'alsa:default', name: 'Default microphone', direction: 'input', is_default: true },
        { id: 'alsa:usb', name: 'USB headset', direction: 'input', is_default: false },
        { id: 'alsa:default', name: 'Default speaker', direction: 'output', is_default: true },
      ],
      play_test_sound: null,
      microphone_meter: null,
      settings: () => this.settings,
      save_settings: ({ settings }) => {
        this.settings = settings;
        return settings;
      },
      ringtones: [
        { source: { kind: 'bundled', name: 'classic' }, name: 'Classic' },
        { source: { kind: 'bundled', name: 'chime' }, name: 'Chime' },
      ],
      choose_ringtone_file: null,
      preview_ringtone: null,
      stop_preview: null,
      'plugin:window|close': null,
      'plugin:window|start_dragging': null,
      'plugin:window|is_fullscreen': false,
      'plugin:window|set_fullscreen': null,
      ...replies,
    };
  }

  /** The page's `__harkInvoke`. */
  async invoke(cmd, args) {
    this.calls.push({ cmd, args });
    if (!(cmd in this.replies)) return { error: { code: 'unknown_command', message: `the test does not know ${cmd}` } };
    const reply = this.replies[cmd];
    try {
      return { ok: typeof reply === 'function' ? await reply(args) : reply };
    } catch (error) {
      return { error };
    }
  }

  callsOf(cmd) {
    return this.calls.filter((c) => c.cmd === cmd).map((c) => c.args);
  }
}

/**
 * Opens the app in a fresh context as window `label`, with the harness and `scenario` in place.
 * `clockAt` installs Playwright's fake clock first (timers then move only with `page.clock`).
 * Resolves to the page and the list of console errors and page errors seen.
 */
export async function openApp(env, scenario, { label = 'main', viewport = { width: 1100, height: 720 }, clockAt, colorScheme = 'light' } = {}) {
  const context = await env.browser.newContext({ viewport, colorScheme, reducedMotion: 'reduce' });
  const page = await context.newPage();
  const problems = [];
  page.on('console', (message) => {
    if (message.type() === 'error' || message.type() === 'warning') problems.push(`${message.type()}: ${message.text()}`);
  });
  page.on('pageerror', (error) => problems.push(`pageerror: ${error.message}`));
  // Installed a minute early and paused at `clockAt`: time then moves only with `page.clock`
  // (left running, a loaded machine made a call timer read 01:11 where the test expected 01:05).
  if (clockAt !== undefined) {
    await page.clock.install({ time: clockAt - 60_000 });
    await page.clock.pauseAt(clockAt);
  }
  await page.exposeFunction('__harkInvoke', (cmd, args) => scenario.invoke(cmd, args));
  await page.addInitScript(`window.__HARK_TEST__ = ${JSON.stringify({ label })};`);
  await page.addInitScript({ content: env.harness });
  await page.goto(env.url);
  return { page, context, problems };
}

export function screenshot(page, name) {
  mkdirSync(screensDir, { recursive: true });
  return page.screenshot({ path: join(screensDir, `${name}.png`) });
}

/** Sends an engine event (as serde would shape it) into the page. */
export function emit(page, payload) {
  return page.evaluate((p) => window.__harkEmit(p), payload);
}

/** Sends the shell's `mutes` event (another window changed them) into the page. */
export function emitMutes(page, mutes) {
  return page.evaluate((m) => window.__harkEmitTo('mutes', m), mutes);
}

/** Sends news from the app's video layer into the page. */
export function layerNews(page, news) {
  return page.evaluate((n) => window.__harkLayerNews(n), news);
}

/** Sends a live-channel update into the page. */
export function live(page, update) {
  return page.evaluate((u) => window.__harkLive(u), update);
}

/** Waits until the element with `testid` shows exactly `want` (trimmed; '' for empty). */
export async function waitText(page, testid, want, timeout = 5000) {
  const end = Date.now() + timeout;
  let seen;
  for (;;) {
    seen = await text(page, testid).catch(() => undefined);
    if (seen === want) return;
    if (Date.now() > end) throw new Error(`${testid} shows ${JSON.stringify(seen)}, not ${JSON.stringify(want)}`);
    await new Promise((done) => setTimeout(done, 25));
  }
}

/** Trimmed text of the element with `testid`. */
export async function text(page, testid) {
  return ((await page.getByTestId(testid).first().textContent({ timeout: 2000 })) ?? '').trim();
}

/** Waits until `predicate()` (or the promise it gives) is true (for things recorded on the Node side, or read from the page). */
export async function until(predicate, what, timeout = 5000) {
  const end = Date.now() + timeout;
  while (!(await predicate())) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await new Promise((done) => setTimeout(done, 20));
  }
}
