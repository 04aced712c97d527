// The contact list: loading, adding and removing contacts, presence updates from engine events,
// the search box and the multi-selection for a group call.

import type { ApiError } from '../bindings/ApiError';
import type { Contact } from '../bindings/Contact';
import type { PresenceStatus } from '../bindings/PresenceStatus';
import type { Backend } from '../backend';
import { toApiError } from '../errors';

/** A group call invites at most this many other people (the server's limit is 9 in a call). */
export const MAX_GROUP = 8;

export type ContactsBackend = Pick<Backend, 'contacts' | 'addContact' | 'removeContact'>;

export function displayName(contact: Contact): string {
  return contact.alias?.trim() || contact.nickname.trim() || contact.user;
}

const PRESENCE_ORDER: Record<PresenceStatus, number> = { online: 0, offline: 1, unregistered: 2 };

/** Contacts matching `query` (user id, nickname or alias, any case): online first, then by name. */
export function filterContacts(list: readonly Contact[], query: string): Contact[] {
  const q = query.trim().toLowerCase();
  const hits = q
    ? list.filter((c) => [c.user, c.nickname, c.alias ?? ''].some((field) => field.toLowerCase().includes(q)))
    : [...list];
  return hits.sort(
    (a, b) => PRESENCE_ORDER[a.status] - PRESENCE_ORDER[b.status] || displayName(a).localeCompare(displayName(b)),
  );
}

/** User ids typed into a box: separated by commas, semicolons or spaces, each once. */
export function parseUserIds(text: string): string[] {
  return [...new Set(text.split(/[\s,;，]+/).map((u) => u.trim()).filter(Boolean))];
}

export class ContactsStore {
  list = $state<Contact[]>([]);
  loaded = $state(false);
  query = $state('');
  selected = $state<string[]>([]);
  error = $state<ApiError | null>(null);

  filtered = $derived(filterContacts(this.list, this.query));
  selectionFull = $derived(this.selected.length >= MAX_GROUP);

  constructor(private readonly backend: ContactsBackend) {}

  async load(): Promise<void> {
    try {
      this.list = await this.backend.contacts();
      this.loaded = true;
      // Someone removed elsewhere cannot stay selected.
      this.selected = this.selected.filter((u) => this.list.some((c) => c.user === u));
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  /** Adds a contact and reloads the list (for its nickname and presence); false if refused. */
  async add(user: string, alias: string): Promise<boolean> {
    const id = user.trim();
    if (!id) return false;
    this.error = null;
    try {
      await this.backend.addContact(id, alias.trim() || null);
      await this.load();
      return true;
    } catch (thrown) {
      this.error = toApiError(thrown);
      return false;
    }
  }

  async remove(user: string): Promise<void> {
    this.error = null;
    try {
      await this.backend.removeContact(user);
      this.list = this.list.filter((c) => c.user !== user);
      this.selected = this.selected.filter((u) => u !== user);
    } catch (thrown) {
      this.error = toApiError(thrown);
    }
  }

  get(user: string): Contact | undefined {
    return this.list.find((c) => c.user === user);
  }

  isSelected(user: string): boolean {
    return this.selected.includes(user);
  }

  /** Selects or unselects `user`; false when the selection is full and `user` was not in it. */
  toggle(user: string): boolean {
    if (this.isSelected(user)) {
      this.selected = this.selected.filter((u) => u !== user);
      return true;
    }
    if (this.selectionFull) return false;
    this.selected = [...this.selected, user];
    return true;
  }

  clearSelection(): void {
    this.selected = [];
  }

  presence(user: string, status: PresenceStatus): void {
    const contact = this.list.find((c) => c.user === user);
    if (contact) contact.status = status;
  }

  clear(): void {
    this.list = [];
    this.loaded = false;
    this.query = '';
    this.selected = [];
    this.error = null;
  }
}
