// Runs in the page before the app (as a Playwright init script): installs Tauri's official IPC
// mocks and forwards every command to the Node test, which plays the Rust side. The test drives
// the app by emitting `engine` events and live-channel updates through the hooks set here.

import { mockIPC, mockWindows } from '@tauri-apps/api/mocks';

type Reply = { ok: unknown } | { error: { code: string; message: string } };

interface Internals {
  invoke(cmd: string, args: unknown): Promise<unknown>;
  runCallback(id: number, data: unknown): void;
}

interface HarnessWindow {
  __TAURI_INTERNALS__: Internals;
  __HARK_TEST__?: { label: string };
  /** Exposed by the test (page.exposeFunction): the Rust side's answer to a command. */
  __harkInvoke(cmd: string, args: unknown): Promise<Reply>;
  __harkEmit(payload: unknown): Promise<unknown>;
  __harkEmitTo(event: string, payload: unknown): Promise<unknown>;
  __harkLive(update: unknown): void;
  /** News from the app's video layer (when the test's `video_layer` answers true). */
  __harkLayerNews(news: unknown): void;
}

const page = window as unknown as HarnessWindow;
const label = page.__HARK_TEST__?.label ?? 'main';

mockWindows(label);

let live: { id: number } | null = null;
let liveIndex = 0;
let layer: { id: number } | null = null;
let layerIndex = 0;

mockIPC(
  async (cmd, args) => {
    if (cmd === 'watch_live') {
      // The Channel object itself: Node cannot hold it, so live updates are fed from here.
      live = (args as { channel: { id: number } }).channel;
      liveIndex = 0;
      return null;
    }
    if (cmd === 'video_layer') {
      // Kept here like the live channel; the test answers whether there is a layer.
      layer = (args as { channel: { id: number } }).channel;
      layerIndex = 0;
      args = {};
    }
    const reply = await page.__harkInvoke(cmd, args ?? {});
    if ('error' in reply) throw reply.error;
    return reply.ok;
  },
  { shouldMockEvents: true },
);

page.__harkEmitTo = (event, payload) => page.__TAURI_INTERNALS__.invoke('plugin:event|emit', { event, payload });
page.__harkEmit = (payload) => page.__harkEmitTo('engine', payload);
page.__harkLayerNews = (message) => {
  if (layer) page.__TAURI_INTERNALS__.runCallback(layer.id, { index: layerIndex++, message });
};
page.__harkLive = (message) => {
  if (live) page.__TAURI_INTERNALS__.runCallback(live.id, { index: liveIndex++, message });
};
