// Names and avatars of anyone the UI shows (callers, people in a call, history entries), from the
// contact list first, then from profiles asked of the server once per user.

import type { UserProfile } from '../bindings/UserProfile';
import type { Backend } from '../backend';
import { displayName, type ContactsStore } from './contacts.svelte';

export class PeopleStore {
  profiles = $state<Record<string, UserProfile>>({});
  private asked = new Set<string>();

  constructor(
    private readonly backend: Pick<Backend, 'profiles'>,
    private readonly contacts: ContactsStore,
  ) {}

  name(user: string): string {
    const contact = this.contacts.get(user);
    if (contact) return displayName(contact);
    return this.profiles[user]?.nickname.trim() || user;
  }

  avatar(user: string): string | null {
    return this.profiles[user]?.avatar ?? null;
  }

  remember(profile: UserProfile): void {
    this.profiles[profile.user] = profile;
    this.asked.add(profile.user);
  }

  /** Fetches the profiles of those not known yet; failures are quiet (the user id is shown). */
  async want(users: readonly string[]): Promise<void> {
    const missing = [...new Set(users)].filter((u) => u && !this.asked.has(u));
    if (missing.length === 0) return;
    for (const user of missing) this.asked.add(user);
    try {
      for (const profile of await this.backend.profiles(missing)) this.profiles[profile.user] = profile;
    } catch {
      for (const user of missing) this.asked.delete(user);
    }
  }
}
