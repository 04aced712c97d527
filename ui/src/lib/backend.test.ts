// backend.ts against Tauri's own IPC mocks: the command names and argument names Rust expects,
// and every rejection turned into an ApiError.

import { afterEach, beforeAll, describe, expect, test } from 'vitest';
import { COMMAND_NAMES } from './bindings/CommandName';

type Handler = (cmd: string, args: unknown) => unknown;

let mocks: typeof import('@tauri-apps/api/mocks');
let backend: typeof import('./backend').backend;

beforeAll(async () => {
  // The mocks install themselves on `window`; in Node that is the global object.
  (globalThis as unknown as { window: unknown }).window = globalThis;
  mocks = await import('@tauri-apps/api/mocks');
  backend = (await import('./backend')).backend;
});

afterEach(() => mocks.clearMocks());

function record(reply: Handler = () => null) {
  const seen: { cmd: string; args: unknown }[] = [];
  mocks.mockIPC((cmd, args) => {
    seen.push({ cmd, args });
    return reply(cmd, args);
  });
  return seen;
}

describe('backend', () => {
  test('every command the backend calls is one Rust has (the list generated from build.rs)', async () => {
    const seen = record(() => {
      throw { code: 'internal', message: 'not answered in this test' };
    });
    // Every method, with arguments of the right shape; what they resolve to does not matter here.
    for (const [name, method] of Object.entries(backend)) {
      if (typeof method !== 'function' || name.startsWith('on')) continue;
      await Promise.resolve()
        .then(() => (method as (...args: unknown[]) => unknown).apply(backend, [[], 'audio', [], null]))
        .catch(() => undefined);
    }
    const unknown = seen.map((s) => s.cmd).filter((cmd) => !(COMMAND_NAMES as readonly string[]).includes(cmd));
    expect(unknown).toEqual([]);
    expect(seen.length).toBeGreaterThan(20);
  });

  test('command names and camelCase arguments', async () => {
    const seen = record();
    await backend.placeCall(['bob'], 'video');
    await backend.joinCall('c1', 'audio');
    await backend.deleteHistory(['c1', 'c2']);
    await backend.addContact('bob', null);
    await backend.muteMicrophone(true);
    await backend.previewRingtone({ kind: 'bundled', name: 'classic' });
    expect(seen).toEqual([
      { cmd: 'place_call', args: { to: ['bob'], media: 'video' } },
      { cmd: 'join_call', args: { callId: 'c1', media: 'audio' } },
      { cmd: 'delete_history', args: { callIds: ['c1', 'c2'] } },
      { cmd: 'add_contact', args: { user: 'bob', alias: null } },
      { cmd: 'mute_microphone', args: { muted: true } },
      { cmd: 'preview_ringtone', args: { source: { kind: 'bundled', name: 'classic' } } },
    ]);
  });

  test('a Rust ApiError arrives as it is', async () => {
    record(() => {
      throw { code: 'unauthorized', message: 'wrong password' };
    });
    await expect(backend.signIn({ server: null, user: 'me', password: 'x', register: false, nickname: null, avatar: null })).rejects.toEqual({
      code: 'unauthorized',
      message: 'wrong password',
    });
  });

  test('a bare string from Tauri becomes code unknown', async () => {
    record(() => {
      throw 'command place_call not allowed';
    });
    await expect(backend.placeCall(['bob'], 'audio')).rejects.toEqual({ code: 'unknown', message: 'command place_call not allowed' });
  });

  test('engine events are normalized before the handler sees them', async () => {
    mocks.mockIPC(() => null, { shouldMockEvents: true });
    const seen: unknown[] = [];
    const stop = await backend.onEngineEvent((event) => seen.push(event));
    const { emit } = await import('@tauri-apps/api/event');
    await emit('engine', JSON.parse('{"event":"call","event":"user_joined","user":"bob"}'));
    await emit('engine', { event: 'from_the_future' });
    await emit('engine', { event: 'presence', user: 'bob', status: 'offline' });
    stop();
    await emit('engine', { event: 'ringtone_stopped' });
    expect(seen).toEqual([
      { kind: 'call', call: { event: 'user_joined', user: 'bob' } },
      { kind: 'engine', event: { event: 'presence', user: 'bob', status: 'offline' } },
    ]);
  });

  test('the window label', () => {
    mocks.mockWindows('incoming');
    expect(backend.windowLabel()).toBe('incoming');
    mocks.mockWindows('main');
    expect(backend.windowLabel()).toBe('main');
  });
});
