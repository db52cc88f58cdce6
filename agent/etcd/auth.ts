import { randomBytes, timingSafeEqual, createHash } from 'node:crypto';
import { interval, inInterval, type ByteKey, type KeyInterval } from '../store/keys.js';
import { etcdErrors } from './api-error.js';

export type Access = 'READ' | 'WRITE';

interface Permission {
  type: 'READ' | 'WRITE' | 'READWRITE';
  range: KeyInterval;
}

/**
 * etcd's simple auth: users with passwords, roles with key-range permissions, the role `root`
 * allowed everything, tokens handed out by authenticate. Off until enabled, and then every KV
 * call needs a token. Tokens look like etcd's simple tokens: 16 letters, a dot, a counter.
 */
export class Auth {
  private enabled = false;
  private readonly users = new Map<string, { passwordHash: Buffer; roles: Set<string> }>();
  private readonly roles = new Map<string, Permission[]>();
  private readonly tokens = new Map<string, string>();
  private counter = 0;

  get isEnabled(): boolean {
    return this.enabled;
  }

  addRole(name: string): void {
    if (this.roles.has(name)) throw etcdErrors.roleExists();
    this.roles.set(name, []);
  }

  addUser(name: string, password: string): void {
    if (this.users.has(name)) throw etcdErrors.userExists();
    this.users.set(name, { passwordHash: hash(password), roles: new Set() });
  }

  grantRole(user: string, role: string): void {
    const u = this.users.get(user);
    if (!u) throw etcdErrors.userNotFound();
    if (role !== 'root' && !this.roles.has(role)) throw etcdErrors.roleNotFound();
    u.roles.add(role);
  }

  grantPermission(role: string, type: Permission['type'], key: ByteKey, rangeEnd?: ByteKey): void {
    const perms = this.roles.get(role);
    if (!perms) throw etcdErrors.roleNotFound();
    perms.push({ type, range: interval(key, rangeEnd) });
  }

  enable(): void {
    const root = this.users.get('root');
    if (!root || !root.roles.has('root')) throw etcdErrors.rootMissing();
    this.enabled = true;
  }

  disable(): void {
    this.enabled = false;
    this.tokens.clear();
  }

  authenticate(name: string, password: string): string {
    if (!this.enabled) throw etcdErrors.authNotEnabled();
    const u = this.users.get(name);
    if (!u || !timingSafeEqual(u.passwordHash, hash(password))) throw etcdErrors.authFailed();
    const letters = randomBytes(16)
      .toString('base64')
      .replace(/[^A-Za-z]/g, 'x')
      .slice(0, 16);
    const token = `${letters}.${++this.counter}`;
    this.tokens.set(token, name);
    return token;
  }

  /**
   * Checks a request's `Authorization` header for access to [key, rangeEnd). Like etcd, a token
   * that is not known is refused even while auth is off.
   */
  check(token: string | undefined, access: Access, key: ByteKey, rangeEnd?: ByteKey): void {
    if (token !== undefined && token !== '' && !this.tokens.has(token)) throw etcdErrors.invalidAuthToken();
    if (!this.enabled) return;
    if (!token) throw etcdErrors.userNameEmpty();
    this.checkUser(this.tokens.get(token)!, access, key, rangeEnd);
  }

  /** For calls that are not about keys (leases, status): only a valid user is needed. */
  checkToken(token: string | undefined): string | undefined {
    if (token !== undefined && token !== '' && !this.tokens.has(token)) throw etcdErrors.invalidAuthToken();
    if (!this.enabled) return undefined;
    if (!token) throw etcdErrors.userNameEmpty();
    return this.tokens.get(token);
  }

  checkAdmin(token: string | undefined): void {
    const user = this.checkToken(token);
    if (user !== undefined && !this.users.get(user)?.roles.has('root')) throw etcdErrors.permissionDenied();
  }

  private checkUser(user: string, access: Access, key: ByteKey, rangeEnd?: ByteKey): void {
    const u = this.users.get(user);
    if (!u) throw etcdErrors.permissionDenied();
    if (u.roles.has('root')) return;
    const want = interval(key, rangeEnd);
    for (const role of u.roles) {
      for (const p of this.roles.get(role) ?? []) {
        if (p.type !== 'READWRITE' && p.type !== access) continue;
        if (covers(p.range, want)) return;
      }
    }
    throw etcdErrors.permissionDenied();
  }
}

function hash(password: string): Buffer {
  return createHash('sha256').update(password).digest();
}

function covers(outer: KeyInterval, inner: KeyInterval): boolean {
  if (!inInterval(outer, inner.start)) return false;
  if (inner.end === undefined) return true;
  if (outer.end === undefined) return false;
  if (outer.end === '') return true;
  return inner.end !== '' && inner.end <= outer.end;
}
