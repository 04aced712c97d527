// The built UI in headless Chromium with the Tauri IPC mocked: every view and call state, driven by
// engine events from the test, checked by what is on screen, with a screenshot of each in
// target/ui-screens/. Run by `npm run test:browser` after `vite build`.

import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import {
  ACCOUNT,
  Scenario,
  buildHarness,
  emit,
  emitMutes,
  launchChromium,
  layerNews,
  live,
  openApp,
  screenshot,
  serveDist,
  text,
  until,
  waitText,
} from './support.mjs';
import { solidPicture, startFrameFeed } from './frame-feed.mjs';

/** @type {{ browser: import('playwright-core').Browser, url: string, harness: string }} */
const env = /** @type {any} */ ({});
let stopServer;
let closeBrowser;
/** @type {Awaited<ReturnType<typeof startFrameFeed>>} */
let frames;

before(async () => {
  frames = await startFrameFeed();
  // Started side by side; whatever did start is stopped in `after` even if another part failed.
  const feed = `ws://127.0.0.1:${frames.info.port}`;
  const [server, harness, chromium] = await Promise.allSettled([serveDist([feed]), buildHarness(), launchChromium()]);
  if (server.status === 'fulfilled') stopServer = server.value.stop;
  if (chromium.status === 'fulfilled') closeBrowser = chromium.value.close;
  for (const part of [server, harness, chromium]) if (part.status === 'rejected') throw part.reason;
  env.url = server.value.url;
  env.harness = harness.value;
  env.browser = chromium.value.browser;
});

after(async () => {
  await closeBrowser?.();
  await stopServer?.();
  await frames?.stop();
});

/** Opens the app and, at the end, fails on any console error (CSP violations included). */
async function withApp(scenario, options, run) {
  const opened = await openApp(env, scenario, options);
  try {
    await run(opened.page, opened.context);
    assert.deepEqual(opened.problems, [], 'console errors or warnings');
    const unknown = scenario.calls.filter((c) => c.cmd.startsWith('unknown') || !(c.cmd in scenario.replies));
    assert.deepEqual(unknown, [], 'commands the Rust side does not have');
  } finally {
    await opened.context.close();
  }
}

const contact = (user, status = 'online', nickname = user[0].toUpperCase() + user.slice(1), alias = null) => ({ user, nickname, alias, status });

describe('sign-in', () => {
  test('sign up: a taken user id, then success shows the contacts', async () => {
    let attempts = 0;
    const scenario = new Scenario({
      account: null,
      replies: {
        sign_in: ({ request }) => {
          attempts += 1;
          if (attempts === 1) throw { code: 'user_exists', message: 'taken' };
          return { ...ACCOUNT, user: request.user, nickname: request.nickname };
        },
      },
    });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('signin-form').waitFor();
      assert.equal(await page.getByTestId('signin-user').inputValue(), 'me', 'the last user fills the form');
      await page.getByTestId('signin-register').click();
      await page.getByRole('heading', { name: 'Create a Hark account' }).waitFor();
      await page.getByTestId('signin-user').fill('mia');
      await page.getByTestId('signin-password').fill('secret');
      await page.getByTestId('signin-nickname').fill('Mia');
      await screenshot(page, '01-sign-up');
      await page.getByTestId('signin-submit').click();
      await waitText(page, 'signin-error', 'That user ID is taken.');
      await screenshot(page, '02-sign-up-error');

      await page.getByTestId('signin-password').fill('secret');
      await page.getByTestId('signin-submit').click();
      await page.getByTestId('contacts-list').waitFor();
      assert.deepEqual(scenario.callsOf('sign_in')[1], {
        request: { server: null, user: 'mia', password: 'secret', register: true, nickname: 'Mia', avatar: null },
      });
    });
  });

  test('a wrong password on another server', async () => {
    const scenario = new Scenario({ account: null, replies: { sign_in: () => Promise.reject({ code: 'unauthorized', message: 'no' }) } });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('signin-builtin').uncheck();
      await page.getByTestId('signin-server').fill('https://hark.example.org');
      await page.getByTestId('signin-proxy').fill(' http://proxy.corp:3128 ');
      await page.getByTestId('signin-password').fill('wrong');
      await page.getByTestId('signin-submit').click();
      await waitText(page, 'signin-error', 'Wrong user ID or password.');
      assert.equal(scenario.callsOf('sign_in')[0].request.server, 'https://hark.example.org');
      assert.equal(scenario.callsOf('sign_in')[0].request.proxy, 'http://proxy.corp:3128', 'the proxy goes with a server elsewhere');
      assert.equal(scenario.callsOf('sign_in')[0].request.register, false);
    });
  });
});

describe('contacts', () => {
  test('presence, search, add, multi-select limit and a call from a row', async () => {
    const many = ['bob', 'carol', 'dave', 'erin', 'frank', 'grace', 'heidi', 'ivan', 'judy'];
    const scenario = new Scenario({
      replies: {
        contacts: [contact('alice', 'offline', 'Alice Liddell'), ...many.map((u) => contact(u, u === 'bob' ? 'online' : 'offline'))],
        add_contact: ({ user }) => {
          if (user === 'nobody') throw { code: 'not_found', message: 'no such user' };
          return null;
        },
      },
    });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('contact-row-alice').waitFor();
      assert.equal(await page.getByTestId('presence-alice').getAttribute('data-status'), 'offline');
      await emit(page, { event: 'presence', user: 'alice', status: 'online' });
      await page.locator('[data-testid="presence-alice"][data-status="online"]').waitFor();
      assert.match(await text(page, 'contact-row-alice'), /Online/);
      await screenshot(page, '03-contacts');

      await page.getByTestId('contacts-search').fill('lidd');
      await page.getByTestId('contact-row-bob').waitFor({ state: 'detached' });
      assert.equal(await page.getByTestId('contacts-list').locator('li').count(), 1);
      await page.getByTestId('contacts-search').fill('');

      await page.getByTestId('add-contact-user').fill('nobody');
      await page.getByTestId('add-contact-submit').click();
      await waitText(page, 'contacts-error', 'No such user.');

      for (const user of many.slice(0, 8)) await page.getByTestId(`contact-select-${user}`).check();
      assert.equal(await page.getByTestId('contact-select-judy').isDisabled(), true, 'a ninth person cannot be selected');
      assert.equal(await page.getByTestId('contact-select-bob').isDisabled(), false);
      assert.match(await text(page, 'group-bar'), /8 selected/);
      await screenshot(page, '04-contacts-selected');
      await page.getByRole('button', { name: 'Clear selection' }).click();

      await page.getByTestId('contact-remove-carol').click();
      await page.getByTestId('contact-remove-confirm-carol').click();
      await page.getByTestId('contact-row-carol').waitFor({ state: 'detached' });
      assert.deepEqual(scenario.callsOf('remove_contact'), [{ user: 'carol' }]);

      await page.getByTestId('call-audio-bob').click();
      await page.getByTestId('call-view').waitFor();
      await waitText(page, 'call-status', 'Calling…');
      assert.deepEqual(scenario.callsOf('place_call'), [{ to: ['bob'], media: 'audio' }]);
    });
  });

  test('the dial box calls any user id', async () => {
    const scenario = new Scenario();
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('dial-input').fill('zoe, yan');
      await page.getByTestId('dial-audio').click();
      await page.getByTestId('call-view').waitFor();
      assert.deepEqual(scenario.callsOf('place_call'), [{ to: ['zoe', 'yan'], media: 'audio' }]);
      await page.getByTestId('tile-zoe').waitFor();
    });
  });

  test('a hark: link offers its call and places it only on yes; a refused link says why', async () => {
    const links = [{ kind: 'call', link: { to: ['alice', 'bob'], media: 'video' } }];
    const scenario = new Scenario({ replies: { contacts: [contact('alice')], take_link: () => links.shift() ?? null } });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('link-prompt').waitFor();
      // Bob is no contact: his name comes with his profile.
      await page.getByTestId('link-question').filter({ hasText: 'Video call Alice, Bob?' }).waitFor();
      assert.deepEqual(scenario.callsOf('place_call'), [], 'nothing is called before yes');
      await screenshot(page, '05-link-prompt');
      await page.getByTestId('link-call').click();
      await page.getByTestId('call-view').waitFor();
      assert.deepEqual(scenario.callsOf('place_call'), [{ to: ['alice', 'bob'], media: 'video' }]);
    });
    // The shell hands a link out once.
    const refusals = [{ kind: 'refused', reason: 'unknown_action' }];
    const refused = new Scenario({ replies: { take_link: () => refusals.shift() ?? null } });
    await withApp(refused, {}, async (page) => {
      await page.getByTestId('link-refused').waitFor();
      assert.match(await page.getByTestId('link-refused').textContent(), /hark:call\/alice/);
      await screenshot(page, '05b-link-refused');
      // Escape closes it, as the OK button does; nothing was called.
      await page.keyboard.press('Escape');
      await page.getByTestId('link-prompt').waitFor({ state: 'detached' });
      assert.deepEqual(refused.callsOf('place_call'), []);
    });
  });
});

/** The colour at the middle of the canvas of `tile` (a `video-…` test id), as the page drew it. */
function middlePixel(page, tile) {
  return page.evaluate((id) => {
    const canvas = /** @type {HTMLCanvasElement} */ (document.querySelector(`[data-testid="${id}"]`));
    if (!canvas || canvas.width === 0) return null;
    // Read from a copy: reading the page's canvas again and again would make Chromium warn.
    const copy = document.createElement('canvas');
    copy.width = 1;
    copy.height = 1;
    const context = copy.getContext('2d', { willReadFrequently: true });
    context.drawImage(canvas, canvas.width >> 1, canvas.height >> 1, 1, 1, 0, 0, 1, 1);
    const [r, g, b] = context.getImageData(0, 0, 1, 1).data;
    return { r, g, b, width: canvas.width, height: canvas.height };
  }, tile);
}

/** A VP8 keyframe of one colour (`yuv`, BT.601 limited range), coded by the page's own encoder. */
function vp8Keyframe(page, width, height, yuv) {
  return page.evaluate(
    async ([width, height, [y, u, v]]) => {
      const luma = width * height;
      const planes = new Uint8Array(luma * 1.5);
      planes.fill(y, 0, luma);
      planes.fill(u, luma, luma * 1.25);
      planes.fill(v, luma * 1.25);
      const colorSpace = { primaries: 'smpte170m', transfer: 'smpte170m', matrix: 'smpte170m', fullRange: false };
      const frame = new VideoFrame(planes, { format: 'I420', codedWidth: width, codedHeight: height, timestamp: 0, colorSpace });
      const chunks = [];
      let failed = null;
      const encoder = new VideoEncoder({ output: (chunk) => chunks.push(chunk), error: (error) => (failed = error) });
      encoder.configure({ codec: 'vp8', width, height, bitrate: 2_000_000 });
      encoder.encode(frame, { keyFrame: true });
      frame.close();
      await encoder.flush();
      encoder.close();
      if (failed || chunks.length !== 1 || chunks[0].type !== 'key') throw new Error(`encoding: ${failed ?? chunks.length + ' chunks'}`);
      const data = new Uint8Array(chunks[0].byteLength);
      chunks[0].copyTo(data);
      return { width, height, key: true, data: [...data] };
    },
    [width, height, yuv],
  );
}

/** Whether two colours are within a few steps per channel (I420 -> RGB rounds). */
const near = (seen, [r, g, b]) => seen !== null && Math.abs(seen.r - r) <= 12 && Math.abs(seen.g - g) <= 12 && Math.abs(seen.b - b) <= 12;

/** Waits until the middle of `tile`'s canvas shows `rgb` (a picture sent is drawn at the next frame). */
async function untilDrawn(page, tile, rgb, what) {
  const end = Date.now() + 5000;
  let seen = null;
  while (!near(seen, rgb)) {
    if (Date.now() > end) assert.fail(`${what}: the canvas shows ${JSON.stringify(seen)}, not ${rgb}`);
    seen = await middlePixel(page, tile);
    await new Promise((done) => setTimeout(done, 20));
  }
  return seen;
}

// Solid pictures in BT.601 limited range, and the RGB they stand for.
const RED = { yuv: [81, 90, 240], rgb: [255, 0, 0] };
const BLUE = { yuv: [41, 240, 110], rgb: [0, 0, 255] };
const GREEN = { yuv: [145, 54, 34], rgb: [0, 255, 0] };

describe('video call', () => {
  test('preview while ringing, the far side large and us small, drawn from I420 at the tile size; camera off, switch to audio', async () => {
    const scenario = new Scenario({
      replies: {
        contacts: [contact('bob')],
        frame_socket: frames.info,
        cameras: [
          { index: 0, name: 'Integrated Camera' },
          { index: 2, name: 'USB Webcam' },
        ],
      },
    });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('call-video-bob').click();
      await emit(page, { event: 'dialing', call_id: 'c1', invitees: ['bob'] });
      // Our camera shows large while it rings, mirrored, behind the callee's name.
      await until(() => frames.openPages('_self').some((p) => p.sizes.length > 0), 'the self tile to connect and say its size');
      frames.show('_self', solidPicture(320, 180, RED.yuv));
      await page.locator('[data-testid="tile-me"][data-video="true"]').waitFor();
      await untilDrawn(page, 'video-self', RED.rgb, 'the preview is the red picture sent');
      const large = await page.locator('.large [data-testid="tile-me"]').boundingBox();
      const said = frames.openPages('_self').at(-1).sizes.at(-1);
      assert.ok(large && Math.abs(said.width - large.width) <= 2 && Math.abs(said.height - large.height) <= 2, `the tile's size in device pixels is said: ${JSON.stringify(said)} for ${JSON.stringify(large)}`);
      assert.equal(said.fit, 'contain');
      assert.match(await page.getByTestId('video-self').evaluate((c) => getComputedStyle(c).transform), /matrix\(-1/, 'our own picture is mirrored');
      await screenshot(page, '30-video-ringing-preview');

      // Bob answers: his video large, ours small.
      await emit(page, { event: 'user_joined', user: 'bob' });
      await emit(page, { event: 'call_began', call_id: 'c1', media: 'video', connected_at: Date.now() });
      await emit(page, { event: 'first_remote_video_frame', user: 'bob' });
      await until(() => frames.openPages('bob').some((p) => p.sizes.length > 0), "bob's tile to connect");
      frames.show('bob', solidPicture(640, 360, BLUE.yuv));
      await page.locator('.large [data-testid="tile-bob"][data-video="true"]').waitFor();
      await page.locator('.pip [data-testid="tile-me"][data-video="true"]').waitFor();
      await untilDrawn(page, 'video-bob', BLUE.rgb, "bob's picture is drawn");
      // A newer picture replaces it once the page asks for the next.
      const asked = frames.openPages('bob')[0].nexts;
      frames.show('bob', solidPicture(640, 360, GREEN.yuv));
      await until(() => frames.openPages('bob')[0].nexts > asked, 'the page to ask for the next picture');
      await untilDrawn(page, 'video-bob', GREEN.rgb, 'the next picture is drawn');
      // Chromium decodes VP8 (WebCodecs), so the page asks for bob's video as it came; this
      // stand-in, like the app for a tile without encoded frames, sends pictures, and the page
      // draws those.
      assert.equal(frames.openPages('bob')[0].codec, 'vp8');
      assert.equal(await page.getByTestId('video-bob').getAttribute('data-decoded-by'), 'app');
      await screenshot(page, '31-video-connected');

      // His video as it came: a 720p VP8 keyframe (Chromium's own encoder), decoded by the page
      // and drawn in his colours (the decoder is told BT.601; Chromium's reads BT.709 otherwise).
      frames.showVp8('bob', await vp8Keyframe(page, 1280, 720, RED.yuv));
      await untilDrawn(page, 'video-bob', RED.rgb, "bob's VP8 picture is decoded and drawn");
      assert.equal(await page.getByTestId('video-bob').getAttribute('data-decoded-by'), 'page');
      const drawn = await middlePixel(page, 'video-bob');
      assert.deepEqual([drawn.width, drawn.height], [1280, 720]);

      // The small view: dragged to the top left it stays there; a click swaps the two views.
      const pip = await page.getByTestId('pip').boundingBox();
      const stage = await page.locator('.duo').boundingBox();
      await page.mouse.move(pip.x + pip.width / 2, pip.y + pip.height / 2);
      await page.mouse.down();
      await page.mouse.move(stage.x + 40, stage.y + 40, { steps: 5 });
      await page.mouse.up();
      await page.locator('[data-testid="pip"][data-corner="top-left"]').waitFor();
      await page.getByTestId('pip').click();
      await page.locator('.large [data-testid="tile-me"]').waitFor();
      await page.getByTestId('pip').click();
      await page.locator('.large [data-testid="tile-bob"]').waitFor();

      // Two cameras: switch mid-call (the setting is saved; the shell moves the engine to it).
      await page.getByTestId('call-camera').selectOption('2');
      await until(() => scenario.settings.camera === 2, 'the camera switch to be saved');

      // Fill instead of fit: said to the socket.
      await page.getByTestId('fit').click();
      await until(() => frames.openPages('bob')[0].sizes.at(-1).fit === 'cover', 'cover to be said');

      // A frozen picture says so; their camera off shows their avatar.
      await emit(page, { event: 'remote_video_frozen', user: 'bob' });
      await page.getByTestId('paused-bob').waitFor();
      await emit(page, { event: 'remote_video_recovered', user: 'bob', frozen_ms: 400, after_request_ms: 150 });
      await page.getByTestId('paused-bob').waitFor({ state: 'detached' });
      await emit(page, { event: 'remote_camera', user: 'bob', on: false });
      await page.locator('[data-testid="tile-bob"][data-video="false"]').waitFor();
      await page.getByTestId('video-bob').waitFor({ state: 'detached' });

      // Our camera off (Ctrl+E): the engine is asked, and our tile shows our avatar.
      await page.keyboard.press('Control+e');
      await until(() => scenario.callsOf('set_camera').length === 1, 'set_camera');
      assert.deepEqual(scenario.callsOf('set_camera'), [{ on: false }]);
      await page.locator('[data-testid="camera"][aria-pressed="true"]').waitFor();
      await page.getByTestId('video-self').waitFor({ state: 'detached' });
      await screenshot(page, '32-video-camera-off');
      // A camera that fails says why on our tile.
      await emit(page, { event: 'camera', on: true });
      await emit(page, { event: 'camera_error', message: 'Device or resource busy' });
      await waitText(page, 'camera-problem', 'Camera unavailable: Device or resource busy');

      await page.getByTestId('to-audio').click();
      await until(() => scenario.callsOf('audio_only').length === 1, 'audio_only');
      await emit(page, { event: 'media_changed', media: 'audio' });
      await page.getByTestId('camera').waitFor({ state: 'detached' });
      await page.getByTestId('video-self').waitFor({ state: 'detached' });
      await screenshot(page, '33-video-to-audio');
    });
  });

  test("on the app's video layer the page says where the boxes are and what lies over them, and shows a tile when the layer says so", async () => {
    const scenario = new Scenario({ replies: { contacts: [contact('bob')], frame_socket: frames.info, video_layer: true } });
    await withApp(scenario, {}, async (page) => {
      const lastPlaced = () => scenario.callsOf('place_video').at(-1)?.placements;
      const placed = (tile) => lastPlaced()?.find((p) => p.tile === tile);
      const near = (box, rect) => box && rect && ['x', 'y', 'width', 'height'].every((k) => Math.abs(box[k] - rect[k]) <= 1);
      const holeAt = (placement, box) => placement.holes.some((hole) => near(hole, box));
      const boxOf = (selector) => page.locator(selector).boundingBox();
      await page.getByTestId('call-video-bob').click();
      await emit(page, { event: 'dialing', call_id: 'c1', invitees: ['bob'] });
      // The preview, large while it rings: on the layer, mirrored, its name left showing.
      await until(() => placed('_self'), 'the self tile to be placed');
      const large = await boxOf('.large [data-testid="video-self"]');
      await until(() => near(large, placed('_self')), `the preview placed where its box is: ${JSON.stringify(placed('_self'))} for ${JSON.stringify(large)}`);
      assert.deepEqual([placed('_self').mirror, placed('_self').fit, placed('_self').scale], [true, 'contain', 1]);
      assert.ok(holeAt(placed('_self'), await boxOf('.large [data-testid="tile-me"] .name')), `its name is left showing: ${JSON.stringify(placed('_self').holes)}`);
      assert.equal(frames.openPages('_self').length, 0, 'the page reads no pictures from the socket');
      assert.equal(await page.getByTestId('video-self').getAttribute('data-drawn-by'), 'layer');
      // The avatar shows until the layer says the picture does.
      assert.equal(await page.getByTestId('tile-me').getAttribute('data-video'), 'false');
      await layerNews(page, { tile: '_self', showing: true });
      await page.locator('[data-testid="tile-me"][data-video="true"]').waitFor();
      await screenshot(page, '33b-video-layer-ringing');

      // Bob answers: his box large, ours small and drawn after his; his box leaves the small
      // view, the buttons over it and his name showing.
      await emit(page, { event: 'user_joined', user: 'bob' });
      await emit(page, { event: 'call_began', call_id: 'c1', media: 'video', connected_at: Date.now() });
      await emit(page, { event: 'first_remote_video_frame', user: 'bob' });
      await until(() => lastPlaced()?.map((p) => p.tile).join() === 'bob,_self', 'bob large, then us small');
      await layerNews(page, { tile: 'bob', showing: true });
      await page.locator('.large [data-testid="tile-bob"][data-video="true"]').waitFor();
      await until(async () => near(await boxOf('.large [data-testid="video-bob"]'), placed('bob')), 'bob placed where his box is');
      for (const over of ['[data-testid="pip"]', '[data-testid="swap"]', '[data-testid="fit"]', '.large [data-testid="tile-bob"] .name']) {
        assert.ok(holeAt(placed('bob'), await boxOf(over)), `${over} is left showing over bob: ${JSON.stringify(placed('bob').holes)}`);
      }
      assert.ok(!holeAt(placed('_self'), await boxOf('[data-testid="pip"]')), 'the small view is not a hole in itself');
      // Speaking: his ring is left showing along the tile's edges.
      await live(page, { kind: 'level', user: 'bob', level: 60 });
      await until(() => placed('bob').holes.length >= 4 + 4, 'the ring to be left showing');
      const tile = await boxOf('.large [data-testid="tile-bob"]');
      assert.ok(holeAt(placed('bob'), { x: tile.x, y: tile.y, width: tile.width, height: 3 }), 'the top of the ring');
      // Dragged to the top left, the small view is placed there (it moved without a resize).
      const pip = await boxOf('[data-testid="pip"]');
      const stage = await boxOf('.duo');
      await page.mouse.move(pip.x + pip.width / 2, pip.y + pip.height / 2);
      await page.mouse.down();
      await page.mouse.move(stage.x + 40, stage.y + 40, { steps: 5 });
      await page.mouse.up();
      await page.locator('[data-testid="pip"][data-corner="top-left"]').waitFor();
      await until(async () => near(await boxOf('.pip [data-testid="video-self"]'), placed('_self')), 'the small view placed at the top left');
      // Fill instead of fit, said to the layer; a frozen picture's hint is left showing.
      await page.getByTestId('fit').click();
      await until(() => placed('bob')?.fit === 'cover', 'cover to be said');
      await emit(page, { event: 'remote_video_frozen', user: 'bob' });
      await page.getByTestId('paused-bob').waitFor();
      await until(async () => holeAt(placed('bob'), await boxOf('[data-testid="paused-bob"]')), 'the hint to be left showing');
      // Hidden (minimised), the page shows no boxes; shown again, they come back.
      const setHidden = (hidden) =>
        page.evaluate((h) => {
          Object.defineProperty(document, 'visibilityState', { value: h ? 'hidden' : 'visible', configurable: true });
          document.dispatchEvent(new Event('visibilitychange'));
        }, hidden);
      await setHidden(true);
      await until(() => lastPlaced()?.length === 0, 'no boxes while hidden');
      await setHidden(false);
      await until(() => lastPlaced()?.length === 2, 'the boxes again when shown');
      // Our camera off then on: the avatar shows until the layer draws a new picture.
      await page.keyboard.press('Control+e');
      await emit(page, { event: 'camera', on: false });
      await until(() => !placed('_self'), 'our box to go with the camera');
      await layerNews(page, { tile: '_self', showing: false });
      await page.keyboard.press('Control+e');
      await emit(page, { event: 'camera', on: true });
      await until(() => placed('_self'), 'our box back');
      assert.equal(await page.locator('.pip [data-testid="tile-me"]').getAttribute('data-video'), 'false', 'no picture until the layer says so');
      await layerNews(page, { tile: '_self', showing: true });
      await page.locator('.pip [data-testid="tile-me"][data-video="true"]').waitFor();
      // A dialog over the call is left showing.
      await page.getByTestId('invite-more').click();
      await page.getByTestId('invite-dialog').waitFor();
      await until(async () => holeAt(placed('bob'), await boxOf('[data-testid="invite-dialog"]')), 'the dialog to be left showing');
      await page.keyboard.press('Escape');
      await page.getByTestId('invite-dialog').waitFor({ state: 'detached' });
      // His video ends: the layer says so, his avatar shows.
      await layerNews(page, { tile: 'bob', showing: false });
      await page.locator('[data-testid="tile-bob"][data-video="false"]').waitFor();
      await screenshot(page, '33c-video-layer-call');

      // The call ends: no boxes.
      await emit(page, { event: 'call_ended', call_id: 'c1', reason: 'hangup', duration_s: 20 });
      await until(() => lastPlaced()?.length === 0, 'the boxes to go', 10_000);
    });
  });

  test('an incoming video call says so and can be answered with audio only', async () => {
    const scenario = new Scenario({ settings: { incoming: 'full_screen' }, replies: { frame_socket: frames.info } });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('contacts-list').waitFor();
      await emit(page, { event: 'incoming_call', call_id: 'c7', caller: 'carol', invitees: ['me'], media: 'video', user_data: null });
      await waitText(page, 'call-status', 'Incoming video call');
      await screenshot(page, '34-video-incoming');
      await page.getByTestId('incoming-accept-audio').click();
      await until(() => scenario.callsOf('accept_call').length === 1, 'accept_call');
      assert.deepEqual(scenario.callsOf('accept_call'), [{ audioOnly: true }]);
    });
  });
});

describe('video settings and the test call', () => {
  test('camera picker with a live preview, quality, start with camera off or muted; test call from the empty list and from settings', async () => {
    const scenario = new Scenario({
      replies: {
        frame_socket: frames.info,
        cameras: [
          { index: 0, name: 'Integrated Camera' },
          { index: 2, name: 'USB Webcam' },
        ],
      },
    });
    await withApp(scenario, {}, async (page) => {
      // A new user's empty list offers a test call.
      await page.getByTestId('test-call-empty').click();
      await until(() => scenario.callsOf('place_call').length === 1, 'the test call');
      assert.deepEqual(scenario.callsOf('place_call'), [{ to: ['echo'], media: 'video' }]);
      await emit(page, { event: 'not_connected', call_id: null, reason: 'cancelled' });
      await page.getByTestId('call-view').waitFor({ state: 'detached', timeout: 10_000 });

      await page.getByTestId('nav-settings').click();
      await until(() => scenario.callsOf('preview_camera').some((a) => a.on), 'the preview to be asked for');
      await until(() => frames.openPages('_self').some((p) => p.sizes.length > 0), 'the preview tile to connect');
      frames.show('_self', solidPicture(320, 180, BLUE.yuv));
      await page.locator('[data-testid="camera-preview"][data-video="true"]').waitFor();
      await untilDrawn(page, 'video-self', BLUE.rgb, 'the preview shows the camera');
      await page.getByTestId('settings-camera').selectOption('2');
      await until(() => scenario.settings.camera === 2, 'the camera to be saved');
      await page.getByTestId('settings-resolution').selectOption('720p');
      await until(() => scenario.settings.video_resolution === '720p', 'the quality to be saved');
      await page.getByTestId('camera-off-at-start').check();
      await page.getByTestId('microphone-muted-at-start').check();
      await until(() => scenario.settings.camera_off_at_start && scenario.settings.microphone_muted_at_start, 'both to be saved');
      await page.getByTestId('connect-after-answer').check();
      await until(() => scenario.settings.connect_after_answer, 'connect only after I answer to be saved');
      // Starting hidden is a choice only for a start at login.
      assert.equal(await page.getByTestId('start-hidden').isDisabled(), true);
      await page.getByTestId('start-at-login').check();
      await until(() => scenario.settings.start_at_login, 'start at login to be saved');
      await page.getByTestId('start-hidden').check();
      await until(() => scenario.settings.start_hidden, 'start hidden to be saved');
      // Hot-plug: the USB camera goes; the setting stays, shown as not connected.
      await emit(page, { event: 'camera_list_changed', cameras: [{ index: 0, name: 'Integrated Camera' }] });
      await page.locator('[data-testid="settings-camera"] option:checked', { hasText: '/dev/video2 (not connected)' }).waitFor({ state: 'attached' });
      await page.getByTestId('camera-preview').scrollIntoViewIfNeeded();
      await screenshot(page, '35-settings-video');

      await page.getByTestId('test-call-settings').click();
      await until(() => scenario.callsOf('place_call').length === 2, 'the second test call');
      // The call holds the camera: the preview is let go.
      await until(() => scenario.callsOf('preview_camera').at(-1)?.on === false, 'the preview to be closed');
      await page.getByTestId('hangup').click();
      await until(() => scenario.callsOf('hang_up').length === 1, 'hang up');
    });
  });
});

describe('call view', () => {
  test('dialing → connected (timer runs) → ended → back; controls never move', async () => {
    const t0 = Date.UTC(2026, 10, 20, 9, 0, 0);
    const scenario = new Scenario({ replies: { contacts: [contact('bob')] } });
    await withApp(scenario, { clockAt: t0 }, async (page) => {
      await page.getByTestId('call-audio-bob').click();
      await waitText(page, 'call-status', 'Calling…');
      await emit(page, { event: 'dialing', call_id: 'c1', invitees: ['bob'] });
      assert.equal(await page.getByTestId('tile-bob').getAttribute('data-state'), 'ringing');
      assert.equal(await text(page, 'call-timer'), '');
      const boxes = async () => ({
        controls: await page.getByTestId('call-controls').boundingBox(),
        hangup: await page.getByTestId('hangup').boundingBox(),
        status: await page.getByTestId('call-status').boundingBox(),
        timer: await page.getByTestId('call-timer').boundingBox(),
        tile: await page.getByTestId('tile-bob').boundingBox(),
      });
      const dialing = await boxes();
      await screenshot(page, '05-call-dialing');

      await emit(page, { event: 'user_joined', user: 'bob' });
      // The server connected the call 65 s before the test's "now".
      await emit(page, { event: 'call_began', call_id: 'c1', media: 'audio', connected_at: t0 - 65_000 });
      await waitText(page, 'call-status', 'Connected');
      await waitText(page, 'call-timer', '01:05');
      await page.clock.runFor(1000);
      await waitText(page, 'call-timer', '01:06');
      await page.clock.runFor(60_000);
      await waitText(page, 'call-timer', '02:06');

      await live(page, { kind: 'level', user: 'bob', level: 60 });
      await live(page, { kind: 'quality', user: 'bob', loss_percent: 14, rtt_ms: 320, jitter_ms: 12, relayed: false, weak: true, r_factor: 47.6, mos: 2.45 });
      await page.locator('[data-testid="tile-bob"][data-speaking="true"][data-weak="true"]').waitFor();
      assert.equal(await page.getByTestId('weak-bob').isVisible(), true, 'weak-network badge shown');
      // The call-quality score, explained on hover.
      assert.equal(await text(page, 'score-bob'), '2.5');
      assert.equal(await page.getByTestId('score-bob').getAttribute('data-grade'), 'poor');
      assert.equal(
        await page.getByTestId('score-bob').getAttribute('title'),
        'Call quality 2.5 of 5, poor (E-model R 48): 14.0 % lost, 320 ms round trip, 12 ms jitter',
      );
      // Nothing arrives from bob for a while: the call says so, not "Connected", until it comes back.
      await emit(page, { event: 'media_link', user: 'bob', state: 'reconnecting' });
      await waitText(page, 'call-status', 'Reconnecting…');
      await page.locator('[data-testid="tile-bob"][data-reconnecting="true"]').waitFor();
      assert.equal(await text(page, 'reconnecting-bob'), 'Reconnecting…');
      await emit(page, { event: 'media_link', user: 'bob', state: 'connected' });
      await waitText(page, 'call-status', 'Connected');
      assert.equal(await page.getByTestId('reconnecting-bob').count(), 0, 'the hint goes when media comes back');
      await page.getByTestId('mute-mic').click();
      await page.locator('[data-testid="mute-mic"][aria-pressed="true"]').waitFor();
      assert.deepEqual(scenario.callsOf('mute_microphone'), [{ muted: true }]);
      const connected = await boxes();
      await screenshot(page, '06-call-connected');

      await emit(page, { event: 'call_ended', call_id: 'c1', reason: 'hangup', duration_s: 126 });
      await waitText(page, 'call-status', 'Call ended');
      await waitText(page, 'call-timer', '02:06');
      const ended = await boxes();
      await screenshot(page, '07-call-ended');

      assert.deepEqual(connected, dialing, 'no layout shift from dialing to connected');
      assert.deepEqual(ended, dialing, 'no layout shift from connected to ended');

      await page.clock.runFor(3000);
      await page.getByTestId('call-view').waitFor({ state: 'detached' });
      await page.getByTestId('contacts-list').waitFor();
    });
  });

  test('our own tile shows our account; the device pickers offer the system default without any device', async () => {
    const account = { ...ACCOUNT, user: 'alice', nickname: 'Alice Liddell' };
    const failing = new Scenario({
      account,
      replies: {
        contacts: [contact('bob')],
        devices: () => {
          throw { code: 'no_device', message: 'no sound card' };
        },
      },
    });
    await withApp(failing, {}, async (page) => {
      await page.getByTestId('call-audio-bob').click();
      await emit(page, { event: 'dialing', call_id: 'c1', invitees: ['bob'] });
      await emit(page, { event: 'user_joined', user: 'bob' });
      await emit(page, { event: 'call_began', call_id: 'c1', media: 'audio', connected_at: Date.now() });
      await waitText(page, 'call-status', 'Connected');
      const self = page.getByTestId('tile-alice');
      assert.equal((await self.locator('.avatar').textContent()).trim(), 'AL', 'initials of the account nickname');
      assert.equal((await self.locator('.name').textContent()).trim(), 'You');
      assert.equal(await page.getByRole('group', { name: /^You/ }).getAttribute('data-testid'), 'tile-alice', 'named "You" for screen readers');
      for (const id of ['call-microphone', 'call-speaker']) {
        const picker = page.getByTestId(id);
        assert.deepEqual(await picker.locator('option').allTextContents(), ['System default'], `${id} offers the default`);
        assert.equal(await picker.inputValue(), '');
        assert.equal(await picker.evaluate((select) => select.selectedIndex), 0, `${id} shows it`);
        // Drawn by the page, so its colours (light text on the dark stage) are the ones shown.
        const style = await picker.evaluate((select) => {
          const css = getComputedStyle(select);
          return { appearance: css.appearance, color: css.color, background: css.backgroundColor };
        });
        assert.equal(style.appearance, 'none');
        assert.notEqual(style.color, style.background);
      }
    });
    const empty = new Scenario({ settings: { microphone: 'alsa:usb' }, replies: { contacts: [contact('bob')], devices: [] } });
    await withApp(empty, {}, async (page) => {
      await page.getByTestId('call-audio-bob').click();
      await emit(page, { event: 'dialing', call_id: 'c1', invitees: ['bob'] });
      assert.deepEqual(await page.getByTestId('call-speaker').locator('option').allTextContents(), ['System default']);
      assert.equal(await page.getByTestId('call-speaker').inputValue(), '');
      // A chosen microphone that is not there now stays shown, not a blank box.
      assert.deepEqual(await page.getByTestId('call-microphone').locator('option').allTextContents(), ['System default', 'alsa:usb (not connected)']);
      assert.equal(await page.getByTestId('call-microphone').inputValue(), 'alsa:usb');
      await page.getByTestId('call-microphone').selectOption('');
      await until(() => empty.settings.microphone === null, 'the default microphone to be saved');
    });
  });

  test('hang up while ringing; busy is told', async () => {
    const scenario = new Scenario({ replies: { contacts: [contact('bob')] } });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('call-audio-bob').click();
      await emit(page, { event: 'dialing', call_id: 'c1', invitees: ['bob'] });
      await emit(page, { event: 'user_busy', user: 'bob' });
      await emit(page, { event: 'not_connected', call_id: 'c1', reason: 'busy' });
      await waitText(page, 'call-status', 'Busy');
      await screenshot(page, '08-call-busy');
    });
    const second = new Scenario({ replies: { contacts: [contact('bob')] } });
    await withApp(second, {}, async (page) => {
      await page.getByTestId('call-video-bob').click();
      await page.getByTestId('hangup').click();
      await until(() => second.callsOf('hang_up').length === 1, 'hang_up');
    });
  });

  test('a group call shows a grid; invite more', async () => {
    const scenario = new Scenario({ replies: { contacts: ['bob', 'carol', 'dave', 'erin'].map((u) => contact(u)) } });
    await withApp(scenario, {}, async (page) => {
      for (const user of ['bob', 'carol', 'dave']) await page.getByTestId(`contact-select-${user}`).check();
      await page.getByTestId('group-video').click();
      assert.deepEqual(scenario.callsOf('place_call'), [{ to: ['bob', 'carol', 'dave'], media: 'video' }]);
      await emit(page, { event: 'dialing', call_id: 'g1', invitees: ['bob', 'carol', 'dave'] });
      await emit(page, { event: 'user_joined', user: 'bob' });
      await emit(page, { event: 'call_began', call_id: 'g1', media: 'video', connected_at: Date.now() });
      await emit(page, { event: 'user_joined', user: 'carol' });
      await emit(page, { event: 'user_rejected', user: 'dave' });
      await waitText(page, 'call-status', '3 people in the call');
      await page.getByTestId('tile-dave').waitFor({ state: 'detached' });
      assert.equal(await page.locator('[data-testid^="tile-"]').count(), 3, 'me, bob and carol');
      const me = await page.getByTestId('tile-me').boundingBox();
      const bob = await page.getByTestId('tile-bob').boundingBox();
      assert.equal(Math.round(me.width), Math.round(bob.width), 'grid tiles are the same size');
      await live(page, { kind: 'level', user: 'carol', level: 80 });
      await page.locator('[data-testid="tile-carol"][data-speaking="true"]').waitFor();
      // The button around a tile is named for its action and described by the tile's state.
      const described = await page.getByTestId('enlarge-carol').evaluate((button) =>
        (button.getAttribute('aria-describedby') ?? '').split(' ').map((id) => document.getElementById(id)?.textContent ?? '').join(' '),
      );
      assert.match(described, /Carol.*Speaking/, 'a screen reader hears that carol speaks');
      assert.equal(await page.getByRole('button', { name: 'Enlarge Carol' }).count(), 1);
      assert.equal(await page.getByRole('group', { name: /^Carol, Speaking/ }).count(), 1, "the tile's own name");
      await screenshot(page, '09-call-group');

      // A click enlarges a person; a click on them again brings everyone back.
      await page.getByTestId('enlarge-carol').click();
      await page.locator('[data-testid="enlarged"] [data-testid="tile-carol"]').waitFor();
      const large = await page.getByTestId('tile-carol').boundingBox();
      const small = await page.getByTestId('tile-bob').boundingBox();
      assert.ok(large.width > 3 * small.width, `carol large (${large.width} px), bob small (${small.width} px)`);
      await screenshot(page, '09b-call-group-enlarged');
      await page.getByTestId('enlarged').click();
      await page.getByTestId('enlarged').waitFor({ state: 'detached' });
      // Keyboard: Tab to a tile and Enter.
      await page.getByTestId('enlarge-bob').focus();
      await page.keyboard.press('Enter');
      await page.locator('[data-testid="enlarged"] [data-testid="tile-bob"]').waitFor();
      await page.getByTestId('enlarged').click();

      await page.getByTestId('invite-more').click();
      await page.getByTestId('invite-pick-erin').check();
      await page.getByTestId('invite-send').click();
      await page.getByTestId('invite-dialog').waitFor({ state: 'detached' });
      assert.deepEqual(scenario.callsOf('invite_more'), [{ to: ['erin'] }]);
    });
  });

  test('a call one can still join: the join bar', async () => {
    const summary = { call_id: 'g7', caller: 'bob', invitees: ['me', 'carol'], media: 'audio', joined: ['bob', 'carol'], connected_at: 1, user_data: null };
    const scenario = new Scenario({ replies: { active_calls: [summary] } });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('join-bar').waitFor();
      assert.match(await text(page, 'join-bar'), /2 people are in a call/);
      await screenshot(page, '10-join-bar');
      await page.getByTestId('join-button').click();
      await page.getByTestId('call-view').waitFor();
      await waitText(page, 'call-status', 'Connecting…');
      assert.deepEqual(scenario.callsOf('join_call'), [{ callId: 'g7', media: 'audio' }]);
    });
  });
});

describe('incoming', () => {
  const ringing = { call_id: 'c5', caller: 'alice', caller_name: 'Alice Liddell', caller_avatar: null, invitees: ['me'], media: 'video' };

  test('the banner window: caller, media, Enter accepts and the window closes', async () => {
    const scenario = new Scenario({ replies: { incoming_call: ringing } });
    await withApp(scenario, { label: 'incoming', viewport: { width: 360, height: 120 } }, async (page) => {
      await waitText(page, 'banner-caller', 'Alice Liddell');
      assert.match(await text(page, 'banner-media'), /Incoming video call/);
      const box = await page.getByTestId('banner').boundingBox();
      assert.ok(box.width <= 360 && box.height <= 120, 'fits the banner window');
      for (const id of ['banner-accept', 'banner-decline']) {
        const b = await page.getByTestId(id).boundingBox();
        assert.ok(b.x + b.width <= 360 && b.y + b.height <= 120, `${id} is inside the window`);
      }
      await screenshot(page, '11-banner');
      await page.keyboard.press('Enter');
      await until(() => scenario.callsOf('accept_call').length === 1, 'accept_call');
      await until(() => scenario.callsOf('plugin:window|close').length === 1, 'the banner to close');
      assert.equal(scenario.callsOf('reject_call').length, 0);
    });
  });

  test('the banner: a long name ends in an ellipsis, the call type stays whole, the buttons stay in', async () => {
    const long = { ...ringing, caller: 'maxi', caller_name: 'Maximiliana Wolfeschlegelstein', media: 'audio' };
    assert.equal(long.caller_name.length, 30);
    for (const language of ['en', 'zh']) {
      const scenario = new Scenario({ settings: { language }, replies: { incoming_call: long } });
      await withApp(scenario, { label: 'incoming', viewport: { width: 360, height: 124 } }, async (page) => {
        await waitText(page, 'banner-caller', long.caller_name);
        const caller = await page.getByTestId('banner-caller').evaluate((p) => ({
          cut: p.scrollWidth > p.clientWidth,
          ellipsis: getComputedStyle(p).textOverflow === 'ellipsis',
        }));
        assert.deepEqual(caller, { cut: true, ellipsis: true }, 'the name is cut with an ellipsis');
        const media = page.getByTestId('banner-media');
        assert.match(await media.textContent(), language === 'en' ? /Incoming audio call/ : /语音来电/);
        const whole = await media.evaluate((p) => p.scrollWidth <= p.clientWidth && p.scrollHeight <= p.clientHeight);
        assert.ok(whole, 'the call type is not clipped');
        const text = await media.boundingBox();
        const accept = await page.getByTestId('banner-accept').boundingBox();
        const decline = await page.getByTestId('banner-decline').boundingBox();
        assert.ok(text.x + text.width <= decline.x, 'the call type ends before the buttons');
        for (const b of [accept, decline]) assert.ok(b.x >= 0 && b.x + b.width <= 360 && b.y >= 0 && b.y + b.height <= 124, 'a button is inside the window');
        if (language === 'en') await screenshot(page, '11b-banner-long-name');
      });
    }
  });

  test('the banner: Escape declines', async () => {
    const scenario = new Scenario({ replies: { incoming_call: ringing } });
    await withApp(scenario, { label: 'incoming', viewport: { width: 360, height: 120 } }, async (page) => {
      await page.getByTestId('banner-decline').waitFor();
      await page.keyboard.press('Escape');
      await until(() => scenario.callsOf('reject_call').length === 1, 'reject_call');
      assert.equal(scenario.callsOf('accept_call').length, 0);
    });
  });

  test('the banner closes when the caller gives up', async () => {
    const scenario = new Scenario({ replies: { incoming_call: ringing } });
    await withApp(scenario, { label: 'incoming', viewport: { width: 360, height: 120 } }, async (page) => {
      await page.getByTestId('banner-caller').waitFor();
      await emit(page, { event: 'not_connected', call_id: 'c5', reason: 'cancelled' });
      await until(() => scenario.callsOf('plugin:window|close').length === 1, 'the banner to close');
    });
  });

  test('banner presentation: the main window keeps its page while it rings', async () => {
    const scenario = new Scenario();
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('contacts-list').waitFor();
      await emit(page, { event: 'incoming_call', call_id: 'c5', caller: 'alice', invitees: ['me'], media: 'audio', user_data: null });
      await emit(page, { event: 'user_joined', user: 'alice' });
      assert.equal(await page.getByTestId('call-view').count(), 0);
      // Accepted in the banner window: the main window shows the call once it connects.
      await emit(page, { event: 'call_began', call_id: 'c5', media: 'audio', connected_at: Date.now() });
      await page.getByTestId('call-view').waitFor();
      await page.getByTestId('tile-alice').waitFor();
    });
  });

  test('full-screen presentation: Accept and Decline in the main window, Escape declines', async () => {
    const scenario = new Scenario({ settings: { incoming: 'full_screen' } });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('contacts-list').waitFor();
      await emit(page, { event: 'incoming_call', call_id: 'c6', caller: 'alice', invitees: ['me'], media: 'video', user_data: null });
      await page.getByTestId('call-view').waitFor();
      await waitText(page, 'call-status', 'Incoming video call');
      await page.getByTestId('incoming-accept').waitFor();
      for (const id of ['incoming-accept', 'incoming-decline']) {
        const box = await page.getByTestId(id).boundingBox();
        assert.ok(box.width >= 160 && box.height >= 56, `${id} is a big button (${box.width}×${box.height})`);
      }
      assert.equal(await page.getByTestId('incoming-accept').getAttribute('aria-keyshortcuts'), 'Enter');
      assert.equal(await page.getByTestId('incoming-decline').getAttribute('aria-keyshortcuts'), 'Escape');
      assert.equal(await page.evaluate(() => document.activeElement?.getAttribute('data-testid')), 'incoming-accept', 'focus on Accept');
      await screenshot(page, '12-incoming-full-screen');
      await page.keyboard.press('Escape');
      await until(() => scenario.callsOf('reject_call').length === 1, 'reject_call');
      await waitText(page, 'call-status', 'Declined');
      assert.equal(scenario.callsOf('accept_call').length, 0);
    });
  });

  test('full-screen presentation: Enter accepts, also with the focus off the buttons', async () => {
    const scenario = new Scenario({ settings: { incoming: 'full_screen' } });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('contacts-list').waitFor();
      await emit(page, { event: 'incoming_call', call_id: 'c7', caller: 'alice', invitees: ['me'], media: 'audio', user_data: null });
      await page.getByTestId('incoming-accept').waitFor();
      assert.equal(await page.getByTestId('call-controls').count(), 0, 'Accept and Decline instead of the call controls');
      await page.getByTestId('call-status').click();
      await page.keyboard.press('Enter');
      await until(() => scenario.callsOf('accept_call').length === 1, 'accept_call');
      assert.equal(scenario.callsOf('reject_call').length, 0);
      await emit(page, { event: 'call_began', call_id: 'c7', media: 'audio', connected_at: Date.now() });
      await page.getByTestId('call-controls').waitFor();
      await page.getByTestId('incoming-actions').waitFor({ state: 'detached' });
    });
  });
});

describe('recents', () => {
  test('tabs, durations, redial and delete', async () => {
    const now = Date.now();
    const history = [
      { call_id: 'h3', caller: 'alice', invitees: ['me'], media: 'video', started_at: now - 60_000, connected_at: null, ended_at: now - 30_000, duration_s: 0, direction: 'incoming', result: 'missed' },
      { call_id: 'h2', caller: 'me', invitees: ['bob'], media: 'audio', started_at: now - 3_600_000, connected_at: now - 3_590_000, ended_at: now - 3_515_000, duration_s: 75, direction: 'outgoing', result: 'completed', end_reason: 'hangup', quality: { mos_average: 4.31, mos_worst: 3.9 } },
      { call_id: 'h4', caller: 'bob', invitees: ['me'], media: 'audio', started_at: now - 7_200_000, connected_at: now - 7_190_000, ended_at: now - 7_150_000, duration_s: 40, direction: 'incoming', result: 'completed', end_reason: 'failed', quality: { mos_average: 3.2, mos_worst: 1.13 } },
      { call_id: 'h1', caller: 'me', invitees: ['bob', 'carol'], media: 'audio', started_at: now - 90_000_000, connected_at: null, ended_at: now - 89_990_000, duration_s: 0, direction: 'outgoing', result: 'no_answer' },
    ];
    const scenario = new Scenario({ replies: { history, contacts: [contact('bob', 'online', 'Bob', 'Bobby')] } });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('nav-recents').click();
      await page.getByTestId('history-row-h2').waitFor();
      assert.equal(await text(page, 'history-duration-h2'), '01:15');
      assert.equal(await text(page, 'history-duration-h3'), 'Missed');
      assert.equal(await text(page, 'history-duration-h1'), 'No answer');
      // A call whose media could not be recovered says so, and each call's quality is kept.
      assert.equal(await text(page, 'history-duration-h4'), '00:40, dropped');
      assert.equal(await text(page, 'history-score-h2'), '4.3');
      assert.equal(await page.getByTestId('history-score-h2').getAttribute('title'), 'Call quality 4.3 of 5 on average, good; 3.9 at its worst');
      assert.equal(await page.getByTestId('history-score-h4').getAttribute('data-grade'), 'poor');
      assert.equal(await page.getByTestId('history-score-h3').count(), 0, 'a missed call has no score');
      assert.match(await text(page, 'history-row-h2'), /Bobby/);
      assert.match(await text(page, 'history-row-h1'), /Bobby and 1 more/);
      assert.equal(await page.getByTestId('history-redial-h1').isDisabled(), true, 'no redial for a group call');
      await screenshot(page, '13-recents');

      await page.getByTestId('history-tab-missed').click();
      await page.getByTestId('history-row-h2').waitFor({ state: 'detached' });
      assert.equal(await page.getByTestId('history-list').locator('li').count(), 1);
      await page.getByTestId('history-tab-all').click();

      await page.getByTestId('history-delete-h3').click();
      await page.getByTestId('history-row-h3').waitFor({ state: 'detached' });
      assert.deepEqual(scenario.callsOf('delete_history'), [{ callIds: ['h3'] }]);

      await page.getByTestId('history-redial-h2').click();
      await page.getByTestId('call-view').waitFor();
      assert.deepEqual(scenario.callsOf('place_call'), [{ to: ['bob'], media: 'audio' }]);
    });
  });
});

describe('recents, clearing', () => {
  test('clear all asks first', async () => {
    const record = { call_id: 'h1', caller: 'me', invitees: ['bob'], media: 'audio', started_at: Date.now(), connected_at: null, ended_at: Date.now(), duration_s: 0, direction: 'outgoing', result: 'cancelled' };
    const scenario = new Scenario({ replies: { history: [record] } });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('nav-recents').click();
      assert.equal(await text(page, 'history-duration-h1'), 'Cancelled');
      await page.getByTestId('history-clear').click();
      assert.equal(scenario.callsOf('clear_history').length, 0, 'not before the confirmation');
      await page.getByTestId('history-clear-confirm').click();
      await waitText(page, 'history-empty', 'No calls yet.');
      assert.equal(scenario.callsOf('clear_history').length, 1);
    });
  });
});

/** The text of the option a select shows. */
function selectedText(page, testid) {
  return page.getByTestId(testid).evaluate((select) => select.selectedOptions[0]?.textContent?.trim() ?? '');
}

describe('settings', () => {
  test('ringtone by typed path, preview, meter, theme and language', async () => {
    const scenario = new Scenario({
      replies: {
        save_settings: ({ settings }) => {
          if (settings.ringtone.kind === 'custom' && settings.ringtone.path === '/missing.ogg') throw { code: 'ringtone_missing', message: 'no such file' };
          scenario.settings = settings;
          return settings;
        },
      },
    });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('nav-settings').click();
      await page.getByTestId('ringtone-select').waitFor();
      assert.equal(await page.getByTestId('ringtone-select').inputValue(), 'bundled:classic');
      assert.deepEqual(scenario.callsOf('microphone_meter'), [{ on: true }]);
      await live(page, { kind: 'microphone_level', level: 42 });
      await page.locator('[data-testid="mic-meter"][aria-valuenow="42"]').waitFor();

      await page.getByTestId('ringtone-path').fill('/missing.ogg');
      await page.getByTestId('ringtone-use').click();
      await waitText(page, 'settings-error', 'That sound file was not found.');
      assert.equal(await page.getByTestId('ringtone-select').inputValue(), 'bundled:classic', 'a refused file is not kept');

      // The path box has the row to itself, with Use beside it.
      const pathBox = await page.getByTestId('ringtone-path').boundingBox();
      const use = await page.getByTestId('ringtone-use').boundingBox();
      const select = await page.getByTestId('ringtone-select').boundingBox();
      assert.ok(pathBox.width >= 0.6 * (use.x + use.width - pathBox.x), `the path box is wide (${pathBox.width} px)`);
      assert.ok(use.x > pathBox.x + pathBox.width && Math.abs(use.y + use.height / 2 - (pathBox.y + pathBox.height / 2)) < 2, 'Use is beside it');
      assert.ok(Math.abs(pathBox.x - select.x) < 1, 'aligned with the ringtone select');

      await page.getByTestId('ringtone-path').fill('/home/me/ring.ogg');
      await page.getByTestId('ringtone-use').click();
      await until(() => scenario.settings.ringtone.path === '/home/me/ring.ogg', 'the custom ringtone to be saved');
      await waitText(page, 'settings-error', '');
      assert.equal(await page.getByTestId('ringtone-select').inputValue(), 'custom:/home/me/ring.ogg');
      assert.equal(await selectedText(page, 'ringtone-select'), 'Custom: ring.ogg');
      assert.equal(await page.getByTestId('ringtone-path').inputValue(), '/home/me/ring.ogg');
      // Still so on coming back to the page.
      await page.getByTestId('nav-recents').click();
      await page.getByTestId('nav-settings').click();
      assert.equal(await selectedText(page, 'ringtone-select'), 'Custom: ring.ogg');
      assert.equal(await page.getByTestId('ringtone-path').inputValue(), '/home/me/ring.ogg');

      await page.getByTestId('ringtone-preview').click();
      assert.deepEqual(scenario.callsOf('preview_ringtone'), [{ source: { kind: 'custom', path: '/home/me/ring.ogg' } }]);
      await emit(page, { event: 'ringtone_playing', kind: 'incoming', source: 'custom:/home/me/ring.ogg' });
      await page.locator('[data-testid="ringtone-preview"][aria-pressed="true"]').waitFor();
      await screenshot(page, '14-settings');
      await page.getByTestId('ringtone-preview').click();
      await until(() => scenario.callsOf('stop_preview').length === 1, 'stop_preview');

      await page.getByTestId('ringtone-select').selectOption('bundled:chime');
      await until(() => scenario.settings.ringtone.name === 'chime', 'the bundled ringtone to be saved');
      assert.equal(await selectedText(page, 'ringtone-select'), 'Chime');
      assert.equal(await page.getByTestId('ringtone-select').locator('option').count(), 2, 'no custom entry once a bundled one is chosen');
      assert.equal(await page.getByTestId('ringtone-path').inputValue(), '/home/me/ring.ogg', 'the path stays to use again');
      await page.getByTestId('incoming-full_screen').check();
      await until(() => scenario.settings.incoming === 'full_screen', 'full-screen incoming');
      await page.getByTestId('echo-cancellation').uncheck();
      await until(() => scenario.settings.echo_cancellation === false, 'echo cancellation off');

      await page.getByTestId('theme-dark').check();
      await page.locator('html[data-theme="dark"]').waitFor();
      await page.getByTestId('settings-language').selectOption('zh');
      await page.getByTestId('nav-recents').filter({ hasText: '最近通话' }).waitFor();
      assert.equal(scenario.settings.language, 'zh');
      await screenshot(page, '15-settings-dark-zh');

      await page.getByTestId('profile-nickname').fill('Mia Wong');
      await page.getByTestId('profile-save').click();
      await page.getByTestId('nav-contacts').filter({ hasText: '联系人' }).waitFor();
      await until(() => scenario.callsOf('set_profile').length === 1, 'set_profile');
      assert.deepEqual(scenario.callsOf('set_profile')[0], { nickname: 'Mia Wong', avatar: null });
      assert.match(await page.locator('nav').textContent(), /Mia Wong/, 'the new name shows at once');

      await page.getByTestId('sign-out').click();
      await page.getByTestId('signin-form').waitFor();
      assert.equal(scenario.callsOf('sign_out').length, 1);
    });
  });
});

describe('settings, files and devices', () => {
  test('a file chosen in the dialog shows as the ringtone and in the path box; device pickers without devices', async () => {
    const scenario = new Scenario({
      settings: { ringtone: { kind: 'custom', path: '/music/old bell.wav' } },
      replies: {
        choose_ringtone_file: '/home/me/Music/My Ring Tone.flac',
        devices: [],
        ringtones: () => {
          throw { code: 'internal', message: 'no list' };
        },
      },
    });
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('nav-settings').click();
      // A custom ringtone set before the page opened, with no bundled list: still shown.
      assert.equal(await selectedText(page, 'ringtone-select'), 'Custom: old bell.wav');
      assert.equal(await page.getByTestId('ringtone-path').inputValue(), '/music/old bell.wav');
      await page.getByTestId('ringtone-choose').click();
      await until(() => scenario.settings.ringtone.path === '/home/me/Music/My Ring Tone.flac', 'the chosen file to be saved');
      await page.waitForFunction(() => document.querySelector('[data-testid="ringtone-path"]')?.value === '/home/me/Music/My Ring Tone.flac');
      assert.equal(await selectedText(page, 'ringtone-select'), 'Custom: My Ring Tone.flac');
      assert.deepEqual(await page.getByTestId('ringtone-select').locator('option').allTextContents().then((all) => all.map((o) => o.trim())), [
        'Custom: My Ring Tone.flac',
      ]);
      for (const id of ['settings-microphone', 'settings-speaker']) {
        assert.equal(await selectedText(page, id), 'System default', `${id} shows the default`);
      }
    });
  });
});

describe('profile picture', () => {
  test('chosen, shown and saved in settings; removed; a file that is no picture is refused', async () => {
    const scenario = new Scenario();
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('nav-settings').click();
      await page.getByTestId('profile-avatar').setInputFiles({ name: 'me.txt', mimeType: 'text/plain', buffer: Buffer.from('not a picture') });
      await page.getByText('That file is not a picture Hark can read.').waitFor();
      // A small picture, drawn by the page itself.
      const dataUri = await page.evaluate(() => {
        const canvas = document.createElement('canvas');
        canvas.width = 120;
        canvas.height = 80;
        const context = canvas.getContext('2d');
        context.fillStyle = '#c33';
        context.fillRect(0, 0, 120, 80);
        return canvas.toDataURL('image/png');
      });
      const png = Buffer.from(dataUri.split(',')[1], 'base64');
      await page.getByTestId('profile-avatar').setInputFiles({ name: 'me.png', mimeType: 'image/png', buffer: png });
      const form = page.locator('form').filter({ has: page.getByTestId('profile-avatar') });
      await form.locator('img').waitFor();
      await page.getByTestId('profile-save').click();
      await until(() => scenario.callsOf('set_profile').length === 1, 'set_profile');
      assert.match(scenario.callsOf('set_profile')[0].avatar, /^data:image\/jpeg;base64,/);
      await form.getByRole('button', { name: 'Remove' }).click();
      await form.locator('img').waitFor({ state: 'detached' });
      assert.equal((await form.locator('.avatar').textContent()).trim(), 'M');
    });
  });
});

describe('mini window', () => {
  const t0 = Date.UTC(2026, 10, 20, 9, 0, 0);
  const inCall = (invitees, mutes = { microphone: false, speaker: false }) => ({
    me: 'me',
    events: [
      { event: 'dialing', call_id: 'c7', invitees },
      { event: 'call_began', call_id: 'c7', media: 'audio', connected_at: t0 - 65_000 },
      ...invitees.map((user) => ({ event: 'user_joined', user })),
    ],
    mutes,
  });
  const inside = async (page, ids, width, height) => {
    for (const id of ids) {
      const b = await page.getByTestId(id).boundingBox();
      assert.ok(b.x >= 0 && b.y >= 0 && b.x + b.width <= width && b.y + b.height <= height, `${id} is inside the window`);
    }
  };

  test("a video call shows the other person's picture above the controls, their avatar when their camera is off", async () => {
    const replay = inCall(['alice']);
    replay.events[1] = { ...replay.events[1], media: 'video', connected_at: Date.now() - 65_000 };
    const scenario = new Scenario({ replies: { call_replay: replay, frame_socket: frames.info } });
    const height = 84 + 169;
    await withApp(scenario, { label: 'mini', viewport: { width: 300, height } }, async (page) => {
      await waitText(page, 'mini-name', 'Alice');
      await until(() => frames.openPages('alice').some((p) => p.sizes.length > 0), "alice's tile in the mini window");
      const said = frames.openPages('alice').at(-1).sizes.at(-1);
      // The window's width less its 1 px border, by a 16:9 height.
      assert.ok(said.width >= 296 && said.width <= 300 && Math.abs(said.height - (said.width * 9) / 16) <= 1.5 && said.fit === 'cover', `only the pixels the window shows: ${JSON.stringify(said)}`);
      frames.show('alice', solidPicture(320, 180, RED.yuv));
      await page.locator('[data-testid="mini-picture"][data-video="true"]').waitFor();
      await untilDrawn(page, 'video-alice', RED.rgb, "alice's picture in the mini window");
      await inside(page, ['mini-picture', 'mini-back', 'mini-mute', 'mini-hangup'], 300, height);
      await screenshot(page, '36-mini-window-video');
      await emit(page, { event: 'remote_camera', user: 'alice', on: false });
      await page.getByTestId('video-alice').waitFor({ state: 'detached' });
      await page.locator('[data-testid="mini-picture"][data-video="false"]').waitFor();
    });
  });

  test('who, the running timer, mute kept in step with the main window, back to the call, hang up', async () => {
    const scenario = new Scenario({ replies: { call_replay: inCall(['alice']) } });
    await withApp(scenario, { label: 'mini', viewport: { width: 300, height: 84 }, clockAt: t0 }, async (page) => {
      await waitText(page, 'mini-name', 'Alice');
      await waitText(page, 'mini-status', '01:05');
      await page.clock.runFor(2000);
      await waitText(page, 'mini-status', '01:07');
      await inside(page, ['mini-back', 'mini-mute', 'mini-hangup'], 300, 84);
      assert.equal(await page.getByTestId('mini').getAttribute('data-tauri-drag-region'), '', 'the window drags by its background');
      await screenshot(page, '13-mini-window');

      const mute = page.getByTestId('mini-mute');
      assert.equal(await mute.getAttribute('aria-pressed'), 'false');
      await mute.click();
      await until(() => scenario.callsOf('mute_microphone').length === 1, 'mute_microphone');
      assert.deepEqual(scenario.callsOf('mute_microphone')[0], { muted: true });
      assert.equal(await mute.getAttribute('aria-pressed'), 'true');
      assert.equal(await mute.getAttribute('aria-label'), 'Unmute microphone');
      // Unmuted in the main window's call view: this one follows.
      await emitMutes(page, { microphone: false, speaker: false });
      await page.locator('[data-testid="mini-mute"][aria-pressed="false"]').waitFor();

      await page.getByTestId('mini-back').click();
      await until(() => scenario.callsOf('show_main').length === 1, 'show_main');
      await page.getByTestId('mini-hangup').click();
      await until(() => scenario.callsOf('hang_up').length === 1, 'hang_up');
    });
  });

  test('a group call names the first person and how many more; a long name is cut, the count and buttons stay in', async () => {
    const scenario = new Scenario({
      replies: {
        call_replay: inCall(['maxi', 'bob', 'carol'], { microphone: true, speaker: false }),
        profiles: ({ users }) => users.map((user) => ({ user, nickname: user === 'maxi' ? 'Maximiliana Wolfeschlegelstein' : user, avatar: null })),
      },
    });
    await withApp(scenario, { label: 'mini', viewport: { width: 300, height: 84 }, clockAt: t0 }, async (page) => {
      await waitText(page, 'mini-name', 'Maximiliana Wolfeschlegelstein');
      assert.equal(await text(page, 'mini-more'), '+2');
      assert.match(await page.getByTestId('mini-back').getAttribute('aria-label'), /Maximiliana Wolfeschlegelstein and 2 more/);
      const cut = await page.getByTestId('mini-name').evaluate((n) => n.scrollWidth > n.clientWidth && getComputedStyle(n).textOverflow === 'ellipsis');
      assert.ok(cut, 'the name ends in an ellipsis');
      assert.equal(await page.getByTestId('mini-mute').getAttribute('aria-pressed'), 'true', 'muted before it opened');
      await inside(page, ['mini-back', 'mini-more', 'mini-mute', 'mini-hangup'], 300, 84);
      await screenshot(page, '13b-mini-window-group');
    });
  });

  test('a group video call shows whoever speaks: their picture, name and the count of the others', async () => {
    const replay = inCall(['alice', 'bob', 'carol']);
    replay.events[1] = { ...replay.events[1], media: 'video', connected_at: Date.now() - 65_000 };
    const scenario = new Scenario({ replies: { call_replay: replay, frame_socket: frames.info } });
    await withApp(scenario, { label: 'mini', viewport: { width: 300, height: 84 + 169 } }, async (page) => {
      // Shown once the replay is in, which comes after the window watches the live levels.
      await waitText(page, 'mini-name', 'Alice');
      await live(page, { kind: 'level', user: 'carol', level: 70 });
      await waitText(page, 'mini-name', 'Carol');
      assert.equal(await text(page, 'mini-more'), '+2');
      await until(() => frames.openPages('carol').some((p) => p.sizes.length > 0), "carol's tile in the mini window");
      frames.show('carol', solidPicture(320, 180, BLUE.yuv));
      await untilDrawn(page, 'video-carol', BLUE.rgb, "carol's picture in the mini window");
      await page.getByTestId('video-alice').waitFor({ state: 'detached' });
      await screenshot(page, '36b-mini-window-speaker');
    });
  });

  test('opened after the call ended, it closes itself', async () => {
    const scenario = new Scenario();
    await withApp(scenario, { label: 'mini', viewport: { width: 300, height: 84 } }, async () => {
      await until(() => scenario.callsOf('plugin:window|close').length === 1, 'the mini window to close');
    });
  });
});

describe('help with problems', () => {
  test('a problem report from the last run is offered once; Settings copies the diagnostics', async () => {
    const report = {
      at_ms: Date.UTC(2026, 11, 3, 9, 30),
      summary: "Hark 0.1.0 stopped at crates/engine/src/peer.rs:120 (thread tokio-runtime-worker): called `Option::unwrap()` on a `None` value",
      file: '/home/me/.local/state/hark/logs/crash-1796290200.shown.txt',
    };
    const reports = [report];
    const scenario = new Scenario({ replies: { take_crash_report: () => reports.shift() ?? null } });
    await withApp(scenario, {}, async (page, context) => {
      await context.grantPermissions(['clipboard-read', 'clipboard-write']);
      await page.getByTestId('crash-notice').waitFor();
      assert.equal(await text(page, 'crash-summary'), report.summary);
      await screenshot(page, '40-crash-notice');
      await page.getByTestId('crash-open-logs').click();
      await until(() => scenario.callsOf('open_log_folder').length === 1, 'the log folder to be opened');
      await page.getByTestId('crash-dismiss').click();
      await page.getByTestId('crash-notice').waitFor({ state: 'detached' });

      await page.getByTestId('nav-settings').click();
      await page.getByTestId('copy-diagnostics').click();
      await page.getByTestId('diagnostics-status').filter({ hasText: 'Copied' }).waitFor();
      assert.equal(await page.evaluate(() => navigator.clipboard.readText()), scenario.replies.diagnostics);
      await page.getByTestId('open-log-folder').click();
      await until(() => scenario.callsOf('open_log_folder').length === 2, 'the log folder to be opened from Settings');
      await page.getByTestId('copy-diagnostics').scrollIntoViewIfNeeded();
      await screenshot(page, '41-settings-support');
    });
  });
});

describe("the administrator's policy", () => {
  const FILE = '/etc/hark/policy.toml';
  const REASON = 'Acme IT: calls stay audio and on our server';

  test('policy: no video, no inviting more, incoming presentation and ringtone files locked, each with the reason', async () => {
    const scenario = new Scenario({
      settings: { incoming: 'full_screen' },
      policy: { file: FILE, reason: REASON, video: false, invite_more: false, custom_ringtones: false, default_incoming: 'full_screen', incoming_locked: true },
      replies: { contacts: [contact('bob'), contact('carol')] },
    });
    await withApp(scenario, {}, async (page) => {
      // Settings: the locks, disabled with the reason; what is not locked still works.
      await page.getByTestId('nav-settings').click();
      await page.getByTestId('policy-section').waitFor();
      assert.equal(await text(page, 'policy-reason'), REASON);
      for (const id of ['video', 'invite_more', 'custom_ringtones', 'incoming']) await page.getByTestId(`policy-lock-${id}`).waitFor();
      assert.equal(await page.locator('[data-testid^="policy-lock-"]').count(), 4, 'only what the policy locks is listed');
      assert.match(await text(page, 'policy-section'), /\/etc\/hark\/policy\.toml/);

      // The inputs themselves, not only their group's aria-disabled (which Playwright also counts).
      const disabled = (id) => page.getByTestId(id).evaluate((input) => input.disabled);
      assert.equal(await page.getByTestId('incoming-full_screen').isChecked(), true);
      assert.equal(await disabled('incoming-full_screen'), true);
      assert.equal(await disabled('incoming-banner'), true, 'the other presentation cannot be chosen');
      assert.equal(await text(page, 'incoming-locked-reason'), REASON);

      for (const id of ['ringtone-choose', 'ringtone-path', 'ringtone-use']) assert.equal(await disabled(id), true, `${id} is locked`);
      assert.equal(await text(page, 'ringtone-file-locked-reason'), REASON);
      await page.getByTestId('ringtone-select').selectOption('bundled:chime');
      await until(() => scenario.settings.ringtone.name === 'chime', 'a bundled ringtone to be saved');

      // No camera: no preview, no camera choices, and the preview is never asked for.
      await page.getByTestId('video-locked').waitFor();
      assert.equal(await text(page, 'video-locked-reason'), REASON);
      for (const id of ['camera-preview', 'settings-camera', 'settings-resolution', 'camera-off-at-start']) assert.equal(await page.getByTestId(id).count(), 0, `${id} is not shown`);
      assert.deepEqual(scenario.callsOf('preview_camera').filter((a) => a.on), []);
      assert.equal(await page.getByTestId('policy-notice').count(), 0, 'a policy read whole has no notice');
      await page.getByTestId('policy-section').scrollIntoViewIfNeeded();
      await screenshot(page, '50-policy-settings');

      // Contacts: audio calls only.
      await page.getByTestId('nav-contacts').click();
      await page.getByTestId('call-audio-bob').waitFor();
      for (const id of ['call-video-bob', 'call-video-carol', 'dial-video', 'group-video']) assert.equal(await page.getByTestId(id).count(), 0, `${id} is not offered`);
      await screenshot(page, '51-policy-contacts');

      // A video call rings (full screen, as locked): Accept answers with audio, and there is no
      // separate audio-only button, no camera and no inviting more in the call.
      await emit(page, { event: 'incoming_call', call_id: 'p1', caller: 'carol', invitees: ['me'], media: 'video', user_data: null });
      await page.getByTestId('incoming-accept').waitFor();
      assert.equal(await page.getByTestId('incoming-accept-audio').count(), 0);
      await page.getByTestId('incoming-accept').click();
      await until(() => scenario.callsOf('accept_call').length === 1, 'accept_call');
      assert.deepEqual(scenario.callsOf('accept_call'), [{ audioOnly: true }]);
      await emit(page, { event: 'user_joined', user: 'carol' });
      await emit(page, { event: 'call_began', call_id: 'p1', media: 'video', connected_at: Date.now() });
      await waitText(page, 'call-status', 'Connected');
      for (const id of ['camera', 'to-audio', 'fit', 'invite-more']) assert.equal(await page.getByTestId(id).count(), 0, `${id} is not in the call`);
      await page.keyboard.press('Control+e');
      await page.getByTestId('hangup').click();
      await until(() => scenario.callsOf('hang_up').length === 1, 'hang_up');
      assert.deepEqual(scenario.callsOf('set_camera'), [], 'Ctrl+E does not turn a camera on');
    });
  });

  test('policy: without video, a video link offers an audio call and a video call is joined with audio', async () => {
    const links = [{ kind: 'call', link: { to: ['bob'], media: 'video' } }];
    const linked = new Scenario({ policy: { file: FILE, video: false }, replies: { contacts: [contact('bob')], take_link: () => links.shift() ?? null } });
    await withApp(linked, {}, async (page) => {
      await page.getByTestId('link-prompt').waitFor();
      await page.getByTestId('link-question').filter({ hasText: 'Call Bob?' }).waitFor();
      await page.getByTestId('link-video-off').waitFor();
      await page.getByTestId('link-call').click();
      await page.getByTestId('call-view').waitFor();
      assert.deepEqual(linked.callsOf('place_call'), [{ to: ['bob'], media: 'audio' }]);
    });
    const summary = { call_id: 'g9', caller: 'bob', invitees: ['me', 'carol'], media: 'video', joined: ['bob', 'carol'], connected_at: 1, user_data: null };
    const joining = new Scenario({ policy: { file: FILE, video: false }, replies: { active_calls: [summary] } });
    await withApp(joining, {}, async (page) => {
      await page.getByTestId('join-button').click();
      await page.getByTestId('call-view').waitFor();
      assert.deepEqual(joining.callsOf('join_call'), [{ callId: 'g9', media: 'audio' }]);
    });
  });

  test('policy: without video, the banner answers a video call with audio', async () => {
    const ringing = { call_id: 'p2', caller: 'alice', caller_name: 'Alice Liddell', caller_avatar: null, invitees: ['me'], media: 'video' };
    const scenario = new Scenario({ policy: { file: FILE, video: false }, replies: { incoming_call: ringing } });
    await withApp(scenario, { label: 'incoming', viewport: { width: 360, height: 124 } }, async (page) => {
      await waitText(page, 'banner-caller', 'Alice Liddell');
      // The call is still said to be a video call: that is what the caller placed.
      assert.match(await text(page, 'banner-media'), /Incoming video call/);
      assert.equal(await page.getByTestId('banner-audio').count(), 0, 'no separate audio-only answer');
      await page.keyboard.press('Enter');
      await until(() => scenario.callsOf('accept_call').length === 1, 'accept_call');
      assert.deepEqual(scenario.callsOf('accept_call'), [{ audioOnly: true }]);
    });
  });

  test('policy: a policy file that could not be fully read says so, with its problems and where it is', async () => {
    const problems = ['line 2: the value of `video` could not be read', '`colour` is not a policy this version knows; it is ignored'];
    const scenario = new Scenario({ account: null, policy: { file: FILE, video: false, problems } });
    await withApp(scenario, {}, async (page) => {
      // Said before sign-in too: the policy is the machine's, not the account's.
      await page.getByTestId('policy-notice').waitFor();
      assert.equal(await page.getByTestId('policy-notice').getAttribute('role'), 'alert');
      assert.match(await text(page, 'policy-notice'), /could not be fully read/);
      assert.match(await text(page, 'policy-notice-file'), /\/etc\/hark\/policy\.toml/);
      assert.deepEqual(await page.getByTestId('policy-problems').locator('li').allTextContents(), problems);
      await screenshot(page, '52-policy-notice');
      await page.getByTestId('policy-notice-dismiss').click();
      await page.getByTestId('policy-notice').waitFor({ state: 'detached' });
    });
  });

  test('policy: a locked server is fixed in the sign-in form; without the built-in server an address is needed', async () => {
    const locked = new Scenario({
      account: null,
      policy: { file: FILE, reason: REASON, server_locked: true, server: 'https://hark.acme.example', builtin_server: false },
    });
    await withApp(locked, {}, async (page) => {
      await page.getByTestId('signin-form').waitFor();
      const fixed = page.getByTestId('signin-server-fixed');
      assert.equal(await fixed.inputValue(), 'https://hark.acme.example');
      assert.equal(await fixed.getAttribute('readonly'), '');
      assert.equal(await text(page, 'signin-server-locked-reason'), REASON);
      assert.equal(await page.getByTestId('signin-builtin').count(), 0, 'the built-in server is not offered');
      assert.equal(await page.getByTestId('signin-server').count(), 0, 'no other address can be typed');
      await screenshot(page, '53-policy-signin-locked');
      await page.getByTestId('signin-password').fill('secret');
      await page.getByTestId('signin-submit').click();
      await page.getByTestId('contacts-list').waitFor();
      assert.equal(locked.callsOf('sign_in')[0].request.server, 'https://hark.acme.example');
    });

    const noBuiltin = new Scenario({
      account: null,
      policy: { file: FILE, builtin_server: false },
      replies: { sign_in: () => Promise.reject({ code: 'forbidden_by_policy', message: 'the built-in server is turned off' }) },
    });
    await withApp(noBuiltin, {}, async (page) => {
      await page.getByTestId('signin-form').waitFor();
      assert.equal(await page.getByTestId('signin-builtin').count(), 0);
      await page.getByTestId('signin-builtin-locked').waitFor();
      await page.getByTestId('signin-password').fill('secret');
      await page.getByTestId('signin-submit').click();
      await waitText(page, 'signin-error', 'Enter the server address.');
      assert.equal(noBuiltin.callsOf('sign_in').length, 0, 'nothing is asked without an address');
      await page.getByTestId('signin-server').fill('https://elsewhere.example');
      await page.getByTestId('signin-password').fill('secret');
      await page.getByTestId('signin-submit').click();
      // The Rust side's refusal is worded, not "something went wrong".
      await waitText(page, 'signin-error', "Your administrator's policy does not allow that.");
      assert.equal(noBuiltin.callsOf('sign_in')[0].request.server, 'https://elsewhere.example');
    });
  });
});

describe('settings, tel: links', () => {
  test('"Open tel: links with Hark" is saved on and off', async () => {
    const scenario = new Scenario();
    await withApp(scenario, {}, async (page) => {
      await page.getByTestId('nav-settings').click();
      const toggle = page.getByTestId('tel-links');
      assert.equal(await toggle.isChecked(), false);
      const hint = await toggle.getAttribute('aria-describedby');
      assert.match(await page.locator(`#${hint}`).textContent(), /tel: links/, 'the hint describes the toggle');
      await toggle.check();
      await until(() => scenario.settings.tel_links === true, 'tel_links to be saved on');
      assert.equal(scenario.callsOf('save_settings').at(-1).settings.tel_links, true);
      await toggle.scrollIntoViewIfNeeded();
      await screenshot(page, '54-settings-tel-links');
      await toggle.uncheck();
      await until(() => scenario.settings.tel_links === false, 'tel_links to be saved off');
      assert.equal(await toggle.isChecked(), false);
    });
  });
});
