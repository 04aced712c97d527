// `cargo xtask bench video` runs this (after building release hark-server and hark-cli): the same
// 1:1 video call made by two hark-cli processes and by two headless Chromiums (each its own
// browser, with Chromium's own WebRTC and the page client of protocol-peer.js), side by side
// through one release hark-server on loopback, both stacks sending the same stamped test pattern
// from a Y4M file (hark-cli `--camera file:`, Chromium `--use-file-for-fake-video-capture`).
//
// Figures, each for both stacks so they read as ratios:
// - CPU per side over a window of the call once both sides show video (each hark-cli process; each
//   Chromium's whole process tree: browser, renderer, GPU, network and audio services), at
//   640x360 and 1280x720, with the frame rate each side decoded in that call;
// - accept -> first decoded remote frame at the side that accepted, p50 over several calls;
// - capture -> decoded at the far end, p50 each way over a call, at 640x360: both stacks' cameras
//   stamp each picture with the wall-clock time it was made (hark-cli `--camera test-clock`, the
//   page a canvas it stamps), and the far side reads the stamp as it decodes (hark-cli) or off
//   the frame's receive time plus its processing duration (Chromium's requestVideoFrameCallback
//   metadata for WebRTC video; its presentation time where those are missing, said in the table);
// - RSS of hark-cli at the end of the 720p window;
// - nine hark-cli processes in one group video call: CPU and RSS per participant, and the
//   slowest frame rate of the 72 streams (hark-cli's figures only).
// Markdown on stdout (xtask records it), progress on stderr.
//
// Usage: node tests/browser/video-bench.mjs [--seconds S] [--calls N] [--only 1:1|mesh|headed] [--layout JSON];
// HARK_BIN_DIR names the folder with hark-server and hark-cli (target/release by default).
// `--layout` (with `--only headed`): where the app's call view drew the far side's picture and
// the self view, as hark-appbench measured it; the headed pages draw theirs the same.

import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { launchChromium, uiDir } from './support.mjs';
import { binaryIn, fakeCameraArgs, post, servePeerPage, signInPage, spawnCli, startServer } from './hark-processes.mjs';

const binaries = process.env.HARK_BIN_DIR ?? resolve(uiDir, '../target/release');
const binary = (name) => binaryIn(binaries, name);
const PASSWORD = 'bench password 1';
const TICKS = 100; // USER_HZ on Linux
/** Length of the capture -> decoded call. */
const LATENCY_SECONDS = 20;
const SIZES = [
  [640, 360],
  [1280, 720],
];

const options = { seconds: 60, calls: 5, only: null, layout: null };
for (let i = 2; i < process.argv.length; i += 2) {
  const [name, value] = [process.argv[i], process.argv[i + 1]];
  if (name === '--seconds' && Number(value) > 0) options.seconds = Number(value);
  else if (name === '--calls' && Number(value) > 0) options.calls = Number(value);
  else if (name === '--only' && ['1:1', 'mesh', 'headed'].includes(value)) options.only = value;
  else if (name === '--layout' && value) options.layout = JSON.parse(value);
  else throw new Error(`unknown option ${name}; use --seconds S --calls N --only 1:1|mesh|headed --layout JSON`);
}

const say = (line) => process.stderr.write(`video-bench: ${line}\n`);
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

/** A process's parent and CPU seconds (user + system) so far, from /proc; null when it is gone. */
function procStat(pid) {
  try {
    const text = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // After the command name in parentheses: state, ppid, … utime (14th field), stime (15th).
    const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { ppid: Number(fields[1]), cpu: (Number(fields[11]) + Number(fields[12])) / TICKS };
  } catch {
    return null;
  }
}

/** Every live process's parent and CPU seconds, by pid. */
function allProcesses() {
  const all = new Map();
  for (const entry of readdirSync('/proc')) {
    const stat = /^\d+$/.test(entry) ? procStat(entry) : null;
    if (stat) all.set(Number(entry), stat);
  }
  return all;
}

/** CPU seconds (user + system) used so far by `pid`, or by it and all its descendants. */
function cpuSeconds(pid, tree = false) {
  if (!tree) return procStat(pid)?.cpu ?? 0;
  const all = allProcesses();
  let total = 0;
  const family = [pid];
  while (family.length > 0) {
    const p = family.pop();
    total += all.get(p)?.cpu ?? 0;
    for (const [child, s] of all) if (s.ppid === p) family.push(child);
  }
  return total;
}

function rssMiB(pid) {
  const status = readFileSync(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) / 1024;
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor((sorted.length - 1) / 2)] : NaN;
}

/** hark-cli as `user`, with a tone for a microphone, no speaker, loopback media and JSON events. */
function cli(base, user, args) {
  const common = ['--server', base, '--user', user, '--password', PASSWORD, '--json', '--mic', 'tone:440', '--speaker', 'none', '--bind', '127.0.0.1:0'];
  const run = spawnCli(binary('hark-cli'), [...common, ...args]);
  return {
    ...run,
    /** The `video_frames` lines about `user` (from `--video-out count`). */
    framesOf: (from) => run.texts().filter((l) => l.includes('"video_frames"') && l.includes(`"${from}"`)).map((l) => JSON.parse(l)),
  };
}

/**
 * One side of a Chromium call: its own browser (and fake camera), signed in as `user`; `headed`:
 * in a window on $DISPLAY, `[width, height]` (the browser's frame included).
 */
async function chromiumSide(site, base, user, camera, [width, height], clock = false, headed = null) {
  const before = new Set(childrenOf(process.pid));
  const chromium = await launchChromium(headed ? [...fakeCameraArgs(camera), `--window-size=${headed[0]},${headed[1]}`] : fakeCameraArgs(camera), { headless: !headed });
  const page = await chromium.browser.newPage();
  await page.goto(site.url);
  const token = (await post(base, '/v1/login', { user, password: PASSWORD })).body.token;
  await signInPage(page, base, token, width, height, false, clock);
  // Playwright starts the browser as a child of this process: the new child is the root of this
  // side's process tree.
  const pid = childrenOf(process.pid).find((child) => !before.has(child));
  if (!pid) throw new Error('no new browser process');
  return { chromium, page, pid };
}

/** The pids whose parent is `parent`. */
function childrenOf(parent) {
  return [...allProcesses()].filter(([, stat]) => stat.ppid === parent).map(([pid]) => pid);
}

/** Frames `user` has shown of `from` so far, and when its first came (page clock, ms). */
async function pageFrames(side, from) {
  return side.page.evaluate((from) => {
    const link = window.peer.links.get(from);
    return { frames: link?.frames ?? 0, firstFrameAt: link?.firstFrameAt ?? null, acceptedAt: window.peer.acceptedAt, size: link?.size };
  }, from);
}

async function waitFor(what, within, check) {
  const deadline = performance.now() + within;
  for (;;) {
    const value = await check();
    if (value) return value;
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

/** A Chromium call a -> b; resolves once both show video. */
async function chromiumCall(a, b) {
  const answered = b.page.evaluate(() => window.peer.answer());
  await a.page.evaluate(() => window.peer.call(['cb']));
  await answered;
  await waitFor('Chromium video both ways', 30_000, async () => (await pageFrames(a, 'cb')).frames > 0 && (await pageFrames(b, 'ca')).frames > 0);
}

async function chromiumHangup(a, b) {
  await a.page.evaluate(() => window.peer.hangup());
  await Promise.all([a.page.evaluate(() => window.peer.ended()), b.page.evaluate(() => window.peer.ended())]);
}

/** CPU % of a core for each pid (optionally its tree) over `seconds`, measured together. */
async function cpuOver(seconds, pids) {
  const before = pids.map(([pid, tree]) => cpuSeconds(pid, tree));
  const started = performance.now();
  await sleep(seconds * 1000);
  const wall = (performance.now() - started) / 1000;
  return pids.map(([pid, tree], i) => (100 * (cpuSeconds(pid, tree) - before[i])) / wall);
}

/** CPU of each Chromium side's whole tree over the window once the call has settled, and the frame rate cb decoded ca at. */
async function chromiumCallCpu(ca, cb) {
  await sleep(2000);
  const framesBefore = (await pageFrames(cb, 'ca')).frames;
  const x = xServer();
  const [caCpu, cbCpu, xCpu] = await cpuOver(options.seconds, [[ca.pid, true], [cb.pid, true], ...(x ? [[x, false]] : [])]);
  const after = await pageFrames(cb, 'ca');
  return { caCpu, cbCpu, xCpu: xCpu ?? null, size: after.size, fps: (after.frames - framesBefore) / options.seconds };
}

/** The X server the pages draw to: the Xvfb whose arguments name `DISPLAY` (none when headless). */
function xServer() {
  const display = process.env.DISPLAY;
  if (!display) return null;
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const comm = readFileSync(`/proc/${entry}/comm`, 'utf8').trim();
      const args = readFileSync(`/proc/${entry}/cmdline`, 'utf8').split('\0');
      if (comm === 'Xvfb' && args.includes(display)) return Number(entry);
    } catch {
      // Gone meanwhile.
    }
  }
  return null;
}

/** The p50 of some numbers, as text. */
const p50 = (values) => (values.length ? `${median(values).toFixed(0)}` : '–');

/**
 * Capture -> decoded at the far end, each way, in one call per stack at `size`: both cameras
 * stamp the wall-clock time of capture; each far side reads it off every picture it decodes.
 */
async function captureToDecoded(site, base, camera, size) {
  const label = `${size[0]}x${size[1]}`;
  say(`${label}: capture -> decoded, ${LATENCY_SECONDS} s calls`);
  const options = ['--camera', 'test-clock', '--video-out', 'latency'];
  const hb = cli(base, 'hb', [...options, 'answer', '--auto']);
  await hb.at('"signed_in"');
  const ha = cli(base, 'ha', [...options, 'call', 'hb', '--video', '--duration', String(LATENCY_SECONDS)]);
  await Promise.all([ha.exited, hb.exited]);
  const said = (run, from) => run.texts().filter((l) => l.includes('"video_latency"') && l.includes(`"${from}"`)).map((l) => JSON.parse(l))[0];
  const [toA, toB] = [said(ha, 'hb'), said(hb, 'ha')];
  if (!toA?.p50_ms || !toB?.p50_ms) throw new Error(`hark-cli said no latency:
${ha.report()}
${hb.report()}`);

  const ca = await chromiumSide(site, base, 'ca', camera, size, true);
  const cb = await chromiumSide(site, base, 'cb', camera, size, true);
  await chromiumCall(ca, cb);
  await sleep(LATENCY_SECONDS * 1000);
  const latencies = (side, from) => side.page.evaluate((from) => window.peer.links.get(from)?.latencies ?? [], from);
  const point = await cb.page.evaluate(() => window.peer.links.get('ca')?.latencyPoint);
  const [atA, atB] = [await latencies(ca, 'cb'), await latencies(cb, 'ca')];
  await chromiumHangup(ca, cb);
  await ca.chromium.close();
  await cb.chromium.close();
  if (atA.length === 0 || atB.length === 0) throw new Error('Chromium read no clock stamps');
  const hark = (toA.p50_ms + toB.p50_ms) / 2;
  const chromium = (median(atA) + median(atB)) / 2;
  const chromiumPoint = point === 'decoded' ? '' : ', to presentation';
  return `| capture -> decoded at the far end, ${label}, p50 each way (frames read) | ${toB.p50_ms} / ${toA.p50_ms} ms (${toB.frames} / ${toA.frames}) | ${p50(atB)} / ${p50(atA)} ms (${atB.length} / ${atA.length}${chromiumPoint}) | ${(hark / chromium).toFixed(2)}× |`;
}

/**
 * Nine hark-cli processes in one group video call (the mesh: each sends to 8 and decodes 8, at
 * the ladder's 320x180 15 fps): CPU and RSS per participant over the window, and the slowest
 * frame rate any participant decoded any other at over the whole call.
 */
async function meshOfNine(base) {
  const people = Array.from({ length: 9 }, (_, n) => `m${n}`);
  for (const user of people) await post(base, '/v1/register', { user, password: PASSWORD });
  say(`a mesh of nine, ${options.seconds} s`);
  const callSeconds = options.seconds + 15;
  const common = ['--camera', 'test-pattern', '--video-out', 'count'];
  // Everyone hangs up after the same time, so the call ends and each says what it decoded.
  const invitees = people.slice(1).map((user) => cli(base, user, [...common, 'answer', '--auto', '--duration', String(callSeconds)]));
  await Promise.all(invitees.map((run) => run.at('"signed_in"')));
  const caller = cli(base, 'm0', [...common, 'call', ...people.slice(1), '--video', '--duration', String(callSeconds)]);
  const all = [caller, ...invitees];
  // Everyone sees everyone: eight first frames each.
  const everyone = Promise.all(all.map(async (run) => {
    for (const other of people) {
      if (run !== all[people.indexOf(other)]) await run.line(`"first_remote_video_frame","user":"${other}"`);
    }
  }));
  const formed = await Promise.race([everyone.then(() => true), sleep(30_000).then(() => false)]);
  if (!formed) throw new Error(`the mesh did not form in 30 s:\n${all.map((r) => r.report()).join('\n')}`);
  const cpu = await cpuOver(options.seconds, all.map((run) => [run.pid, false]));
  const rss = all.map((run) => rssMiB(run.pid));
  const codes = await Promise.all(all.map((run) => run.exited));
  if (codes.some((code) => code !== 0)) throw new Error(`a mesh participant failed: ${codes}`);
  // The slowest pair over the whole call (the first frames came a few seconds in: a floor).
  const rates = all.flatMap((run, i) => people.filter((_, j) => j !== i).map((other) => (run.framesOf(other)[0]?.frames ?? 0) / callSeconds));
  const slowest = Math.min(...rates);
  const range = (values, unit) => {
    const [low, high] = [Math.min(...values).toFixed(0), Math.max(...values).toFixed(0)];
    return low === high ? `${low} ${unit}` : `${low}–${high} ${unit}`;
  };
  return [
    `| a mesh of 9 (320x180 15 fps each way), CPU per participant over ${options.seconds} s | ${range(cpu, '%')} (${cpu.reduce((a, b) => a + b, 0).toFixed(0)} % in all) | | |`,
    `| a mesh of 9, RSS per participant | ${range(rss, 'MiB')} | | |`,
    `| a mesh of 9, slowest of the 72 streams decoded (frames over the ${callSeconds} s call) | ${slowest.toFixed(1)} fps | | |`,
  ];
}

/** PSS in MiB of `pid` and all its descendants. */
function treePssMiB(pid) {
  const all = allProcesses();
  let kib = 0;
  const family = [pid];
  while (family.length > 0) {
    const p = family.pop();
    try {
      kib += Number(/Pss:\s+(\d+)/.exec(readFileSync(`/proc/${p}/smaps_rollup`, 'utf8'))?.[1] ?? 0);
    } catch {
      // Gone meanwhile.
    }
    for (const [child, s] of all) if (s.ppid === p) family.push(child);
  }
  return kib / 1024;
}

/**
 * Draws the far side's picture and the self view where, at the size and with the fit the app's
 * call view used (`--layout`), so both stacks scale and draw the same pixels: the far side's
 * video element takes the app's box and fit, a second element shows the page's own camera as
 * the app's self view does (mirrored when it is). Fails when the boxes do not fit the page.
 */
async function layOutAsTheApp(page, layout) {
  const fits = await page.evaluate(({ remote, self }) => {
    const css = (box) => `left: ${box.x}px; top: ${box.y}px; width: ${box.width}px; height: ${box.height}px; object-fit: ${box.fit};${box.mirror ? ' transform: scaleX(-1);' : ''}`;
    const style = document.createElement('style');
    style.textContent = `body { margin: 0; overflow: hidden; background: #111 }
      video { position: fixed; ${css(remote)} }
      video.self { z-index: 1; ${self ? css(self) : 'display: none;'} }`;
    document.head.append(style);
    if (self) {
      const video = document.createElement('video');
      video.className = 'self';
      video.muted = true;
      video.autoplay = true;
      video.srcObject = new MediaStream(window.peer.local.getVideoTracks());
      document.body.append(video);
    }
    return remote.x + remote.width <= innerWidth && remote.y + remote.height <= innerHeight;
  }, layout);
  if (!fits) throw new Error(`the app's layout ${JSON.stringify(layout)} does not fit the Chromium page`);
}

/**
 * `--only headed` (run by `cargo xtask bench app` under its Xvfb, beside the app): two headed
 * Chromiums in a 1:1 1280x720 call, each drawing the other's video in its window as the app does;
 * CPU and PSS of each side's whole process tree, and accept -> first frame. Plain lines on stdout.
 */
async function headedPair(site, base, dir) {
  const camera = join(dir, 'pattern-1280x720.y4m');
  const made = spawnSync(binary('hark-cli'), ['test-pattern', camera, '--size', '1280x720', '--frames', '150', '--fps', '30']);
  if (made.status !== 0) throw new Error(`hark-cli test-pattern: ${made.stderr}`);
  const layout = options.layout;
  // Room for the browser's own tab strip and toolbar above the page.
  const windowSize = layout ? [Math.max(layout.window[0], 800), layout.window[1] + 140] : [1100, 720];
  const ca = await chromiumSide(site, base, 'ca', camera, [1280, 720], false, windowSize);
  const cb = await chromiumSide(site, base, 'cb', camera, [1280, 720], false, windowSize);
  for (const side of [ca, cb]) {
    await side.page.evaluate(() => {
      window.peer.keepResolution = true;
      // The app plays out what it receives; Chromium decodes received audio only to play it.
      window.peer.playAudio = true;
    });
    if (layout) await layOutAsTheApp(side.page, layout);
  }
  const first = [];
  for (let n = 0; n < options.calls; n++) {
    await chromiumCall(ca, cb);
    const seen = await pageFrames(cb, 'ca');
    first.push(seen.firstFrameAt - seen.acceptedAt);
    if (n + 1 < options.calls) await chromiumHangup(ca, cb);
  }
  const { caCpu, cbCpu, xCpu, size, fps } = await chromiumCallCpu(ca, cb);
  const [caPss, cbPss] = [treePssMiB(ca.pid), treePssMiB(cb.pid)];
  await chromiumHangup(ca, cb);
  await ca.chromium.close();
  await cb.chromium.close();
  console.log(`  chromium headed, 1:1 1280x720 30 fps, ${options.seconds} s: CPU ${caCpu.toFixed(1)} % (caller) / ${cbCpu.toFixed(1)} % (callee) of one core, whole process tree each`);
  const drawn = layout
    ? `the far side in ${layout.remote.width}x${layout.remote.height} (${layout.remote.fit})${layout.self ? `, itself in ${layout.self.width}x${layout.self.height} (${layout.self.fit})` : ''}, as the app's call view`
    : 'the far side at its own size, no self view';
  console.log(`  chromium headed, drawing ${drawn}; playing out received audio`);
  console.log(`  chromium headed, decoding ${size} at ${fps.toFixed(1)} fps; PSS ${caPss.toFixed(0)} MiB / ${cbPss.toFixed(0)} MiB`);
  console.log(`  chromium headed, accept -> first decoded frame, p50 of ${options.calls}: ${median(first).toFixed(0)} ms`);
  if (xCpu !== null) console.log(`  chromium headed, the X server meanwhile (both pages): ${xCpu.toFixed(1)} %`);
  console.log(`  chromium-cpu-percent ${((caCpu + cbCpu) / 2).toFixed(1)}`);
  if (xCpu !== null) console.log(`  chromium-x-server-percent ${xCpu.toFixed(1)}`);
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'hark-video-bench-'));
  // Rate limits a benchmark does not meet: it signs in again for every call.
  const config = join(dir, 'bench.toml');
  writeFileSync(config, '[rate_limits]\ninvites_per_minute = 1000\nlogins_per_minute = 1000\nlogins_per_source_per_minute = 1000\nregistrations_per_minute = 1000\npassword_hashes_per_second = 1000\n');
  const { base, server } = await startServer(binary('hark-server'), join(dir, 'server'), config);
  const site = await servePeerPage();
  const rows = [];
  try {
    for (const user of ['ha', 'hb', 'ca', 'cb']) await post(base, '/v1/register', { user, password: PASSWORD });
    if (options.only === 'headed') {
      await headedPair(site, base, dir);
      return;
    }
    for (const size of options.only === 'mesh' ? [] : SIZES) {
      const [width, height] = size;
      const label = `${width}x${height}`;
      const camera = join(dir, `pattern-${label}.y4m`);
      const made = spawnSync(binary('hark-cli'), ['test-pattern', camera, '--size', label, '--frames', '150', '--fps', '30']);
      if (made.status !== 0) throw new Error(`hark-cli test-pattern: ${made.stderr}`);
      const hd = width >= 1280 ? ['--hd'] : [];

      // hark-cli: hb answers, ha calls; CPU once both decode.
      say(`${label}: hark-cli, ${options.seconds} s`);
      const hb = cli(base, 'hb', ['--camera', `file:${camera}`, ...hd, '--video-out', 'count', 'answer', '--auto']);
      await hb.at('"signed_in"');
      const ha = cli(base, 'ha', ['--camera', `file:${camera}`, ...hd, '--video-out', 'count', 'call', 'hb', '--video', '--duration', String(options.seconds + 5)]);
      await Promise.all([ha.at('"first_remote_video_frame"'), hb.at('"first_remote_video_frame"')]);
      await sleep(2000);
      const [haCpu, hbCpu] = await cpuOver(options.seconds, [
        [ha.pid, false],
        [hb.pid, false],
      ]);
      const rss = Math.max(rssMiB(ha.pid), rssMiB(hb.pid));
      await Promise.all([ha.exited, hb.exited]);
      const haFrames = ha.framesOf('hb')[0];
      const hbFrames = hb.framesOf('ha')[0];
      const harkFps = Math.min(haFrames?.frames ?? 0, hbFrames?.frames ?? 0) / (options.seconds + 5);
      const harkSize = `${haFrames?.width}x${haFrames?.height}`;

      // Chromium: two browsers, ca calls cb.
      say(`${label}: Chromium, ${options.seconds} s`);
      const ca = await chromiumSide(site, base, 'ca', camera, size);
      const cb = await chromiumSide(site, base, 'cb', camera, size);
      await chromiumCall(ca, cb);
      const { caCpu, cbCpu, size: chromiumSize, fps: chromiumFps } = await chromiumCallCpu(ca, cb);
      await chromiumHangup(ca, cb);

      // Accept -> first decoded frame at the side that accepted, over several calls.
      say(`${label}: accept -> first frame, ${options.calls} calls each`);
      const harkFirst = [];
      const answerer = cli(base, 'hb', ['--camera', `file:${camera}`, ...hd, '--video-out', 'none', 'answer', '--auto', '--loop', '--duration', '2']);
      await answerer.at('"signed_in"');
      for (let n = 0; n < options.calls; n++) {
        const since = performance.now();
        const caller = cli(base, 'ha', ['--camera', `file:${camera}`, ...hd, 'call', 'hb', '--video', '--duration', '2']);
        const incoming = await answerer.at('"incoming_call"', since);
        const first = await answerer.at('"first_remote_video_frame"', incoming);
        harkFirst.push(first - incoming);
        await caller.exited;
        await answerer.at('"call_ended"', first);
      }
      answerer.kill();
      const chromiumFirst = [];
      for (let n = 0; n < options.calls; n++) {
        await chromiumCall(ca, cb);
        const seen = await pageFrames(cb, 'ca');
        chromiumFirst.push(seen.firstFrameAt - seen.acceptedAt);
        await chromiumHangup(ca, cb);
      }
      await ca.chromium.close();
      await cb.chromium.close();
      const latency = width < 1280 ? [await captureToDecoded(site, base, camera, size)] : [];

      const cpu = (a, b) => `${a.toFixed(1)} % / ${b.toFixed(1)} %`;
      rows.push(
        `| CPU per side (caller / callee), ${label} 30 fps, ${options.seconds} s | ${cpu(haCpu, hbCpu)} (decoding ${harkSize} at ${harkFps.toFixed(1)} fps) | ${cpu(caCpu, cbCpu)} (decoding ${chromiumSize} at ${chromiumFps.toFixed(1)} fps) | ${((haCpu + hbCpu) / (caCpu + cbCpu)).toFixed(2)}× |`,
        `| accept -> first decoded frame, ${label}, p50 of ${options.calls} | ${median(harkFirst).toFixed(0)} ms | ${median(chromiumFirst).toFixed(0)} ms | ${(median(harkFirst) / median(chromiumFirst)).toFixed(2)}× |`,
      );
      rows.push(...latency);
      if (width >= 1280) rows.push(`| hark-cli RSS in a ${label} call (larger side) | ${rss.toFixed(0)} MiB | | |`);
    }
    if (options.only !== '1:1') rows.push(...(await meshOfNine(base)));
  } finally {
    await site.stop();
    server.kill();
    rmSync(dir, { recursive: true, force: true });
  }
  console.log('| figure | hark-cli | Chromium | hark / Chromium |');
  console.log('| --- | --- | --- | --- |');
  for (const row of rows) console.log(row);
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
