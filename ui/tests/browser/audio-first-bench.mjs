// `cargo xtask bench call` runs this (after building release hark-server): the comparison for
// accept -> first decoded audio. Two headless Chromiums (each its own browser, Chromium's own
// WebRTC and the page client of protocol-peer.js, which connects after the answer as protocol v1
// does) place audio calls to each other through a release hark-server on loopback, the way
// hark-callbench places Hark's: the callee accepts 200 ms after it rang, and each side's first
// decoded audio is timed from that accept, on the wall clock both pages share. A page's first
// decoded audio is the first getStats reading (every 2 ms) whose inbound audio has samples that
// were not concealment; hark-callbench takes the engine's first decoded packet played.
//
// The last line of stdout is JSON: {"calls": N, "callee_p50": ms, "caller_p50": ms, "callee_ms":
// [...], "caller_ms": [...], "chromium": "version"}; progress goes to stderr.
//
// Usage: node tests/browser/audio-first-bench.mjs [--calls N]; HARK_BIN_DIR names the folder
// with hark-server (target/release by default).

import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { launchChromium, uiDir } from './support.mjs';
import { binaryIn, post, servePeerPage, startServer } from './hark-processes.mjs';

const binaries = process.env.HARK_BIN_DIR ?? resolve(uiDir, '../target/release');
const PASSWORD = 'bench password 1';
/** How long the callee lets it ring before answering, as hark-callbench does. */
const ANSWER_AFTER_MS = 200;

const options = { calls: 20 };
for (let i = 2; i < process.argv.length; i += 2) {
  const [name, value] = [process.argv[i], process.argv[i + 1]];
  if (name === '--calls' && Number(value) > 0) options.calls = Number(value);
  else throw new Error(`unknown option ${name}; use --calls N`);
}

const say = (line) => process.stderr.write(`audio-first-bench: ${line}\n`);

/** One side: its own browser with the fake microphone (Chromium's beep), signed in as `user`. */
async function side(site, base, user) {
  const chromium = await launchChromium(['--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream', '--allow-loopback-in-peer-connection', '--autoplay-policy=no-user-gesture-required']);
  const page = await chromium.browser.newPage();
  await page.goto(site.url);
  const token = (await post(base, '/v1/login', { user, password: PASSWORD })).body.token;
  await page.waitForFunction(() => 'HarkPeer' in window);
  await page.evaluate(
    async ({ ws, token }) => {
      window.peer = new window.HarkPeer(ws, token);
      await window.peer.signIn();
      await window.peer.openMicrophone();
    },
    { ws: `${base.replace('http', 'ws')}/v1/ws`, token },
  );
  return { chromium, page };
}

async function main() {
  const dir = mkdtempSync(join(tmpdir(), 'hark-audio-first-'));
  const config = join(dir, 'bench.toml');
  writeFileSync(config, '[rate_limits]\ninvites_per_minute = 1000\nlogins_per_minute = 1000\nlogins_per_source_per_minute = 1000\nregistrations_per_minute = 1000\npassword_hashes_per_second = 1000\n');
  const { base, server } = await startServer(binaryIn(binaries, 'hark-server'), join(dir, 'server'), config);
  const site = await servePeerPage();
  const sides = [];
  try {
    for (const user of ['ca', 'cb']) await post(base, '/v1/register', { user, password: PASSWORD });
    const caller = await side(site, base, 'ca');
    const callee = await side(site, base, 'cb');
    sides.push(caller, callee);
    const version = caller.chromium.browser.version();
    const calleeMs = [];
    const callerMs = [];
    for (let n = 1; n <= options.calls; n++) {
      const answered = callee.page.evaluate((after) => window.peer.answer('audio', after), ANSWER_AFTER_MS);
      await caller.page.evaluate(() => window.peer.call(['cb'], 'audio'));
      await answered;
      const [heardAtCallee, heardAtCaller] = await Promise.all([
        callee.page.evaluate(() => window.peer.firstAudio('ca')),
        caller.page.evaluate(() => window.peer.firstAudio('cb')),
      ]);
      const acceptedAt = await callee.page.evaluate(() => window.peer.acceptedWallAt);
      if (heardAtCallee === null || heardAtCaller === null) throw new Error(`call ${n}: no audio within 10 s`);
      calleeMs.push(heardAtCallee - acceptedAt);
      callerMs.push(heardAtCaller - acceptedAt);
      say(`call ${n}/${options.calls}: first audio at the callee ${calleeMs.at(-1)} ms, at the caller ${callerMs.at(-1)} ms after accept`);
      await caller.page.evaluate(() => window.peer.hangup());
      await Promise.all([caller.page.evaluate(() => window.peer.ended()), callee.page.evaluate(() => window.peer.ended())]);
    }
    const p50 = (values) => [...values].sort((a, b) => a - b)[Math.floor((values.length - 1) / 2)];
    console.log(JSON.stringify({ calls: options.calls, callee_p50: p50(calleeMs), caller_p50: p50(callerMs), callee_ms: calleeMs, caller_ms: callerMs, chromium: version }));
  } finally {
    for (const { chromium } of sides) await chromium.close();
    await site.stop();
    server.kill();
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
