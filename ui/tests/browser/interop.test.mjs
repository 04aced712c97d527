// Chromium's own WebRTC and hark-cli in video calls with each other, through a real hark-server on
// loopback: the page is a client written from docs/PROTOCOL.md (protocol-peer.js), its camera is
// Chromium's fake capture playing the test pattern (from `hark-cli test-pattern`), and hark-cli's is
// the test pattern too. Each side reads the frame numbers stamped on what it decoded: the page off
// the pictures it presents, hark-cli from its Y4M recordings. hark-cli calls the page, the page calls
// hark-cli (so both offer directions are covered), then two hark-clis and the page hold a group
// call, each decoding both others. Needs target/debug/hark-server and hark-cli (built by `cargo
// xtask test` before this runs).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { launchChromium, uiDir } from './support.mjs';
import { readStamp } from './protocol-peer.js';
import { binaryIn, fakeCameraArgs, post, servePeerPage, signInPage, spawnCli, startServer } from './hark-processes.mjs';

const binaries = resolve(uiDir, '../target/debug');
const PASSWORD = 'interop password 1';
/** Seconds each call lasts once connected (hark-cli hangs up). */
const CALL_SECONDS = 8;
/** Frames in the browser's camera file: it loops at the end, 15 s at 30 fps. */
const CAMERA_FRAMES = 450;

/** hark-cli as `user` with a test-pattern camera, a tone for a microphone, no speaker, loopback media and JSON events. */
function cli(base, args, user = 'cli') {
  const common = ['--server', base, '--user', user, '--password', PASSWORD, '--json', '--mic', 'tone:440', '--speaker', 'none', '--bind', '127.0.0.1:0', '--camera', 'test-pattern'];
  return spawnCli(binaryIn(binaries, 'hark-cli'), [...common, ...args]);
}

/** The stamped numbers of every frame of a 4:2:0 Y4M recording (null where a stamp does not read). */
function recordedStamps(path) {
  const data = readFileSync(path);
  const headerEnd = data.indexOf(0x0a);
  const header = data.subarray(0, headerEnd).toString();
  const width = Number(/ W(\d+)/.exec(header)?.[1]);
  const height = Number(/ H(\d+)/.exec(header)?.[1]);
  const frameBytes = (width * height * 3) / 2;
  const stamps = [];
  for (let at = headerEnd + 1; at < data.length; ) {
    const plane = data.indexOf(0x0a, at) + 1;
    // Video levels (16-235) to the full range the reader's threshold is set for.
    stamps.push(readStamp((col, row) => ((data[plane + row * width + col] - 16) * 255) / 219, width));
    at = plane + frameBytes;
  }
  return { width, height, stamps };
}

/**
 * Checks a sequence of frame numbers read off decoded video: most frames read back, the numbers
 * never go down (but where a looping source starts again from 0), and at least `least` were read.
 */
function assertRising(who, stamps, least, loopsAt) {
  const read = stamps.filter((n) => n !== null);
  assert.ok(read.length >= least, `${who}: ${read.length} stamped frames read of ${stamps.length} (want ${least})`);
  assert.ok(read.length >= stamps.length * 0.9, `${who}: only ${read.length} of ${stamps.length} frames carried a readable stamp`);
  // A repeated number is the source showing a picture twice (Chromium's fake camera does at its
  // loop); a frozen stream shows up as too few numbers instead.
  // Going round a looping source's end is going forwards (by less than five seconds' worth).
  const forwardsRound = (from, to) => loopsAt && (to - from + loopsAt) % loopsAt < 150;
  const backwards = read.slice(1).filter((n, i) => n < read[i] && !forwardsRound(read[i], n));
  assert.deepEqual(backwards, [], `${who}: numbers went backwards: ${read.join(' ')}`);
}

describe('Chromium and hark-cli, video both ways', () => {
  /** @type {any} */ let ctx = {};

  before(async () => {
    const dir = mkdtempSync(join(tmpdir(), 'hark-interop-'));
    const camera = join(dir, 'pattern.y4m');
    const made = spawnSync(binaryIn(binaries, 'hark-cli'), ['test-pattern', camera, '--size', '640x360', '--frames', String(CAMERA_FRAMES), '--fps', '30'], { stdio: 'inherit' });
    assert.equal(made.status, 0, 'hark-cli test-pattern');
    const { base, server } = await startServer(binaryIn(binaries, 'hark-server'), join(dir, 'server'));
    for (const user of ['web', 'cli', 'cli2']) assert.equal((await post(base, '/v1/register', { user, password: PASSWORD })).status, 201);
    const login = await post(base, '/v1/login', { user: 'web', password: PASSWORD });
    assert.equal(login.status, 200);
    const site = await servePeerPage();
    const chromium = await launchChromium(fakeCameraArgs(camera));
    const page = await chromium.browser.newPage();
    page.on('console', (message) => console.log(`page: ${message.text()}`));
    await page.goto(site.url);
    const user = await signInPage(page, base, login.body.token);
    assert.equal(user, 'web');
    ctx = { dir, base, server, site, chromium, page };
  });

  after(async () => {
    await ctx.chromium?.close();
    await ctx.site?.stop();
    ctx.server?.kill();
    if (ctx.dir) rmSync(ctx.dir, { recursive: true, force: true });
  });

  /** What the page saw of the call that just ended (once it has). */
  async function pageReport() {
    return ctx.page.evaluate(async () => {
      const peer = window.peer;
      const report = { ...(await peer.ended()), log: peer.log };
      peer.log = [];
      return report;
    });
  }

  /** A cli run ended well and saw `users`' video. */
  function assertCliSaw(run, code, users) {
    assert.equal(code, 0, `hark-cli exited with ${code}:\n${run.report()}`);
    for (const user of users) {
      const seen = run.texts().some((l) => l.includes('"first_remote_video_frame"') && l.includes(`"${user}"`));
      assert.ok(seen, `hark-cli saw no video from ${user}:\n${run.report()}`);
    }
  }

  /** What the page decoded of `user`: rising numbers at `size`. */
  function assertPageSaw(page, user, size) {
    const link = page.seen[user];
    assert.ok(link, `the page had no link to ${user}: ${JSON.stringify(page.log)}`);
    // hark-cli sends 30 fps for CALL_SECONDS; allow for the first second and a slow machine.
    assertRising(`the page (${user}'s camera)`, link.stamps, 15 * (CALL_SECONDS - 2), null);
    assert.equal(link.size, size, `the page shows ${user} at the size for this call`);
    return link.stamps.length;
  }

  /** What a hark-cli recorded: rising numbers at `size`. */
  function assertRecorded(who, path, size, loopsAt) {
    const seen = recordedStamps(path);
    assert.deepEqual(`${seen.width}x${seen.height}`, size, `${who} records the size sent`);
    assertRising(who, seen.stamps, 15 * (CALL_SECONDS - 2), loopsAt);
    return seen.stamps.length;
  }

  /**
   * A 1:1 video call between hark-cli (`cliArgs` after its options) and the page, started by
   * `start` once hark-cli runs; both sides decode the other at 640x360.
   */
  async function oneToOne(label, cliArgs, start) {
    const recording = join(ctx.dir, `cli-saw-${label}.y4m`);
    const run = cli(ctx.base, ['--video-out', `record:${recording}`, ...cliArgs, '--duration', String(CALL_SECONDS)]);
    try {
      await start(run);
      const code = await run.exited;
      const page = await pageReport();
      assert.equal(page.ended.reason, 'hangup', JSON.stringify(page.log));
      assertCliSaw(run, code, ['web']);
      const shown = assertPageSaw(page, 'cli', '640x360');
      const recorded = assertRecorded("hark-cli (Chromium's camera)", recording, '640x360', CAMERA_FRAMES);
      console.log(`1:1, ${label}: the page showed ${shown} frames, hark-cli recorded ${recorded}`);
      // Audio both ways: Chromium negotiates Hark's redundant audio (RFC 2198; Hark sends it in
      // audio calls, so here it reads whatever Chromium sends) and decodes Hark's audio without
      // concealing (its audio level stays 0 here: nothing plays the track out); hark-cli hears
      // Chromium's fake microphone (a beep every second).
      const audio = page.seen.cli.audio;
      console.log(`1:1, ${label}: the page's audio from hark-cli: ${JSON.stringify(audio)}`);
      assert.ok(audio?.red, 'Chromium and hark-cli negotiated redundant audio');
      assert.ok(audio.packets >= 40 * (CALL_SECONDS - 2) && audio.concealed < audio.samples / 20, `the page decoded hark-cli's audio: ${JSON.stringify(audio)}`);
      const levels = run.texts().filter((l) => l.includes('"voice_level"') && l.includes('"web"')).map((l) => JSON.parse(l).level);
      assert.ok(Math.max(0, ...levels) >= 20, `hark-cli heard the page: levels ${levels}`);
    } finally {
      run.kill();
    }
  }

  test('hark-cli calls the page: webrtc-rs offers, Chromium answers', { timeout: 120_000 }, async () => {
    const answering = ctx.page.evaluate(() => window.peer.answer());
    await oneToOne('cli-offers', ['call', 'web', '--video'], async () => {
      assert.equal((await answering).from, 'cli', 'the page rang for cli');
    });
  });

  test('the page calls hark-cli: Chromium offers, webrtc-rs answers', { timeout: 120_000 }, async () => {
    await oneToOne('chromium-offers', ['answer', '--auto'], async (run) => {
      await run.line('"signed_in"');
      await ctx.page.evaluate(() => window.peer.call(['cli']));
    });
  });

  test('a group of three: two hark-clis and the page, each decoding both others', { timeout: 120_000 }, async () => {
    // cli2 answers; the page answers; cli calls both. Three people: hark-cli steps down to 480x270.
    const second = cli(ctx.base, ['--video-out', `record:${join(ctx.dir, 'cli2-saw.y4m')}`, 'answer', '--auto', '--duration', String(CALL_SECONDS)], 'cli2');
    const first = cli(ctx.base, ['--video-out', `record:${join(ctx.dir, 'cli-saw.y4m')}`, 'call', 'web', 'cli2', '--video', '--duration', String(CALL_SECONDS)]);
    try {
      await second.line('"signed_in"');
      const answered = await ctx.page.evaluate(() => window.peer.answer());
      assert.deepEqual([answered.from, [...answered.invitees].sort()], ['cli', ['cli2', 'web']]);
      const codes = await Promise.all([first.exited, second.exited]);
      const page = await pageReport();
      assertCliSaw(first, codes[0], ['web', 'cli2']);
      assertCliSaw(second, codes[1], ['web', 'cli']);
      const shown = ['cli', 'cli2'].map((user) => assertPageSaw(page, user, '480x270'));
      const recorded = [
        assertRecorded("cli (Chromium's camera)", join(ctx.dir, 'cli-saw-web.y4m'), '640x360', CAMERA_FRAMES),
        assertRecorded("cli2 (Chromium's camera)", join(ctx.dir, 'cli2-saw-web.y4m'), '640x360', CAMERA_FRAMES),
        assertRecorded("cli (cli2's camera)", join(ctx.dir, 'cli-saw-cli2.y4m'), '480x270', null),
        assertRecorded("cli2 (cli's camera)", join(ctx.dir, 'cli2-saw-cli.y4m'), '480x270', null),
      ];
      console.log(`group of 3: the page showed ${shown.join(' and ')} frames; the clis recorded ${recorded.join(', ')}`);
    } finally {
      first.kill();
      second.kill();
    }
  });

  test('garbage VP8 from the page: hark-cli says so once, asks for a keyframe, and the call goes on', { timeout: 120_000 }, async () => {
    const recording = join(ctx.dir, 'cli-saw-garbage.y4m');
    const run = cli(ctx.base, ['--video-out', `record:${recording}`, 'answer', '--auto', '--duration', String(CALL_SECONDS + 2)]);
    try {
      await run.line('"signed_in"');
      await ctx.page.evaluate(() => {
        window.peer.insertable = true;
        return window.peer.call(['cli']);
      });
      await run.line('"first_remote_video_frame"');
      // Two seconds of garbage, then the camera's frames again.
      const garbageSent = await ctx.page.evaluate(async () => {
        window.peer.garbage = true;
        await new Promise((done) => setTimeout(done, 2000));
        window.peer.garbage = false;
        return window.peer.garbageSent;
      });
      assert.ok(garbageSent >= 30, `the page spoiled ${garbageSent} frames`);
      const code = await run.exited;
      const page = await pageReport();
      assert.equal(page.ended.reason, 'hangup', JSON.stringify(page.log));
      assertCliSaw(run, code, ['web']);
      const events = run.texts().filter((l) => l.includes('"web"')).map((l) => JSON.parse(l).event);
      const refused = events.filter((e) => e === 'remote_video_undecodable').length;
      assert.equal(refused, 1, `said once for ${garbageSent} garbage frames:\n${run.report()}`);
      const recovered = events.indexOf('remote_video_recovered');
      assert.ok(recovered > events.indexOf('remote_video_undecodable'), `the picture came back after the garbage: ${events.join(' ')}`);
      assertPageSaw(page, 'cli', '640x360');
      const recorded = assertRecorded("hark-cli (Chromium's camera, garbage cut out)", recording, '640x360', CAMERA_FRAMES);
      console.log(`garbage: ${garbageSent} spoiled frames sent, said once, ${recorded} good frames recorded`);
    } finally {
      run.kill();
      await ctx.page.evaluate(() => {
        window.peer.insertable = false;
        window.peer.garbage = false;
      });
    }
  });
});
