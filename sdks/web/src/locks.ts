// Locks shared by every tab of an origin: the Web Locks API, released by
// the browser when the tab holding one closes or crashes. Where it is
// missing (a JavaScript runtime that is not a browser) a lock only spans
// the trackers of this realm, which is all such a runtime can hold.

const chains = new Map<string, Promise<unknown>>();

/** Runs `fn` holding the lock `name`; waits for whoever holds it first. */
export function withLock<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const locks = (globalThis.navigator as Navigator | undefined)?.locks;
  // The lock manager resolves with what fn resolves with.
  if (locks) return locks.request(name, fn) as unknown as Promise<T>;
  const run = (chains.get(name) ?? Promise.resolve()).then(fn);
  chains.set(name, run.catch(() => undefined));
  return run;
}
