// Unit tests: contacts search and order, presence updates, add/remove, multi-select limit.

import { describe, expect, test } from 'vitest';
import type { Contact } from '../bindings/Contact';
import { fakeBackend } from '../testing/fakeBackend';
import { ContactsStore, displayName, filterContacts, MAX_GROUP, parseUserIds } from './contacts.svelte';

const contact = (user: string, status: Contact['status'] = 'offline', alias: string | null = null, nickname = user): Contact => ({
  user,
  nickname,
  alias,
  status,
});

const list: Contact[] = [
  contact('zed', 'online'),
  contact('alice', 'offline', null, 'Alice Liddell'),
  contact('bob', 'online', 'Bobby'),
  contact('ghost', 'unregistered'),
];

describe('search and order', () => {
  test('online first, then by name; search matches id, nickname and alias in any case', () => {
    expect(filterContacts(list, '').map((c) => c.user)).toEqual(['bob', 'zed', 'alice', 'ghost']);
    expect(filterContacts(list, 'LIDD').map((c) => c.user)).toEqual(['alice']);
    expect(filterContacts(list, 'bobby').map((c) => c.user)).toEqual(['bob']);
    expect(filterContacts(list, ' z ').map((c) => c.user)).toEqual(['zed']);
    expect(filterContacts(list, 'nobody')).toEqual([]);
  });

  test('display name prefers the alias, then the nickname, then the id', () => {
    expect(displayName(contact('bob', 'online', 'Bobby'))).toBe('Bobby');
    expect(displayName(contact('bob', 'online', '  ', 'Robert'))).toBe('Robert');
    expect(displayName(contact('bob', 'online', null, ''))).toBe('bob');
  });

  test('user ids typed into a box', () => {
    expect(parseUserIds(' bob, carol;dave  erin，bob ')).toEqual(['bob', 'carol', 'dave', 'erin']);
    expect(parseUserIds('  ')).toEqual([]);
  });
});

describe('store', () => {
  test('presence events update a contact; unknown users are ignored', async () => {
    const store = new ContactsStore(fakeBackend({ contacts: async () => structuredClone(list) }));
    await store.load();
    store.presence('alice', 'online');
    store.presence('stranger', 'online');
    expect(store.get('alice')?.status).toBe('online');
    expect(store.filtered[0]?.user).toBe('alice');
    expect(store.list).toHaveLength(4);
  });

  test('the search query filters the derived list', async () => {
    const store = new ContactsStore(fakeBackend({ contacts: async () => structuredClone(list) }));
    await store.load();
    store.query = 'al';
    expect(store.filtered.map((c) => c.user)).toEqual(['alice']);
  });

  test(`multi-select stops at ${MAX_GROUP}`, () => {
    const store = new ContactsStore(fakeBackend());
    for (let i = 1; i <= MAX_GROUP; i++) expect(store.toggle(`u${i}`)).toBe(true);
    expect(store.selectionFull).toBe(true);
    expect(store.toggle('u9')).toBe(false);
    expect(store.selected).toHaveLength(MAX_GROUP);
    expect(store.toggle('u3')).toBe(true);
    expect(store.isSelected('u3')).toBe(false);
    expect(store.toggle('u9')).toBe(true);
    store.clearSelection();
    expect(store.selected).toEqual([]);
  });

  test('add reloads the list; a refusal keeps its code', async () => {
    let server: Contact[] = [];
    const backend = fakeBackend({
      contacts: async () => server,
      addContact: async (user) => {
        if (user === 'nobody') throw { code: 'not_found', message: 'no such user' };
        server = [contact(user, 'online')];
        return null;
      },
    });
    const store = new ContactsStore(backend);
    expect(await store.add('  bob ', ' ')).toBe(true);
    expect(backend.callsOf('addContact')).toEqual([['bob', null]]);
    expect(store.list.map((c) => c.user)).toEqual(['bob']);
    expect(await store.add('nobody', 'N')).toBe(false);
    expect(store.error?.code).toBe('not_found');
    expect(await store.add('   ', '')).toBe(false);
  });

  test('remove drops the contact and its selection', async () => {
    const store = new ContactsStore(fakeBackend({ contacts: async () => structuredClone(list) }));
    await store.load();
    store.toggle('bob');
    await store.remove('bob');
    expect(store.get('bob')).toBeUndefined();
    expect(store.selected).toEqual([]);
  });
});
