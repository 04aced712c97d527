// Who is signed in: the first `app_info`, signing in and up, signing out, and the connection's
// ups and downs as the engine reports them.

import type { Account } from '../bindings/Account';
import type { ApiError } from '../bindings/ApiError';
import type { AppInfo } from '../bindings/AppInfo';
import type { SignInRequest } from '../bindings/SignInRequest';
import type { Backend } from '../backend';
import { toApiError } from '../errors';
import type { OtherEngineEvent } from '../events';

export type SessionStatus = 'loading' | 'signed_out' | 'signing_in' | 'signed_in';

export type SessionBackend = Pick<Backend, 'signIn' | 'signOut' | 'setProfile'>;

export class SessionStore {
  status = $state<SessionStatus>('loading');
  account = $state<Account | null>(null);
  version = $state('');
  embeddedServer = $state<string | null>(null);
  lastUser = $state<string | null>(null);
  error = $state<ApiError | null>(null);
  /** The signaling connection dropped and is being re-established. */
  reconnecting = $state(false);

  constructor(private readonly backend: SessionBackend) {}

  applyInfo(info: AppInfo): void {
    this.version = info.version;
    this.embeddedServer = info.embedded_server;
    this.lastUser = info.last_user;
    this.account = info.account;
    this.status = info.account ? 'signed_in' : 'signed_out';
  }

  /** Signs in (or up); the account, or null with `error` set. */
  async signIn(request: SignInRequest): Promise<Account | null> {
    this.status = 'signing_in';
    this.error = null;
    try {
      const account = await this.backend.signIn(request);
      this.account = account;
      this.lastUser = account.user;
      this.reconnecting = false;
      this.status = 'signed_in';
      return account;
    } catch (thrown) {
      this.error = toApiError(thrown);
      this.status = 'signed_out';
      return null;
    }
  }

  /** Changes our display name and picture; false (with `error`) if refused. */
  async setProfile(nickname: string, avatar: string | null): Promise<boolean> {
    if (!this.account) return false;
    this.error = null;
    const name = nickname.trim() || null;
    try {
      await this.backend.setProfile(name, avatar);
      this.account = { ...this.account, nickname: name ?? this.account.user, avatar };
      return true;
    } catch (thrown) {
      this.error = toApiError(thrown);
      return false;
    }
  }

  async signOut(): Promise<void> {
    try {
      await this.backend.signOut();
    } catch (thrown) {
      // Signed out here whatever the engine said: the user asked to leave.
      this.error = toApiError(thrown);
    }
    this.account = null;
    this.reconnecting = false;
    this.status = 'signed_out';
  }

  handle(event: OtherEngineEvent): void {
    switch (event.event) {
      case 'signed_in':
        this.reconnecting = false;
        return;
      case 'signaling_lost':
        this.reconnecting = true;
        return;
      case 'sign_in_refused':
        this.account = null;
        this.reconnecting = false;
        this.status = 'signed_out';
        this.error = { code: event.code, message: event.message };
        return;
      default:
        return;
    }
  }
}
